//! The figures runrate holds: providers, metrics, quarters and facts with their
//! qualifiers, sources and revisions. Nothing here knows about protobuf or SQL.

mod decimal;
pub mod delivery;
mod digest;
mod display;
mod email_address;
mod money;
mod quarter;
pub mod subscribers;
pub mod webhooks;

use std::{fmt, time::SystemTime};

use serde::{Deserialize, Serialize};
use strum::{EnumIter, EnumString, IntoStaticStr};

pub use decimal::{Decimal, DecimalError};
pub use digest::{hex, sha256_hex};
pub use display::{display_value, duration_in_words};
pub use email_address::{EmailAddress, EmailAddressError};
pub use money::{CurrencyCode, Money, MoneyError};
pub use quarter::{Date, Quarter, QuarterError};

/// A resource id (AIP-122): lowercase letters, digits and hyphens, starting with a letter,
/// at most 63 characters, e.g. `aws` or `ai-revenue-run-rate`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid id (expected lowercase letters, digits and hyphens, starting with a letter, at most 63 characters)"
)]
pub struct ResourceIdError(pub String);

impl ResourceId {
    /// What [`ResourceId::parse`] accepts, as a regular expression (for the OpenAPI
    /// document).
    pub const PATTERN: &'static str = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$";

    pub fn parse(text: &str) -> Result<Self, ResourceIdError> {
        let bytes = text.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes[0].is_ascii_lowercase()
            && bytes[bytes.len() - 1] != b'-'
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if valid {
            Ok(ResourceId(text.to_owned()))
        } else {
            Err(ResourceIdError(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceId {
    type Error = ResourceIdError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        ResourceId::parse(&text)
    }
}

impl From<ResourceId> for String {
    fn from(id: ResourceId) -> Self {
        id.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub id: ResourceId,
    pub display_name: String,
    pub parent_company: String,
    /// First month of the parent's fiscal year; 1 for calendar years.
    pub fiscal_year_start_month: u8,
}

/// What a metric's values are measured in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    Currency(CurrencyCode),
    Percent,
    Multiple,
    Text,
    TextList,
}

impl Unit {
    /// Accepts an ISO 4217 code (`USD`) or `percent`, `multiple`, `text`, `text-list`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "percent" => Some(Unit::Percent),
            "multiple" => Some(Unit::Multiple),
            "text" => Some(Unit::Text),
            "text-list" => Some(Unit::TextList),
            code => CurrencyCode::parse(code).map(Unit::Currency),
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::Currency(code) => write!(f, "{code}"),
            Unit::Percent => f.write_str("percent"),
            Unit::Multiple => f.write_str("multiple"),
            Unit::Text => f.write_str("text"),
            Unit::TextList => f.write_str("text-list"),
        }
    }
}

/// How a metric's figures relate to time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, EnumString, IntoStaticStr, EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum MetricKind {
    QuarterlyTotal,
    RunRate,
    AnnualTotal,
    Percent,
    Ratio,
    Text,
    TextList,
}

impl MetricKind {
    /// Whether values of this kind can be measured in `unit`.
    pub fn accepts(&self, unit: &Unit) -> bool {
        matches!(
            (self, unit),
            (
                MetricKind::QuarterlyTotal | MetricKind::RunRate | MetricKind::AnnualTotal,
                Unit::Currency(_)
            ) | (MetricKind::Percent, Unit::Percent)
                | (MetricKind::Ratio, Unit::Multiple)
                | (MetricKind::Text, Unit::Text)
                | (MetricKind::TextList, Unit::TextList)
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    pub id: ResourceId,
    pub display_name: String,
    pub unit: Unit,
    pub kind: MetricKind,
    pub description: String,
    /// Row of the provider comparison, from 1; `None` when the metric is not in it.
    pub comparison_row: Option<u32>,
}

/// Where a figure comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<Date>,
    /// A URL, or where in the source the figure stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// What the source says about a figure's standing.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, EnumString, IntoStaticStr, EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum FactStatus {
    Reported,
    Estimated,
    NotDisclosed,
    Derived,
}

/// A figure's value, in its metric's unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactValue {
    Money(Money),
    Percent(Decimal),
    Multiple(Decimal),
    Text(String),
    TextList(Vec<String>),
}

/// Everything a figures file states about one fact. Two loads that state equal bodies for
/// a fact leave it unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactBody {
    pub status: FactStatus,
    /// `None` exactly when the status is not-disclosed.
    pub value: Option<FactValue>,
    #[serde(default)]
    pub approximate: bool,
    #[serde(default)]
    pub lower_bound: bool,
    #[serde(default)]
    pub upper_bound: bool,
    /// Decimal places the value was stated to (XBRL `decimals`): -9 = rounded to billions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The source's own words for the figure, where the value shortens them: "over $15
    /// billion in annualized revenue" for `over $15B`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    pub sources: Vec<Source>,
}

/// Which fact: a provider's metric for a quarter. Ordered by provider, period, metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FactKey {
    pub provider: ResourceId,
    pub period: Quarter,
    pub metric: ResourceId,
}

impl fmt::Display for FactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.provider, self.period, self.metric)
    }
}

/// Id of a load: grows by one with every load that changes something.
pub type LoadId = i64;

/// Why a fact's value changed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, EnumString, IntoStaticStr, EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum RevisionReason {
    /// The company restated the figure.
    Restated,
    /// runrate's earlier value was wrong.
    Corrected,
    /// A reported figure replaced an estimate.
    EstimateReplaced,
}

/// One recorded value of a fact. Revisions are appended, never overwritten.
#[derive(Clone, Debug, PartialEq)]
pub struct FactRevision {
    pub key: FactKey,
    pub revision: i64,
    pub load_id: LoadId,
    pub recorded_at: SystemTime,
    /// Why this revision replaced the previous one; `None` for a first revision.
    pub reason: Option<RevisionReason>,
    pub body: FactBody,
}

/// One applied figures file.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadRecord {
    pub id: LoadId,
    pub recorded_at: SystemTime,
    /// The name the file was loaded under, e.g. `2026-q2.toml`.
    pub file_name: String,
    /// SHA-256 of the file's bytes, hex.
    pub content_sha256: String,
    pub facts_added: u32,
    pub facts_revised: u32,
    pub facts_unchanged: u32,
    pub definitions_changed: u32,
}

/// The ways a figure is derived from stored ones; each names its figures with an id
/// suffix, which stored metric ids may not end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumString, IntoStaticStr, EnumIter)]
pub enum Derivation {
    #[strum(serialize = "-qoq")]
    QuarterOnQuarter,
    #[strum(serialize = "-yoy")]
    YearOnYear,
    #[strum(serialize = "-share")]
    ShareOfTotal,
}

impl Derivation {
    /// The id ending that names this derivation of a metric.
    pub fn suffix(self) -> &'static str {
        self.as_str()
    }
}

/// Whether an id ends the way derived metric ids do (and so cannot name a stored metric).
pub fn is_reserved_metric_id(id: &str) -> bool {
    Derivation::all().any(|derivation| id.ends_with(derivation.suffix()))
}

/// Enums stored and shown by name: each name in one place, the variant's `strum`
/// attribute (derive `EnumString`, `IntoStaticStr` and `EnumIter`).
pub trait Named: Copy + Into<&'static str> + std::str::FromStr + strum::IntoEnumIterator {
    fn as_str(self) -> &'static str {
        self.into()
    }

    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    fn all() -> Self::Iterator {
        Self::iter()
    }
}

impl<T: Copy + Into<&'static str> + std::str::FromStr + strum::IntoEnumIterator> Named for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_follow_aip_122() {
        for ok in ["aws", "google-cloud", "ai-revenue-run-rate", "a1"] {
            assert!(ResourceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "AWS", "1aws", "aws-", "aws_x", "aws/x", &"a".repeat(64)] {
            assert!(ResourceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_accept_only_matching_units() {
        let usd = Unit::parse("USD").unwrap();
        assert!(MetricKind::RunRate.accepts(&usd));
        assert!(!MetricKind::Percent.accepts(&usd));
        assert!(MetricKind::TextList.accepts(&Unit::TextList));
        assert_eq!(Unit::parse("dollars"), None);
    }
}
