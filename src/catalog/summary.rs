//! What a load brought, in words for its update email and its feed entry: the period and providers of the
//! new figures, the headline amounts with their change on the previous quarter and the
//! same quarter a year earlier, and each revision as old → new with its reason.

use serde::Serialize;

use crate::{
    catalog::{ReadSnapshot, derived::derive},
    domain::{
        Decimal, Derivation, FactKey, FactRevision, FactStatus, FactValue, LoadId, Named, Quarter,
        ResourceId, RevisionReason, display_value,
    },
    text_table::column_title,
};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpdateSummary {
    pub subject: String,
    /// The first sentence: what kind of news this is.
    pub lead: String,
    /// The new amounts, one sentence each, with their changes.
    pub headlines: Vec<String>,
    /// Each revision as a sentence: what changed, from what to what, and why.
    pub revisions: Vec<String>,
    /// Every figure of the period, provider by provider (for narrow plain text).
    pub providers: Vec<ProviderFigures>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProviderFigures {
    pub title: String,
    pub figures: Vec<(String, String)>,
}

impl UpdateSummary {
    /// The summary of a load, as known when it was recorded; `None` when it changed no
    /// figure.
    pub fn of_load(snapshot: &ReadSnapshot, load: LoadId) -> Option<UpdateSummary> {
        let recorded_at = snapshot.load_record(load)?.recorded_at;
        let changes: Vec<&FactRevision> = snapshot.load_changes(load).collect();
        let (new, revised): (Vec<&FactRevision>, Vec<&FactRevision>) =
            changes.iter().partition(|change| change.revision == 1);
        let period = changes.iter().map(|change| change.key.period).max()?;

        let revisions: Vec<String> = revised
            .iter()
            .map(|change| revision_sentence(snapshot, change))
            .collect();
        let mut new_in_period: Vec<&FactRevision> = new
            .iter()
            .copied()
            .filter(|fact| fact.key.period == period)
            .collect();
        // Provider by provider, in the comparison table's order of metrics.
        new_in_period.sort_by_key(|fact| {
            let row = snapshot
                .metric(&fact.key.metric)
                .and_then(|metric| metric.comparison_row);
            (
                fact.key.provider.clone(),
                row.unwrap_or(u32::MAX),
                fact.key.metric.clone(),
            )
        });
        let headlines = new_in_period
            .iter()
            .filter(|fact| matches!(fact.body.value, Some(FactValue::Money(_))))
            .map(|fact| {
                let mut sentence = format!(
                    "{}: {}",
                    fact_label(snapshot, &fact.key, false),
                    display_value(&fact.body)
                );
                for derivation in [Derivation::QuarterOnQuarter, Derivation::YearOnYear] {
                    if let Some(change) = change_on(snapshot, fact, derivation, recorded_at) {
                        sentence.push_str(&format!(", {change}"));
                    }
                }
                sentence.push('.');
                sentence
            })
            .collect();

        let mut providers_with_news: Vec<String> = Vec::new();
        for fact in &new_in_period {
            let name = provider_name(snapshot, &fact.key);
            if !providers_with_news.contains(&name) {
                providers_with_news.push(name);
            }
        }
        let (subject, lead) = if providers_with_news.is_empty() {
            let subject = match revisions.as_slice() {
                [only] => format!("runrate: {}", only.trim_end_matches('.')),
                _ => format!("runrate: {} figures revised for {period}", revisions.len()),
            };
            let lead = match revisions.len() {
                1 => "A figure runrate published before was revised.".to_owned(),
                count => format!("{count} figures runrate published before were revised."),
            };
            (subject, lead)
        } else {
            let names = in_words_list(&providers_with_news);
            let mut subject = format!("runrate: {period} figures for {names}");
            match revisions.len() {
                0 => {}
                1 => subject.push_str(", and a revision"),
                count => subject.push_str(&format!(", and {count} revisions")),
            }
            (subject, format!("New {period} figures for {names}."))
        };

        Some(UpdateSummary {
            subject,
            lead,
            headlines,
            revisions,
            providers: figures_by_provider(snapshot, period, recorded_at),
        })
    }
}

/// "AWS cloud revenue", or with the period, "AWS 2026-Q1 cloud revenue".
fn fact_label(snapshot: &ReadSnapshot, key: &FactKey, with_period: bool) -> String {
    let metric = snapshot.metric(&key.metric).map_or_else(
        || key.metric.to_string(),
        |m| sentence_case(&m.display_name),
    );
    let provider = provider_name(snapshot, key);
    if with_period {
        format!("{provider} {} {metric}", key.period)
    } else {
        format!("{provider} {metric}")
    }
}

fn provider_name(snapshot: &ReadSnapshot, key: &FactKey) -> String {
    snapshot
        .provider(&key.provider)
        .map_or_else(|| key.provider.to_string(), |p| p.display_name.clone())
}

/// A display name inside a sentence: "Cloud revenue" → "cloud revenue", but "AI revenue
/// run rate" keeps its acronym.
pub fn sentence_case(name: &str) -> String {
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(name.chars().skip(1)).collect()
        }
        _ => name.to_owned(),
    }
}

/// "AWS", "AWS and Azure", "AWS, Azure and Google Cloud".
fn in_words_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [only] => only.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// "up 6.9% on 2026-Q1", from the derived change, when the earlier figure is known.
fn change_on(
    snapshot: &ReadSnapshot,
    fact: &FactRevision,
    derivation: Derivation,
    recorded_at: std::time::SystemTime,
) -> Option<String> {
    let key = FactKey {
        metric: ResourceId::parse(&format!("{}{}", fact.key.metric, derivation.suffix())).ok()?,
        ..fact.key.clone()
    };
    let derived = derive(snapshot, &key, Some(recorded_at))?;
    let Some(FactValue::Percent(percent)) = derived.body.value else {
        return None;
    };
    let earlier: Quarter = match derivation {
        Derivation::YearOnYear => fact.key.period.year_earlier()?,
        _ => fact.key.period.previous()?,
    };
    // One decimal is as precise as a reader needs: 8.62% → 8.6%.
    let hundredths = percent.mantissa_at_scale(2)?;
    let tenths = (hundredths + hundredths.signum() * 5) / 10;
    let percent = Decimal::new(tenths, 1).normalized();
    let magnitude = percent.to_string().trim_start_matches('-').to_owned();
    Some(if percent.mantissa() == 0 {
        format!("unchanged on {earlier}")
    } else if percent.is_negative() {
        format!("down {magnitude}% on {earlier}")
    } else {
        format!("up {magnitude}% on {earlier}")
    })
}

/// "AWS 2026-Q1 cloud revenue restated from ~$29B to $29.3B."
pub fn revision_sentence(snapshot: &ReadSnapshot, change: &FactRevision) -> String {
    let label = fact_label(snapshot, &change.key, true);
    let before = snapshot
        .revisions(&change.key)
        .iter()
        .find(|r| r.revision == change.revision - 1);
    let after = display_value(&change.body);
    let Some(before) = before else {
        return format!("{label} revised to {after}.");
    };
    let before_text = display_value(&before.body);
    if before_text == after {
        // Only what the value rests on changed: its sources, quote or precision.
        let reason = change.reason.map_or("revised".to_owned(), |reason| {
            reason.as_str().replace('-', " ")
        });
        return format!("{label} {after}: its sources or wording {reason}, the value unchanged.");
    }
    match change.reason {
        Some(RevisionReason::EstimateReplaced) => {
            let estimate = if before.body.status == FactStatus::Estimated {
                before_text.trim_end_matches(" (est.)").to_owned()
            } else {
                before_text
            };
            format!("{label} reported as {after}, replacing the estimate of {estimate}.")
        }
        Some(reason) => format!(
            "{label} {} from {before_text} to {after}.",
            reason.as_str().replace('-', " ")
        ),
        None => format!("{label} revised from {before_text} to {after}."),
    }
}

/// Each provider's figures of `period`, as known at `read_time`, in the comparison's order.
fn figures_by_provider(
    snapshot: &ReadSnapshot,
    period: Quarter,
    read_time: std::time::SystemTime,
) -> Vec<ProviderFigures> {
    let comparison = snapshot.comparison(period, Some(read_time));
    comparison
        .providers
        .iter()
        .enumerate()
        .map(|(column, provider)| ProviderFigures {
            title: column_title(&provider.display_name, &provider.parent_company),
            figures: comparison
                .rows
                .iter()
                .map(|(metric, cells)| {
                    let value = cells[column]
                        .map_or_else(|| "n/a".to_owned(), |fact| display_value(&fact.body));
                    (metric.display_name.clone(), value)
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_a_sentence() {
        assert_eq!(sentence_case("Cloud revenue"), "cloud revenue");
        assert_eq!(sentence_case("AI revenue run rate"), "AI revenue run rate");
        let names =
            |list: &[&str]| in_words_list(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(names(&["AWS"]), "AWS");
        assert_eq!(names(&["AWS", "Azure"]), "AWS and Azure");
        assert_eq!(
            names(&["AWS", "Azure", "Google Cloud"]),
            "AWS, Azure and Google Cloud"
        );
    }
}
