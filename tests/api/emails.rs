//! The emails as readers get them, compared with golden copies in `tests/golden/`: the
//! update for a new quarter and for a restatement, text and HTML. `UPDATE_GOLDEN=1`
//! writes the copies afresh (then read the diff before committing it).

use std::path::PathBuf;

use crate::support::{
    helpers::TestServer,
    smtp_server::{Received, SmtpServer},
};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The message's part of `content_type`, its token and message-specific URL replaced
/// with stand-ins, checked against the golden copy `name`.
fn assert_golden(email: &Received, content_type: &str, name: &str) -> String {
    let (body, encoding) = email
        .part(content_type)
        .unwrap_or_else(|| panic!("no {content_type} part"));
    assert_eq!(encoding, "7bit", "{name}: plain ASCII needs no encoding");
    let token = email
        .link("http://127.0.0.1:8080/unsubscribe?token=")
        .and_then(|link| link.split_once("token=").map(|(_, token)| token.to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "an unsubscribe token in {}",
                String::from_utf8_lossy(&email.data)
            )
        });
    let body = body.replace(&token, "TOKEN");
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &body).expect("write the golden copy");
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(body, golden, "{name} differs from its golden copy");
    body
}

/// Lines of plain text stay within 78 columns; a URL is never broken, so a line that
/// is only a URL may be longer.
fn assert_narrow(text: &str) {
    for line in text.lines() {
        assert!(
            line.len() <= 78 || line.starts_with("http"),
            "{} columns: {line:?}",
            line.len()
        );
    }
}

#[tokio::test]
async fn update_emails_say_what_the_load_brought_in_words() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    server.seed_confirmed_subscribers(1).await;

    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load the new quarter");
    server.settle_outbox().await;
    let quarter = smtp.received_by("reader1@example.com").remove(0);
    assert_eq!(
        quarter.header("Subject").as_deref(),
        Some("runrate: 2026-Q2 figures for AWS, Azure and Google Cloud")
    );
    assert_eq!(
        quarter.header("List-Id").as_deref(),
        Some("runrate updates <updates.localhost>")
    );
    let text = assert_golden(&quarter, "text/plain", "update-new-quarter.txt");
    assert_narrow(&text);
    assert!(!text.contains(".toml"), "no file names");
    let html = assert_golden(&quarter, "text/html", "update-new-quarter.html");
    assert!(html.contains("name=\"viewport\""));
    assert!(
        html.contains("href=\"http://127.0.0.1:8080/\""),
        "links as plain URLs"
    );

    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load the restatement");
    server.settle_outbox().await;
    let restatement = smtp.received_by("reader1@example.com").remove(1);
    assert_eq!(
        restatement.header("Subject").as_deref(),
        Some("runrate: 2 figures revised for 2026-Q1")
    );
    let text = assert_golden(&restatement, "text/plain", "update-restatement.txt");
    assert_narrow(&text);
    assert!(
        text.contains("AWS 2026-Q1 total cloud revenue restated from ~$29B to $29.3B."),
        "{text}"
    );
    assert_golden(&restatement, "text/html", "update-restatement.html");
}
