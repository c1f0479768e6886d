//! Domain values to protobuf messages. The one place that knows both.

use crate::domain::Named;
use crate::{
    catalog::ReadSnapshot,
    catalog::derived::{Derivation, DerivedFact},
    domain::delivery::DeliveryReport,
    domain::subscribers::{Subscriber, SubscriberState},
    domain::webhooks::{Webhook, webhook_name},
    domain::{
        self, FactBody, FactKey, FactRevision, FactStatus, FactValue, LoadId, LoadRecord, Metric,
        MetricKind, Provider, Quarter, ResourceId, RevisionReason, Source,
    },
    figures_file::FileError,
    loading::LoadSummary,
    mail::{FeedbackKind, FeedbackOutcome},
};

use super::pb::{google::r#type as gtype, runrate::v1 as api};

pub fn provider_name(id: &ResourceId) -> String {
    format!("providers/{id}")
}

pub fn metric_name(id: &ResourceId) -> String {
    format!("metrics/{id}")
}

pub fn period_name(period: &Quarter) -> String {
    format!("periods/{}", period.id())
}

pub fn fact_name(key: &FactKey) -> String {
    format!(
        "providers/{}/periods/{}/facts/{}",
        key.provider,
        key.period.id(),
        key.metric
    )
}

pub fn load_name(id: i64) -> String {
    format!("loads/{id}")
}

pub fn provider(provider: &Provider) -> api::Provider {
    api::Provider {
        name: provider_name(&provider.id),
        display_name: provider.display_name.clone(),
        parent_company: provider.parent_company.clone(),
        fiscal_year_start_month: i32::from(provider.fiscal_year_start_month),
    }
}

pub fn metric(metric: &Metric) -> api::Metric {
    api::Metric {
        name: metric_name(&metric.id),
        display_name: metric.display_name.clone(),
        unit: metric.unit.to_string(),
        kind: metric_kind(metric.kind) as i32,
        description: metric.description.clone(),
        comparison_row: metric
            .comparison_row
            .map_or(0, |row| i32::try_from(row).unwrap_or(i32::MAX)),
    }
}

fn metric_kind(kind: MetricKind) -> api::MetricKind {
    match kind {
        MetricKind::QuarterlyTotal => api::MetricKind::QuarterlyTotal,
        MetricKind::RunRate => api::MetricKind::RunRate,
        MetricKind::AnnualTotal => api::MetricKind::AnnualTotal,
        MetricKind::Percent => api::MetricKind::Percent,
        MetricKind::Ratio => api::MetricKind::Ratio,
        MetricKind::Text => api::MetricKind::Text,
        MetricKind::TextList => api::MetricKind::TextList,
    }
}

pub fn period(period: &Quarter) -> api::Period {
    api::Period {
        name: period_name(period),
        display_name: period.to_string(),
        first_date: Some(date(period.first_date())),
        last_date: Some(date(period.last_date())),
    }
}

fn date(date: domain::Date) -> gtype::Date {
    gtype::Date {
        year: i32::from(date.year),
        month: i32::from(date.month),
        day: i32::from(date.day),
    }
}

fn source(source: &Source) -> api::Source {
    api::Source {
        title: source.title.clone(),
        publisher: source.publisher.clone().unwrap_or_default(),
        publish_date: source.date.map(date),
        uri: source.uri.clone().unwrap_or_default(),
    }
}

fn status(status: FactStatus) -> api::FactStatus {
    match status {
        FactStatus::Reported => api::FactStatus::Reported,
        FactStatus::Estimated => api::FactStatus::Estimated,
        FactStatus::NotDisclosed => api::FactStatus::NotDisclosed,
        FactStatus::Derived => api::FactStatus::Derived,
    }
}

fn value(value: &FactValue) -> api::fact::Value {
    match value {
        FactValue::Money(money) => api::fact::Value::MoneyValue(gtype::Money {
            currency_code: money.currency.to_string(),
            units: money.units,
            nanos: money.nanos,
        }),
        FactValue::Percent(number) | FactValue::Multiple(number) => {
            api::fact::Value::DecimalValue(number.normalized().to_string())
        }
        FactValue::Text(text) => api::fact::Value::TextValue(text.clone()),
        FactValue::TextList(items) => api::fact::Value::TextListValue(api::TextList {
            values: items.clone(),
        }),
    }
}

fn revision_reason(reason: Option<RevisionReason>) -> api::RevisionReason {
    match reason {
        None => api::RevisionReason::Unspecified,
        Some(RevisionReason::Restated) => api::RevisionReason::Restated,
        Some(RevisionReason::Corrected) => api::RevisionReason::Corrected,
        Some(RevisionReason::EstimateReplaced) => api::RevisionReason::EstimateReplaced,
    }
}

fn derivation(derivation: Derivation) -> api::Derivation {
    match derivation {
        Derivation::QuarterOnQuarter => api::Derivation::QuarterOnQuarterChange,
        Derivation::YearOnYear => api::Derivation::YearOnYearChange,
        Derivation::ShareOfTotal => api::Derivation::ShareOfTotal,
    }
}

/// The fields every fact message has, from its key and body.
fn fact_message(key: &FactKey, body: &FactBody) -> api::Fact {
    api::Fact {
        name: fact_name(key),
        provider: provider_name(&key.provider),
        metric: metric_name(&key.metric),
        period: period_name(&key.period),
        status: status(body.status) as i32,
        value: body.value.as_ref().map(value),
        approximate: body.approximate,
        lower_bound: body.lower_bound,
        upper_bound: body.upper_bound,
        precision: body.precision,
        estimated_by: body.estimated_by.clone().unwrap_or_default(),
        quote: body.quote.clone().unwrap_or_default(),
        note: body.note.clone().unwrap_or_default(),
        sources: body.sources.iter().map(source).collect(),
        display_value: domain::display_value(body),
        ..Default::default()
    }
}

pub fn fact(revision: &FactRevision) -> api::Fact {
    api::Fact {
        revision: revision.revision,
        load: load_name(revision.load_id),
        record_time: Some(revision.recorded_at.into()),
        revision_reason: revision_reason(revision.reason) as i32,
        ..fact_message(&revision.key, &revision.body)
    }
}

/// A stored revision with the end of its interval, as revision reads answer it.
pub fn revision(snapshot: &ReadSnapshot, revision: &FactRevision) -> api::Fact {
    let successor = snapshot.successor(revision);
    api::Fact {
        replaced_by_load: successor.map_or_else(String::new, |next| load_name(next.load_id)),
        replace_time: successor.map(|next| next.recorded_at.into()),
        ..fact(revision)
    }
}

pub fn derived_fact(derived: &DerivedFact) -> api::Fact {
    api::Fact {
        load: load_name(derived.load_id),
        record_time: Some(derived.recorded_at.into()),
        derived_from: derived.inputs.iter().map(fact_name).collect(),
        derivation: derivation(derived.derivation) as i32,
        ..fact_message(&derived.key, &derived.body)
    }
}

/// The comparison table of one period, as CompareProviders answers it.
pub fn comparison(snapshot: &ReadSnapshot, period: Quarter) -> api::CompareProvidersResponse {
    let comparison = snapshot.comparison(period, None);
    let rows = comparison
        .rows
        .iter()
        .map(|(metric, cells)| api::ComparisonRow {
            metric: Some(self::metric(metric)),
            cells: comparison
                .providers
                .iter()
                .zip(cells)
                .map(|(provider, cell)| {
                    let fact = cell.map(fact);
                    api::ComparisonCell {
                        provider: provider_name(&provider.id),
                        display_value: fact
                            .as_ref()
                            .map_or_else(|| "n/a".to_owned(), |f| f.display_value.clone()),
                        fact,
                    }
                })
                .collect(),
        })
        .collect();
    api::CompareProvidersResponse {
        period: Some(self::period(&period)),
        providers: comparison.providers.iter().map(|p| provider(p)).collect(),
        rows,
    }
}

/// What a load did (or, validating only, would do).
pub fn load_summary(
    summary: &LoadSummary,
    snapshot: &ReadSnapshot,
    validate_only: bool,
) -> api::LoadFiguresResponse {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let load = summary
        .load
        .as_ref()
        .map(|record| load(record, snapshot.load_changes(record.id)));
    api::LoadFiguresResponse {
        no_op: !validate_only && load.is_none(),
        load,
        facts_added: count(summary.facts_added),
        facts_revised: count(summary.facts_revised),
        facts_unchanged: count(summary.facts_unchanged),
        definitions_changed: count(summary.definitions_changed),
        validate_only,
    }
}

/// The WatchLoads event of one load: the load and every fact it changed.
pub fn load_event(snapshot: &ReadSnapshot, id: LoadId) -> api::LoadEvent {
    api::LoadEvent {
        load: snapshot
            .load_record(id)
            .map(|record| load(record, snapshot.load_changes(id))),
        facts: snapshot.load_changes(id).map(fact).collect(),
    }
}

pub fn load<'a>(record: &LoadRecord, changes: impl Iterator<Item = &'a FactRevision>) -> api::Load {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    api::Load {
        name: load_name(record.id),
        create_time: Some(record.recorded_at.into()),
        file_name: record.file_name.clone(),
        content_sha256: record.content_sha256.clone(),
        facts_added: count(record.facts_added),
        facts_revised: count(record.facts_revised),
        facts_unchanged: count(record.facts_unchanged),
        definitions_changed: count(record.definitions_changed),
        changes: changes
            .map(|revision| api::FactChange {
                fact: fact_name(&revision.key),
                revision: revision.revision,
                revision_reason: revision_reason(revision.reason) as i32,
            })
            .collect(),
    }
}

pub fn subscriber_state(state: SubscriberState) -> api::SubscriberState {
    match state {
        SubscriberState::Pending => api::SubscriberState::Pending,
        SubscriberState::Confirmed => api::SubscriberState::Confirmed,
        SubscriberState::Unsubscribed => api::SubscriberState::Unsubscribed,
        SubscriberState::Bounced => api::SubscriberState::Bounced,
        SubscriberState::Complained => api::SubscriberState::Complained,
    }
}

/// A registered endpoint, without its secret.
pub fn webhook(webhook: &Webhook) -> api::Webhook {
    api::Webhook {
        name: webhook_name(webhook.id),
        url: webhook.url.as_str().to_owned(),
        secret: String::new(),
        create_time: Some(webhook.created_at.into()),
    }
}

pub fn subscriber(subscriber: &Subscriber) -> api::Subscriber {
    api::Subscriber {
        name: format!("subscribers/{}", subscriber.id),
        email: subscriber.email.to_string(),
        state: subscriber_state(subscriber.state) as i32,
        language: subscriber.language.clone(),
        providers: subscriber
            .providers
            .iter()
            .flatten()
            .map(|id| format!("providers/{id}"))
            .collect(),
        create_time: Some(subscriber.created_at.into()),
        update_time: Some(subscriber.updated_at.into()),
    }
}

pub fn delivery_report(report: &DeliveryReport) -> api::DeliveryReport {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    api::DeliveryReport {
        name: format!("{}/deliveryReport", load_name(report.load_id)),
        load: load_name(report.load_id),
        recipients: count(report.recipients),
        sent: count(report.sent),
        pending: count(report.pending),
        retrying: count(report.retrying),
        failed: count(report.failed),
        skipped: count(report.skipped),
        failures: report
            .failures
            .iter()
            .map(|failure| api::DeliveryFailure {
                email: failure.email.clone(),
                state: failure.state.as_str().to_owned(),
                attempts: i32::try_from(failure.attempts).unwrap_or(i32::MAX),
                last_error: failure.last_error.clone(),
            })
            .collect(),
    }
}

pub fn figures_file_error(error: &FileError) -> api::FiguresFileError {
    api::FiguresFileError {
        line: error
            .line
            .map_or(0, |line| i32::try_from(line).unwrap_or(i32::MAX)),
        subject: error.subject.clone().unwrap_or_default(),
        message: error.message.clone(),
        description: error.to_string(),
    }
}

pub fn feedback_outcome(outcome: &FeedbackOutcome) -> api::IngestMailFeedbackResponse {
    use api::ingest_mail_feedback_response::Kind;
    let (kind, detail) = match &outcome.kind {
        FeedbackKind::Bounce(detail) => (Kind::Bounce, detail),
        FeedbackKind::SoftBounce(detail) => (Kind::SoftBounce, detail),
        FeedbackKind::Complaint(detail) => (Kind::Complaint, detail),
        FeedbackKind::NotAFailure(detail) => (Kind::NotAFailure, detail),
    };
    api::IngestMailFeedbackResponse {
        kind: kind as i32,
        detail: detail.clone(),
        delivery: format!("deliveries/{}", outcome.delivery),
        email: outcome.address.clone(),
        state: outcome
            .suppressed_as
            .map_or(api::SubscriberState::Unspecified, subscriber_state) as i32,
    }
}
