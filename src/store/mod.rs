//! Durable storage of loads, definitions and fact revisions, behind one trait with one
//! implementation per database. Reads for clients never come here: they are served from
//! the in-memory snapshot, which is built from [`Store::read_contents`].

mod postgres;
mod rows;
mod sqlite;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;

use crate::{
    domain::subscribers::{
        ClaimToken, ClaimedDelivery, DeliveryReport, DeliveryResult, NewToken, SubscribeCommand,
        SubscribeOutcome, Subscriber, SubscriberState, TokenOutcome,
    },
    domain::{
        FactBody, FactKey, FactRevision, LoadId, LoadRecord, Metric, Provider, ResourceId,
        RevisionReason,
    },
    settings::{DatabaseSettings, DatabaseUrl},
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another load committed since the plan was made; plan again.
    #[error(
        "another load was committed first (the store is at load {current}, the plan was made at load {planned})"
    )]
    Conflict { planned: LoadId, current: LoadId },
    #[error(
        "database URL `{0}` is not supported (expected sqlite://PATH or postgres://USER:PASSWORD@HOST/DATABASE)"
    )]
    UnsupportedUrl(DatabaseUrl),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// A 256-bit secret key.
pub type TokenKey = [u8; 32];

/// A new random key.
fn new_token_key() -> Result<TokenKey, StoreError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|err| StoreError::Corrupt(format!("no randomness for a key: {err}")))?;
    Ok(key)
}

/// A stored key, which must be 32 bytes.
fn stored_token_key(bytes: Vec<u8>) -> Result<TokenKey, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("the stored token key is not 32 bytes".into()))
}

/// Everything stored, in the order it was written.
#[derive(Debug, Default)]
pub struct StoreContents {
    pub loads: Vec<LoadRecord>,
    /// The newest version of each provider.
    pub providers: Vec<Provider>,
    /// The newest version of each metric.
    pub metrics: Vec<Metric>,
    /// Every revision of every fact.
    pub fact_revisions: Vec<FactRevision>,
}

/// A fact revision a load will append.
#[derive(Debug, Clone)]
pub struct FactChange {
    pub key: FactKey,
    /// 1 for a new fact, one more than the current revision otherwise.
    pub revision: i64,
    /// Why the fact changed; `None` for a new fact.
    pub reason: Option<RevisionReason>,
    pub body: FactBody,
}

/// What one load writes, computed against the store as it was at `base_load_id`.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub base_load_id: LoadId,
    pub file_name: String,
    pub content_sha256: String,
    pub providers: Vec<Provider>,
    pub metrics: Vec<Metric>,
    pub fact_changes: Vec<FactChange>,
    pub facts_added: u32,
    pub facts_revised: u32,
    pub facts_unchanged: u32,
    /// Providers whose facts the load adds or revises: their followers get an update
    /// email, queued in the load's transaction. Empty: nobody is notified.
    pub notify_providers: Vec<ResourceId>,
}

impl LoadPlan {
    /// A load that would change nothing is not written at all.
    pub fn is_no_op(&self) -> bool {
        self.providers.is_empty() && self.metrics.is_empty() && self.fact_changes.is_empty()
    }
}

/// Everything runrate stores: figures and the newsletter, in one database.
pub trait Store: FigureStore + NewsletterStore {}

impl<T: FigureStore + NewsletterStore> Store for T {}

#[async_trait]
pub trait FigureStore: Send + Sync + 'static {
    /// Whether other processes may write to this database too (and so whether this one
    /// must watch for their loads).
    fn is_shared(&self) -> bool;

    async fn read_contents(&self) -> Result<StoreContents, StoreError>;

    /// Id of the newest load, 0 when nothing was ever loaded.
    async fn head_load_id(&self) -> Result<LoadId, StoreError>;

    /// Every row of every table as text, tables by name and rows in insertion order: two
    /// dumps are equal exactly when the stored data is.
    async fn dump(&self) -> Result<String, StoreError>;

    /// The server's key for the tokens it gives clients, made on first use; the same
    /// for every process on this database.
    async fn token_key(&self) -> Result<TokenKey, StoreError>;

    /// Writes the plan as load `base_load_id + 1` in one transaction, or nothing at all:
    /// its facts, and when it notifies, its notification and one update delivery per
    /// confirmed subscriber following a changed provider.
    /// Fails with [`StoreError::Conflict`] when another load committed since the plan.
    async fn commit_load(&self, plan: &LoadPlan) -> Result<LoadRecord, StoreError>;
}

#[async_trait]
pub trait NewsletterStore: Send + Sync + 'static {
    /// Records a sign-up and, when one is due, queues a confirmation email.
    async fn subscribe(&self, command: &SubscribeCommand) -> Result<SubscribeOutcome, StoreError>;

    /// Confirms the pending subscriber a confirmation token belongs to.
    async fn confirm(&self, digest: &str, now: SystemTime) -> Result<TokenOutcome, StoreError>;

    /// Unsubscribes the subscriber an unsubscribe token belongs to.
    async fn unsubscribe(&self, digest: &str, now: SystemTime) -> Result<TokenOutcome, StoreError>;

    /// Sets which providers a subscriber follows (`None`: all), by unsubscribe token.
    async fn update_preferences(
        &self,
        digest: &str,
        providers: Option<&[ResourceId]>,
        now: SystemTime,
    ) -> Result<TokenOutcome, StoreError>;

    /// Subscribers by id, after `after_id`, optionally in one state.
    async fn list_subscribers(
        &self,
        state: Option<SubscriberState>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Subscriber>, StoreError>;

    /// Claims up to `limit` due deliveries until `lease_until` under `claim`, counting an
    /// attempt each.
    async fn claim_deliveries(
        &self,
        claim: ClaimToken,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Extends the lease of the deliveries `claim` still holds to `lease_until`; returns
    /// their ids.
    async fn renew_claim(
        &self,
        claim: ClaimToken,
        lease_until: SystemTime,
    ) -> Result<Vec<i64>, StoreError>;

    /// Stores the digests of tokens about to be sent.
    async fn store_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError>;

    /// Records what happened to deliveries `claim` still holds, in one transaction;
    /// returns how many were recorded (results for rows it lost are dropped).
    async fn record_deliveries(
        &self,
        claim: ClaimToken,
        results: &[DeliveryResult],
        now: SystemTime,
    ) -> Result<u64, StoreError>;

    /// When the next unfinished delivery falls due, if any.
    async fn next_delivery_due(&self) -> Result<Option<SystemTime>, StoreError>;

    /// The update deliveries of one load; `None` when the load notified nobody.
    async fn delivery_report(&self, load_id: LoadId) -> Result<Option<DeliveryReport>, StoreError>;

    /// The newest load that notified subscribers, if any did.
    async fn latest_notified_load(&self) -> Result<Option<LoadId>, StoreError>;

    /// Makes failed update deliveries (of one load, or all) due again; returns how many.
    async fn retry_failed_deliveries(
        &self,
        load_id: Option<LoadId>,
        now: SystemTime,
    ) -> Result<u64, StoreError>;
}

/// Opens the store a database URL names, creating and migrating it as needed.
pub async fn open(
    settings: &DatabaseSettings,
    url: &DatabaseUrl,
) -> Result<Arc<dyn Store>, StoreError> {
    let raw = url.expose();
    if raw.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(raw, settings.max_bytes).await?))
    } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::open(raw, settings.max_connections).await?,
        ))
    } else {
        Err(StoreError::UnsupportedUrl(url.clone()))
    }
}

/// Whether a connection goes back into the pool after use. A transaction that failed
/// part-way can leave one still counting itself inside it (SQLite rolls back by itself
/// on a full disk, and the rollback sqlx then sends fails): such a connection would
/// refuse every later transaction, so it is closed and the pool opens a fresh one.
fn reusable<DB: sqlx::Database>(
    connection: &mut DB::Connection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    use sqlx::Connection;
    Box::pin(async move {
        if connection.is_in_transaction() {
            // A dropped transaction's rollback may still be queued: let it run first.
            if connection.ping().await.is_err() {
                return Ok(false);
            }
        }
        Ok(!connection.is_in_transaction())
    })
}

pub(crate) fn to_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) fn from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}
