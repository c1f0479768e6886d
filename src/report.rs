//! The comparison table as the `runrate report` command prints it: aligned text the way
//! the article shows it, or JSON for scripts.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::grpc::pb::runrate::v1::{self as api, fact};

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

/// `text` safe to write to a terminal: control characters (ESC, NUL, CR, BEL, newlines)
/// escaped as `\u{1b}` and the like, so that text that came from elsewhere cannot move
/// the cursor, clear the screen or forge lines of output.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// Columns padded to their widest cell, with a rule under the header; every cell printable.
pub fn render_aligned(header: &[String], rows: &[Vec<String>]) -> String {
    let escape = |line: &[String]| -> Vec<String> {
        line.iter()
            .map(|text| printable(text).into_owned())
            .collect()
    };
    let escaped: Vec<Vec<String>> = std::iter::once(escape(header))
        .chain(rows.iter().map(|row| escape(row)))
        .collect();
    let lines: Vec<&[String]> = escaped.iter().map(Vec::as_slice).collect();
    let columns = lines.iter().map(|line| line.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            lines
                .iter()
                .filter_map(|line| line.get(column))
                .map(|text| text.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (index, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if index == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}

/// "AWS (Amazon)", as the article heads its columns.
pub fn column_title(display_name: &str, parent_company: &str) -> String {
    if parent_company.is_empty() || parent_company == display_name {
        display_name.to_owned()
    } else {
        format!("{display_name} ({parent_company})")
    }
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
        "note": fact.note,
        "sources": fact.sources.iter().map(|s| s.title.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(printable("~$29B"), "~$29B");
        assert_eq!(
            printable("Evil\u{1b}[2J\r\u{7}\0 Corp"),
            "Evil\\u{1b}[2J\\r\\u{7}\\u{0} Corp"
        );
        let table = render_aligned(&["A\u{1b}]0;x".to_owned()], &[vec!["b\nc".to_owned()]]);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(table.lines().count(), 3, "{table:?}");
    }
}
