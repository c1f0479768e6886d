//! Requests into domain values: every field a client sends is parsed here, once, into
//! a domain type or a clear INVALID_ARGUMENT naming the field — resource names (AIP-122),
//! timestamps, filters (AIP-160) and page tokens.

pub mod filter;
pub mod paging;

use std::time::SystemTime;

use crate::domain::{FactKey, Quarter, ResourceId};

use super::ApiError;

/// A request's `read_time`: `None` reads the present.
pub fn read_time(time: Option<&prost_types::Timestamp>) -> Result<Option<SystemTime>, ApiError> {
    let Some(time) = time else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            "read_time",
            "is not a valid timestamp (expected seconds from 1970 on and nanos from 0 to 999,999,999)",
        )
    };
    if time.seconds < 0 || !(0..1_000_000_000).contains(&time.nanos) {
        return Err(invalid());
    }
    SystemTime::try_from(*time).map(Some).map_err(|_| invalid())
}

/// A figures file's name as a request gives it: what its errors and its load are named by.
pub fn file_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "file_name",
            "is required: the file's name, at most 255 characters, with no control characters",
        ));
    }
    Ok(name)
}

fn segments<'a>(field: &str, name: &'a str, pattern: &str) -> Result<Vec<&'a str>, ApiError> {
    let expected: Vec<&str> = pattern.split('/').collect();
    let parts: Vec<&str> = name.split('/').collect();
    let matches = parts.len() == expected.len()
        && parts.iter().zip(&expected).all(|(part, want)| {
            if want.starts_with('{') {
                !part.is_empty()
            } else {
                part == want
            }
        });
    if name.is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("is required (expected {pattern})"),
        ));
    }
    if !matches {
        return Err(ApiError::invalid(
            field,
            format!("`{name}` is not a resource name of the form {pattern}"),
        ));
    }
    Ok(parts
        .iter()
        .zip(&expected)
        .filter(|(_, want)| want.starts_with('{'))
        .map(|(part, _)| *part)
        .collect())
}

fn id(field: &str, text: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(text).map_err(|err| ApiError::invalid(field, err.to_string()))
}

pub fn quarter(field: &str, text: &str) -> Result<Quarter, ApiError> {
    Quarter::parse(text).map_err(|err| ApiError::invalid(field, err.to_string()))
}

pub fn parse_provider_name(field: &str, name: &str) -> Result<ResourceId, ApiError> {
    let parts = segments(field, name, "providers/{provider}")?;
    id(field, parts[0])
}

pub fn parse_metric_name(field: &str, name: &str) -> Result<ResourceId, ApiError> {
    let parts = segments(field, name, "metrics/{metric}")?;
    id(field, parts[0])
}

pub fn parse_period_name(field: &str, name: &str) -> Result<Quarter, ApiError> {
    let parts = segments(field, name, "periods/{period}")?;
    quarter(field, parts[0])
}

pub fn parse_fact_name(field: &str, name: &str) -> Result<FactKey, ApiError> {
    let parts = segments(
        field,
        name,
        "providers/{provider}/periods/{period}/facts/{metric}",
    )?;
    fact_key(field, &parts)
}

/// The fact named by the first three segments: provider, period, metric.
fn fact_key(field: &str, parts: &[&str]) -> Result<FactKey, ApiError> {
    Ok(FactKey {
        provider: id(field, parts[0])?,
        period: quarter(field, parts[1])?,
        metric: id(field, parts[2])?,
    })
}

/// Which revision of a fact a name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionRef {
    Number(i64),
    First,
    Latest,
}

pub fn parse_fact_revision_name(
    field: &str,
    name: &str,
) -> Result<(FactKey, RevisionRef), ApiError> {
    let pattern = "providers/{provider}/periods/{period}/facts/{metric}/revisions/{revision}";
    let parts = segments(field, name, pattern)?;
    let revision = match parts[3] {
        "first" => RevisionRef::First,
        "latest" => RevisionRef::Latest,
        number => canonical_positive(number)
            .map(RevisionRef::Number)
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!(
                        "`{number}` is not a revision (expected a positive integer, `first` or `latest`)"
                    ),
                )
            })?,
    };
    Ok((fact_key(field, &parts)?, revision))
}

/// A positive number written as a name writes it: digits only, no sign, no leading zero.
/// One number has one name.
fn canonical_positive(text: &str) -> Option<i64> {
    let canonical = !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit());
    text.parse::<i64>()
        .ok()
        .filter(|number| canonical && *number > 0)
}

/// `webhooks/{webhook}`.
pub fn parse_webhook_name(field: &str, name: &str) -> Result<i64, ApiError> {
    numbered_name(field, name, "webhooks/{webhook}", "a webhook id")
}

/// `loads/{load}`.
pub fn parse_load_name(field: &str, name: &str) -> Result<i64, ApiError> {
    numbered_name(field, name, "loads/{load}", "a load id")
}

/// `loads/{load}/deliveryReport`: the load it reports on, or `None` for the latest one
/// (`loads/-/deliveryReport`, or an empty name).
pub fn parse_delivery_report_name(field: &str, name: &str) -> Result<Option<i64>, ApiError> {
    const PATTERN: &str = "loads/{load}/deliveryReport";
    if name.is_empty() {
        return Ok(None);
    }
    let parts = segments(field, name, PATTERN)?;
    if parts[0] == "-" {
        return Ok(None);
    }
    numbered_name(
        field,
        &format!("loads/{}", parts[0]),
        "loads/{load}",
        "a load id",
    )
    .map(Some)
}

/// A collection's resource named by a positive number, such as `loads/{load}`.
fn numbered_name(field: &str, name: &str, pattern: &str, what: &str) -> Result<i64, ApiError> {
    let parts = segments(field, name, pattern)?;
    canonical_positive(parts[0]).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("`{}` is not {what} (expected a positive integer)", parts[0]),
        )
    })
}

/// `providers/{provider}/periods/{period}`, where either may be `-` (all).
pub fn parse_facts_parent(
    field: &str,
    name: &str,
) -> Result<(Option<ResourceId>, Option<Quarter>), ApiError> {
    if name.is_empty() {
        return Ok((None, None));
    }
    let parts = segments(field, name, "providers/{provider}/periods/{period}")?;
    let provider = match parts[0] {
        "-" => None,
        text => Some(id(field, text)?),
    };
    let period = match parts[1] {
        "-" => None,
        text => Some(quarter(field, text)?),
    };
    Ok((provider, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_report_is_named_under_its_load_or_the_latest() {
        assert_eq!(
            parse_delivery_report_name("name", "loads/12/deliveryReport").unwrap(),
            Some(12)
        );
        assert_eq!(
            parse_delivery_report_name("name", "loads/-/deliveryReport").unwrap(),
            None
        );
        assert_eq!(parse_delivery_report_name("name", "").unwrap(), None);
        for bad in [
            "loads/12",
            "loads/0/deliveryReport",
            "loads/x/deliveryReport",
            "reports/1",
        ] {
            assert!(parse_delivery_report_name("name", bad).is_err(), "{bad}");
        }
    }
    use crate::grpc::to_proto::fact_name;

    #[test]
    fn round_trips_fact_names() {
        let key =
            parse_fact_name("name", "providers/aws/periods/2026-Q1/facts/cloud-revenue").unwrap();
        assert_eq!(
            fact_name(&key),
            "providers/aws/periods/2026-q1/facts/cloud-revenue"
        );
    }

    #[test]
    fn refuses_malformed_names_naming_the_field() {
        for bad in [
            "",
            "providers/aws",
            "providers/aws/periods/2026-q1/facts/",
            "providers/AWS/periods/2026-q1/facts/x",
            "providers/aws/periods/2026-q5/facts/x",
            "providers/aws/quarters/2026-q1/facts/x",
        ] {
            let err = parse_fact_name("name", bad).unwrap_err();
            assert!(
                matches!(&err, ApiError::InvalidArgument { field, .. } if field == "name"),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn parents_accept_wildcards() {
        assert_eq!(
            parse_facts_parent("parent", "providers/-/periods/-").unwrap(),
            (None, None)
        );
        let (provider, period) = parse_facts_parent("parent", "providers/aws/periods/-").unwrap();
        assert_eq!(provider.unwrap().as_str(), "aws");
        assert!(period.is_none());
    }
}

#[cfg(test)]
mod canonical_numbers {
    use super::canonical_positive;

    #[test]
    fn a_number_in_a_name_has_one_spelling() {
        assert_eq!(canonical_positive("7"), Some(7));
        assert_eq!(canonical_positive("120"), Some(120));
        for other in [
            "0",
            "07",
            "+7",
            "-7",
            " 7",
            "7 ",
            "",
            "99999999999999999999",
        ] {
            assert_eq!(canonical_positive(other), None, "{other:?}");
        }
    }
}
