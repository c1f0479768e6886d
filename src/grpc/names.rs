//! Resource names (AIP-122) parsed into domain ids, and written back.

use crate::domain::{FactKey, Quarter, ResourceId};

use super::ApiError;

pub fn provider_name(id: &ResourceId) -> String {
    format!("providers/{id}")
}

pub fn metric_name(id: &ResourceId) -> String {
    format!("metrics/{id}")
}

pub fn period_name(period: &Quarter) -> String {
    format!("periods/{}", period.id())
}

pub fn fact_name(key: &FactKey) -> String {
    format!(
        "providers/{}/periods/{}/facts/{}",
        key.provider,
        key.period.id(),
        key.metric
    )
}

pub fn load_name(id: i64) -> String {
    format!("loads/{id}")
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
    Ok(FactKey {
        provider: id(field, parts[0])?,
        period: quarter(field, parts[1])?,
        metric: id(field, parts[2])?,
    })
}

pub fn parse_load_name(field: &str, name: &str) -> Result<i64, ApiError> {
    let parts = segments(field, name, "loads/{load}")?;
    parts[0]
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!(
                    "`{}` is not a load id (expected a positive integer)",
                    parts[0]
                ),
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
