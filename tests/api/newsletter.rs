//! The newsletter end to end, over a real SMTP server and the real web side: double
//! opt-in, one update per confirmed subscriber per load, one-click unsubscribe, and the
//! rules that keep it from ever becoming spam.

use std::time::Duration;

use runrate::api::{
    ConfirmSubscriptionRequest, ListSubscribersRequest, SubscribeRequest, SubscriberState,
    UnsubscribeRequest, UpdatePreferencesRequest,
};
use tonic::Code;

use crate::support::{
    helpers::{TestDir, TestServer},
    http_client::{path_of, request, request_with_body, token_of},
    smtp_server::SmtpServer,
};

async fn try_subscribe(
    server: &TestServer,
    request: SubscribeRequest,
) -> Result<String, tonic::Status> {
    server
        .newsletter()
        .await
        .subscribe(request)
        .await
        .map(|response| response.into_inner().message)
}

fn address(email: &str) -> SubscribeRequest {
    SubscribeRequest {
        email: email.into(),
        ..Default::default()
    }
}

async fn subscribe(server: &TestServer, email: &str) -> String {
    try_subscribe(server, address(email))
        .await
        .expect("subscribe")
}

async fn state_of(server: &TestServer, email: &str) -> SubscriberState {
    let subscribers = server
        .admin()
        .await
        .list_subscribers(server.admin_request(ListSubscribersRequest {
            page_size: 1000,
            ..Default::default()
        }))
        .await
        .expect("list subscribers")
        .into_inner()
        .subscribers;
    subscribers
        .iter()
        .find(|s| s.email == email)
        .map(|s| s.state())
        .unwrap_or_else(|| panic!("{email} is not a subscriber"))
}

/// Signs `email` up and confirms it through the link in its confirmation email.
async fn subscribe_and_confirm(server: &TestServer, smtp: &SmtpServer, email: &str) {
    let before = smtp.received_by(email).len();
    subscribe(server, email).await;
    server.settle_outbox().await;
    let confirmation = smtp
        .received_by(email)
        .get(before)
        .cloned()
        .unwrap_or_else(|| panic!("no confirmation email for {email}"));
    let link = confirmation.link("http://").expect("a confirmation link");
    let response = request(
        server.http_address,
        "POST",
        "/confirm",
        Some(&format!("token={}", token_of(&link))),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

/// The unsubscribe link in the update email `address` received.
fn update_unsubscribe_link(smtp: &SmtpServer, address: &str) -> String {
    smtp.received_by(address)
        .into_iter()
        .find(|mail| mail.header("List-Unsubscribe").is_some())
        .unwrap_or_else(|| panic!("no update for {address}"))
        .link("http://127.0.0.1:8080/unsubscribe")
        .expect("an unsubscribe link")
}

#[tokio::test]
async fn sign_up_confirm_receive_and_leave_with_one_click() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    let reader = "reader@example.com";
    subscribe(&server, reader).await;
    subscribe(&server, "lurker@example.com").await;

    // The confirmation email arrives, with a link to the web side.
    server.settle_outbox().await;
    let confirmations = smtp.received();
    let confirmation = confirmations
        .iter()
        .find(|mail| mail.to == [reader])
        .expect("a confirmation for the reader");
    assert!(confirmation.header("Message-ID").is_some());
    assert_eq!(
        confirmation.header("Subject").as_deref(),
        Some("Confirm your runrate subscription")
    );
    let link = confirmation.link("http://").expect("a confirmation link");
    assert!(
        link.starts_with("http://127.0.0.1:8080/confirm?token="),
        "{link}"
    );

    // Following the link (as a mail scanner would) confirms nothing.
    let page = request(server.http_address, "GET", &path_of(&link), None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/confirm\">"),
        "{}",
        page.body
    );
    assert_eq!(state_of(&server, reader).await, SubscriberState::Pending);

    // The button's POST does.
    let confirmed = request(
        server.http_address,
        "POST",
        "/confirm",
        Some(&format!("token={}", token_of(&link))),
    )
    .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(state_of(&server, reader).await, SubscriberState::Confirmed);
    assert_eq!(
        state_of(&server, "lurker@example.com").await,
        SubscriberState::Pending
    );

    // A load sends exactly one update, to the confirmed reader only.
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load Q2");
    let report = server.settled_report("loads/2").await;
    assert_eq!((report.recipients, report.sent, report.failed), (1, 1, 0));
    let updates: Vec<_> = smtp
        .received()
        .into_iter()
        .filter(|mail| {
            mail.header("Subject")
                .is_some_and(|s| s.contains("2026-Q2 figures"))
        })
        .collect();
    assert_eq!(updates.len(), 1);
    let update = &updates[0];
    assert_eq!(update.to, [reader]);
    let text = update.text();
    for expected in [
        "~$31.5B",
        "~$14.6B (est.)",
        "Not disclosed",
        "DeepMind (internal)",
        "2026-Q2",
    ] {
        assert!(
            text.contains(expected),
            "{expected} missing from the update"
        );
    }
    assert!(update.part("text/plain").is_some() && update.part("text/html").is_some());
    let list_unsubscribe = update.header("List-Unsubscribe").expect("List-Unsubscribe");
    assert!(
        list_unsubscribe.starts_with("<http://127.0.0.1:8080/unsubscribe?token="),
        "{list_unsubscribe}"
    );
    assert_eq!(
        update.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );

    // The RFC 8058 one-click POST: no cookie, no login, 200 and no redirect; twice is fine.
    let unsubscribe_url = list_unsubscribe
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default();
    for _ in 0..2 {
        let response = request(
            server.http_address,
            "POST",
            &path_of(unsubscribe_url),
            Some("List-Unsubscribe=One-Click"),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(response.header("Location").is_none());
    }
    assert_eq!(
        state_of(&server, reader).await,
        SubscriberState::Unsubscribed
    );

    // The next load emails nobody.
    let emails_before = smtp.received().len();
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("restate");
    let report = server.settled_report("loads/3").await;
    assert_eq!(report.recipients, 0);
    assert_eq!(smtp.received().len(), emails_before);
}

#[tokio::test]
async fn unconfirmed_unsubscribed_and_bounced_addresses_are_never_emailed() {
    // Bounced addresses: see a_refused_address_fails_is_suppressed_and_is_not_emailed_again.
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    subscribe(&server, "pending@example.com").await;
    subscribe_and_confirm(&server, &smtp, "stays@example.com").await;
    subscribe_and_confirm(&server, &smtp, "leaves@example.com").await;

    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load 2");
    server.settled_report("loads/2").await;
    server
        .newsletter()
        .await
        .unsubscribe(UnsubscribeRequest {
            token: token_of(&update_unsubscribe_link(&smtp, "leaves@example.com")),
        })
        .await
        .expect("unsubscribe");

    let before: Vec<usize> = ["pending@example.com", "leaves@example.com"]
        .iter()
        .map(|a| smtp.received_by(a).len())
        .collect();
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load 3");
    let report = server.settled_report("loads/3").await;
    assert_eq!(report.recipients, 1, "only stays@ is confirmed");
    assert_eq!(report.sent, 1);
    let after: Vec<usize> = ["pending@example.com", "leaves@example.com"]
        .iter()
        .map(|a| smtp.received_by(a).len())
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        before[0], 1,
        "pending@ got its confirmation and nothing else"
    );
}

#[tokio::test]
async fn a_refused_address_fails_is_suppressed_and_is_not_emailed_again() {
    let smtp = SmtpServer::with_faults(|to| {
        if to == "nobody@example.com" {
            crate::support::smtp_server::Fault::PermanentFailure
        } else {
            crate::support::smtp_server::Fault::Accept
        }
    })
    .await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    server.seed_confirmed_subscribers(2).await;
    server
        .rename_subscriber("reader1@example.com", "nobody@example.com")
        .await;

    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load 2");
    let report = server.settled_report("loads/2").await;
    assert_eq!((report.sent, report.failed), (1, 1));
    let failure = &report.failures[0];
    assert_eq!(failure.email, "nobody@example.com");
    assert!(failure.last_error.contains("550"), "{failure:?}");
    assert_eq!(
        state_of(&server, "nobody@example.com").await,
        SubscriberState::Bounced
    );
    assert_eq!(
        smtp.attempts("nobody@example.com"),
        1,
        "a 5xx is not retried"
    );

    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load 3");
    let report = server.settled_report("loads/3").await;
    assert_eq!(report.recipients, 1);
    assert_eq!(smtp.attempts("nobody@example.com"), 1);

    // Subscribing again does not bring a bounced address back.
    subscribe(&server, "nobody@example.com").await;
    server.settle_outbox().await;
    assert_eq!(smtp.attempts("nobody@example.com"), 1);
}

#[tokio::test]
async fn the_answer_is_the_same_for_new_and_known_addresses() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    subscribe_and_confirm(&server, &smtp, "known@example.com").await;
    let for_new = subscribe(&server, "new@example.com").await;
    let for_pending = subscribe(&server, "new@example.com").await;
    let for_confirmed = subscribe(&server, "known@example.com").await;
    assert_eq!(for_new, for_pending);
    assert_eq!(for_new, for_confirmed);

    let page = |email: &'static str| {
        let address = server.http_address;
        async move {
            request(
                address,
                "POST",
                "/subscribe",
                Some(&format!("email={email}")),
            )
            .await
        }
    };
    let new_page = page("another@example.com").await;
    let known_page = page("known%40example.com").await;
    assert_eq!(new_page.status, 200);
    assert_eq!(
        (known_page.status, known_page.body),
        (new_page.status, new_page.body)
    );

    // A pending address asking again within the window gets no second email.
    server.settle_outbox().await;
    assert_eq!(smtp.received_by("new@example.com").len(), 1);
}

#[tokio::test]
async fn an_expired_confirmation_link_is_refused() {
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    let mut settings = dir.smtp_settings(smtp.address);
    settings.newsletter.confirmation_ttl =
        runrate::settings::TextDuration(Duration::from_millis(300));
    let server = TestServer::start_in(dir, settings).await;
    subscribe(&server, "slow@example.com").await;
    server.settle_outbox().await;
    let mail = smtp.received().remove(0);
    let token = token_of(&mail.link("http://").expect("a link"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let status = server
        .newsletter()
        .await
        .confirm_subscription(ConfirmSubscriptionRequest {
            token: token.clone(),
        })
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let page = request(
        server.http_address,
        "POST",
        "/confirm",
        Some(&format!("token={token}")),
    )
    .await;
    assert_eq!(page.status, 410);
    assert_eq!(
        state_of(&server, "slow@example.com").await,
        SubscriberState::Pending
    );

    let status = server
        .newsletter()
        .await
        .confirm_subscription(ConfirmSubscriptionRequest {
            token: "made-up".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn sign_ups_are_rate_limited_per_client() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.newsletter.subscribe_rate_limit = 3;
    let server = TestServer::start_in(dir, settings).await;
    for n in 0..3 {
        subscribe(&server, &format!("r{n}@example.com")).await;
    }
    let status = try_subscribe(&server, address("r4@example.com"))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let page = request(
        server.http_address,
        "POST",
        "/subscribe",
        Some("email=r5%40example.com"),
    )
    .await;
    assert_eq!(page.status, 429);
}

#[tokio::test]
async fn bad_addresses_are_refused_and_nothing_reaches_a_header() {
    let server = TestServer::start().await;
    for bad in [
        "not-an-address",
        "a@b.com\r\nBcc: x@y.com",
        "reader@localhost",
        "",
    ] {
        let status = try_subscribe(&server, address(bad))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
    }
    let unknown_provider = SubscribeRequest {
        providers: vec!["oracle".into()],
        ..address("ok@example.com")
    };
    let status = try_subscribe(&server, unknown_provider)
        .await
        .expect_err("unknown provider");
    assert_eq!(status.code(), Code::InvalidArgument);
    let page = request(
        server.http_address,
        "POST",
        "/subscribe",
        Some("email=a%40b.com%0D%0ABcc%3A+x%40y.com"),
    )
    .await;
    assert_eq!(page.status, 400);
}

#[tokio::test]
async fn followers_of_other_providers_are_not_emailed() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    subscribe_and_confirm(&server, &smtp, "aws-fan@example.com").await;
    let confirmation = smtp.received_by("aws-fan@example.com").remove(0);
    assert!(confirmation.link("http://").is_some());
    // Preferences change with the token from an update; get one first.
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load 2");
    server.settled_report("loads/2").await;
    let token = token_of(&update_unsubscribe_link(&smtp, "aws-fan@example.com"));
    server
        .newsletter()
        .await
        .update_preferences(UpdatePreferencesRequest {
            token,
            providers: vec!["google-cloud".into()],
        })
        .await
        .expect("follow Google Cloud only");

    // The restatement touches AWS and Azure only.
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load 3");
    let report = server.settled_report("loads/3").await;
    assert_eq!(report.recipients, 0);
}

#[tokio::test]
async fn with_no_mail_server_emails_are_written_as_files() {
    let server = TestServer::start().await;
    subscribe(&server, "files@example.com").await;
    server.settle_outbox().await;
    let mail_dir = server.data_dir.join("mail");
    let files: Vec<_> = std::fs::read_dir(&mail_dir)
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    let path = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "eml"))
        .unwrap_or_else(|| panic!("no .eml file in {}", mail_dir.display()));
    let email = std::fs::read_to_string(path).expect("read the email");
    assert!(email.contains("To: files@example.com"), "{email}");
    assert!(
        email.contains("Subject: Confirm your runrate subscription"),
        "{email}"
    );
}

#[tokio::test]
async fn the_sign_up_page_shows_the_latest_table_and_the_form() {
    let server = TestServer::start().await;
    let page = request(server.http_address, "GET", "/", None).await;
    assert_eq!(page.status, 200);
    for expected in [
        "~$13B (est.)",
        "Not disclosed",
        "TPU v5p, Axion",
        "Get notified when new quarterly figures are published. No spam, unsubscribe anytime;",
        "<a href=\"/privacy\">",
        "<form method=\"post\" action=\"/subscribe\">",
        // Where the figures come from, when they were recorded, whose estimates they are.
        "<h2 id=\"about-figures\">About these figures</h2>",
        "Azure AI run rate (~$13B (est.)) is an estimate by the article",
        // Bounds in the source's words, and the cells no company discloses.
        "AWS AI run rate (over $15B) is a lower bound: the source wrote \u{201c}over $15 billion in annualized revenue\u{201d}.",
        "Not disclosed by the companies: Azure custom chip run rate, Google Cloud custom chip run rate.",
        "<cite>Amazon Q1 2026 Earnings Release</cite>, Amazon",
        "cited for AWS AI run rate.",
        ": cited for every figure.",
    ] {
        assert!(page.body.contains(expected), "{expected} missing");
    }
    // The day the seed was recorded: today, or yesterday just after midnight.
    let day = |at: std::time::SystemTime| {
        humantime::format_rfc3339_seconds(at).to_string()[..10].to_owned()
    };
    let now = std::time::SystemTime::now();
    let recorded = [day(now), day(now - std::time::Duration::from_secs(60))]
        .iter()
        .any(|day| page.body.contains(&format!("Recorded up to {day}.")));
    assert!(recorded, "the seed's recording day");
    assert!(!page.body.contains("<script"), "usable without JavaScript");
}

#[tokio::test]
async fn subscribers_are_listed_page_by_page_and_by_state() {
    let server = TestServer::start().await;
    server.seed_confirmed_subscribers(5).await;
    subscribe(&server, "pending@example.com").await;
    let mut admin = server.admin().await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_subscribers(server.admin_request(ListSubscribersRequest {
                page_size: 2,
                page_token: page_token.clone(),
                filter: "state = \"confirmed\"".into(),
            }))
            .await
            .expect("a page of subscribers")
            .into_inner();
        assert!(page.subscribers.len() <= 2);
        seen.extend(page.subscribers.into_iter().map(|s| s.email));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<String> = (1..=5).map(|n| format!("reader{n}@example.com")).collect();
    assert_eq!(seen, expected);
    let status = admin
        .list_subscribers(server.admin_request(ListSubscribersRequest {
            filter: "state = \"asleep\"".into(),
            ..Default::default()
        }))
        .await
        .expect_err("unknown state");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = admin
        .list_subscribers(ListSubscribersRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn one_click_also_works_as_multipart_form_data() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    subscribe_and_confirm(&server, &smtp, "reader@example.com").await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load 2");
    server.settled_report("loads/2").await;
    let link = update_unsubscribe_link(&smtp, "reader@example.com");
    let body = "--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n";
    let response = request_with_body(
        server.http_address,
        "POST",
        &path_of(&link),
        Some(("multipart/form-data; boundary=b", body)),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.header("Location").is_none());
    assert!(
        response.body.starts_with("Unsubscribed."),
        "{}",
        response.body
    );
    assert_eq!(
        state_of(&server, "reader@example.com").await,
        SubscriberState::Unsubscribed
    );
}

#[tokio::test]
async fn a_confirmation_goes_out_ahead_of_a_fan_out_already_queued() {
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    let mut settings = dir.smtp_settings(smtp.address);
    settings.delivery.batch_size = 10;
    let server = TestServer::start_in(dir, settings).await;
    server.seed_confirmed_subscribers(50).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    subscribe(&server, "late@example.com").await;

    // One claim of ten, from an outbox holding fifty updates due before the confirmation.
    server
        .outbox
        .run_once(&tokio_util::sync::CancellationToken::new())
        .await
        .expect("one round of the outbox");
    let first = smtp.received();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].to, ["late@example.com"]);
    assert_eq!(
        first[0].header("Subject").as_deref(),
        Some("Confirm your runrate subscription")
    );
    server.settle_outbox().await;
    assert_eq!(smtp.received().len(), 51);
}

#[tokio::test]
async fn forget_me_erases_the_address_everywhere_and_sends_nothing_more() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    let (reader, other) = ("forget.me@example.com", "stays@example.com");
    subscribe_and_confirm(&server, &smtp, reader).await;
    subscribe_and_confirm(&server, &smtp, other).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;
    let link = update_unsubscribe_link(&smtp, reader);

    // The unsubscribe page offers it; the privacy page says what it erases.
    let page = request(server.http_address, "GET", &path_of(&link), None).await;
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/forget\">"),
        "{}",
        page.body
    );
    let privacy = request(server.http_address, "GET", "/privacy", None).await;
    assert_eq!(privacy.status, 200);
    assert!(privacy.body.contains("Unsubscribe and forget me"));
    assert!(server.dump().await.contains(reader), "kept before");

    let token = format!("token={}", token_of(&link));
    let forgotten = request(server.http_address, "POST", "/forget", Some(&token)).await;
    assert_eq!(forgotten.status, 200, "{}", forgotten.body);
    assert!(
        forgotten
            .body
            .contains("Your address, your choices and the record")
    );
    let dump = server.dump().await;
    assert!(
        !dump.contains(reader),
        "the address is erased from every table"
    );
    assert!(!dump.contains("forget.me"), "and no part of it is left");
    assert!(dump.contains(other), "others are kept");
    // The delivery report still counts the email that went out.
    let report = server.delivery_report("loads/2").await;
    assert_eq!(report.sent, 2, "{report:?}");

    // Nothing more goes to the address, and its link no longer works.
    let before = smtp.received_by(reader).len();
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;
    assert_eq!(smtp.received_by(reader).len(), before);
    assert_eq!(
        smtp.received_by(other).len(),
        before + 1,
        "the other reader got it"
    );
    let again = request(server.http_address, "POST", "/forget", Some(&token)).await;
    assert_eq!(again.status, 404, "{}", again.body);
}

#[tokio::test]
async fn the_front_page_shows_any_loaded_quarter_and_links_them_all() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    let latest = request(server.http_address, "GET", "/", None).await;
    assert!(
        latest.body.contains("hyperscalers, 2026-Q2</caption>"),
        "the latest by default"
    );
    assert!(
        latest
            .body
            .contains("<a aria-current=\"page\" href=\"/?period=2026-q2\">2026-Q2</a>")
    );
    assert!(
        latest
            .body
            .contains("<a href=\"/?period=2026-q1\">2026-Q1</a>")
    );
    let first = request(server.http_address, "GET", "/?period=2026-q1", None).await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("hyperscalers, 2026-Q1</caption>"));
    assert!(
        first
            .body
            .contains("<a aria-current=\"page\" href=\"/?period=2026-q1\">")
    );
    for missing in ["/?period=2031-q1", "/?period=next"] {
        let page = request(server.http_address, "GET", missing, None).await;
        assert_eq!(page.status, 404, "{missing}");
        assert!(page.body.contains("No such quarter"));
    }
}
