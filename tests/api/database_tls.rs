//! PostgreSQL only: TLS to the database is PostgreSQL's; SQLite is a local file.
//!
//! runrate reaches PostgreSQL over TLS with `sslmode=verify-full`, trusting only the CA
//! its database URL names, and refuses a server that CA did not certify. `.ci/run` serves
//! the cluster's TLS with a CA it makes and names it in `RUNRATE_TEST_POSTGRES_CA`;
//! without that the test is skipped.

use std::{path::PathBuf, process::Command};

use runrate::{settings::DatabaseUrl, store::Store};

use crate::support::helpers::TestDir;

fn postgres_ca() -> Option<PathBuf> {
    let ca = std::env::var_os("RUNRATE_TEST_POSTGRES_CA").map(PathBuf::from);
    if ca.is_none() {
        eprintln!("skipped: RUNRATE_TEST_POSTGRES_CA names no CA of the PostgreSQL server's");
    }
    ca
}

/// `url` with TLS verified against `ca` (certificate and host name both).
fn verify_full(url: &DatabaseUrl, ca: &std::path::Path) -> DatabaseUrl {
    DatabaseUrl::new(format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        url.expose(),
        ca.display()
    ))
}

#[tokio::test]
async fn verify_full_reaches_postgres_over_tls_and_another_ca_is_refused() {
    let Some(ca) = postgres_ca() else {
        return;
    };
    let dir = TestDir::new().await;
    let settings = dir.settings();
    let plain = settings.database.url.clone();

    let store = Store::open(&settings.database, &verify_full(&plain, &ca))
        .await
        .expect("opens over TLS with the server's CA");
    let database = plain
        .expose()
        .rsplit('/')
        .next()
        .expect("a database name")
        .to_owned();
    let observer = sqlx::PgPool::connect(plain.expose())
        .await
        .expect("connect");
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1 AND s.ssl AND a.pid <> pg_backend_pid()",
    )
    .bind(&database)
    .fetch_one(&observer)
    .await
    .expect("read pg_stat_ssl");
    assert!(encrypted >= 1, "runrate's connections are encrypted");
    drop(store);

    // A CA of the test's own, which never signed the server's certificate.
    let other = tempfile::tempdir().expect("a directory");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=another CA",
            "-keyout",
            "ca.key",
        ])
        .args(["-out", "ca.pem"])
        .current_dir(other.path())
        .output()
        .expect("run openssl");
    assert!(status.status.success(), "{status:?}");
    let refused = Store::open(
        &settings.database,
        &verify_full(&plain, &other.path().join("ca.pem")),
    )
    .await;
    let err = refused
        .err()
        .expect("a server another CA certified is refused");
    let chain = format!("{err:#} {err:?}");
    assert!(
        chain.to_lowercase().contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
    observer.close().await;
}
