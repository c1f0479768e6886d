//! Derived figures, computed on read from the facts a snapshot holds: the change of a
//! money metric on the previous quarter and on the same quarter a year earlier, and each
//! provider's share of the providers' total. They are computed with integer arithmetic on
//! exact amounts, marked derived, name their inputs, and live under their own ids
//! (`cloud-revenue-yoy`), so they never replace a reported figure (such as the reported
//! `yoy-growth`).

use std::time::SystemTime;

use crate::domain::Named;
pub use crate::domain::{Derivation, is_reserved_metric_id};
use crate::{
    catalog::ReadSnapshot,
    domain::{
        Decimal, FactBody, FactKey, FactRevision, FactStatus, FactValue, LoadId, MetricKind,
        ResourceId, Source,
    },
};

/// Digits after the point of a derived percentage.
const PERCENT_SCALE: u32 = 2;

/// A computed figure: a fact-shaped value, with what it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct DerivedFact {
    /// The derived fact's key: its metric id is the input metric's id plus the suffix.
    pub key: FactKey,
    pub base_metric: ResourceId,
    pub derivation: Derivation,
    pub body: FactBody,
    /// The facts it was computed from.
    pub inputs: Vec<FactKey>,
    /// The newest load among the inputs, and when it was recorded.
    pub load_id: LoadId,
    pub recorded_at: SystemTime,
}

/// Splits a derived metric id into the input metric and the derivation.
pub fn parse_derived_metric(id: &ResourceId) -> Option<(ResourceId, Derivation)> {
    Derivation::all().find_map(|derivation| {
        let base = id.as_str().strip_suffix(derivation.suffix())?;
        Some((ResourceId::parse(base).ok()?, derivation))
    })
}

fn is_derivable(snapshot: &ReadSnapshot, metric: &ResourceId) -> bool {
    snapshot.metric(metric).is_some_and(|m| {
        matches!(
            m.kind,
            MetricKind::QuarterlyTotal | MetricKind::RunRate | MetricKind::AnnualTotal
        )
    })
}

/// The derived fact a key names, if its inputs exist at `read_time`.
pub fn derive(
    snapshot: &ReadSnapshot,
    key: &FactKey,
    read_time: Option<SystemTime>,
) -> Option<DerivedFact> {
    let (base_metric, derivation) = parse_derived_metric(&key.metric)?;
    if !is_derivable(snapshot, &base_metric) {
        return None;
    }
    let input = |provider: &ResourceId, period| {
        let input_key = FactKey {
            provider: provider.clone(),
            period,
            metric: base_metric.clone(),
        };
        snapshot
            .fact(&input_key, read_time)
            .filter(|fact| amount_nanos(fact).is_some())
    };
    let current = input(&key.provider, key.period)?;
    let (value, inputs) = match derivation {
        Derivation::QuarterOnQuarter | Derivation::YearOnYear => {
            let earlier_period = if derivation == Derivation::QuarterOnQuarter {
                key.period.previous()?
            } else {
                key.period.year_earlier()?
            };
            let earlier = input(&key.provider, earlier_period)?;
            let change = percent_change(amount_nanos(earlier)?, amount_nanos(current)?)?;
            (change, vec![earlier, current])
        }
        Derivation::ShareOfTotal => {
            let all: Vec<&FactRevision> = snapshot
                .providers()
                .filter_map(|provider| input(&provider.id, key.period))
                .collect();
            let total: i128 = all.iter().filter_map(|fact| amount_nanos(fact)).sum();
            let share = percent_of(amount_nanos(current)?, total)?;
            (share, all)
        }
    };
    Some(derived_fact(
        key.clone(),
        base_metric,
        derivation,
        value,
        &inputs,
    ))
}

/// The derived facts of each money fact in `stored`, as known at `read_time`.
pub fn derive_all(
    snapshot: &ReadSnapshot,
    stored: &[&FactRevision],
    read_time: Option<SystemTime>,
) -> Vec<DerivedFact> {
    stored
        .iter()
        .filter(|fact| is_derivable(snapshot, &fact.key.metric))
        .flat_map(|fact| {
            Derivation::all().filter_map(move |derivation| {
                let suffix = derivation.suffix();
                let metric = ResourceId::parse(&format!("{}{suffix}", fact.key.metric)).ok()?;
                let key = FactKey {
                    metric,
                    ..fact.key.clone()
                };
                derive(snapshot, &key, read_time)
            })
        })
        .collect()
}

fn amount_nanos(fact: &FactRevision) -> Option<i128> {
    match &fact.body.value {
        Some(FactValue::Money(money)) => Some(money.total_nanos()),
        _ => None,
    }
}

/// `numerator / denominator`, rounded half away from zero to the nearest integer.
fn divide_rounded(numerator: i128, denominator: i128) -> Option<i128> {
    if denominator == 0 {
        return None;
    }
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    let round_away = remainder.checked_abs()?.checked_mul(2)? >= denominator.checked_abs()?;
    let away = if (numerator < 0) != (denominator < 0) {
        -1
    } else {
        1
    };
    Some(if round_away {
        quotient + away
    } else {
        quotient
    })
}

/// Percent change from `earlier` to `later`, to two decimal places.
fn percent_change(earlier: i128, later: i128) -> Option<Decimal> {
    let scale = 100 * 10i128.pow(PERCENT_SCALE);
    let mantissa = divide_rounded(later.checked_sub(earlier)?.checked_mul(scale)?, earlier)?;
    Some(Decimal::new(mantissa, PERCENT_SCALE))
}

/// `part` as a percent of `total`, to two decimal places.
fn percent_of(part: i128, total: i128) -> Option<Decimal> {
    let scale = 100 * 10i128.pow(PERCENT_SCALE);
    let mantissa = divide_rounded(part.checked_mul(scale)?, total)?;
    Some(Decimal::new(mantissa, PERCENT_SCALE))
}

fn derived_fact(
    key: FactKey,
    base_metric: ResourceId,
    derivation: Derivation,
    value: Decimal,
    inputs: &[&FactRevision],
) -> DerivedFact {
    // A figure computed from approximate, estimated or bounded inputs is approximate.
    let approximate = inputs.iter().any(|fact| {
        let body = &fact.body;
        body.approximate
            || body.lower_bound
            || body.upper_bound
            || body.status == FactStatus::Estimated
    });
    let mut sources: Vec<Source> = Vec::new();
    for source in inputs.iter().flat_map(|fact| &fact.body.sources) {
        if !sources.contains(source) {
            sources.push(source.clone());
        }
    }
    let newest = inputs.iter().max_by_key(|fact| fact.load_id);
    DerivedFact {
        key,
        base_metric,
        derivation,
        body: FactBody {
            status: FactStatus::Derived,
            value: Some(FactValue::Percent(value)),
            approximate,
            lower_bound: false,
            upper_bound: false,
            precision: Some(PERCENT_SCALE as i32),
            estimated_by: None,
            quote: None,
            note: None,
            sources,
        },
        inputs: inputs.iter().map(|fact| fact.key.clone()).collect(),
        load_id: newest.map_or(0, |fact| fact.load_id),
        recorded_at: newest.map_or(SystemTime::UNIX_EPOCH, |fact| fact.recorded_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_changes_are_exact_then_rounded_once() {
        let b = 1_000_000_000i128;
        // 29B -> 31.5B is +8.6206896...%
        let change = percent_change(29 * b, 31 * b + b / 2).unwrap();
        assert_eq!(change.to_string(), "8.62");
        let fall = percent_change(8 * b, 7 * b).unwrap();
        assert_eq!(fall.to_string(), "-12.50");
        assert_eq!(percent_change(0, b), None);
    }

    #[test]
    fn shares_round_half_away_from_zero() {
        assert_eq!(percent_of(1, 8).unwrap().to_string(), "12.50");
        assert_eq!(percent_of(1, 3).unwrap().to_string(), "33.33");
        assert_eq!(percent_of(2, 3).unwrap().to_string(), "66.67");
    }

    #[test]
    fn derived_ids_split_into_metric_and_derivation() {
        let id = ResourceId::parse("cloud-revenue-yoy").unwrap();
        let (base, derivation) = parse_derived_metric(&id).unwrap();
        assert_eq!(base.as_str(), "cloud-revenue");
        assert_eq!(derivation, Derivation::YearOnYear);
        assert!(is_reserved_metric_id("x-share"));
        assert!(!is_reserved_metric_id("yoy-growth"));
    }
}
