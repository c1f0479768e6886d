//! Every template runrate renders — web pages and emails — kept beside this file and
//! compiled into the binary, plus the comparison table they share.

use std::{sync::OnceLock, time::SystemTime};

use minijinja::Environment;
use serde::Serialize;

use crate::{
    catalog::{ReadSnapshot, summary::sentence_case},
    domain::{FactRevision, FactStatus, LoadId, Quarter, Source, display_value},
    text_table::{column_title, render_aligned},
};

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("layout.html")),
    (
        "comparison_table.html",
        include_str!("comparison_table.html"),
    ),
    ("signup.html", include_str!("signup.html")),
    ("message.html", include_str!("message.html")),
    ("confirm.html", include_str!("confirm.html")),
    ("unsubscribe.html", include_str!("unsubscribe.html")),
    ("privacy.html", include_str!("privacy.html")),
    ("history.html", include_str!("history.html")),
    ("restatements.html", include_str!("restatements.html")),
    ("provider.html", include_str!("provider.html")),
    (
        "confirmation_email.txt",
        include_str!("confirmation_email.txt"),
    ),
    (
        "confirmation_email.html",
        include_str!("confirmation_email.html"),
    ),
    ("update_email.txt", include_str!("update_email.txt")),
    ("update_email.html", include_str!("update_email.html")),
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
    /// The metric's id, for a link to its history.
    pub metric: String,
    pub label: String,
    pub cells: Vec<String>,
}

/// The provider comparison of one period, as the article shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComparisonTable {
    pub title: String,
    pub columns: Vec<String>,
    /// The providers' ids, column by column, for links to their pages.
    pub providers: Vec<String>,
    pub rows: Vec<TableRow>,
    /// Where the figures come from and what the table's marks mean, for the web page.
    pub provenance: Provenance,
}

/// What a reader needs to trust a table: when its figures were recorded, each source
/// with the figures it is cited for, and a footnote for every figure that is not a plain
/// reported value.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Provenance {
    /// The day the newest figure in the table was recorded (UTC), `YYYY-MM-DD`.
    pub as_of: String,
    pub sources: Vec<SourceNote>,
    /// A sentence per estimate (whose), per bound (what the source wrote), and one naming
    /// the figures that are not disclosed.
    pub footnotes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceNote {
    pub title: String,
    pub publisher: Option<String>,
    pub date: Option<String>,
    /// A link, when the source gives one as a URL.
    pub url: Option<String>,
    /// Where in the source the figures stand, when it says so in words.
    pub locator: Option<String>,
    /// The figures citing it (`AWS AI run rate`), or `every figure`.
    pub cited_for: String,
}

impl Provenance {
    fn of(cells: &[(String, String, &FactRevision)]) -> Provenance {
        let as_of = cells
            .iter()
            .map(|(_, _, fact)| fact.recorded_at)
            .max()
            .map(|at| humantime::format_rfc3339_seconds(at).to_string()[..10].to_owned())
            .unwrap_or_default();
        let mut sources: Vec<(&Source, Vec<String>)> = Vec::new();
        let mut footnotes = Vec::new();
        let mut undisclosed = Vec::new();
        for (provider, metric, fact) in cells {
            let figure = format!("{provider} {metric}");
            for source in &fact.body.sources {
                match sources.iter_mut().find(|(known, _)| *known == source) {
                    Some((_, figures)) => figures.push(figure.clone()),
                    None => sources.push((source, vec![figure.clone()])),
                }
            }
            let body = &fact.body;
            let shown = display_value(body);
            if body.status == FactStatus::Estimated {
                let by = body.estimated_by.as_deref().unwrap_or("an unnamed source");
                footnotes.push(format!(
                    "{figure} ({shown}) is an estimate by {by}, not a reported figure."
                ));
            }
            if body.status == FactStatus::NotDisclosed {
                undisclosed.push(figure.clone());
            }
            let bound = if body.lower_bound {
                Some(("a lower bound", "at least"))
            } else if body.upper_bound {
                Some(("an upper bound", "at most"))
            } else {
                None
            };
            if let Some((kind, limit)) = bound {
                let words = match &body.quote {
                    Some(quote) => format!("the source wrote \u{201c}{quote}\u{201d}"),
                    None => format!("the source gives only that it is {limit} this"),
                };
                footnotes.push(format!("{figure} ({shown}) is {kind}: {words}."));
            }
        }
        if !undisclosed.is_empty() {
            let by = if undisclosed.len() == 1 {
                "the company"
            } else {
                "the companies"
            };
            footnotes.push(format!(
                "Not disclosed by {by}: {}.",
                undisclosed.join(", ")
            ));
        }
        let sources = sources
            .into_iter()
            .map(|(source, figures)| {
                let uri = source.uri.clone();
                let is_link = uri
                    .as_deref()
                    .is_some_and(|uri| uri.starts_with("https://") || uri.starts_with("http://"));
                SourceNote {
                    title: source.title.clone(),
                    publisher: source.publisher.clone(),
                    date: source.date.map(|date| date.to_string()),
                    url: uri.clone().filter(|_| is_link),
                    locator: uri.filter(|_| !is_link),
                    cited_for: if figures.len() == cells.len() {
                        "every figure".to_owned()
                    } else {
                        figures.join(", ")
                    },
                }
            })
            .collect();
        Provenance {
            as_of,
            sources,
            footnotes,
        }
    }
}

impl ComparisonTable {
    /// The comparison for `period` as known at `read_time` (now when `None`).
    pub fn build(snapshot: &ReadSnapshot, period: Quarter, read_time: Option<SystemTime>) -> Self {
        let comparison = snapshot.comparison(period, read_time);
        let mut cells = Vec::new();
        for (metric, facts) in &comparison.rows {
            for (provider, fact) in comparison.providers.iter().zip(facts) {
                if let Some(fact) = fact {
                    let label = sentence_case(&metric.display_name);
                    cells.push((provider.display_name.clone(), label, *fact));
                }
            }
        }
        ComparisonTable {
            provenance: Provenance::of(&cells),
            title: format!("The AI business of the cloud hyperscalers, {period}"),
            columns: comparison
                .providers
                .iter()
                .map(|p| column_title(&p.display_name, &p.parent_company))
                .collect(),
            providers: comparison
                .providers
                .iter()
                .map(|p| p.id.as_str().to_owned())
                .collect(),
            rows: comparison
                .rows
                .iter()
                .map(|(metric, cells)| TableRow {
                    metric: metric.id.as_str().to_owned(),
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
