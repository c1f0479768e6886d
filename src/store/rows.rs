//! Rows as both databases return them, and their one conversion into domain records, so
//! that the SQLite and PostgreSQL stores differ only in their SQL.

use crate::{
    domain::subscribers::{
        ClaimedDelivery, DeliveryFailure, DeliveryKind, DeliveryReport, Subscriber, SubscriberState,
    },
    domain::{FactKey, FactRevision, LoadRecord, Quarter, ResourceId, RevisionReason},
    store::{StoreError, from_micros},
};

pub(super) fn decode_json<T: serde::de::DeserializeOwned>(
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt(format!("{what}: {err}")))
}

pub(super) fn encode_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

pub(super) fn subscriber_state(text: &str) -> Result<SubscriberState, StoreError> {
    SubscriberState::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("subscriber state `{text}`")))
}

#[derive(sqlx::FromRow)]
pub(super) struct LoadRow {
    id: i64,
    recorded_at_us: i64,
    file_name: String,
    content_sha256: String,
    facts_added: i64,
    facts_revised: i64,
    facts_unchanged: i64,
    definitions_changed: i64,
}

impl From<LoadRow> for LoadRecord {
    fn from(row: LoadRow) -> Self {
        LoadRecord {
            id: row.id,
            recorded_at: from_micros(row.recorded_at_us),
            file_name: row.file_name,
            content_sha256: row.content_sha256,
            facts_added: count(row.facts_added),
            facts_revised: count(row.facts_revised),
            facts_unchanged: count(row.facts_unchanged),
            definitions_changed: count(row.definitions_changed),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct FactRevisionRow {
    provider_id: String,
    period: String,
    metric_id: String,
    revision: i64,
    load_id: i64,
    recorded_at_us: i64,
    body: String,
    reason: Option<String>,
}

impl TryFrom<FactRevisionRow> for FactRevision {
    type Error = StoreError;

    fn try_from(row: FactRevisionRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("fact revision {what}"));
        let key = FactKey {
            provider: ResourceId::parse(&row.provider_id).map_err(|_| corrupt("provider"))?,
            period: Quarter::parse(&row.period).map_err(|_| corrupt("period"))?,
            metric: ResourceId::parse(&row.metric_id).map_err(|_| corrupt("metric"))?,
        };
        let reason = match row.reason.as_deref() {
            None => None,
            Some(text) => Some(RevisionReason::parse(text).ok_or_else(|| corrupt("reason"))?),
        };
        Ok(FactRevision {
            key,
            revision: row.revision,
            load_id: row.load_id,
            recorded_at: from_micros(row.recorded_at_us),
            reason,
            body: decode_json("fact", &row.body)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SubscriberRow {
    id: i64,
    email: String,
    state: String,
    language: String,
    follows_all: bool,
    created_at_us: i64,
    updated_at_us: i64,
    /// JSON list of the provider ids followed.
    providers: String,
}

impl TryFrom<SubscriberRow> for Subscriber {
    type Error = StoreError;

    fn try_from(row: SubscriberRow) -> Result<Self, StoreError> {
        let providers: Vec<String> = decode_json("providers", &row.providers)?;
        Ok(Subscriber {
            id: row.id,
            email: row.email,
            state: subscriber_state(&row.state)?,
            language: row.language,
            providers: (!row.follows_all).then_some(providers),
            created_at: from_micros(row.created_at_us),
            updated_at: from_micros(row.updated_at_us),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ClaimedDeliveryRow {
    id: i64,
    kind: String,
    load_id: Option<i64>,
    subscriber_id: i64,
    email: String,
    attempts: i64,
    subscriber_state: String,
}

impl TryFrom<ClaimedDeliveryRow> for ClaimedDelivery {
    type Error = StoreError;

    fn try_from(row: ClaimedDeliveryRow) -> Result<Self, StoreError> {
        let kind = match (row.kind.as_str(), row.load_id) {
            ("update", Some(load)) => DeliveryKind::Update(load),
            ("confirmation", _) => DeliveryKind::Confirmation,
            (other, _) => return Err(StoreError::Corrupt(format!("delivery kind `{other}`"))),
        };
        Ok(ClaimedDelivery {
            id: row.id,
            kind,
            subscriber_id: row.subscriber_id,
            email: row.email,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            subscriber_state: subscriber_state(&row.subscriber_state)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryFailureRow {
    email: String,
    state: String,
    attempts: i64,
    last_error: String,
}

impl From<DeliveryFailureRow> for DeliveryFailure {
    fn from(row: DeliveryFailureRow) -> Self {
        DeliveryFailure {
            email: row.email,
            state: row.state,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            last_error: row.last_error,
        }
    }
}

/// Adds `n` deliveries in `state` to a report's counts.
pub(super) fn tally(report: &mut DeliveryReport, state: &str, n: i64) -> Result<(), StoreError> {
    let n = u64::try_from(n).unwrap_or(0);
    match state {
        "sent" => report.sent += n,
        "pending" | "sending" => report.pending += n,
        "retrying" => report.retrying += n,
        "failed" => report.failed += n,
        "skipped" => report.skipped += n,
        other => return Err(StoreError::Corrupt(format!("delivery state `{other}`"))),
    }
    Ok(())
}
