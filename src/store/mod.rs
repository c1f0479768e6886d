//! Durable storage of loads, definitions, fact revisions, subscribers and the delivery
//! outbox: one SQL implementation for SQLite and PostgreSQL through sqlx's `Any` driver,
//! with what differs between them in [`backend`]. Methods are single statements (or one
//! read of a record); every decision about what to write is made by the caller, which
//! groups statements into a [`StoreTx`] where they must commit together. Reads for
//! clients never come here: they are served from the in-memory snapshot, built from
//! [`Store::read_contents`].

mod backend;
mod figures;
mod outbox;
mod pace;
mod rows;
mod subscribers;
mod webhooks;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{Any, AnyPool, Transaction};

use crate::{
    domain::{FactRevision, LoadId, LoadRecord, Metric, Provider},
    settings::{DatabaseSettings, DatabaseUrl},
};

use backend::Backend;
pub use webhooks::CreateWebhookError;

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
    /// A transaction that held other writes too failed, as this message says.
    #[error("{0}")]
    Batch(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// Everything stored about figures, in the order it was written.
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

/// How many of a pool's connections are idle and how many in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    pub idle: u32,
    pub in_use: u32,
}

/// The database: a pool of connections and what kind of database it is.
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Statements that commit together, or not at all (dropped without `commit`: rolled back).
/// A write transaction: on SQLite it holds the write lock from its first statement, so
/// what it reads cannot change before it writes.
pub struct StoreTx {
    tx: Transaction<'static, Any>,
    backend: Backend,
}

impl Store {
    /// Opens the store a database URL names, creating and migrating it as needed.
    pub async fn open(settings: &DatabaseSettings, url: &DatabaseUrl) -> Result<Self, StoreError> {
        let backend = Backend::from_url(url.expose())
            .ok_or_else(|| StoreError::UnsupportedUrl(url.clone()))?;
        let pool = backend.connect(url.expose(), settings).await?;
        backend.migrate(&pool).await?;
        Ok(Store { pool, backend })
    }

    /// Whether other processes may write to this database too (and so whether this one
    /// must watch for their loads).
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// This process's connections to the database now.
    pub fn pool_status(&self) -> PoolStatus {
        let idle = self.pool.num_idle() as u32;
        PoolStatus {
            idle,
            in_use: self.pool.size().saturating_sub(idle),
        }
    }

    /// Whether write transactions wait for one another (SQLite), so that writers gain
    /// by committing together.
    pub fn writers_take_turns(&self) -> bool {
        self.backend.writers_take_turns()
    }

    pub async fn begin(&self) -> Result<StoreTx, StoreError> {
        let tx = self.backend.begin_write(&self.pool).await?;
        Ok(StoreTx {
            tx,
            backend: self.backend,
        })
    }

    /// Every row of every table as text, tables by name: two dumps are equal exactly when
    /// the stored data is. For tests and for looking into a store by hand.
    pub async fn dump(&self) -> Result<String, StoreError> {
        let mut connection = self.pool.acquire().await?;
        self.backend.dump(&mut connection).await
    }
}

impl StoreTx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

pub(crate) fn to_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) fn from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}
