//! PostgreSQL only: PostgreSQL's migrations are the ones that took new numbers; SQLite's
//! kept theirs.
//!
//! A database migrated while PostgreSQL's migrations had numbers of their own opens
//! under the shared numbering: its record of them moves to the new numbers once, and
//! nothing is applied twice.

use std::path::Path;

use runrate::store::Store;

use crate::support::helpers::TestDir;

/// The recorded migrations: version, description and checksum, by version.
async fn recorded(pool: &sqlx::PgPool) -> Vec<(i64, String, Vec<u8>)> {
    sqlx::query_as("SELECT version, description, checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .expect("read the migrations table")
}

#[tokio::test]
async fn a_database_migrated_under_the_old_numbers_opens_and_is_renumbered_once() {
    let dir = TestDir::new().await;
    let settings = dir.settings();
    let url = settings.database.url.clone();

    // The same files under the numbers they had: 0001, then 0002 onwards for what is
    // now 0004 onwards.
    let old = tempfile::tempdir().expect("a directory");
    let current = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations/postgres");
    for entry in std::fs::read_dir(&current).expect("list the migrations") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("a file name");
        let (number, rest) = name.split_once('_').expect("NNNN_name.sql");
        let number: u32 = number.parse().expect("a number");
        let old_number = if number == 1 { 1 } else { number - 2 };
        std::fs::copy(&path, old.path().join(format!("{old_number:04}_{rest}")))
            .expect("copy a migration");
    }
    let pool = sqlx::PgPool::connect(url.expose()).await.expect("connect");
    sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("the old migrations")
        .run(&pool)
        .await
        .expect("migrate as before");
    let before = recorded(&pool).await;
    assert_eq!(
        before.iter().map(|m| m.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );

    // Opened twice: the first renumbers, the second finds nothing to do.
    for _ in 0..2 {
        let store = Store::open(&settings.database, &url)
            .await
            .expect("a database migrated before opens");
        drop(store);
    }

    let after = recorded(&pool).await;
    assert_eq!(
        after.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 4, 5, 6, 7, 8, 9, 10],
        "the record moved to the shared numbers"
    );
    let unchanged = |list: &[(i64, String, Vec<u8>)]| {
        list.iter()
            .map(|(_, description, checksum)| (description.clone(), checksum.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        unchanged(&after),
        unchanged(&before),
        "each migration recorded once, as it was applied"
    );
    pool.close().await;
}
