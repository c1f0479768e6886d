//! The history pages. A metric's: its history across every loaded quarter, drawn as an
//! SVG chart rendered here (no JavaScript), with a text alternative stating the same
//! numbers, the figures as a table beside it, and every restatement listed as old → new.
//! A provider's: every metric across the quarters, and its restatements.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use minijinja::context;
use serde::Serialize;

use super::{WebState, message, page};
use crate::{
    catalog::{ReadSnapshot, summary::revision_sentence},
    domain::{FactKey, FactRevision, FactValue, Metric, Quarter, ResourceId, Unit, display_value},
};

/// The chart's drawing area, in SVG user units.
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;
/// How far in from the axes the first and last quarters stand.
const INSET: f64 = 40.0;
/// One colour and dash per provider, in order: each at least 3:1 against white (WCAG
/// 1.4.11), and told apart by the dash for readers who do not see the colours apart.
const STYLES: [(&str, &str); 4] = [
    ("#1a56b8", ""),
    ("#b35900", "8 4"),
    ("#2e7d32", "2 3"),
    ("#6a1b9a", "12 3 2 3"),
];

#[derive(Serialize)]
struct Point {
    x: f64,
    y: f64,
    label: String,
    restated: bool,
}

#[derive(Serialize)]
struct Series {
    provider: String,
    colour: &'static str,
    dash: &'static str,
    points: Vec<Point>,
    /// `x,y x,y …` for the polyline.
    line: String,
}

#[derive(Serialize)]
struct Tick {
    y: f64,
    label: String,
}

#[derive(Serialize)]
struct Axis {
    x: f64,
    label: String,
}

pub async fn metric_page(State(state): State<WebState>, Path(metric): Path<String>) -> Response {
    let snapshot = state.snapshot.load();
    let Some(metric) = ResourceId::parse(&metric)
        .ok()
        .and_then(|id| snapshot.metric(&id))
    else {
        return message(
            StatusCode::NOT_FOUND,
            "No such metric",
            "runrate has no metric of that name; the front page links every metric it has.",
        );
    };
    page(StatusCode::OK, "history.html", history(&snapshot, metric))
}

pub async fn provider_page(
    State(state): State<WebState>,
    Path(provider): Path<String>,
) -> Response {
    let snapshot = state.snapshot.load();
    let Some(provider) = ResourceId::parse(&provider)
        .ok()
        .and_then(|id| snapshot.provider(&id))
    else {
        return message(
            StatusCode::NOT_FOUND,
            "No such provider",
            "runrate has no provider of that name; the front page links every provider it has.",
        );
    };
    let periods = snapshot.periods();
    let mut metrics: Vec<&Metric> = snapshot.metrics().collect();
    metrics.sort_by_key(|metric| (metric.comparison_row.unwrap_or(u32::MAX), metric.id.clone()));
    let mut restatements = Vec::new();
    let rows: Vec<_> = metrics
        .iter()
        .filter_map(|metric| {
            let keys: Vec<FactKey> = periods
                .iter()
                .map(|period| FactKey {
                    provider: provider.id.clone(),
                    period: *period,
                    metric: metric.id.clone(),
                })
                .collect();
            let facts: Vec<_> = keys.iter().map(|key| snapshot.fact(key, None)).collect();
            if facts.iter().all(Option::is_none) {
                return None;
            }
            for key in &keys {
                restatements.extend(restatements_of(&snapshot, key));
            }
            let cells: Vec<String> = facts
                .iter()
                .map(|fact| fact.map_or("—".to_owned(), |f| display_value(&f.body)))
                .collect();
            Some(context! { id => metric.id.as_str(), name => metric.display_name.as_str(), cells => cells })
        })
        .collect();
    page(
        StatusCode::OK,
        "provider.html",
        context! {
            provider => context! {
                name => provider.display_name.as_str(),
                parent => provider.parent_company.as_str(),
            },
            periods => periods.iter().map(ToString::to_string).collect::<Vec<_>>(),
            rows => rows,
            restatements => restatements,
        },
    )
}

/// Each revision of a fact after its first, in words.
fn restatements_of<'a>(
    snapshot: &'a ReadSnapshot,
    key: &'a FactKey,
) -> impl Iterator<Item = String> + 'a {
    snapshot
        .revisions(key)
        .iter()
        .skip(1)
        .map(move |revision| restatement(snapshot, revision))
}

/// Everything the page shows of `metric`.
fn history(snapshot: &ReadSnapshot, metric: &Metric) -> minijinja::Value {
    let periods: Vec<Quarter> = snapshot.periods().to_vec();
    let providers: Vec<_> = snapshot.providers().collect();
    let current = |provider: &ResourceId, period: Quarter| {
        let key = FactKey {
            provider: provider.clone(),
            period,
            metric: metric.id.clone(),
        };
        snapshot.fact(&key, None)
    };
    let rows: Vec<_> = periods
        .iter()
        .map(|period| {
            let cells: Vec<String> = providers
                .iter()
                .map(|provider| {
                    current(&provider.id, *period)
                        .map_or("—".to_owned(), |f| display_value(&f.body))
                })
                .collect();
            context! { period => period.to_string(), cells => cells }
        })
        .collect();
    let mut restatements = Vec::new();
    for provider in &providers {
        for period in &periods {
            let key = FactKey {
                provider: provider.id.clone(),
                period: *period,
                metric: metric.id.clone(),
            };
            restatements.extend(restatements_of(snapshot, &key));
        }
    }
    let chart = chartable(&metric.unit).then(|| {
        let values: Vec<Vec<Option<(f64, &FactRevision)>>> = providers
            .iter()
            .map(|provider| {
                periods
                    .iter()
                    .map(|period| {
                        current(&provider.id, *period)
                            .and_then(|fact| Some((plotted(fact.body.value.as_ref()?)?, fact)))
                    })
                    .collect()
            })
            .collect();
        draw(metric, &periods, &providers, &values)
    });
    context! {
        metric => context! {
            id => metric.id.as_str(),
            name => metric.display_name.as_str(),
            description => metric.description.as_str(),
        },
        providers => providers.iter().map(|p| p.display_name.as_str()).collect::<Vec<_>>(),
        rows => rows,
        restatements => restatements,
        chart => chart,
    }
}

fn chartable(unit: &Unit) -> bool {
    matches!(unit, Unit::Currency(_) | Unit::Percent | Unit::Multiple)
}

/// A value's height on the chart; only for drawing (the labels are the exact values).
fn plotted(value: &FactValue) -> Option<f64> {
    match value {
        FactValue::Money(money) => Some(money.total_nanos() as f64 / 1e9),
        FactValue::Percent(decimal) | FactValue::Multiple(decimal) => {
            Some(decimal.mantissa() as f64 / 10f64.powi(decimal.scale() as i32))
        }
        FactValue::Text(_) | FactValue::TextList(_) => None,
    }
}

/// `AWS 2026-Q1 total cloud revenue restated from ~$29B to $29.3B (load 3, 2026-05-01).`:
/// the sentence the update email and feed give it, with the load that brought it.
fn restatement(snapshot: &ReadSnapshot, revision: &FactRevision) -> String {
    let sentence = revision_sentence(snapshot, revision);
    let day = snapshot
        .load_record(revision.load_id)
        .map_or(String::new(), |record| {
            format!(
                ", {}",
                &humantime::format_rfc3339_seconds(record.recorded_at).to_string()[..10]
            )
        });
    format!(
        "{} (load {}{day}).",
        sentence.trim_end_matches('.'),
        revision.load_id
    )
}

/// The chart: one line per provider across the periods, a point per figure (a ring
/// where it was restated), the y axis from zero, and the text alternative.
fn draw(
    metric: &Metric,
    periods: &[Quarter],
    providers: &[&crate::domain::Provider],
    values: &[Vec<Option<(f64, &FactRevision)>>],
) -> minijinja::Value {
    let top = values
        .iter()
        .flatten()
        .flatten()
        .map(|(value, _)| *value)
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { nice_ceiling(top) } else { 1.0 };
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    // The first and last quarters stand in from the axes, so their labels fit.
    let x = |index: usize| match periods.len() {
        0 | 1 => LEFT + plot_width / 2.0,
        count => LEFT + INSET + (plot_width - 2.0 * INSET) * index as f64 / (count - 1) as f64,
    };
    let y = |value: f64| TOP + plot_height * (1.0 - value.max(0.0) / top);
    let mut description = Vec::new();
    let series: Vec<Series> = providers
        .iter()
        .zip(values)
        .enumerate()
        .map(|(index, (provider, row))| {
            let (colour, dash) = STYLES[index % STYLES.len()];
            let points: Vec<Point> = row
                .iter()
                .enumerate()
                .filter_map(|(at, value)| {
                    let (value, fact) = (*value)?;
                    Some(Point {
                        x: round(x(at)),
                        y: round(y(value)),
                        label: format!("{} {}", periods[at], display_value(&fact.body)),
                        restated: fact.revision > 1,
                    })
                })
                .collect();
            let said: Vec<String> = points.iter().map(|point| point.label.clone()).collect();
            if !said.is_empty() {
                description.push(format!("{}: {}", provider.display_name, said.join(", ")));
            }
            let line = points
                .iter()
                .map(|point| format!("{},{}", point.x, point.y))
                .collect::<Vec<_>>()
                .join(" ");
            Series {
                provider: provider.display_name.clone(),
                colour,
                dash,
                points,
                line,
            }
        })
        .collect();
    let ticks: Vec<Tick> = (0..=4)
        .map(|step| {
            let value = top * f64::from(step) / 4.0;
            Tick {
                y: round(y(value)),
                label: tick_label(&metric.unit, value),
            }
        })
        .collect();
    let axis: Vec<Axis> = periods
        .iter()
        .enumerate()
        .map(|(index, period)| Axis {
            x: round(x(index)),
            label: period.to_string(),
        })
        .collect();
    let restated = series.iter().any(|s| s.points.iter().any(|p| p.restated));
    context! {
        width => WIDTH,
        height => HEIGHT,
        left => LEFT,
        right => WIDTH - RIGHT,
        bottom => HEIGHT - BOTTOM,
        series => series,
        ticks => ticks,
        axis => axis,
        restated => restated,
        description => format!(
            "{} by quarter. {}{}",
            metric.display_name,
            description.join(". "),
            if restated { ". A ring marks a restated figure." } else { "." }
        ),
    }
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * power)
        .find(|ceiling| *ceiling >= value)
        .unwrap_or(10.0 * power)
}

fn tick_label(unit: &Unit, value: f64) -> String {
    match unit {
        Unit::Currency(currency) => {
            let symbol = currency.symbol().unwrap_or("");
            match value {
                v if v >= 1e9 => format!("{symbol}{}B", trim(v / 1e9)),
                v if v >= 1e6 => format!("{symbol}{}M", trim(v / 1e6)),
                v => format!("{symbol}{}", trim(v)),
            }
        }
        Unit::Percent => format!("{}%", trim(value)),
        Unit::Multiple => format!("{}x", trim(value)),
        Unit::Text | Unit::TextList => String::new(),
    }
}

/// A tick's number with at most one decimal, none when whole.
fn trim(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").unwrap_or(&text).to_owned()
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_ends_at_a_round_number_at_or_above_the_largest_value() {
        assert_eq!(nice_ceiling(31.5e9), 50e9);
        assert_eq!(nice_ceiling(22.0), 25.0);
        assert_eq!(nice_ceiling(9.1e9), 10e9);
        assert_eq!(nice_ceiling(2.0), 2.0);
    }

    #[test]
    fn ticks_are_labelled_in_the_metric_s_unit() {
        let usd = Unit::Currency(crate::domain::CurrencyCode::parse("USD").unwrap());
        assert_eq!(tick_label(&usd, 12.5e9), "$12.5B");
        assert_eq!(tick_label(&usd, 0.0), "$0");
        assert_eq!(tick_label(&Unit::Percent, 25.0), "25%");
        assert_eq!(tick_label(&Unit::Multiple, 2.0), "2x");
    }
}
