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

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

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
    #[error(
        "the database was migrated by a newer runrate (to schema {database}; this one knows schema {binary} at most): run that version or newer, or restore a backup made before the upgrade"
    )]
    SchemaTooNew { database: i64, binary: i64 },
    #[error(
        "the database is at schema {database} and this runrate needs schema {binary}, but database.migrate_on_start is off: run `runrate migrate` first"
    )]
    SchemaBehind { database: i64, binary: i64 },
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

/// Schema versions: the newest migration the database has applied (0 for none) and the
/// newest this build brings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schema {
    pub database: i64,
    pub binary: i64,
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
    /// Opens the store a database URL names, creating it as needed, and migrating it
    /// when `database.migrate_on_start` says so; refuses a schema newer than this build
    /// knows, and (without migrating) one older than it needs.
    pub async fn open(settings: &DatabaseSettings, url: &DatabaseUrl) -> Result<Self, StoreError> {
        let (store, _) = Self::open_migrating(settings, url, settings.migrate_on_start).await?;
        Ok(store)
    }

    /// As [`Store::open`], migrating or not as `migrate` says (`runrate migrate`); with
    /// the schema the database was at when opened.
    pub async fn open_migrating(
        settings: &DatabaseSettings,
        url: &DatabaseUrl,
        migrate: bool,
    ) -> Result<(Self, Schema), StoreError> {
        let backend = Backend::from_url(url.expose())
            .ok_or_else(|| StoreError::UnsupportedUrl(url.clone()))?;
        let pool = backend.connect(url.expose(), settings).await?;
        let schema = backend.schema(&pool).await?;
        if schema.database > schema.binary {
            return Err(StoreError::SchemaTooNew {
                database: schema.database,
                binary: schema.binary,
            });
        }
        if migrate {
            backend.migrate(&pool).await?;
        } else if schema.database < schema.binary {
            return Err(StoreError::SchemaBehind {
                database: schema.database,
                binary: schema.binary,
            });
        }
        Ok((Store { pool, backend }, schema))
    }

    /// Copies the SQLite database `url` names into the new file `destination`,
    /// consistently, while a server may be using it. PostgreSQL has `pg_dump` for this.
    pub async fn backup_sqlite(url: &DatabaseUrl, destination: &Path) -> Result<(), StoreError> {
        match Backend::from_url(url.expose()) {
            Some(Backend::Sqlite) => backend::backup_sqlite(url.expose(), destination).await,
            _ => Err(StoreError::UnsupportedUrl(url.clone())),
        }
    }

    /// The schema the database is at and the one this build brings.
    pub async fn schema(&self) -> Result<Schema, StoreError> {
        self.backend.schema(&self.pool).await
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
