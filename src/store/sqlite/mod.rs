//! The embedded default: one SQLite file under the data directory, in WAL mode.

mod figures;
mod newsletter;

use std::{str::FromStr, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::StoreError;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// SQLite's default page size (runrate never changes it), to turn `max_bytes` into pages.
const PAGE_SIZE: u64 = 4096;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating) the database at `url`; `max_bytes` bounds the file (0: no bound).
    pub async fn open(url: &str, max_bytes: u64) -> Result<Self, StoreError> {
        let mut options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if max_bytes > 0 {
            // At least one page, or SQLite would read 0 as "no change".
            let pages = (max_bytes / PAGE_SIZE).max(1);
            options = options.pragma("max_page_count", pages.to_string());
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_release(super::reusable::<sqlx::Sqlite>)
            .connect_with(options)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}
