//! The figures file: a TOML document of sources, providers, metrics and facts. The seed
//! data set and every later quarterly load use this one format. Parsing turns raw bytes
//! into checked domain values, or into the full list of what is wrong with the file.

use std::{collections::HashMap, fmt, ops::Range};

use serde::Deserialize;
use toml::Spanned;

use crate::domain::{
    Date, Decimal, FactBody, FactKey, FactStatus, FactValue, Metric, MetricKind, Money, Named,
    Provider, Quarter, ResourceId, RevisionReason, Source, Unit, is_reserved_metric_id, sha256_hex,
};

/// The Q1 2026 figures of the seed article, loaded into an empty store on first start.
pub const SEED_FILE_NAME: &str = "2026-q1-seed.toml";
pub const SEED: &str = include_str!("seed/2026-q1-seed.toml");

/// The version of the format this build reads (`format_version` in the file).
pub const FORMAT_VERSION: u32 = 1;

/// A figures file that parsed and passed every check.
#[derive(Debug, Clone)]
pub struct FiguresFile {
    pub file_name: String,
    pub content_sha256: String,
    pub providers: Vec<Provider>,
    pub metrics: Vec<Metric>,
    pub facts: Vec<StatedFact>,
}

/// A fact as a file states it.
#[derive(Debug, Clone)]
pub struct StatedFact {
    pub key: FactKey,
    pub body: FactBody,
    /// Why the file changes the fact, when it does; `None` lets the loader decide.
    pub revision_reason: Option<RevisionReason>,
}

/// One thing wrong with a figures file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    /// 1-based line, where the error has one.
    pub line: Option<usize>,
    /// What the error is about, e.g. `fact aws / cloud-revenue / 2026-Q1`.
    pub subject: Option<String>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(subject) = &self.subject {
            write!(f, ": {subject}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The providers and metrics a file may refer to without defining them.
pub trait KnownDefinitions {
    fn known_provider(&self, id: &ResourceId) -> bool;
    fn known_metric(&self, id: &ResourceId) -> Option<&Metric>;
}

/// Limits on what a file may be.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_file_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_file_bytes: 1024 * 1024,
        }
    }
}

/// Parses and checks a figures file. On error, returns every problem found.
pub fn parse(
    file_name: &str,
    bytes: &[u8],
    known: &dyn KnownDefinitions,
    limits: ParseLimits,
) -> Result<FiguresFile, Vec<FileError>> {
    let whole_file_error = |line: Option<usize>, message: String| {
        vec![FileError {
            file: file_name.to_owned(),
            line,
            subject: None,
            message,
        }]
    };
    if bytes.len() > limits.max_file_bytes {
        return Err(whole_file_error(
            None,
            format!(
                "the file has {} bytes, over the limit of {} bytes",
                bytes.len(),
                limits.max_file_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let valid = &bytes[..err.valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        whole_file_error(
            Some(line),
            format!(
                "the file is not valid UTF-8 (byte {} is not part of a UTF-8 character)",
                err.valid_up_to() + 1
            ),
        )
    })?;
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let line = err.span().map(|span| line_of(text, span.start));
        whole_file_error(line, syntax_message(&err))
    })?;
    let mut checker = Checker {
        file_name,
        text,
        line_starts: LineStarts::of(text),
        known,
        errors: Vec::new(),
    };
    let figures = checker.check(raw);
    if checker.errors.is_empty() {
        Ok(FiguresFile {
            file_name: file_name.to_owned(),
            content_sha256: sha256_hex(bytes),
            ..figures
        })
    } else {
        Err(checker.errors)
    }
}

fn syntax_message(err: &toml::de::Error) -> String {
    let message = err.message().trim();
    format!("malformed figures file: {message}")
}

fn line_of(text: &str, offset: usize) -> usize {
    LineStarts::of(text).line_of(offset)
}

/// Where each line of a text starts, so that the line of each of many errors is found
/// by a binary search rather than by counting from the start (quadratic in a large
/// file with many errors).
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn of(text: &str) -> Self {
        let newlines = text.bytes().enumerate().filter(|(_, b)| *b == b'\n');
        LineStarts(newlines.map(|(at, _)| at + 1).collect())
    }

    /// The 1-based line `offset` is on.
    fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|start| *start <= offset) + 1
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    format_version: Spanned<u32>,
    #[serde(default)]
    sources: Vec<Spanned<RawSource>>,
    #[serde(default)]
    providers: Vec<Spanned<RawProvider>>,
    #[serde(default)]
    metrics: Vec<Spanned<RawMetric>>,
    #[serde(default)]
    facts: Vec<Spanned<RawFact>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: String,
    title: String,
    publisher: Option<String>,
    date: Option<String>,
    url: Option<String>,
    locator: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: String,
    display_name: String,
    parent_company: String,
    fiscal_year_start_month: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    id: String,
    display_name: String,
    unit: String,
    kind: String,
    #[serde(default)]
    description: String,
    comparison_row: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFact {
    provider: Spanned<String>,
    metric: Spanned<String>,
    period: Spanned<String>,
    status: Option<Spanned<String>>,
    value: Option<Spanned<toml::Value>>,
    #[serde(default)]
    approximate: bool,
    #[serde(default)]
    lower_bound: bool,
    #[serde(default)]
    upper_bound: bool,
    estimated_by: Option<String>,
    note: Option<String>,
    quote: Option<String>,
    sources: Option<Spanned<Vec<String>>>,
    revision_reason: Option<Spanned<String>>,
}

struct Checker<'a> {
    file_name: &'a str,
    text: &'a str,
    line_starts: LineStarts,
    known: &'a dyn KnownDefinitions,
    errors: Vec<FileError>,
}

/// Percentages outside this range are taken for typing mistakes.
const PERCENT_RANGE: (i64, i64) = (-100, 10_000);
/// Multiples outside (0, this] are taken for typing mistakes.
const MAX_MULTIPLE: i64 = 1_000;

impl Checker<'_> {
    fn error(&mut self, span: &Range<usize>, subject: Option<String>, message: String) {
        self.errors.push(FileError {
            file: self.file_name.to_owned(),
            line: Some(self.line_starts.line_of(span.start)),
            subject,
            message,
        });
    }

    fn check(&mut self, raw: RawFile) -> FiguresFile {
        if *raw.format_version.get_ref() != FORMAT_VERSION {
            self.error(
                &raw.format_version.span(),
                None,
                format!(
                    "format_version {} is not supported (this build reads version {FORMAT_VERSION})",
                    raw.format_version.get_ref()
                ),
            );
        }
        let sources = self.check_sources(raw.sources);
        let providers = self.check_providers(raw.providers);
        let metrics = self.check_metrics(raw.metrics);
        let facts = self.check_facts(raw.facts, &sources, &providers, &metrics);
        FiguresFile {
            file_name: String::new(),
            content_sha256: String::new(),
            providers,
            metrics,
            facts,
        }
    }

    /// Texts end up in terminals, emails and pages: no control characters (escape codes,
    /// NUL, bells, carriage returns, line breaks, tabs) in any of them.
    fn check_texts<'t>(
        &mut self,
        span: &Range<usize>,
        subject: &Option<String>,
        fields: impl IntoIterator<Item = (&'static str, Option<&'t str>)>,
    ) {
        for (field, text) in fields {
            if let Some(c) = text.and_then(|text| text.chars().find(|c| c.is_control())) {
                self.error(
                    span,
                    subject.clone(),
                    format!(
                        "{field} contains the control character {}; texts may not contain control characters",
                        c.escape_unicode()
                    ),
                );
            }
        }
    }

    fn check_id(&mut self, span: &Range<usize>, what: &str, id: &str) -> Option<ResourceId> {
        match ResourceId::parse(id) {
            Ok(id) => Some(id),
            Err(err) => {
                self.error(span, Some(format!("{what} `{id}`")), err.to_string());
                None
            }
        }
    }

    fn check_sources(&mut self, raw: Vec<Spanned<RawSource>>) -> HashMap<String, Source> {
        let mut sources = HashMap::new();
        for spanned in raw {
            let span = spanned.span();
            let source = spanned.into_inner();
            let subject = Some(format!("source `{}`", source.id));
            self.check_texts(
                &span,
                &subject,
                [
                    ("id", Some(source.id.as_str())),
                    ("title", Some(source.title.as_str())),
                    ("publisher", source.publisher.as_deref()),
                    ("url", source.url.as_deref()),
                    ("locator", source.locator.as_deref()),
                ],
            );
            let date = source.date.as_deref().and_then(|text| {
                let date = Date::parse(text);
                if date.is_none() {
                    self.error(
                        &span,
                        subject.clone(),
                        format!("date `{text}` is not a date (expected YYYY-MM-DD)"),
                    );
                }
                date
            });
            if source.title.trim().is_empty() {
                self.error(&span, subject.clone(), "title is empty".into());
            }
            let entry = Source {
                title: source.title,
                publisher: source.publisher,
                date,
                uri: source.url.or(source.locator),
            };
            if sources.insert(source.id, entry).is_some() {
                self.error(&span, subject, "is defined twice in this file".into());
            }
        }
        sources
    }

    fn check_providers(&mut self, raw: Vec<Spanned<RawProvider>>) -> Vec<Provider> {
        let mut providers: Vec<Provider> = Vec::new();
        for spanned in raw {
            let span = spanned.span();
            let provider = spanned.into_inner();
            let Some(id) = self.check_id(&span, "provider", &provider.id) else {
                continue;
            };
            let subject = Some(format!("provider `{id}`"));
            let month = provider.fiscal_year_start_month.unwrap_or(1);
            if !(1..=12).contains(&month) {
                self.error(
                    &span,
                    subject.clone(),
                    format!("fiscal_year_start_month {month} is not a month (expected 1 to 12)"),
                );
            }
            self.check_texts(
                &span,
                &subject,
                [
                    ("display_name", Some(provider.display_name.as_str())),
                    ("parent_company", Some(provider.parent_company.as_str())),
                ],
            );
            if provider.display_name.trim().is_empty() {
                self.error(&span, subject.clone(), "display_name is empty".into());
            }
            if providers.iter().any(|p| p.id == id) {
                self.error(&span, subject, "is defined twice in this file".into());
                continue;
            }
            providers.push(Provider {
                id,
                display_name: provider.display_name,
                parent_company: provider.parent_company,
                fiscal_year_start_month: month,
            });
        }
        providers
    }

    fn check_metrics(&mut self, raw: Vec<Spanned<RawMetric>>) -> Vec<Metric> {
        let mut metrics: Vec<Metric> = Vec::new();
        for spanned in raw {
            let span = spanned.span();
            let metric = spanned.into_inner();
            let Some(id) = self.check_id(&span, "metric", &metric.id) else {
                continue;
            };
            let subject = Some(format!("metric `{id}`"));
            self.check_texts(
                &span,
                &subject,
                [
                    ("display_name", Some(metric.display_name.as_str())),
                    ("description", Some(metric.description.as_str())),
                ],
            );
            if is_reserved_metric_id(id.as_str()) {
                self.error(
                    &span,
                    subject.clone(),
                    "ids ending in -qoq, -yoy or -share name derived figures; choose another id"
                        .into(),
                );
            }
            let unit = Unit::parse(&metric.unit);
            if unit.is_none() {
                self.error(
                    &span,
                    subject.clone(),
                    format!(
                        "unknown unit `{}` (expected an ISO 4217 currency code such as USD, or percent, multiple, text, text-list)",
                        metric.unit
                    ),
                );
            }
            let kind = MetricKind::parse(&metric.kind);
            if kind.is_none() {
                let kinds: Vec<&str> = MetricKind::all().map(MetricKind::as_str).collect();
                self.error(
                    &span,
                    subject.clone(),
                    format!(
                        "unknown kind `{}` (expected one of {})",
                        metric.kind,
                        kinds.join(", ")
                    ),
                );
            }
            if metric.comparison_row == Some(0) {
                self.error(
                    &span,
                    subject.clone(),
                    "comparison_row counts from 1 (leave it out to keep the metric out of the comparison)".into(),
                );
            }
            let (Some(unit), Some(kind)) = (unit, kind) else {
                continue;
            };
            if !kind.accepts(&unit) {
                self.error(
                    &span,
                    subject.clone(),
                    format!(
                        "kind `{}` cannot be measured in unit `{unit}`",
                        kind.as_str()
                    ),
                );
                continue;
            }
            if metrics.iter().any(|m| m.id == id) {
                self.error(&span, subject, "is defined twice in this file".into());
                continue;
            }
            metrics.push(Metric {
                id,
                display_name: metric.display_name,
                unit,
                kind,
                description: metric.description,
                comparison_row: metric.comparison_row,
            });
        }
        metrics
    }

    fn check_facts(
        &mut self,
        raw: Vec<Spanned<RawFact>>,
        sources: &HashMap<String, Source>,
        providers: &[Provider],
        metrics: &[Metric],
    ) -> Vec<StatedFact> {
        let mut facts = Vec::new();
        let mut first_line: HashMap<FactKey, usize> = HashMap::new();
        for spanned in raw {
            let span = spanned.span();
            let fact = spanned.into_inner();
            let subject = Some(format!(
                "fact {} / {} / {}",
                fact.provider.get_ref(),
                fact.metric.get_ref(),
                fact.period.get_ref()
            ));
            let Some(checked) = self.check_fact(&span, &subject, fact, sources, providers, metrics)
            else {
                continue;
            };
            let line = self.line_starts.line_of(span.start);
            if let Some(first) = first_line.insert(checked.key.clone(), line) {
                self.error(
                    &span,
                    subject,
                    format!("is stated twice in this file (first on line {first})"),
                );
                continue;
            }
            facts.push(checked);
        }
        facts
    }

    fn check_fact(
        &mut self,
        span: &Range<usize>,
        subject: &Option<String>,
        fact: RawFact,
        sources: &HashMap<String, Source>,
        providers: &[Provider],
        metrics: &[Metric],
    ) -> Option<StatedFact> {
        let errors_before = self.errors.len();
        // Each error points at the line of the field it is about.
        let fail = |checker: &mut Self, at: &Range<usize>, message: String| {
            checker.error(at, subject.clone(), message);
        };
        let provider_span = fact.provider.span();
        let metric_span = fact.metric.span();
        let period_span = fact.period.span();
        let sources_span = fact.sources.as_ref().map_or(span.clone(), Spanned::span);
        let listed_sources = fact
            .sources
            .as_ref()
            .map_or(&[][..], |s| s.get_ref().as_slice());
        let value_span = fact.value.as_ref().map_or(span.clone(), Spanned::span);
        let status_span = fact.status.as_ref().map_or(span.clone(), Spanned::span);

        let provider = ResourceId::parse(fact.provider.get_ref()).ok();
        match &provider {
            None => fail(
                self,
                &provider_span,
                format!("provider `{}` is not a valid id", fact.provider.get_ref()),
            ),
            Some(id)
                if !providers.iter().any(|p| &p.id == id) && !self.known.known_provider(id) =>
            {
                fail(
                    self,
                    &provider_span,
                    format!(
                        "provider `{id}` is not defined (add it under [[providers]] in this file)"
                    ),
                )
            }
            Some(_) => {}
        }
        let metric = ResourceId::parse(fact.metric.get_ref())
            .ok()
            .and_then(|id| {
                metrics
                    .iter()
                    .find(|m| m.id == id)
                    .or_else(|| self.known.known_metric(&id))
            })
            .cloned();
        if metric.is_none() {
            fail(
                self,
                &metric_span,
                format!(
                    "metric `{}` is not defined (add it under [[metrics]] in this file)",
                    fact.metric.get_ref()
                ),
            );
        }
        let period = match Quarter::parse(fact.period.get_ref()) {
            Ok(period) => Some(period),
            Err(err) => {
                fail(self, &period_span, format!("period: {err}"));
                None
            }
        };
        let status = match fact
            .status
            .as_ref()
            .map_or("reported", |s| s.get_ref().as_str())
        {
            "reported" => Some(FactStatus::Reported),
            "estimated" => Some(FactStatus::Estimated),
            "not-disclosed" => Some(FactStatus::NotDisclosed),
            other => {
                fail(
                    self,
                    &status_span,
                    format!(
                        "unknown status `{other}` (expected reported, estimated or not-disclosed)"
                    ),
                );
                None
            }
        };
        if listed_sources.is_empty() {
            fail(
                self,
                &sources_span,
                "has no source (list at least one id from [[sources]] in `sources`)".into(),
            );
        }
        let mut resolved_sources = Vec::new();
        for id in listed_sources {
            match sources.get(id) {
                Some(source) => resolved_sources.push(source.clone()),
                None => fail(
                    self,
                    &sources_span,
                    format!("source `{id}` is not defined under [[sources]] in this file"),
                ),
            }
        }
        let revision_reason = fact.revision_reason.as_ref().and_then(|text| {
            let reason = RevisionReason::parse(text.get_ref());
            if reason.is_none() {
                let text = text.get_ref();
                fail(
                    self,
                    span,
                    format!(
                        "unknown revision_reason `{text}` (expected restated, corrected or estimate-replaced)"
                    ),
                );
            }
            reason
        });
        let text_values: Vec<&str> = match fact.value.as_ref().map(Spanned::get_ref) {
            Some(toml::Value::String(text)) => vec![text.as_str()],
            Some(toml::Value::Array(items)) => {
                items.iter().filter_map(toml::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        self.check_texts(
            &value_span,
            subject,
            text_values.into_iter().map(|text| ("value", Some(text))),
        );
        self.check_texts(
            span,
            subject,
            [
                ("estimated_by", fact.estimated_by.as_deref()),
                ("note", fact.note.as_deref()),
                ("quote", fact.quote.as_deref()),
            ],
        );
        if fact.lower_bound && fact.upper_bound {
            fail(
                self,
                span,
                "cannot be both a lower bound and an upper bound".into(),
            );
        }
        if fact.estimated_by.is_some() && status != Some(FactStatus::Estimated) {
            fail(
                self,
                &status_span,
                "estimated_by is given but the status is not `estimated`".into(),
            );
        }
        let mut value = None;
        let mut precision = None;
        match (status, &fact.value) {
            (Some(FactStatus::NotDisclosed), Some(_)) => fail(
                self,
                &value_span,
                "has a value but its status is `not-disclosed` (a figure that is not disclosed has no value)".into(),
            ),
            (Some(FactStatus::NotDisclosed), None) => {
                if fact.approximate || fact.lower_bound || fact.upper_bound {
                    fail(
                        self,
                        span,
                        "is not disclosed, so it cannot be approximate or a bound".into(),
                    );
                }
            }
            (Some(_), None) => fail(
                self,
                span,
                "has no value (write status = \"not-disclosed\" when the source does not disclose it)".into(),
            ),
            (Some(_), Some(raw_value)) => {
                if let Some(metric) = &metric {
                    let literal = self.text.get(value_span.clone()).unwrap_or_default();
                    match parse_value(&metric.unit, raw_value.get_ref(), literal) {
                        Ok((parsed, stated_precision)) => {
                            value = Some(parsed);
                            precision = stated_precision;
                        }
                        Err(message) => fail(self, &value_span, message),
                    }
                }
            }
            (None, _) => {}
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let key = FactKey {
            provider: provider?,
            period: period?,
            metric: metric?.id,
        };
        let body = FactBody {
            status: status?,
            value,
            approximate: fact.approximate,
            lower_bound: fact.lower_bound,
            upper_bound: fact.upper_bound,
            precision,
            estimated_by: fact.estimated_by,
            note: fact.note,
            quote: fact.quote,
            sources: resolved_sources,
        };
        Some(StatedFact {
            key,
            body,
            revision_reason,
        })
    }
}

/// Turns a raw value into the metric's unit. Returns the value and, for numbers, the
/// decimal places it was stated to. `literal` is the value as the file writes it.
fn parse_value(
    unit: &Unit,
    raw: &toml::Value,
    literal: &str,
) -> Result<(FactValue, Option<i32>), String> {
    match unit {
        Unit::Text => match raw {
            toml::Value::String(text) if !text.trim().is_empty() => {
                Ok((FactValue::Text(text.clone()), None))
            }
            _ => Err("value must be a non-empty text for a text metric".into()),
        },
        Unit::TextList => {
            let items = raw.as_array().map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            });
            match items {
                Some(Some(items))
                    if !items.is_empty() && items.iter().all(|i| !i.trim().is_empty()) =>
                {
                    Ok((FactValue::TextList(items), None))
                }
                _ => Err(
                    "value must be a list of non-empty texts for a text-list metric, e.g. [\"Trainium\", \"Inferentia\"]"
                        .into(),
                ),
            }
        }
        Unit::Currency(currency) => {
            let (amount, precision) = parse_number(raw, literal, "money", &["K", "M", "B", "T"])?;
            if amount.is_negative() {
                return Err(format!(
                    "value {amount} is negative; money figures such as revenue cannot be"
                ));
            }
            let money = Money::from_decimal(currency.clone(), amount)
                .map_err(|err| format!("value {err}"))?;
            Ok((FactValue::Money(money), Some(precision)))
        }
        Unit::Percent => {
            let (percent, precision) = parse_number(raw, literal, "percent", &["%"])?;
            let (low, high) = PERCENT_RANGE;
            if percent < Decimal::from_integer(low) || percent > Decimal::from_integer(high) {
                return Err(format!(
                    "value {percent}% is outside the sane range for a percentage ({low}% to {high}%)"
                ));
            }
            Ok((FactValue::Percent(percent), Some(precision)))
        }
        Unit::Multiple => {
            let (multiple, precision) = parse_number(raw, literal, "multiple", &["x"])?;
            if multiple <= Decimal::ZERO || multiple > Decimal::from_integer(MAX_MULTIPLE) {
                return Err(format!(
                    "value {multiple}x is outside the sane range for a multiple (above 0, at most {MAX_MULTIPLE})"
                ));
            }
            Ok((FactValue::Multiple(multiple), Some(precision)))
        }
    }
}

/// Reads a number written as a TOML number or a string such as `"12.5B"`, `"22%"`, `"4x"`.
/// Returns the exact value and its precision (digits after the point, negative for
/// rounding to thousands, millions, billions).
fn parse_number(
    raw: &toml::Value,
    literal: &str,
    what: &str,
    suffixes: &[&str],
) -> Result<(Decimal, i32), String> {
    let text = match raw {
        toml::Value::String(text) => text.trim().to_owned(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) if !number.is_finite() => {
            return Err(format!("value {number} is not a number (NaN or infinity)"));
        }
        // A float has lost digits past the 16th by now: read the file's own digits.
        toml::Value::Float(_) => {
            let digits = literal.trim().replace('_', "");
            if digits.contains(['e', 'E']) {
                return Err(format!(
                    "value {digits} has an exponent; write it with plain digits (or as text with a suffix, such as \"12.5B\"), so that it stays exact"
                ));
            }
            digits
        }
        _ => return Err(format!("value must be a number for a {what} metric")),
    };
    let lowered = text.to_ascii_lowercase();
    if ["nan", "inf", "+inf", "-inf", "infinity"].contains(&lowered.as_str()) {
        return Err(format!("value `{text}` is not a number (NaN or infinity)"));
    }
    let (digits, exponent) = match suffixes
        .iter()
        .find_map(|suffix| text.strip_suffix(suffix).map(|rest| (rest, *suffix)))
    {
        Some((rest, "K")) => (rest, 3),
        Some((rest, "M")) => (rest, 6),
        Some((rest, "B")) => (rest, 9),
        Some((rest, "T")) => (rest, 12),
        Some((rest, _)) => (rest, 0),
        None => (text.as_str(), 0),
    };
    let stated: Decimal = digits.trim().parse().map_err(|_| {
        format!(
            "value `{text}` is not a {what} figure (expected a decimal number{}{})",
            if suffixes.is_empty() {
                ""
            } else {
                " optionally followed by "
            },
            suffixes.join(", ")
        )
    })?;
    let value = stated
        .scaled_by_power_of_ten(exponent)
        .ok_or_else(|| format!("value `{text}` is too large"))?;
    let precision = stated.scale() as i32 - exponent as i32;
    Ok((value, precision))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NothingKnown;

    impl KnownDefinitions for NothingKnown {
        fn known_provider(&self, _: &ResourceId) -> bool {
            false
        }
        fn known_metric(&self, _: &ResourceId) -> Option<&Metric> {
            None
        }
    }

    fn parse_text(text: &str) -> Result<FiguresFile, Vec<FileError>> {
        parse(
            "test.toml",
            text.as_bytes(),
            &NothingKnown,
            ParseLimits::default(),
        )
    }

    const HEADER: &str = r#"
format_version = 1

[[sources]]
id = "article"
title = "An article"

[[providers]]
id = "aws"
display_name = "AWS"
parent_company = "Amazon"

[[metrics]]
id = "cloud-revenue"
display_name = "Total cloud revenue"
unit = "USD"
kind = "quarterly-total"
"#;

    #[test]
    fn the_seed_parses() {
        let figures = parse(
            "seed",
            SEED.as_bytes(),
            &NothingKnown,
            ParseLimits::default(),
        )
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
        assert_eq!(figures.providers.len(), 3);
        assert!(figures.facts.len() >= 21);
    }

    #[test]
    fn reads_scaled_money_with_its_precision() {
        let text = format!(
            "{HEADER}\n[[facts]]\nprovider = \"aws\"\nmetric = \"cloud-revenue\"\nperiod = \"2026-Q1\"\nvalue = \"12.5B\"\nsources = [\"article\"]\n"
        );
        let figures = parse_text(&text).unwrap();
        let body = &figures.facts[0].body;
        let Some(FactValue::Money(money)) = &body.value else {
            panic!("not money: {body:?}");
        };
        assert_eq!((money.units, money.nanos), (12_500_000_000, 0));
        assert_eq!(body.precision, Some(-8));
    }

    #[test]
    fn a_float_keeps_every_digit_the_file_wrote() {
        let text = format!(
            "{HEADER}\n[[facts]]\nprovider = \"aws\"\nmetric = \"cloud-revenue\"\nperiod = \"2026-Q1\"\nvalue = 9_007_199_254_740_993.0\nsources = [\"article\"]\n"
        );
        let figures = parse_text(&text).unwrap();
        let Some(FactValue::Money(money)) = &figures.facts[0].body.value else {
            panic!("not money");
        };
        // As an f64 this is 9007199254740992.
        assert_eq!((money.units, money.nanos), (9_007_199_254_740_993, 0));
    }

    #[test]
    fn lists_every_error_with_its_line() {
        let text = format!(
            "{HEADER}\n[[facts]]\nprovider = \"nobody\"\nmetric = \"cloud-revenue\"\nperiod = \"2026-Q5\"\nvalue = \"-1B\"\n"
        );
        let errors = parse_text(&text).unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let all = messages.join("\n");
        assert!(all.contains("provider `nobody` is not defined"), "{all}");
        assert!(all.contains("`2026-Q5` is not a calendar quarter"), "{all}");
        assert!(all.contains("has no source"), "{all}");
        let line_of_error = |needle: &str| {
            errors
                .iter()
                .find(|e| e.message.contains(needle))
                .and_then(|e| e.line)
        };
        assert_eq!(line_of_error("provider `nobody`"), Some(20), "{all}");
        assert_eq!(line_of_error("2026-Q5"), Some(22), "{all}");
        assert_eq!(line_of_error("is negative"), Some(23), "{all}");
        assert_eq!(line_of_error("has no source"), Some(19), "{all}");
    }

    #[test]
    fn refuses_unknown_fields_naming_the_line() {
        let text = format!("{HEADER}colour = \"blue\"\n");
        let errors = parse_text(&text).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("colour"), "{:?}", errors[0]);
        assert_eq!(errors[0].line, Some(18));
    }
}
