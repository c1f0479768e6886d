//! Secrets never reach a log line or an error: the database password, the admin token and
//! the SMTP password, checked in everything `runrate serve` writes, at its most verbose.

use std::time::Duration;

use runrate::api::{LoadFiguresRequest, SubscribeRequest};

use crate::support::helpers::{ServeProcess, TestDir};

/// A secret no other text in the output could contain by chance.
fn unique_secret(label: &str) -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("randomness");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{label}-{hex}")
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let dir = TestDir::blocking_new();
    let password = unique_secret("db-password");
    let url = format!(
        "postgres://runrate:{password}@127.0.0.1:{}/runrate",
        closed_port()
    );
    let (mut server, _) = ServeProcess::spawn(
        dir.path(),
        [
            ("RUNRATE__DATABASE__URL".to_owned(), url),
            ("RUNRATE__GRPC__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("RUNRATE__HTTP__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("RUST_LOG".to_owned(), "trace".to_owned()),
        ],
    );
    let status = server.child.wait().expect("wait for runrate serve");
    // The reader threads finish with the process's pipes.
    std::thread::sleep(Duration::from_millis(200));
    let output = server.output();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("cannot open the database postgres://runrate:***@127.0.0.1"),
        "{output}"
    );
    assert!(!output.contains(&password), "{output}");
}

#[tokio::test]
async fn the_admin_token_and_the_smtp_password_never_reach_the_log() {
    let dir = TestDir::new().await;
    let token = unique_secret("admin-token");
    let smtp_password = unique_secret("smtp-password");
    let mut environment = dir.serve_environment();
    environment.extend(
        [
            ("RUNRATE__ADMIN__TOKEN", token.as_str()),
            ("RUNRATE__MAIL__TRANSPORT", "smtp"),
            ("RUNRATE__MAIL__SMTP__PORT", &closed_port().to_string()),
            ("RUNRATE__MAIL__SMTP__USERNAME", "runrate"),
            ("RUNRATE__MAIL__SMTP__PASSWORD", smtp_password.as_str()),
            ("RUNRATE__DELIVERY__RETRY_BASE", "50ms"),
            ("RUNRATE__DELIVERY__POLL_INTERVAL", "50ms"),
            ("RUST_LOG", "trace"),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned())),
    );
    let path = dir.path().to_path_buf();
    let server = tokio::task::spawn_blocking(move || ServeProcess::start(&path, environment))
        .await
        .expect("start");

    // A sign-up makes the worker try the mail server; admin calls carry the token, right
    // and wrong.
    let channel = tonic::transport::Channel::from_shared(server.url.clone())
        .expect("a URL")
        .connect()
        .await
        .expect("connect");
    runrate::api::newsletter_service_client::NewsletterServiceClient::new(channel.clone())
        .subscribe(SubscribeRequest {
            email: "reader@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    let mut admin = runrate::api::admin_service_client::AdminServiceClient::new(channel);
    for bearer in [token.clone(), format!("{token}-wrong")] {
        let mut request = tonic::Request::new(LoadFiguresRequest {
            file_name: "empty.toml".into(),
            content: b"format_version = 1\n".to_vec(),
            validate_only: true,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {bearer}").parse().expect("a header value"),
        );
        let _ = admin.load_figures(request).await;
    }
    // Until the worker has failed to reach the mail server twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.output().matches("it will be retried").count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = server.output();
    assert!(output.lines().count() > 20, "{output}");
    assert!(!output.contains(&token), "{output}");
    assert!(!output.contains(&smtp_password), "{output}");
}
