//! PostgreSQL, for several replicas sharing one database. Writers serialise loads with a
//! transaction-scoped advisory lock; delivery workers claim rows with
//! `FOR UPDATE SKIP LOCKED`, so each row goes to exactly one of them.

mod figures;
mod newsletter;

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::StoreError;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// The advisory lock key that serialises loads across replicas ("runrate" in ASCII).
const LOAD_LOCK: i64 = 0x72_75_6e_72_61_74_65;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_release(super::reusable::<sqlx::Postgres>)
            .connect_with(options)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}
