//! Upgrades: a binary refuses a database a newer runrate migrated, with a message that
//! says so; with `database.migrate_on_start` off it refuses one that needs its
//! migrations until `runrate migrate` has applied them, and then serves.

use std::process::{Command, Output};

use crate::support::helpers::{ServeProcess, TestDir};

const BINARY: &str = env!("CARGO_BIN_EXE_runrate");

/// The binary with `arguments` in `dir`, its environment `environment`.
fn run(dir: &TestDir, environment: &[(String, String)], arguments: &[&str]) -> Output {
    Command::new(BINARY)
        .args(arguments)
        .current_dir(dir.path())
        .envs(environment.iter().cloned())
        .env("NO_COLOR", "1")
        .output()
        .expect("run runrate")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_a_newer_runrate_migrated_is_refused_by_name() {
    let dir = TestDir::new().await;
    let environment = dir.serve_environment();
    let migrated = run(&dir, &environment, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));

    // What a newer build leaves behind: a migration this one does not know.
    let data_dir = dir.path().join("runrate-data");
    let mut connection = dir.fixture_connection(&data_dir).await;
    let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut connection)
        .await
        .expect("the newest migration");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer runrate', TRUE, $2, 0)",
    )
    .bind(newest + 1)
    .bind(vec![0u8; 48])
    .execute(&mut connection)
    .await
    .expect("record a newer migration");

    for command in [&["serve"][..], &["migrate"][..]] {
        let refused = run(&dir, &environment, command);
        assert!(!refused.status.success(), "{command:?} started");
        let message = stderr(&refused);
        assert!(
            message.contains("migrated by a newer runrate")
                && message.contains(&format!("schema {}", newest + 1))
                && message.contains(&format!("schema {newest} at most")),
            "{command:?}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_migrating_at_start_a_database_waits_for_runrate_migrate() {
    let dir = TestDir::new().await;
    let mut environment = dir.serve_environment();
    environment.push(("RUNRATE__DATABASE__MIGRATE_ON_START".into(), "false".into()));
    let refused = run(&dir, &environment, &["serve"]);
    assert!(!refused.status.success(), "served an unmigrated database");
    let message = stderr(&refused);
    assert!(
        message.contains("database.migrate_on_start is off")
            && message.contains("run `runrate migrate` first"),
        "{message}"
    );

    let migrated = run(&dir, &environment, &["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let said = String::from_utf8_lossy(&migrated.stdout);
    assert!(
        said.starts_with("Migrated the database from schema 0 to "),
        "{said}"
    );
    let again = run(&dir, &environment, &["migrate"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to migrate"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Now it serves, without migrating.
    let server = ServeProcess::start(dir.path(), environment);
    assert!(server.http_address.is_some());
}
