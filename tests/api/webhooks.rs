//! Webhooks: real HTTP receivers on loopback get each load as a signed POST through the
//! outbox, retried when they fail, are slow, hang or drop the connection, and at most
//! once more after a kill -9.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use hmac::{Hmac, Mac};
use runrate::{
    api::{CreateWebhookRequest, DeleteWebhookRequest, ListWebhooksRequest, Webhook},
    settings::TextDuration,
};
use sha2::Sha256;
use tokio::sync::Notify;
use tonic::Code;

use crate::support::helpers::{ServeProcess, TestDir, TestServer, load_example_through};

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "a-receiver-chosen-secret-0123456789";

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
struct Post {
    headers: HeaderMap,
    body: Bytes,
}

impl Post {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Whether `X-Runrate-Signature` is the HMAC of `<timestamp>.<body>` under `secret`.
    fn signed_with(&self, secret: &str) -> bool {
        let Some(hex) = self.header("x-runrate-signature").strip_prefix("sha256=") else {
            return false;
        };
        let Ok(signature) = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(hex.get(at..at + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
        else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("a key");
        mac.update(self.header("x-runrate-timestamp").as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        mac.verify_slice(&signature).is_ok()
    }
}

/// How the receiver answers the next POST.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answers.
    Hang,
}

#[derive(Default)]
struct Inbox {
    posts: Mutex<Vec<Post>>,
    /// Answers for the next POSTs, in order; 200 once they run out.
    replies: Mutex<VecDeque<Reply>>,
    arrived: Notify,
}

/// An HTTP server that keeps every POST it gets.
struct Receiver {
    address: SocketAddr,
    inbox: Arc<Inbox>,
}

impl Receiver {
    async fn start(replies: impl IntoIterator<Item = Reply>) -> Receiver {
        let inbox = Arc::new(Inbox::default());
        inbox.replies.lock().unwrap().extend(replies);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let app = Router::new().fallback(take).with_state(inbox.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { address, inbox }
    }

    fn url(&self) -> String {
        format!(
            "http://{}/hooks/runrate?key=receiver-credential",
            self.address
        )
    }

    fn posts(&self) -> Vec<Post> {
        self.inbox.posts.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Post> {
        tokio::time::timeout(WAIT, async {
            loop {
                let arrived = self.inbox.arrived.notified();
                let posts = self.posts();
                if posts.len() >= count {
                    return posts;
                }
                arrived.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} POSTs did not arrive"))
    }
}

async fn take(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    inbox.posts.lock().unwrap().push(Post { headers, body });
    inbox.arrived.notify_waiters();
    let reply = inbox.replies.lock().unwrap().pop_front();
    match reply.unwrap_or(Reply::Status(200)) {
        Reply::Status(code) => StatusCode::from_u16(code).expect("a status"),
        Reply::Hang => std::future::pending().await,
    }
}

async fn create(server: &TestServer, url: &str, secret: &str) -> Result<Webhook, tonic::Status> {
    server
        .admin()
        .await
        .create_webhook(server.admin_request(CreateWebhookRequest {
            webhook: Some(Webhook {
                url: url.to_owned(),
                secret: secret.to_owned(),
                ..Webhook::default()
            }),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// The JSON API's answer for `path` on `server`'s web side.
async fn json_api(server: &TestServer, path: &str) -> serde_json::Value {
    let response =
        crate::support::http_client::request(server.http_address, "GET", path, None).await;
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    serde_json::from_str(&response.body).expect("JSON")
}

#[tokio::test]
async fn every_load_is_posted_once_to_each_endpoint_signed_with_its_secret() {
    let server = TestServer::start().await;
    let (first, second) = (Receiver::start([]).await, Receiver::start([]).await);
    let chosen = create(&server, &first.url(), SECRET).await.expect("create");
    let generated = create(&server, &second.url(), "").await.expect("create");
    assert_eq!(chosen.secret, SECRET, "the secret is returned on creation");
    assert!(
        generated.secret.len() >= 40,
        "a generated secret: {generated:?}"
    );
    let listed = server
        .admin()
        .await
        .list_webhooks(server.admin_request(ListWebhooksRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|webhook| webhook.secret.is_empty()),
        "never listed"
    );

    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;
    let report = server.delivery_report("loads/2").await;
    assert_eq!((report.recipients, report.sent), (2, 2), "{report:?}");

    let expected_load = json_api(&server, "/v1/loads/2").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (receiver, secret) in [(&first, SECRET), (&second, generated.secret.as_str())] {
        let posts = receiver.posts();
        assert_eq!(posts.len(), 1, "one POST per load");
        let post = &posts[0];
        assert!(post.signed_with(secret), "the signature verifies: {post:?}");
        assert!(!post.signed_with("another-secret-of-enough-length"));
        let timestamp: u64 = post
            .header("x-runrate-timestamp")
            .parse()
            .expect("a timestamp");
        assert!(now.abs_diff(timestamp) < 60, "{timestamp} is now");
        assert_eq!(post.header("x-runrate-event"), "load.created");
        assert_eq!(post.header("content-type"), "application/json");
        assert!(!post.header("x-runrate-delivery").is_empty());
        let event = post.json();
        assert_eq!(event["type"], "load.created");
        assert_eq!(
            event["load"], expected_load,
            "the load as the JSON API gives it"
        );
    }

    // A restatement is one more POST each; an endpoint deleted meanwhile gets nothing.
    server
        .admin()
        .await
        .delete_webhook(server.admin_request(DeleteWebhookRequest {
            name: generated.name.clone(),
        }))
        .await
        .expect("delete");
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;
    let posts = first.posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1].json()["load"]["name"], "loads/3");
    assert_ne!(
        posts[0].header("x-runrate-delivery"),
        posts[1].header("x-runrate-delivery")
    );
    assert_eq!(second.posts().len(), 1, "nothing after its deletion");
}

#[tokio::test]
async fn a_receiver_answering_500_gets_the_same_post_again_later() {
    let server = TestServer::start().await;
    let receiver = Receiver::start([Reply::Status(500), Reply::Status(503)]).await;
    create(&server, &receiver.url(), SECRET)
        .await
        .expect("create");
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");

    server.outbox.drain().await.expect("drain");
    let report = server.delivery_report("loads/2").await;
    assert_eq!((report.sent, report.retrying), (0, 1), "{report:?}");
    assert_eq!(report.failures[0].email, "webhooks/1");
    assert_eq!(
        report.failures[0].last_error,
        "the endpoint answered 500 Internal Server Error"
    );

    let report = server.settled_report("loads/2").await;
    assert_eq!(report.sent, 1, "{report:?}");
    let posts = receiver.posts();
    assert_eq!(posts.len(), 3, "500, 503, then 200");
    for post in &posts {
        assert_eq!(post.body, posts[0].body, "the same event every time");
        assert_eq!(
            post.header("x-runrate-delivery"),
            posts[0].header("x-runrate-delivery")
        );
        assert!(post.signed_with(SECRET));
    }
}

#[tokio::test]
async fn a_hung_receiver_times_out_and_a_dropped_connection_is_retried() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.webhook.timeout = TextDuration(Duration::from_millis(300));
    let server = TestServer::start_in(dir, settings).await;
    let hung = Receiver::start([Reply::Hang]).await;
    // Accepts connections and closes each at once, before any answer.
    let dropping = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dropping_url = format!("http://{}/hook", dropping.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((connection, _)) = dropping.accept().await {
            drop(connection);
        }
    });
    create(&server, &hung.url(), SECRET).await.expect("create");
    create(&server, &dropping_url, SECRET)
        .await
        .expect("create");
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");

    tokio::time::timeout(WAIT, server.outbox.drain())
        .await
        .expect("a hung receiver does not hold the outbox")
        .expect("drain");
    let report = server.delivery_report("loads/2").await;
    assert_eq!(report.retrying, 2, "{report:?}");
    let error_of = |name: &str| {
        report
            .failures
            .iter()
            .find(|failure| failure.email == name)
            .map(|failure| failure.last_error.clone())
            .unwrap_or_default()
    };
    assert_eq!(error_of("webhooks/1"), "no answer within 300ms");
    assert!(
        error_of("webhooks/2").starts_with("the POST failed"),
        "{}",
        error_of("webhooks/2")
    );
    // The hung receiver answers the retry.
    let report = server.settled_report("loads/2").await;
    assert_eq!(
        (report.sent, report.retrying, report.failed),
        (1, 0, 1),
        "{report:?}"
    );
    assert_eq!(hung.posts().len(), 2);
}

#[tokio::test]
async fn bad_webhook_requests_are_refused_naming_what_is_wrong() {
    let server = TestServer::start().await;
    let violation = |status: tonic::Status| {
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let field = details
            .bad_request()
            .and_then(|bad| bad.field_violations.first())
            .map(|violation| violation.field.clone());
        (
            status.code(),
            field.unwrap_or_default(),
            status.message().to_owned(),
        )
    };
    for (url, secret, field) in [
        ("ftp://example.com/hook", "", "webhook.url"),
        ("https://user:password@example.com/hook", "", "webhook.url"),
        ("not a url", "", "webhook.url"),
        ("https://example.com/hook", "too-short", "webhook.secret"),
    ] {
        let (code, named, message) = violation(create(&server, url, secret).await.unwrap_err());
        assert_eq!(
            (code, named.as_str()),
            (Code::InvalidArgument, field),
            "{message}"
        );
    }
    let status = server
        .admin()
        .await
        .delete_webhook(server.admin_request(DeleteWebhookRequest {
            name: "webhooks/9".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // Without the token: nothing.
    let status = server
        .admin()
        .await
        .list_webhooks(ListWebhooksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // A bounded number of endpoints.
    for n in 0..runrate::domain::webhooks::MAX_WEBHOOKS {
        create(&server, &format!("https://example.com/{n}"), "")
            .await
            .expect("create");
    }
    let status = create(&server, "https://example.com/one-too-many", "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// An admin request to a server run as its own process.
fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim())
            .parse()
            .expect("a header"),
    );
    request
}

#[test]
fn after_a_kill_mid_post_the_load_is_posted_at_most_once_more() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    // The first POST never gets an answer: the process dies while it waits.
    let receiver = runtime.block_on(Receiver::start([Reply::Hang]));
    let dir = runtime.block_on(TestDir::new());
    let spawn = || {
        let mut environment = dir.serve_environment();
        environment.extend(
            [
                ("RUNRATE__DELIVERY__LEASE", "1s"),
                ("RUNRATE__DELIVERY__POLL_INTERVAL", "100ms"),
                ("RUNRATE__WEBHOOK__TIMEOUT", "60s"),
            ]
            .map(|(key, value)| (key.to_owned(), value.to_owned())),
        );
        ServeProcess::start(dir.path(), environment)
    };
    let mut first = spawn();
    let token =
        std::fs::read_to_string(dir.path().join("runrate-data/admin-token")).expect("token");
    let admin = |url: String| async move {
        runrate::api::admin_service_client::AdminServiceClient::connect(url)
            .await
            .expect("connect")
    };
    let secret = runtime.block_on(async {
        let request = with_token(
            &token,
            CreateWebhookRequest {
                webhook: Some(Webhook {
                    url: receiver.url(),
                    ..Webhook::default()
                }),
            },
        );
        let created = admin(first.url.clone()).await.create_webhook(request).await;
        load_example_through(&first.url, &token, "2026-q2-example.toml").await;
        receiver.wait_for(1).await;
        created.expect("create").into_inner().secret
    });
    first.kill();

    let second = spawn();
    runtime.block_on(async {
        receiver.wait_for(2).await;
        // Until the second POST is recorded as sent: no further attempt can follow.
        let mut client = admin(second.url.clone()).await;
        tokio::time::timeout(WAIT, async {
            loop {
                let request = with_token(
                    &token,
                    runrate::api::GetDeliveryReportRequest {
                        name: "loads/2/deliveryReport".into(),
                    },
                );
                let report = client.get_delivery_report(request).await.expect("a report");
                if report.into_inner().sent == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the POST is recorded as sent");
    });
    let posts = receiver.posts();
    let log = format!("{}\n{}", first.output(), second.output());
    drop(second);
    assert_eq!(posts.len(), 2, "one duplicate at most");
    for post in &posts {
        assert_eq!(post.json()["load"]["name"], "loads/2");
        assert_eq!(
            post.header("x-runrate-delivery"),
            posts[0].header("x-runrate-delivery")
        );
        assert!(post.signed_with(&secret));
    }
    assert!(!log.contains(&secret), "the secret is never logged");
    assert!(
        !log.contains("receiver-credential"),
        "nor the URL's path or query"
    );
}

#[tokio::test]
async fn webhooks_are_listed_a_page_at_a_time() {
    let server = TestServer::start().await;
    let mut created = Vec::new();
    for n in 0..5 {
        let webhook = create(&server, &format!("https://hooks.example.com/{n}"), SECRET)
            .await
            .expect("create");
        created.push(webhook.name);
    }
    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = server
            .admin()
            .await
            .list_webhooks(server.admin_request(ListWebhooksRequest {
                page_size: 2,
                page_token,
            }))
            .await
            .expect("a page")
            .into_inner();
        assert!(page.webhooks.len() <= 2);
        listed.extend(page.webhooks.into_iter().map(|webhook| webhook.name));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, created, "each once, in the order they were made");
    let refused = server
        .admin()
        .await
        .list_webhooks(server.admin_request(ListWebhooksRequest {
            page_size: -1,
            page_token: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_takes_a_webhook_s_secret_from_a_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("webhook_secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write the secret");
    let (url, token) = (server.url(), server.admin_token());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_runrate"))
            .args(["webhooks", "--server", &url, "--token", &token, "create"])
            .arg("https://hooks.example.com/from-a-file")
            .arg("--secret-file")
            .arg(&file)
            .output()
            .expect("run runrate")
    })
    .await
    .expect("the command ran");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains(&format!("secret: {SECRET}")),
        "signed with the file's secret, its line break dropped: {printed}"
    );
}
