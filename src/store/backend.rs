//! What differs between SQLite and PostgreSQL: connecting, migrations, how a write
//! transaction keeps out other writers, row locks, JSON arrays as rows, and listing
//! tables for a dump. Everything else is the same SQL, written once.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Any, AnyConnection, AnyPool, Connection, Transaction,
    any::AnyPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode},
};

use super::StoreError;
use crate::settings::DatabaseSettings;

// One numbering for both: a migration's number names the same change on each database.
// PostgreSQL's 0001 is SQLite's 0001 to 0003, written when PostgreSQL joined.
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("src/store/migrations/postgres");
/// PostgreSQL's migrations after its first were numbered from 2 until they took
/// SQLite's numbers; a database migrated then says so by this one at version 2.
const POSTGRES_FIRST_RENUMBERED: (i64, &str) = (2, "delivery claims");
/// How far those numbers moved.
const POSTGRES_RENUMBERED_BY: i64 = 2;

/// SQLite's default page size (runrate never changes it), to turn `max_bytes` into pages.
const SQLITE_PAGE_SIZE: u64 = 4096;
/// Connections to one SQLite file: it has one writer at a time anyway.
const SQLITE_CONNECTIONS: u32 = 4;
/// Each connection's page cache, in KiB. SQLite's default (2000) kept 8 MB of pages
/// after a fan-out for no gain: runrate answers reads from memory, and a 100,000-email
/// fan-out took as much CPU per email with 256 KiB, the OS caching the file anyway.
const SQLITE_CACHE_KIB: u32 = 256;
/// The advisory lock key that serialises loads across replicas ("runrate" in ASCII).
const POSTGRES_LOAD_LOCK: i64 = 0x72_75_6e_72_61_74_65;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backend {
    /// The embedded default: one file under the data directory, in WAL mode.
    Sqlite,
    /// For several replicas sharing one database.
    Postgres,
}

impl Backend {
    pub(super) fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    pub(super) fn is_shared(self) -> bool {
        self == Backend::Postgres
    }

    /// Whether write transactions wait for one another: SQLite has one writer at a
    /// time, where PostgreSQL commits transactions side by side.
    pub(super) fn writers_take_turns(self) -> bool {
        self == Backend::Sqlite
    }

    fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// The newest migration the database has applied (0 before any; PostgreSQL's under
    /// the shared numbering, renumbered first if need be) and the newest this build has.
    pub(super) async fn schema(self, pool: &AnyPool) -> Result<super::Schema, StoreError> {
        if self == Backend::Postgres {
            renumber_postgres_migrations(pool).await?;
        }
        let binary = self
            .migrator()
            .iter()
            .map(|migration| migration.version)
            .max()
            .unwrap_or(0);
        let recorded: i64 = sqlx::query_scalar(match self {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        })
        .fetch_one(pool)
        .await?;
        let database = if recorded == 0 {
            0
        } else {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE",
            )
            .fetch_one(pool)
            .await?
            .unwrap_or(0)
        };
        Ok(super::Schema { database, binary })
    }

    /// Brings the database's schema up to date.
    pub(super) async fn migrate(self, pool: &AnyPool) -> Result<(), StoreError> {
        // PostgreSQL's older numbering was moved by `schema`, which always runs first.
        self.migrator().run(pool).await?;
        Ok(())
    }

    pub(super) async fn connect(
        self,
        url: &str,
        settings: &DatabaseSettings,
    ) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        let options = AnyPoolOptions::new()
            .after_release(|connection, _| Box::pin(async move { Ok(reusable(connection).await) }));
        let pool = match self {
            Backend::Sqlite => {
                // The `Any` driver opens existing files only: create it here, where the
                // native options can; WAL mode is kept in the file itself.
                let create = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal);
                SqliteConnection::connect_with(&create)
                    .await?
                    .close()
                    .await?;
                // At least one page, or SQLite would read 0 as "no change".
                let max_pages = (settings.max_bytes > 0)
                    .then(|| (settings.max_bytes / SQLITE_PAGE_SIZE).max(1));
                options
                    .max_connections(SQLITE_CONNECTIONS)
                    .after_connect(move |connection, _| {
                        Box::pin(async move {
                            let mut pragmas = format!(
                                "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                                 PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{SQLITE_CACHE_KIB};"
                            );
                            if let Some(pages) = max_pages {
                                pragmas.push_str(&format!(" PRAGMA max_page_count = {pages};"));
                            }
                            sqlx::Executor::execute(&mut *connection, pragmas.as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                options
                    .max_connections(settings.max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        Ok(pool)
    }

    /// A transaction that may write. SQLite's IMMEDIATE takes the write lock up front,
    /// so nothing it read can change before it writes; PostgreSQL locks what it needs
    /// with [`Backend::lock_loads`], [`Backend::lock_address`] and [`Backend::for_update`].
    pub(super) async fn begin_write(
        self,
        pool: &AnyPool,
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => pool.begin().await,
        }
    }

    /// A transaction whose reads all see one state of the database.
    pub(super) async fn begin_read(
        self,
        pool: &AnyPool,
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        if self == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        // SQLite in WAL mode: a transaction reads one snapshot from its first read on.
        Ok(tx)
    }

    /// Held until commit: one load at a time across every replica.
    pub(super) async fn lock_loads(self, tx: &mut AnyConnection) -> Result<(), sqlx::Error> {
        if self == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(POSTGRES_LOAD_LOCK)
                .execute(tx)
                .await?;
        }
        Ok(())
    }

    /// Held until commit: sign-ups of one address, on any replica, take turns.
    pub(super) async fn lock_address(
        self,
        tx: &mut AnyConnection,
        address: &str,
    ) -> Result<(), sqlx::Error> {
        if self == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(hashtext($1))")
                .bind(address)
                .execute(tx)
                .await?;
        }
        Ok(())
    }

    /// Appended to a SELECT that reads rows its transaction will change.
    pub(super) fn for_update(self, table: &str) -> String {
        match self {
            Backend::Sqlite => String::new(),
            Backend::Postgres => format!(" FOR UPDATE OF {table}"),
        }
    }

    /// Appended to the SELECT of rows to claim, so that concurrent claimers get
    /// different rows instead of waiting on each other.
    pub(super) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The elements of the JSON array in parameter `$n`, as rows of one column `value`.
    pub(super) fn json_elements(self, n: usize) -> String {
        match self {
            Backend::Sqlite => format!("json_each(${n})"),
            Backend::Postgres => format!("json_array_elements(CAST(${n} AS json))"),
        }
    }

    /// The strings in the JSON array in parameter `$n`, as rows of one column `value`.
    pub(super) fn json_text_elements(self, n: usize) -> String {
        match self {
            Backend::Sqlite => format!("json_each(${n})"),
            Backend::Postgres => format!("json_array_elements_text(CAST(${n} AS json))"),
        }
    }

    /// Every row of every table as text (see [`super::Store::dump`]).
    pub(super) async fn dump(self, connection: &mut AnyConnection) -> Result<String, StoreError> {
        let tables = match self {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS text) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                 ORDER BY table_name"
            }
        };
        let tables: Vec<String> = sqlx::query_scalar(tables)
            .fetch_all(&mut *connection)
            .await?;
        let mut dump = String::new();
        for table in tables {
            // A row as text, and the order rows were written in (PostgreSQL: by content).
            let (expression, order) = match self {
                Backend::Sqlite => {
                    let quoted: String = sqlx::query_scalar(
                        "SELECT group_concat('quote(\"' || name || '\")', ' || ''|'' || ') \
                         FROM pragma_table_info($1)",
                    )
                    .bind(&table)
                    .fetch_one(&mut *connection)
                    .await?;
                    (quoted, "rowid")
                }
                Backend::Postgres => ("t".to_owned(), "1"),
            };
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT CAST({expression} AS text) FROM \"{table}\" t ORDER BY {order}"
            ))
            .fetch_all(&mut *connection)
            .await?;
            dump.push_str(&format!("-- {table}\n"));
            for row in rows {
                dump.push_str(&row);
                dump.push('\n');
            }
        }
        Ok(dump)
    }
}

/// Whether a connection goes back into the pool after use. A transaction that failed
/// part-way can leave one still counting itself inside it (SQLite rolls back by itself
/// on a full disk, and the rollback sqlx then sends fails): such a connection would
/// refuse every later transaction, so it is closed and the pool opens a fresh one.
async fn reusable(connection: &mut AnyConnection) -> bool {
    if connection.is_in_transaction() {
        // A dropped transaction's rollback may still be queued: let it run first.
        if connection.ping().await.is_err() {
            return false;
        }
    }
    !connection.is_in_transaction()
}

/// A consistent copy of the SQLite database at `url` in the new file `destination`,
/// taken while other connections read and write it: `VACUUM INTO` reads one snapshot
/// (WAL lets writers go on meanwhile) and writes it compacted.
pub(super) async fn backup_sqlite(
    url: &str,
    destination: &std::path::Path,
) -> Result<(), StoreError> {
    let options = SqliteConnectOptions::from_str(url)?.read_only(true);
    let mut connection = SqliteConnection::connect_with(&options).await?;
    let destination = destination.to_str().ok_or_else(|| {
        StoreError::Corrupt(format!("{} is not a UTF-8 path", destination.display()))
    })?;
    sqlx::query("VACUUM INTO ?")
        .bind(destination)
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(())
}

/// Moves the record of PostgreSQL migrations applied under their old numbers to the
/// numbers they have now, once, so that the migrator finds them applied. Replicas
/// starting together take turns on the table; the first does it, the rest find it done.
async fn renumber_postgres_migrations(pool: &AnyPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let recorded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *tx)
    .await?;
    if recorded == 0 {
        return Ok(());
    }
    sqlx::query("LOCK TABLE _sqlx_migrations IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (version, description) = POSTGRES_FIRST_RENUMBERED;
    let old_numbers: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM _sqlx_migrations WHERE version = $1 AND description = $2",
    )
    .bind(version)
    .bind(description)
    .fetch_one(&mut *tx)
    .await?;
    if old_numbers == 0 {
        return Ok(());
    }
    // Through negative numbers, so that no two rows ever hold one version.
    sqlx::query("UPDATE _sqlx_migrations SET version = -(version + $1) WHERE version >= $2")
        .bind(POSTGRES_RENUMBERED_BY)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE _sqlx_migrations SET version = -version WHERE version < 0")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!("renumbered the PostgreSQL migrations applied so far to SQLite's numbering");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_s_number_names_the_same_change_on_both_databases() {
        let sqlite: Vec<(i64, &str)> = SQLITE_MIGRATIONS
            .iter()
            .map(|migration| (migration.version, migration.description.as_ref()))
            .collect();
        let postgres: Vec<(i64, &str)> = POSTGRES_MIGRATIONS
            .iter()
            .map(|migration| (migration.version, migration.description.as_ref()))
            .collect();
        assert_eq!(postgres.first().map(|m| m.0), Some(1));
        for migration in &postgres[1..] {
            assert!(
                sqlite.contains(migration),
                "PostgreSQL's {migration:?} is not SQLite's migration of that number"
            );
        }
        assert_eq!(
            postgres.last(),
            sqlite.last(),
            "each change is written for both databases"
        );
        let (first, description) = POSTGRES_FIRST_RENUMBERED;
        assert!(
            postgres.contains(&(first + POSTGRES_RENUMBERED_BY, description)),
            "the renumbering moves a migration to where it is now"
        );
    }
}
