//! SQLite only: the full disk is that of the embedded file; `database_outage` is
//! PostgreSQL's failing database.
//!
//! A full disk on the embedded database: writes fail while it is full, and
//! once space is freed every operation works again without a restart. The disk is
//! "full" through `database.max_bytes` (SQLite's `max_page_count`), which fails writes
//! with the same SQLITE_FULL a full file system gives.

use std::{path::Path, time::Duration};

use runrate::api::SubscribeRequest;
use sqlx::Connection;

use crate::support::helpers::{TestDir, TestServer};

const WAIT: Duration = Duration::from_secs(20);

async fn open_database(data_dir: &Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", data_dir.join("runrate.db").display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the test database")
}

async fn sign_up(server: &TestServer, email: &str) -> Result<(), tonic::Status> {
    server
        .newsletter()
        .await
        .subscribe(SubscribeRequest {
            email: email.into(),
            ..Default::default()
        })
        .await
        .map(drop)
}

fn emails_written(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("mail"))
        .map(|dir| dir.filter_map(Result::ok).count())
        .unwrap_or(0)
}

#[tokio::test]
async fn after_the_disk_fills_and_space_is_freed_everything_works_without_a_restart() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.newsletter.subscribe_rate_limit = 100_000;
    // A first start creates and seeds the database.
    let (dir, mut settings) = TestServer::start_in(dir, settings).await.stop().await;
    let dir = dir.expect("the directory");

    // Space that can be freed later, and a limit at exactly the file's size.
    let mut database = open_database(dir.path()).await;
    sqlx::query("CREATE TABLE filler (data BLOB NOT NULL)")
        .execute(&mut database)
        .await
        .expect("create the filler");
    sqlx::query("INSERT INTO filler SELECT randomblob(4000) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT i FROM n)")
        .execute(&mut database)
        .await
        .expect("fill");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut database)
        .await
        .expect("page count");
    settings.database.max_bytes = u64::try_from(pages).expect("pages") * 4096;
    let server = TestServer::start_in(dir, settings).await;

    // Sign-ups fill what room the pages have left, until one finds the disk full.
    let mut accepted = 0;
    let refused = loop {
        match sign_up(&server, &format!("filling{accepted}@example.com")).await {
            Ok(()) => accepted += 1,
            Err(status) => break status,
        }
        assert!(accepted < 5000, "the disk never filled");
    };
    assert_ne!(refused.code(), tonic::Code::Ok);
    let load = server.load_example("2026-q2-example.toml").await;
    assert!(load.is_err(), "a load on a full disk: {load:?}");
    // The outbox is worked while the disk is full: it may get through some, or fail (a
    // result it cannot record it retries until the store takes it, hence the bound).
    let _ = tokio::time::timeout(WAIT, server.outbox.drain()).await;

    // Space comes back.
    sqlx::query("DROP TABLE filler")
        .execute(&mut database)
        .await
        .expect("free the filler's pages");
    drop(database);

    for n in 0..20 {
        sign_up(&server, &format!("after{n}@example.com"))
            .await
            .unwrap_or_else(|status| panic!("sign-up {n} after space was freed: {status:?}"));
    }
    let response = server
        .load_example("2026-q2-example.toml")
        .await
        .expect("the load after space was freed");
    assert_eq!(response.load.expect("a load").name, "loads/2");
    // Every accepted sign-up gets its confirmation email: the delivery rounds that hit
    // the full disk left nothing broken behind.
    let expected = accepted + 20;
    server.settle_outbox().await;
    assert_eq!(emails_written(&server.data_dir), expected);
}
