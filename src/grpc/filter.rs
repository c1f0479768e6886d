//! The `filter` of ListFacts: a small subset of AIP-160, `field = "value"` terms joined
//! by AND, over the fields provider, metric, period and status.

use crate::{
    domain::{FactStatus, Quarter, ResourceId},
    snapshot::FactQuery,
};

use super::ApiError;

const FIELD: &str = "filter";
const FIELDS: &str = "provider, metric, period, status";

fn invalid(description: String) -> ApiError {
    ApiError::invalid(FIELD, description)
}

/// Parses a filter into a query; the empty filter matches every fact.
pub fn parse_fact_filter(filter: &str) -> Result<FactQuery, ApiError> {
    let mut query = FactQuery::default();
    let tokens = tokenize(filter)?;
    if tokens.is_empty() {
        return Ok(query);
    }
    let mut terms = tokens.split(|token| matches!(token, Token::And));
    for term in &mut terms {
        let [Token::Word(field), Token::Equals, value] = term else {
            return Err(invalid(format!(
                "`{filter}` is not a filter of the form field = \"value\" [AND field = \"value\" ...] (fields: {FIELDS})"
            )));
        };
        let value = match value {
            Token::Word(text) | Token::Quoted(text) => text.as_str(),
            _ => return Err(invalid(format!("`{field} =` needs a value"))),
        };
        let parse_id = |prefix: &str| {
            let id = value.strip_prefix(prefix).unwrap_or(value);
            ResourceId::parse(id).map_err(|err| invalid(format!("{field}: {err}")))
        };
        let duplicate = || invalid(format!("`{field}` appears more than once"));
        match field.as_str() {
            "provider" => {
                let id = parse_id("providers/")?;
                if query.provider.replace(id).is_some() {
                    return Err(duplicate());
                }
            }
            "metric" => {
                let id = parse_id("metrics/")?;
                if query.metric.replace(id).is_some() {
                    return Err(duplicate());
                }
            }
            "period" => {
                let text = value.strip_prefix("periods/").unwrap_or(value);
                let period =
                    Quarter::parse(text).map_err(|err| invalid(format!("period: {err}")))?;
                if query.period.replace(period).is_some() {
                    return Err(duplicate());
                }
            }
            "status" => {
                let normalized = value
                    .trim_start_matches("FACT_STATUS_")
                    .to_ascii_lowercase()
                    .replace('_', "-");
                let status = FactStatus::parse(&normalized).ok_or_else(|| {
                    invalid(format!(
                        "status `{value}` is not one of reported, estimated, not-disclosed, derived"
                    ))
                })?;
                if query.status.replace(status).is_some() {
                    return Err(duplicate());
                }
            }
            other => {
                return Err(invalid(format!(
                    "`{other}` is not a field you can filter on (fields: {FIELDS})"
                )));
            }
        }
    }
    Ok(query)
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Equals,
    And,
}

fn tokenize(filter: &str) -> Result<Vec<Token>, ApiError> {
    let mut tokens = Vec::new();
    let mut chars = filter.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '=' => tokens.push(Token::Equals),
            '"' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, escaped)) => text.push(escaped),
                            None => break,
                        },
                        Some((_, c)) => text.push(c),
                        None => {
                            return Err(invalid(format!(
                                "the quoted value starting at character {} is not closed",
                                start + 1
                            )));
                        }
                    }
                }
                tokens.push(Token::Quoted(text));
            }
            c if c.is_ascii_alphanumeric() || "-_/.".contains(c) => {
                let mut word = String::from(c);
                while let Some((_, next)) = chars.peek() {
                    if next.is_ascii_alphanumeric() || "-_/.".contains(*next) {
                        word.push(*next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(if word == "AND" {
                    Token::And
                } else {
                    Token::Word(word)
                });
            }
            other => {
                return Err(invalid(format!(
                    "unexpected `{other}` at character {} (only = and AND are supported)",
                    start + 1
                )));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_conjunctions_of_equalities() {
        let query = parse_fact_filter(
            r#"metric = "cloud-revenue" AND period = 2026-Q1 AND status = reported"#,
        )
        .unwrap();
        assert_eq!(query.metric.unwrap().as_str(), "cloud-revenue");
        assert_eq!(query.period.unwrap().to_string(), "2026-Q1");
        assert_eq!(query.status, Some(FactStatus::Reported));
        assert!(query.provider.is_none());
        assert_eq!(parse_fact_filter("").unwrap(), FactQuery::default());
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "metric",
            "metric =",
            "colour = \"red\"",
            "metric = \"x\" OR metric = \"y\"",
            "metric != \"x\"",
            "period = \"2026-Q5\"",
            "metric = \"unclosed",
            "metric = \"a\" AND metric = \"b\"",
            "AND",
        ] {
            let err = parse_fact_filter(bad).unwrap_err();
            assert!(
                matches!(&err, ApiError::InvalidArgument { field, .. } if field == "filter"),
                "{bad}: {err:?}"
            );
        }
    }
}
