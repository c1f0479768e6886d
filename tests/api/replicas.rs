//! PostgreSQL only: replicas share one database server, which SQLite is not.
//!
//! Two `runrate serve` processes on one PostgreSQL database: a load through either is
//! served by both within a second and reaches the watch streams of both, and the update
//! emails are shared between them with no address emailed twice and within one send
//! rate for the two.

use std::time::{Duration, Instant};

use runrate::{
    api::{
        CompareProvidersRequest, LoadFiguresRequest, WatchLoadsRequest,
        admin_service_client::AdminServiceClient, metrics_service_client::MetricsServiceClient,
        watch_loads_response::Event,
    },
    settings::TextDuration,
};
use sqlx::Connection;

use crate::{
    sending::busiest_second,
    support::helpers::{ServeProcess, TestDir, TestServer, figures_file},
    support::smtp_server::SmtpServer,
};

const ADMIN_TOKEN: &str = "replica-test-token-0123456789-abcdef";
const SUBSCRIBERS: u32 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_loads_watchers_and_deliveries() {
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    // Each replica has a data directory of its own and the one database.
    let replica_dirs = [dir.path().join("a"), dir.path().join("b")];
    let mut replicas = Vec::new();
    for replica_dir in &replica_dirs {
        std::fs::create_dir_all(replica_dir).expect("a replica directory");
        let mut environment = dir.serve_environment();
        environment.extend(
            [
                ("RUNRATE__ADMIN__TOKEN", ADMIN_TOKEN.to_owned()),
                ("RUNRATE__MAIL__TRANSPORT", "smtp".to_owned()),
                ("RUNRATE__MAIL__SMTP__PORT", smtp.address.port().to_string()),
                ("RUNRATE__DELIVERY__POLL_INTERVAL", "100ms".to_owned()),
                // The default (250 ms) leaves room inside the second the test allows even
                // on a busy machine; this leaves more.
                ("RUNRATE__DATABASE__REFRESH_INTERVAL", "100ms".to_owned()),
            ]
            .map(|(key, value)| (key.to_owned(), value)),
        );
        let replica_dir = replica_dir.clone();
        replicas.push(
            tokio::task::spawn_blocking(move || ServeProcess::start(&replica_dir, environment))
                .await
                .expect("start a replica"),
        );
    }
    dir.seed_confirmed_subscribers(&replica_dirs[0], SUBSCRIBERS)
        .await;

    let mut watchers = Vec::new();
    for replica in &replicas {
        let mut stream = MetricsServiceClient::connect(replica.url.clone())
            .await
            .expect("connect")
            .watch_loads(WatchLoadsRequest::default())
            .await
            .expect("watch")
            .into_inner();
        let current = stream.message().await.expect("a message").expect("open");
        assert!(matches!(current.event, Some(Event::Current(_))));
        watchers.push(stream);
    }

    let mut request = tonic::Request::new(LoadFiguresRequest {
        file_name: "2026-q2-example.toml".into(),
        content: std::fs::read(figures_file("2026-q2-example.toml")).expect("read"),
        validate_only: false,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
    );
    AdminServiceClient::connect(replicas[0].url.clone())
        .await
        .expect("connect to replica a")
        .load_figures(request)
        .await
        .expect("load through replica a");
    let loaded = Instant::now();

    // Replica b serves the new quarter within a second.
    let mut other = MetricsServiceClient::connect(replicas[1].url.clone())
        .await
        .expect("connect to replica b");
    loop {
        let latest = other
            .compare_providers(CompareProvidersRequest::default())
            .await
            .expect("compare")
            .into_inner()
            .period
            .expect("a period")
            .display_name;
        if latest == "2026-Q2" {
            break;
        }
        assert!(
            loaded.elapsed() < Duration::from_secs(1),
            "replica b still serves {latest}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Both watch streams deliver the load.
    for stream in &mut watchers {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("an event in time")
            .expect("a healthy stream")
            .expect("open");
        let Some(Event::Load(load)) = event.event else {
            panic!("not a load event: {event:?}");
        };
        assert_eq!(load.load.expect("a load").name, "loads/2");
    }

    // Every subscriber gets exactly one update between the two replicas.
    let counts = smtp
        .wait_for_addresses(SUBSCRIBERS as usize, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts_after = smtp.counts();
    assert_eq!(counts.len(), SUBSCRIBERS as usize);
    assert_eq!(counts_after.len(), SUBSCRIBERS as usize);
    assert!(
        counts_after.values().all(|n| *n == 1),
        "{} addresses got more than one email",
        counts_after.values().filter(|n| **n > 1).count()
    );
    assert_eq!(smtp.received().len(), SUBSCRIBERS as usize);
}

/// Replica a takes loads and sends nothing; replica b sends, looks at its outbox every
/// 20 ms, but reads loads made through a only every 2 s. b must neither spend attempts on
/// updates about a load it has not read nor hold them back for a retry delay: it sends
/// them once it has read the load (about 2 s; the test allows 20 s on a busy machine,
/// still short of the retry delay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_on_loads_sends_their_updates_once_it_reads_them_without_failing() {
    const READERS: u32 = 300;
    let refresh = Duration::from_secs(2);
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    let mut loading = dir.smtp_settings(smtp.address);
    loading.data_dir = dir.path().join("a");
    let mut sending = dir.smtp_settings(smtp.address);
    sending.data_dir = dir.path().join("b");
    sending.database.refresh_interval = TextDuration(refresh);
    sending.delivery.poll_interval = TextDuration(Duration::from_millis(20));
    // A failed attempt would wait this long, far past what the test allows.
    sending.delivery.retry_base = TextDuration(Duration::from_secs(30));
    let database_url = sending.database.url.expose().to_owned();
    let replica_a = TestServer::start_with(loading).await;
    let replica_b = TestServer::start_with_lanes(sending).await;
    dir.seed_confirmed_subscribers(&replica_a.data_dir, READERS)
        .await;

    replica_a
        .load_example("2026-q2-example.toml")
        .await
        .expect("load through replica a");
    // A spent attempt would hold its update back for the 30 s retry delay: every update
    // arriving well within it, with one attempt each (below), shows none was spent.
    let loaded = Instant::now();
    let counts = smtp
        .wait_for_addresses(READERS as usize, Duration::from_secs(20))
        .await;
    println!(
        "the last update went out {:?} after the load",
        loaded.elapsed()
    );
    assert!(counts.values().all(|n| *n == 1), "one email each");

    let mut connection = sqlx::PgConnection::connect(&database_url)
        .await
        .expect("connect");
    let (sent, most_attempts, errors): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE state = 'sent'), MAX(attempts), COUNT(last_error) \
         FROM deliveries WHERE kind = 'update'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("read the outbox");
    assert_eq!(sent, i64::from(READERS));
    assert_eq!(most_attempts, 1, "no attempt spent before b read the load");
    assert_eq!(errors, 0, "nothing recorded as an error");
    replica_b.stop().await;
    replica_a.stop().await;
}

/// Both replicas send, both with `max_rate = 14`: the slots they share through the
/// database keep the two together at 14 a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_together_keep_to_the_send_rate() {
    const READERS: u32 = 42;
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let mut settings = dir.smtp_settings(smtp.address);
        settings.data_dir = dir.path().join(name);
        settings.delivery.max_rate = 14;
        settings.delivery.poll_interval = TextDuration(Duration::from_millis(20));
        replicas.push(TestServer::start_with_lanes(settings).await);
    }
    dir.seed_confirmed_subscribers(&replicas[0].data_dir, READERS)
        .await;
    replicas[0]
        .load_example("2026-q2-example.toml")
        .await
        .expect("load through replica a");
    let counts = smtp
        .wait_for_addresses(READERS as usize, Duration::from_secs(30))
        .await;
    assert!(counts.values().all(|n| *n == 1));
    let busiest = busiest_second(&smtp);
    assert!(busiest <= 15, "{busiest} emails within one second");
    assert!(
        busiest >= 10,
        "{busiest}: the limit should not starve the senders"
    );
}
