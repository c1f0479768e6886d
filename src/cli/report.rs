//! The comparison table as the `runrate report` command prints it: aligned text the way
//! the article shows it, or JSON for scripts.

use serde_json::{Value, json};

use crate::{
    grpc::pb::runrate::v1::{self as api, fact},
    text_table::{column_title, render_aligned},
};

/// The comparison as an aligned text table, one row per metric, one column per provider.
pub fn render_table(comparison: &api::CompareProvidersResponse) -> String {
    let period = comparison
        .period
        .as_ref()
        .map_or("", |p| p.display_name.as_str());
    let mut header = vec![format!("Metric ({period})")];
    header.extend(
        comparison
            .providers
            .iter()
            .map(|p| column_title(&p.display_name, &p.parent_company)),
    );
    let rows: Vec<Vec<String>> = comparison
        .rows
        .iter()
        .map(|row| {
            let mut line = vec![
                row.metric
                    .as_ref()
                    .map_or_else(String::new, |m| m.display_name.clone()),
            ];
            line.extend(row.cells.iter().map(|cell| cell.display_value.clone()));
            line
        })
        .collect();
    render_aligned(&header, &rows)
}

/// The comparison as JSON: every cell with its value, status and qualifiers.
pub fn render_json(comparison: &api::CompareProvidersResponse) -> Value {
    let providers: Vec<Value> = comparison
        .providers
        .iter()
        .map(|p| json!({"name": p.name, "display_name": p.display_name, "parent_company": p.parent_company}))
        .collect();
    let rows: Vec<Value> = comparison
        .rows
        .iter()
        .map(|row| {
            let metric = row.metric.as_ref();
            let cells: Vec<Value> = row.cells.iter().map(cell_json).collect();
            json!({
                "metric": metric.map(|m| m.name.as_str()),
                "display_name": metric.map(|m| m.display_name.as_str()),
                "unit": metric.map(|m| m.unit.as_str()),
                "cells": cells,
            })
        })
        .collect();
    json!({
        "period": comparison.period.as_ref().map(|p| p.display_name.as_str()),
        "providers": providers,
        "rows": rows,
    })
}

fn cell_json(cell: &api::ComparisonCell) -> Value {
    let Some(fact) = &cell.fact else {
        return json!({"provider": cell.provider, "display": cell.display_value, "fact": null});
    };
    let value = match &fact.value {
        None => Value::Null,
        Some(fact::Value::MoneyValue(money)) => json!({
            "currency_code": money.currency_code,
            "units": money.units.to_string(),
            "nanos": money.nanos,
        }),
        Some(fact::Value::DecimalValue(decimal)) => json!(decimal),
        Some(fact::Value::TextValue(text)) => json!(text),
        Some(fact::Value::TextListValue(list)) => json!(list.values),
    };
    let status = api::FactStatus::try_from(fact.status)
        .map(|s| s.as_str_name())
        .unwrap_or("FACT_STATUS_UNSPECIFIED");
    json!({
        "provider": cell.provider,
        "display": cell.display_value,
        "fact": fact.name,
        "status": status,
        "value": value,
        "approximate": fact.approximate,
        "lower_bound": fact.lower_bound,
        "upper_bound": fact.upper_bound,
        "estimated_by": fact.estimated_by,
        "quote": fact.quote,
        "note": fact.note,
        "sources": fact.sources.iter().map(|s| s.title.as_str()).collect::<Vec<_>>(),
    })
}
