//! Every template runrate renders — web pages and emails — kept in `src/templates/` and
//! compiled into the binary, plus the comparison table they share.

use std::{sync::OnceLock, time::SystemTime};

use minijinja::Environment;
use serde::Serialize;

use crate::{
    catalog::ReadSnapshot,
    domain::{LoadId, Quarter, display_value},
    text_table::{column_title, render_aligned},
};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    (
        "comparison_table.html",
        include_str!("templates/comparison_table.html"),
    ),
    ("signup.html", include_str!("templates/signup.html")),
    ("message.html", include_str!("templates/message.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    (
        "unsubscribe.html",
        include_str!("templates/unsubscribe.html"),
    ),
    ("privacy.html", include_str!("templates/privacy.html")),
    (
        "confirmation_email.txt",
        include_str!("templates/confirmation_email.txt"),
    ),
    (
        "confirmation_email.html",
        include_str!("templates/confirmation_email.html"),
    ),
    (
        "update_email.txt",
        include_str!("templates/update_email.txt"),
    ),
    (
        "update_email.html",
        include_str!("templates/update_email.html"),
    ),
];

/// The shared template environment; `.html` templates escape their values.
pub fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut environment = Environment::new();
        environment.add_filter("wrap", wrap);
        for (name, source) in TEMPLATES {
            if let Err(err) = environment.add_template(name, source) {
                // The templates are part of the binary; a test renders each of them.
                tracing::error!(template = name, %err, "a built-in template does not compile");
            }
        }
        environment
    })
}

/// Columns of plain-text email, as RFC 5322 recommends.
pub const TEXT_WIDTH: usize = 78;

/// A paragraph of plain text folded to [`TEXT_WIDTH`], its later lines indented by
/// `indent` (two spaces unless given), as in `{{ line|wrap }}` or `{{ line|wrap("") }}`.
fn wrap(text: String, indent: Option<String>) -> String {
    let indent = indent.unwrap_or_else(|| "  ".to_owned());
    let options = textwrap::Options::new(TEXT_WIDTH)
        .subsequent_indent(&indent)
        .break_words(false);
    textwrap::fill(&text, options)
}

/// Renders a built-in template.
pub fn render(name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
    environment().get_template(name)?.render(context)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableRow {
    pub label: String,
    pub cells: Vec<String>,
}

/// The provider comparison of one period, as the article shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComparisonTable {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<TableRow>,
}

impl ComparisonTable {
    /// The comparison for `period` as known at `read_time` (now when `None`).
    pub fn build(snapshot: &ReadSnapshot, period: Quarter, read_time: Option<SystemTime>) -> Self {
        let comparison = snapshot.comparison(period, read_time);
        ComparisonTable {
            title: format!("The AI business of the cloud hyperscalers, {period}"),
            columns: comparison
                .providers
                .iter()
                .map(|p| column_title(&p.display_name, &p.parent_company))
                .collect(),
            rows: comparison
                .rows
                .iter()
                .map(|(metric, cells)| TableRow {
                    label: metric.display_name.clone(),
                    cells: cells
                        .iter()
                        .map(|cell| {
                            cell.map_or_else(|| "n/a".to_owned(), |f| display_value(&f.body))
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The latest period's comparison, if anything is loaded.
    pub fn latest(snapshot: &ReadSnapshot) -> Option<Self> {
        Some(Self::build(snapshot, snapshot.latest_period()?, None))
    }

    /// The period a load is about: the latest period among the facts it changed.
    pub fn for_load(snapshot: &ReadSnapshot, load: LoadId) -> Option<Self> {
        let record = snapshot.load_record(load)?;
        let period = snapshot.load_changes(load).map(|f| f.key.period).max()?;
        Some(Self::build(snapshot, period, Some(record.recorded_at)))
    }

    /// Aligned plain text, for text emails and terminals.
    pub fn to_text(&self) -> String {
        let mut header = vec!["Metric".to_owned()];
        header.extend(self.columns.iter().cloned());
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let mut line = vec![row.label.clone()];
                line.extend(row.cells.iter().cloned());
                line
            })
            .collect();
        format!("{}\n\n{}", self.title, render_aligned(&header, &rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(environment().get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn wrapped_text_stays_within_the_width_and_keeps_urls_whole() {
        let url = format!("https://runrate.example.com/{}", "x".repeat(90));
        let text = format!("{} {url} end", "word ".repeat(40));
        let wrapped = wrap(text, None);
        for line in wrapped.lines().filter(|line| !line.contains(&url)) {
            assert!(line.len() <= TEXT_WIDTH, "{line:?}");
        }
        assert!(wrapped.lines().any(|line| line.trim() == url), "{wrapped}");
        assert!(wrapped.lines().skip(1).all(|line| line.starts_with("  ")));
    }

    #[test]
    fn html_templates_escape_values() {
        let html = render(
            "message.html",
            minijinja::context! { heading => "<script>", message => "a & b", kind => "notice" },
        )
        .unwrap();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("a &amp; b"), "{html}");
    }
}
