//! Bounces and complaints that come back after sending: DSN and ARF reports (the
//! fixtures in `tests/mail-feedback/`, after the RFCs' examples) taken over HTTP and by
//! `runrate ingest-feedback` from a Maildir, each suppressing the address of the email it
//! quotes and no other; a soft bounce changes nothing; an operator lifts a suppression.

use std::{path::PathBuf, process::Command};

use runrate::api::{LiftSuppressionRequest, ListSubscribersRequest, SubscriberState};

use crate::support::{
    helpers::TestServer, http_client::request_with_headers, smtp_server::SmtpServer,
};

const BINARY: &str = env!("CARGO_BIN_EXE_runrate");

/// A fixture with the recipient and the Message-ID of the email it answers filled in.
fn report(fixture: &str, recipient: &str, message_id: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mail-feedback")
        .join(fixture);
    std::fs::read_to_string(&path)
        .expect("a fixture")
        .replace("{{RECIPIENT}}", recipient)
        .replace("{{MESSAGE_ID}}", message_id)
        .replace('\n', "\r\n")
}

async fn states(server: &TestServer) -> Vec<(String, SubscriberState)> {
    let mut states: Vec<(String, SubscriberState)> = server
        .admin()
        .await
        .list_subscribers(server.admin_request(ListSubscribersRequest {
            page_size: 100,
            ..Default::default()
        }))
        .await
        .expect("list subscribers")
        .into_inner()
        .subscribers
        .into_iter()
        .map(|subscriber| (subscriber.email.clone(), subscriber.state()))
        .collect();
    states.sort();
    states
}

async fn post_feedback(server: &TestServer, token: &str, body: &str) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    let response = request_with_headers(
        server.http_address,
        "POST",
        "/admin/mail-feedback",
        &[("Authorization", &bearer)],
        Some(("message/rfc822", body)),
    )
    .await;
    (response.status, response.body)
}

#[tokio::test]
async fn reports_suppress_the_address_they_quote_and_only_that_one() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    server.seed_confirmed_subscribers(3).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;
    let message_id = |address: &str| {
        smtp.received_by(address)[0]
            .header("Message-ID")
            .expect("a Message-ID")
    };
    let token = server.admin_token();

    // A permanent failure, POSTed by a mail system.
    let bounce = report(
        "dsn-permanent.eml",
        "reader2@example.com",
        &message_id("reader2@example.com"),
    );
    let (status, body) = post_feedback(&server, &token, &bounce).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("reader2@example.com") && body.contains("now bounced"),
        "{body}"
    );

    // An abuse report and a delay notice, from a Maildir by the CLI.
    let maildir = tempfile::tempdir().expect("a Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir(maildir.path().join(sub)).expect("Maildir folders");
    }
    let complaint = report(
        "arf-abuse.eml",
        "reader3@example.com",
        &message_id("reader3@example.com"),
    );
    let delayed = report(
        "dsn-delayed.eml",
        "reader1@example.com",
        &message_id("reader1@example.com"),
    );
    std::fs::write(maildir.path().join("new/1.mx:2,"), complaint).expect("write");
    std::fs::write(maildir.path().join("cur/2.mx:2,S"), delayed).expect("write");
    let mut command = Command::new(BINARY);
    command
        .args([
            "ingest-feedback",
            "--server",
            &server.url(),
            "--token",
            &token,
        ])
        .arg(maildir.path());
    // Off the test's runtime, which serves the calls the command makes.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command's thread")
        .expect("run runrate ingest-feedback");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        printed.contains("complaint (abuse): reader3@example.com"),
        "{printed}"
    );
    assert!(
        printed.contains("soft bounce (4.4.1): reader1@example.com"),
        "{printed}"
    );
    assert!(
        printed.contains("2 reports taken, 0 not taken"),
        "{printed}"
    );

    assert_eq!(
        states(&server).await,
        [
            ("reader1@example.com".to_owned(), SubscriberState::Confirmed),
            ("reader2@example.com".to_owned(), SubscriberState::Bounced),
            (
                "reader3@example.com".to_owned(),
                SubscriberState::Complained
            ),
        ]
    );
    let report = server.delivery_report("loads/2").await;
    assert_eq!((report.sent, report.failed), (1, 2), "{report:?}");

    // The next load reaches only the address nothing came back for.
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;
    assert_eq!(smtp.received().len(), 4);
    assert_eq!(smtp.received_by("reader1@example.com").len(), 2);

    // An operator lifts the bounce; lifting it again is refused.
    let lifted = server
        .admin()
        .await
        .lift_suppression(server.admin_request(LiftSuppressionRequest {
            email: "reader2@example.com".into(),
        }))
        .await
        .expect("lift")
        .into_inner();
    assert_eq!(
        (lifted.previous_state(), lifted.state()),
        (SubscriberState::Bounced, SubscriberState::Confirmed)
    );
    let again = server
        .admin()
        .await
        .lift_suppression(server.admin_request(LiftSuppressionRequest {
            email: "reader2@example.com".into(),
        }))
        .await
        .expect_err("not suppressed any more");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn reports_that_are_not_ours_or_not_reports_are_refused_and_change_nothing() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    server.seed_confirmed_subscribers(1).await;
    let token = server.admin_token();

    let (status, _) = post_feedback(&server, "wrong-token", "anything").await;
    assert_eq!(status, 401);

    let forged = report("dsn-permanent.eml", "reader1@example.com", "<1@localhost>");
    let (status, body) = post_feedback(&server, &token, &forged).await;
    assert_eq!(status, 400);
    assert!(body.contains("not one runrate wrote"), "{body}");

    let plain = "From: a@example.com\r\nSubject: hello\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
    let (status, body) = post_feedback(&server, &token, plain).await;
    assert_eq!(status, 400);
    assert!(body.contains("found text/plain"), "{body}");

    let oversized = "x".repeat(1024 * 1024 + 1);
    let (status, _) = post_feedback(&server, &token, &oversized).await;
    assert_eq!(status, 413);

    assert_eq!(
        states(&server).await,
        [("reader1@example.com".to_owned(), SubscriberState::Confirmed)]
    );
}
