//! SQLite only: `runrate backup` copies the embedded database; PostgreSQL is backed up
//! with `pg_dump`, as docs/operations.md says.
//!
//! A backup taken while the server serves, half-way through a 10,000-email fan-out,
//! restores into a new data directory: the restored server has every fact, subscriber
//! and delivery as they were, and finishes the fan-out so that each reader has exactly
//! one email in all.

use std::{path::Path, process::Command, time::Duration};

use runrate::api::{GetFactRequest, metrics_service_client::MetricsServiceClient};
use tokio_util::sync::CancellationToken;

use crate::support::{
    helpers::{TestDir, TestServer},
    smtp_server::SmtpServer,
};

const READERS: u32 = 10_000;

fn backup(data_dir: &Path, destination: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_runrate"))
        .arg("backup")
        .arg(destination)
        .env("RUNRATE__DATA_DIR", data_dir)
        .current_dir(data_dir)
        .output()
        .expect("run runrate backup")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_mid_fan_out_restores_and_the_fan_out_finishes_once_per_reader() {
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    let settings = dir.smtp_settings(smtp.address);
    let server = TestServer::start_in(dir, settings).await;
    server.seed_confirmed_subscribers(READERS).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");

    // Half the fan-out, a claim at a time.
    let running = CancellationToken::new();
    while smtp.received().len() < (READERS / 2) as usize {
        server.outbox.run_once(&running).await.expect("a round");
    }
    let sent_before = smtp.received().len();

    // The backup, while readers keep reading.
    let destination = tempfile::tempdir().expect("a directory");
    let backup_dir = destination.path().join("backup");
    let reading = {
        let url = server.url();
        tokio::spawn(async move {
            let mut client = MetricsServiceClient::connect(url).await.expect("connect");
            for _ in 0..200 {
                client
                    .get_fact(GetFactRequest {
                        name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
                        read_time: None,
                    })
                    .await
                    .expect("a read during the backup");
            }
        })
    };
    let data_dir = server.data_dir.clone();
    let backup_dir_for_the_command = backup_dir.clone();
    let output =
        tokio::task::spawn_blocking(move || backup(&data_dir, &backup_dir_for_the_command))
            .await
            .expect("the backup ran");
    reading.await.expect("the reads");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("runrate.db") && said.contains("admin-token"),
        "{said}"
    );
    let before = server.dump().await;
    // A second backup into the same place is refused rather than mixed in.
    let again = backup(&server.data_dir, &backup_dir);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("holds a backup already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let token = std::fs::read_to_string(server.data_dir.join("admin-token")).expect("the token");
    drop(server);

    // Restore: the files into an empty data directory, and start.
    let restored_dir = TestDir::new().await;
    for file in ["runrate.db", "admin-token"] {
        std::fs::copy(backup_dir.join(file), restored_dir.path().join(file)).expect("restore");
    }
    let mut settings = restored_dir.smtp_settings(smtp.address);
    settings.delivery.lease = runrate::settings::TextDuration(Duration::from_secs(2));
    let restored = TestServer::start_in(restored_dir, settings).await;
    assert_eq!(
        restored.dump().await,
        before,
        "every fact, subscriber and delivery as the backup found them"
    );
    assert_eq!(
        std::fs::read_to_string(restored.data_dir.join("admin-token")).expect("the token"),
        token,
        "the same admin token"
    );

    let report = restored.settled_report("loads/2").await;
    assert_eq!(report.sent, i64::from(READERS), "{report:?}");
    let counts = smtp.counts();
    assert_eq!(
        counts.len(),
        READERS as usize,
        "every reader got the update"
    );
    assert!(
        counts.values().all(|&count| count == 1),
        "{} readers got more than one",
        counts.values().filter(|&&count| count > 1).count()
    );
    assert!(
        sent_before < READERS as usize,
        "the backup was taken mid-way"
    );
}
