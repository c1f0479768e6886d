//! Rows as the database returns them, and their conversion into domain records.

use crate::domain::Named;
use crate::{
    domain::delivery::{ClaimedDelivery, DeliveryFailure, DeliveryKind, DeliveryState, Recipient},
    domain::subscribers::{Subscriber, SubscriberState},
    domain::{
        EmailAddress, FactKey, FactRevision, LoadRecord, Quarter, ResourceId, RevisionReason,
    },
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

pub(super) fn delivery_state(text: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("delivery state `{text}`")))
}

fn stored_address(text: &str) -> Result<EmailAddress, StoreError> {
    EmailAddress::parse(text).map_err(|err| StoreError::Corrupt(err.to_string()))
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
    pub(super) id: i64,
    email: String,
    state: String,
    language: String,
    /// 1 or 0: SQLite has no boolean type for the `Any` driver to read.
    follows_all: i64,
    created_at_us: i64,
    updated_at_us: i64,
}

impl SubscriberRow {
    pub(super) fn into_subscriber(
        self,
        followed: Vec<ResourceId>,
    ) -> Result<Subscriber, StoreError> {
        Ok(Subscriber {
            id: self.id,
            email: stored_address(&self.email)?,
            state: subscriber_state(&self.state)?,
            language: self.language,
            providers: (self.follows_all == 0).then_some(followed),
            created_at: from_micros(self.created_at_us),
            updated_at: from_micros(self.updated_at_us),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ClaimedDeliveryRow {
    id: i64,
    channel: String,
    kind: String,
    load_id: Option<i64>,
    subscriber_id: Option<i64>,
    endpoint_id: Option<i64>,
    email: String,
    attempts: i64,
    subscriber_state: Option<String>,
}

impl TryFrom<ClaimedDeliveryRow> for ClaimedDelivery {
    type Error = StoreError;

    fn try_from(row: ClaimedDeliveryRow) -> Result<Self, StoreError> {
        let kind = match (row.kind.as_str(), row.load_id) {
            ("update", Some(load)) => DeliveryKind::Update(load),
            ("confirmation", _) => DeliveryKind::Confirmation,
            (other, _) => return Err(StoreError::Corrupt(format!("delivery kind `{other}`"))),
        };
        let recipient = match (row.subscriber_id, row.subscriber_state, row.endpoint_id) {
            (Some(id), Some(state), None) => Recipient::Subscriber {
                id,
                state: subscriber_state(&state)?,
            },
            (None, None, Some(endpoint)) => Recipient::Webhook(endpoint),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "delivery {} has neither one subscriber nor one webhook endpoint",
                    row.id
                )));
            }
        };
        Ok(ClaimedDelivery {
            id: row.id,
            channel: row.channel,
            kind,
            recipient,
            address: row.email,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
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

impl TryFrom<DeliveryFailureRow> for DeliveryFailure {
    type Error = StoreError;

    fn try_from(row: DeliveryFailureRow) -> Result<Self, StoreError> {
        Ok(DeliveryFailure {
            email: row.email,
            state: delivery_state(&row.state)?,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            last_error: row.last_error,
        })
    }
}
