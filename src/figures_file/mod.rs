//! The figures file: a TOML document of sources, providers, metrics and facts. The seed
//! data set and every later quarterly load use this one format. Parsing turns raw bytes
//! into checked domain values, or into the full list of what is wrong with the file.

mod check;

use std::{collections::HashMap, fmt, ops::Range};

use serde::Deserialize;
use toml::Spanned;

use check::Checker;

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
