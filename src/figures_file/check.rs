//! Checking a parsed figures file against the format's rules and the definitions already
//! loaded: every error found, each with its line and the fact it is about, and nothing
//! half-accepted.

// The file's raw shape and its checked types are the parent's.
use super::*;

pub(super) struct Checker<'a> {
    pub(super) file_name: &'a str,
    pub(super) text: &'a str,
    pub(super) line_starts: LineStarts,
    pub(super) known: &'a dyn KnownDefinitions,
    pub(super) errors: Vec<FileError>,
}

/// Percentages outside this range are taken for typing mistakes.
const PERCENT_RANGE: (i64, i64) = (-100, 10_000);
/// Multiples outside (0, this] are taken for typing mistakes.
const MAX_MULTIPLE: i64 = 1_000;

impl Checker<'_> {
    fn error(&mut self, span: &Range<usize>, subject: Option<String>, message: String) {
        self.errors.push(FileError {
            file: self.file_name.to_owned(),
            line: Some(self.line_starts.line_of(span.start)),
            subject,
            message,
        });
    }

    pub(super) fn check(&mut self, raw: RawFile) -> FiguresFile {
        if *raw.format_version.get_ref() != FORMAT_VERSION {
            self.error(
                &raw.format_version.span(),
                None,
                format!(
                    "format_version {} is not supported (this build reads version {FORMAT_VERSION})",
                    raw.format_version.get_ref()
                ),
            );
        }
        let sources = self.check_sources(raw.sources);
        let providers = self.check_providers(raw.providers);
        let metrics = self.check_metrics(raw.metrics);
        let facts = self.check_facts(raw.facts, &sources, &providers, &metrics);
        FiguresFile {
            file_name: String::new(),
            content_sha256: String::new(),
            providers,
            metrics,
            facts,
        }
    }

    /// Texts end up in terminals, emails and pages: no control characters (escape codes,
    /// NUL, bells, carriage returns, line breaks, tabs) in any of them.
    fn check_texts<'t>(
        &mut self,
        span: &Range<usize>,
        subject: &Option<String>,
        fields: impl IntoIterator<Item = (&'static str, Option<&'t str>)>,
    ) {
        for (field, text) in fields {
            if let Some(c) = text.and_then(|text| text.chars().find(|c| c.is_control())) {
                self.error(
                    span,
                    subject.clone(),
                    format!(
                        "{field} contains the control character {}; texts may not contain control characters",
                        c.escape_unicode()
                    ),
                );
            }
        }
    }

    fn check_id(&mut self, span: &Range<usize>, what: &str, id: &str) -> Option<ResourceId> {
        match ResourceId::parse(id) {
            Ok(id) => Some(id),
            Err(err) => {
                self.error(span, Some(format!("{what} `{id}`")), err.to_string());
                None
            }
        }
    }

    fn check_sources(&mut self, raw: Vec<Spanned<RawSource>>) -> HashMap<String, Source> {
        let mut sources = HashMap::new();
        for spanned in raw {
            let span = spanned.span();
            let source = spanned.into_inner();
            let subject = Some(format!("source `{}`", source.id));
            self.check_texts(
                &span,
                &subject,
                [
                    ("id", Some(source.id.as_str())),
                    ("title", Some(source.title.as_str())),
                    ("publisher", source.publisher.as_deref()),
                    ("url", source.url.as_deref()),
                    ("locator", source.locator.as_deref()),
                ],
            );
            let date = source.date.as_deref().and_then(|text| {
                let date = Date::parse(text);
                if date.is_none() {
                    self.error(
                        &span,
                        subject.clone(),
                        format!("date `{text}` is not a date (expected YYYY-MM-DD)"),
                    );
                }
                date
            });
            if source.title.trim().is_empty() {
                self.error(&span, subject.clone(), "title is empty".into());
            }
            let entry = Source {
                title: source.title,
                publisher: source.publisher,
                date,
                uri: source.url.or(source.locator),
            };
            if sources.insert(source.id, entry).is_some() {
                self.error(&span, subject, "is defined twice in this file".into());
            }
        }
        sources
    }

    fn check_providers(&mut self, raw: Vec<Spanned<RawProvider>>) -> Vec<Provider> {
        let mut providers: Vec<Provider> = Vec::new();
        for spanned in raw {
            let span = spanned.span();
            let provider = spanned.into_inner();
            let Some(id) = self.check_id(&span, "provider", &provider.id) else {
                continue;
            };
            let subject = Some(format!("provider `{id}`"));
            let month = provider.fiscal_year_start_month.unwrap_or(1);
            if !(1..=12).contains(&month) {
                self.error(
                    &span,
                    subject.clone(),
                    format!("fiscal_year_start_month {month} is not a month (expected 1 to 12)"),
                );
            }
            self.check_texts(
                &span,
                &subject,
                [
                    ("display_name", Some(provider.display_name.as_str())),
                    ("parent_company", Some(provider.parent_company.as_str())),
                ],
            );
            if provider.display_name.trim().is_empty() {
                self.error(&span, subject.clone(), "display_name is empty".into());
            }
            if providers.iter().any(|p| p.id == id) {
                self.error(&span, subject, "is defined twice in this file".into());
                continue;
            }
            providers.push(Provider {
                id,
                display_name: provider.display_name,
                parent_company: provider.parent_company,
                fiscal_year_start_month: month,
            });
        }
        providers
    }

    fn check_metrics(&mut self, raw: Vec<Spanned<RawMetric>>) -> Vec<Metric> {
        let mut metrics: Vec<Metric> = Vec::new();
        for spanned in raw {
            let span = spanned.span();
            let metric = spanned.into_inner();
            let Some(id) = self.check_id(&span, "metric", &metric.id) else {
                continue;
            };
            let subject = Some(format!("metric `{id}`"));
            self.check_texts(
                &span,
                &subject,
                [
                    ("display_name", Some(metric.display_name.as_str())),
                    ("description", Some(metric.description.as_str())),
                ],
            );
            if is_reserved_metric_id(id.as_str()) {
                self.error(
                    &span,
                    subject.clone(),
                    "ids ending in -qoq, -yoy or -share name derived figures; choose another id"
                        .into(),
                );
            }
            let unit = Unit::parse(&metric.unit);
            if unit.is_none() {
                self.error(
                    &span,
                    subject.clone(),
                    format!(
                        "unknown unit `{}` (expected an ISO 4217 currency code such as USD, or percent, multiple, text, text-list)",
                        metric.unit
                    ),
                );
            }
            let kind = MetricKind::parse(&metric.kind);
            if kind.is_none() {
                let kinds: Vec<&str> = MetricKind::all().map(MetricKind::as_str).collect();
                self.error(
                    &span,
                    subject.clone(),
                    format!(
                        "unknown kind `{}` (expected one of {})",
                        metric.kind,
                        kinds.join(", ")
                    ),
                );
            }
            if metric.comparison_row == Some(0) {
                self.error(
                    &span,
                    subject.clone(),
                    "comparison_row counts from 1 (leave it out to keep the metric out of the comparison)".into(),
                );
            }
            let (Some(unit), Some(kind)) = (unit, kind) else {
                continue;
            };
            if !kind.accepts(&unit) {
                self.error(
                    &span,
                    subject.clone(),
                    format!(
                        "kind `{}` cannot be measured in unit `{unit}`",
                        kind.as_str()
                    ),
                );
                continue;
            }
            if metrics.iter().any(|m| m.id == id) {
                self.error(&span, subject, "is defined twice in this file".into());
                continue;
            }
            metrics.push(Metric {
                id,
                display_name: metric.display_name,
                unit,
                kind,
                description: metric.description,
                comparison_row: metric.comparison_row,
            });
        }
        metrics
    }

    fn check_facts(
        &mut self,
        raw: Vec<Spanned<RawFact>>,
        sources: &HashMap<String, Source>,
        providers: &[Provider],
        metrics: &[Metric],
    ) -> Vec<StatedFact> {
        let mut facts = Vec::new();
        let mut first_line: HashMap<FactKey, usize> = HashMap::new();
        for spanned in raw {
            let span = spanned.span();
            let fact = spanned.into_inner();
            let subject = Some(format!(
                "fact {} / {} / {}",
                fact.provider.get_ref(),
                fact.metric.get_ref(),
                fact.period.get_ref()
            ));
            let Some(checked) = self.check_fact(&span, &subject, fact, sources, providers, metrics)
            else {
                continue;
            };
            let line = self.line_starts.line_of(span.start);
            if let Some(first) = first_line.insert(checked.key.clone(), line) {
                self.error(
                    &span,
                    subject,
                    format!("is stated twice in this file (first on line {first})"),
                );
                continue;
            }
            facts.push(checked);
        }
        facts
    }

    fn check_fact(
        &mut self,
        span: &Range<usize>,
        subject: &Option<String>,
        fact: RawFact,
        sources: &HashMap<String, Source>,
        providers: &[Provider],
        metrics: &[Metric],
    ) -> Option<StatedFact> {
        let errors_before = self.errors.len();
        // Each error points at the line of the field it is about.
        let fail = |checker: &mut Self, at: &Range<usize>, message: String| {
            checker.error(at, subject.clone(), message);
        };
        let provider_span = fact.provider.span();
        let metric_span = fact.metric.span();
        let period_span = fact.period.span();
        let sources_span = fact.sources.as_ref().map_or(span.clone(), Spanned::span);
        let listed_sources = fact
            .sources
            .as_ref()
            .map_or(&[][..], |s| s.get_ref().as_slice());
        let value_span = fact.value.as_ref().map_or(span.clone(), Spanned::span);
        let status_span = fact.status.as_ref().map_or(span.clone(), Spanned::span);

        let provider = ResourceId::parse(fact.provider.get_ref()).ok();
        match &provider {
            None => fail(
                self,
                &provider_span,
                format!("provider `{}` is not a valid id", fact.provider.get_ref()),
            ),
            Some(id)
                if !providers.iter().any(|p| &p.id == id) && !self.known.known_provider(id) =>
            {
                fail(
                    self,
                    &provider_span,
                    format!(
                        "provider `{id}` is not defined (add it under [[providers]] in this file)"
                    ),
                )
            }
            Some(_) => {}
        }
        let metric = ResourceId::parse(fact.metric.get_ref())
            .ok()
            .and_then(|id| {
                metrics
                    .iter()
                    .find(|m| m.id == id)
                    .or_else(|| self.known.known_metric(&id))
            })
            .cloned();
        if metric.is_none() {
            fail(
                self,
                &metric_span,
                format!(
                    "metric `{}` is not defined (add it under [[metrics]] in this file)",
                    fact.metric.get_ref()
                ),
            );
        }
        let period = match Quarter::parse(fact.period.get_ref()) {
            Ok(period) => Some(period),
            Err(err) => {
                fail(self, &period_span, format!("period: {err}"));
                None
            }
        };
        let status = match fact
            .status
            .as_ref()
            .map_or("reported", |s| s.get_ref().as_str())
        {
            "reported" => Some(FactStatus::Reported),
            "estimated" => Some(FactStatus::Estimated),
            "not-disclosed" => Some(FactStatus::NotDisclosed),
            other => {
                fail(
                    self,
                    &status_span,
                    format!(
                        "unknown status `{other}` (expected reported, estimated or not-disclosed)"
                    ),
                );
                None
            }
        };
        if listed_sources.is_empty() {
            fail(
                self,
                &sources_span,
                "has no source (list at least one id from [[sources]] in `sources`)".into(),
            );
        }
        let mut resolved_sources = Vec::new();
        for id in listed_sources {
            match sources.get(id) {
                Some(source) => resolved_sources.push(source.clone()),
                None => fail(
                    self,
                    &sources_span,
                    format!("source `{id}` is not defined under [[sources]] in this file"),
                ),
            }
        }
        let revision_reason = fact.revision_reason.as_ref().and_then(|text| {
            let reason = RevisionReason::parse(text.get_ref());
            if reason.is_none() {
                let text = text.get_ref();
                fail(
                    self,
                    span,
                    format!(
                        "unknown revision_reason `{text}` (expected restated, corrected or estimate-replaced)"
                    ),
                );
            }
            reason
        });
        let text_values: Vec<&str> = match fact.value.as_ref().map(Spanned::get_ref) {
            Some(toml::Value::String(text)) => vec![text.as_str()],
            Some(toml::Value::Array(items)) => {
                items.iter().filter_map(toml::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        self.check_texts(
            &value_span,
            subject,
            text_values.into_iter().map(|text| ("value", Some(text))),
        );
        self.check_texts(
            span,
            subject,
            [
                ("estimated_by", fact.estimated_by.as_deref()),
                ("note", fact.note.as_deref()),
                ("quote", fact.quote.as_deref()),
            ],
        );
        if fact.lower_bound && fact.upper_bound {
            fail(
                self,
                span,
                "cannot be both a lower bound and an upper bound".into(),
            );
        }
        if fact.estimated_by.is_some() && status != Some(FactStatus::Estimated) {
            fail(
                self,
                &status_span,
                "estimated_by is given but the status is not `estimated`".into(),
            );
        }
        let mut value = None;
        let mut precision = None;
        match (status, &fact.value) {
            (Some(FactStatus::NotDisclosed), Some(_)) => fail(
                self,
                &value_span,
                "has a value but its status is `not-disclosed` (a figure that is not disclosed has no value)".into(),
            ),
            (Some(FactStatus::NotDisclosed), None) => {
                if fact.approximate || fact.lower_bound || fact.upper_bound {
                    fail(
                        self,
                        span,
                        "is not disclosed, so it cannot be approximate or a bound".into(),
                    );
                }
            }
            (Some(_), None) => fail(
                self,
                span,
                "has no value (write status = \"not-disclosed\" when the source does not disclose it)".into(),
            ),
            (Some(_), Some(raw_value)) => {
                if let Some(metric) = &metric {
                    let literal = self.text.get(value_span.clone()).unwrap_or_default();
                    match parse_value(&metric.unit, raw_value.get_ref(), literal) {
                        Ok((parsed, stated_precision)) => {
                            value = Some(parsed);
                            precision = stated_precision;
                        }
                        Err(message) => fail(self, &value_span, message),
                    }
                }
            }
            (None, _) => {}
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let key = FactKey {
            provider: provider?,
            period: period?,
            metric: metric?.id,
        };
        let body = FactBody {
            status: status?,
            value,
            approximate: fact.approximate,
            lower_bound: fact.lower_bound,
            upper_bound: fact.upper_bound,
            precision,
            estimated_by: fact.estimated_by,
            note: fact.note,
            quote: fact.quote,
            sources: resolved_sources,
        };
        Some(StatedFact {
            key,
            body,
            revision_reason,
        })
    }
}

/// Turns a raw value into the metric's unit. Returns the value and, for numbers, the
/// decimal places it was stated to. `literal` is the value as the file writes it.
fn parse_value(
    unit: &Unit,
    raw: &toml::Value,
    literal: &str,
) -> Result<(FactValue, Option<i32>), String> {
    match unit {
        Unit::Text => match raw {
            toml::Value::String(text) if !text.trim().is_empty() => {
                Ok((FactValue::Text(text.clone()), None))
            }
            _ => Err("value must be a non-empty text for a text metric".into()),
        },
        Unit::TextList => {
            let items = raw.as_array().map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            });
            match items {
                Some(Some(items))
                    if !items.is_empty() && items.iter().all(|i| !i.trim().is_empty()) =>
                {
                    Ok((FactValue::TextList(items), None))
                }
                _ => Err(
                    "value must be a list of non-empty texts for a text-list metric, e.g. [\"Trainium\", \"Inferentia\"]"
                        .into(),
                ),
            }
        }
        Unit::Currency(currency) => {
            let (amount, precision) = parse_number(raw, literal, "money", &["K", "M", "B", "T"])?;
            if amount.is_negative() {
                return Err(format!(
                    "value {amount} is negative; money figures such as revenue cannot be"
                ));
            }
            let money = Money::from_decimal(currency.clone(), amount)
                .map_err(|err| format!("value {err}"))?;
            Ok((FactValue::Money(money), Some(precision)))
        }
        Unit::Percent => {
            let (percent, precision) = parse_number(raw, literal, "percent", &["%"])?;
            let (low, high) = PERCENT_RANGE;
            if percent < Decimal::from_integer(low) || percent > Decimal::from_integer(high) {
                return Err(format!(
                    "value {percent}% is outside the sane range for a percentage ({low}% to {high}%)"
                ));
            }
            Ok((FactValue::Percent(percent), Some(precision)))
        }
        Unit::Multiple => {
            let (multiple, precision) = parse_number(raw, literal, "multiple", &["x"])?;
            if multiple <= Decimal::ZERO || multiple > Decimal::from_integer(MAX_MULTIPLE) {
                return Err(format!(
                    "value {multiple}x is outside the sane range for a multiple (above 0, at most {MAX_MULTIPLE})"
                ));
            }
            Ok((FactValue::Multiple(multiple), Some(precision)))
        }
    }
}

/// Reads a number written as a TOML number or a string such as `"12.5B"`, `"22%"`, `"4x"`.
/// Returns the exact value and its precision (digits after the point, negative for
/// rounding to thousands, millions, billions).
fn parse_number(
    raw: &toml::Value,
    literal: &str,
    what: &str,
    suffixes: &[&str],
) -> Result<(Decimal, i32), String> {
    let text = match raw {
        toml::Value::String(text) => text.trim().to_owned(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) if !number.is_finite() => {
            return Err(format!("value {number} is not a number (NaN or infinity)"));
        }
        // A float has lost digits past the 16th by now: read the file's own digits.
        toml::Value::Float(_) => {
            let digits = literal.trim().replace('_', "");
            if digits.contains(['e', 'E']) {
                return Err(format!(
                    "value {digits} has an exponent; write it with plain digits (or as text with a suffix, such as \"12.5B\"), so that it stays exact"
                ));
            }
            digits
        }
        _ => return Err(format!("value must be a number for a {what} metric")),
    };
    let lowered = text.to_ascii_lowercase();
    if ["nan", "inf", "+inf", "-inf", "infinity"].contains(&lowered.as_str()) {
        return Err(format!("value `{text}` is not a number (NaN or infinity)"));
    }
    let (digits, exponent) = match suffixes
        .iter()
        .find_map(|suffix| text.strip_suffix(suffix).map(|rest| (rest, *suffix)))
    {
        Some((rest, "K")) => (rest, 3),
        Some((rest, "M")) => (rest, 6),
        Some((rest, "B")) => (rest, 9),
        Some((rest, "T")) => (rest, 12),
        Some((rest, _)) => (rest, 0),
        None => (text.as_str(), 0),
    };
    let stated: Decimal = digits.trim().parse().map_err(|_| {
        format!(
            "value `{text}` is not a {what} figure (expected a decimal number{}{})",
            if suffixes.is_empty() {
                ""
            } else {
                " optionally followed by "
            },
            suffixes.join(", ")
        )
    })?;
    let value = stated
        .scaled_by_power_of_ten(exponent)
        .ok_or_else(|| format!("value `{text}` is too large"))?;
    let precision = stated.scale() as i32 - exponent as i32;
    Ok((value, precision))
}
