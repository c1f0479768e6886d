//! `filter` strings: a small subset of AIP-160, `field = "value"` terms joined by AND.
//! ListFacts filters on provider, metric, period and status; ListSubscribers on state.

use crate::domain::Named;
use crate::{
    catalog::FactQuery,
    domain::subscribers::SubscriberState,
    domain::{FactStatus, Quarter, ResourceId},
};

use crate::grpc::ApiError;

const FIELD: &str = "filter";

fn invalid(description: String) -> ApiError {
    ApiError::invalid(FIELD, description)
}

/// Splits a filter into `(field, value)` terms over `fields`, each field at most once.
fn parse_terms(filter: &str, fields: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let tokens = tokenize(filter)?;
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let known = fields.join(", ");
    let mut terms: Vec<(String, String)> = Vec::new();
    for term in tokens.split(|token| matches!(token, Token::And)) {
        let [Token::Word(field), Token::Equals, value] = term else {
            return Err(invalid(format!(
                "`{filter}` is not a filter of the form field = \"value\" [AND field = \"value\" ...] (fields: {known})"
            )));
        };
        let value = match value {
            Token::Word(text) | Token::Quoted(text) => text.clone(),
            _ => return Err(invalid(format!("`{field} =` needs a value"))),
        };
        if !fields.contains(&field.as_str()) {
            return Err(invalid(format!(
                "`{field}` is not a field you can filter on (fields: {known})"
            )));
        }
        if terms.iter().any(|(seen, _)| seen == field) {
            return Err(invalid(format!("`{field}` appears more than once")));
        }
        terms.push((field.clone(), value));
    }
    Ok(terms)
}

/// Parses a ListFacts filter; the empty filter matches every fact.
pub fn parse_fact_filter(filter: &str) -> Result<FactQuery, ApiError> {
    let mut query = FactQuery::default();
    for (field, value) in parse_terms(filter, &["provider", "metric", "period", "status"])? {
        let parse_id = |prefix: &str| {
            let id = value.strip_prefix(prefix).unwrap_or(&value);
            ResourceId::parse(id).map_err(|err| invalid(format!("{field}: {err}")))
        };
        match field.as_str() {
            "provider" => query.provider = Some(parse_id("providers/")?),
            "metric" => query.metric = Some(parse_id("metrics/")?),
            "period" => {
                let text = value.strip_prefix("periods/").unwrap_or(&value);
                let period =
                    Quarter::parse(text).map_err(|err| invalid(format!("period: {err}")))?;
                query.period = Some(period);
            }
            _ => {
                let normalized = value
                    .trim_start_matches("FACT_STATUS_")
                    .to_ascii_lowercase()
                    .replace('_', "-");
                let status = FactStatus::parse(&normalized).ok_or_else(|| {
                    invalid(format!(
                        "status `{value}` is not one of reported, estimated, not-disclosed, derived"
                    ))
                })?;
                query.status = Some(status);
            }
        }
    }
    Ok(query)
}

/// Parses a ListSubscribers filter: `state = "confirmed"`, or empty for all.
pub fn parse_subscriber_filter(filter: &str) -> Result<Option<SubscriberState>, ApiError> {
    let terms = parse_terms(filter, &["state"])?;
    terms
        .first()
        .map(|(_, value)| {
            let normalized = value
                .trim_start_matches("SUBSCRIBER_STATE_")
                .to_ascii_lowercase();
            SubscriberState::parse(&normalized).ok_or_else(|| {
                invalid(format!(
                    "state `{value}` is not one of pending, confirmed, unsubscribed, bounced, complained"
                ))
            })
        })
        .transpose()
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
    fn reads_subscriber_states() {
        assert_eq!(parse_subscriber_filter("").unwrap(), None);
        assert_eq!(
            parse_subscriber_filter("state = \"confirmed\"").unwrap(),
            Some(SubscriberState::Confirmed)
        );
        assert!(parse_subscriber_filter("state = \"sleeping\"").is_err());
        assert!(parse_subscriber_filter("email = \"x\"").is_err());
    }

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
