//! Prometheus metrics, scraped from `runrate serve` (its own process: the recorder is
//! process-wide) over HTTP, read sample by sample, and checked with `promtool` when it is
//! installed (`.ci/run` installs it and requires it through `RUNRATE_TEST_PROMTOOL`).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use runrate::api::{GetFactRequest, metrics_service_client::MetricsServiceClient};

use crate::support::{
    helpers::{ServeProcess, TestDir, load_example_through},
    http_client,
    smtp_server::{Fault, SmtpServer},
};

const ADMIN_TOKEN: &str = "prometheus-test-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(60);

/// One sample of a scrape.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text-format scrape (label values here never hold `,` or `"`).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("key=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap_or_else(|_| panic!("a number: {line}")),
            }
        })
        .collect()
}

/// The value of the one sample named `name` with these labels (among others); 0 if none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .collect();
    assert!(matching.len() <= 1, "one series: {matching:?}");
    matching.first().map_or(0.0, |sample| sample.value)
}

async fn scrape(address: SocketAddr) -> String {
    let response = http_client::request(address, "GET", "/metrics", None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        response.headers
    );
    check_with_promtool(&response.body);
    response.body
}

/// `promtool check metrics` over the scrape: its parser and its lint.
fn check_with_promtool(text: &str) {
    use std::io::Write;
    let promtool = match std::env::var("RUNRATE_TEST_PROMTOOL") {
        Ok(path) => path,
        Err(_) if which("promtool") => "promtool".to_owned(),
        Err(_) => return,
    };
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("run {promtool}: {err}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the scrape to promtool");
    let output = child.wait_with_output().expect("promtool's answer");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// `runrate serve` with metrics on a free port; its metrics address.
fn serve_with_metrics(dir: &TestDir, extra: &[(&str, String)]) -> (ServeProcess, SocketAddr) {
    let mut environment = dir.serve_environment();
    environment.push(("RUNRATE__METRICS__LISTEN".into(), "127.0.0.1:0".into()));
    environment.push(("RUNRATE__ADMIN__TOKEN".into(), ADMIN_TOKEN.into()));
    environment.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let server = ServeProcess::start(dir.path(), environment);
    let address = server
        .prometheus_address
        .unwrap_or_else(|| panic!("it serves metrics:\n{}", server.output()));
    (server, address)
}

#[test]
fn the_scrape_counts_each_grpc_call_by_method_and_code() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let (server, metrics) = serve_with_metrics(&dir, &[]);
    let calls = 7;
    runtime.block_on(async {
        let mut client = MetricsServiceClient::connect(server.url.clone())
            .await
            .expect("connect");
        let get_fact = |name: &str| GetFactRequest {
            name: name.into(),
            read_time: None,
        };
        for _ in 0..calls {
            client
                .get_fact(get_fact(
                    "providers/aws/periods/2026-q1/facts/cloud-revenue",
                ))
                .await
                .expect("a fact");
        }
        let status = client
            .get_fact(get_fact(
                "providers/oracle/periods/2026-q1/facts/cloud-revenue",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);

        let text = scrape(metrics).await;
        let samples = samples(&text);
        let get_fact = [
            ("grpc_service", "runrate.v1.MetricsService"),
            ("grpc_method", "GetFact"),
            ("grpc_type", "unary"),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut labels = get_fact.to_vec();
            labels.push(extra);
            labels
        };
        let handled = "grpc_server_handled_total";
        assert_eq!(
            value(&samples, handled, &with(("grpc_code", "OK"))),
            f64::from(calls),
            "{text}"
        );
        assert_eq!(
            value(&samples, handled, &with(("grpc_code", "NotFound"))),
            1.0
        );
        let all = f64::from(calls + 1);
        assert_eq!(value(&samples, "grpc_server_started_total", &get_fact), all);
        assert_eq!(
            value(&samples, "grpc_server_msg_received_total", &get_fact),
            all
        );
        // A NOT_FOUND answer carries no message.
        assert_eq!(
            value(&samples, "grpc_server_msg_sent_total", &get_fact),
            f64::from(calls)
        );
        assert_eq!(
            value(&samples, "grpc_server_handling_seconds_count", &get_fact),
            all
        );
        assert_eq!(
            value(
                &samples,
                "grpc_server_handling_seconds_bucket",
                &with(("le", "+Inf"))
            ),
            all
        );
        // The seed load, counted as the store was opened.
        assert_eq!(
            value(&samples, "runrate_loads_total", &[("outcome", "loaded")]),
            1.0
        );
        assert!(value(&samples, "process_resident_memory_bytes", &[]) > 0.0);
        assert!(value(&samples, "process_open_fds", &[]) > 0.0);
    });
}

#[test]
fn a_path_that_names_no_method_adds_no_series() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let (server, metrics) = serve_with_metrics(&dir, &[]);
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        for path in ["/runrate.v1.MetricsService/Nope", "/made.Up/Method"] {
            grpc.ready().await.expect("ready");
            let status = grpc
                .unary::<(), (), _>(
                    tonic::Request::new(()),
                    path.parse().expect("a path"),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unimplemented);
        }
        let text = scrape(metrics).await;
        assert!(
            !text.contains("Nope") && !text.contains("made.Up"),
            "{text}"
        );
        assert_eq!(
            value(
                &samples(&text),
                "grpc_server_handled_total",
                &[("grpc_method", "unknown"), ("grpc_code", "Unimplemented")]
            ),
            2.0
        );
    });
}

#[test]
fn the_email_counters_and_the_outbox_gauge_match_the_fan_out_s_report() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    // One reader's server keeps answering 451: that delivery waits an hour to retry.
    let smtp = runtime.block_on(SmtpServer::with_faults(|to| {
        if to == "reader3@example.com" {
            Fault::TemporaryFailure
        } else {
            Fault::Accept
        }
    }));
    let (server, metrics) = serve_with_metrics(
        &dir,
        &[
            ("RUNRATE__MAIL__TRANSPORT", "smtp".into()),
            ("RUNRATE__MAIL__SMTP__PORT", smtp.address.port().to_string()),
            ("RUNRATE__DELIVERY__RETRY_BASE", "1h".into()),
        ],
    );
    runtime.block_on(async {
        dir.seed_confirmed_subscribers(&dir.path().join("runrate-data"), 5)
            .await;
        load_example_through(&server.url, ADMIN_TOKEN, "2026-q2-example.toml").await;
        smtp.wait_for(4, WAIT).await;
        let report = wait_for_report(&server.url, |report| {
            report.sent == 4 && report.retrying == 1
        })
        .await;

        let text = scrape(metrics).await;
        let samples = samples(&text);
        let emails = |outcome| {
            value(
                &samples,
                "runrate_emails_total",
                &[("channel", "email"), ("outcome", outcome)],
            )
        };
        assert_eq!(emails("sent"), report.sent as f64, "{text}");
        assert_eq!(emails("retried"), report.retrying as f64);
        assert_eq!(emails("failed"), 0.0);
        let outbox = |state| {
            value(
                &samples,
                "runrate_outbox_deliveries",
                &[("kind", "update"), ("state", state)],
            )
        };
        assert_eq!(outbox("retrying"), report.retrying as f64, "{text}");
        assert_eq!(outbox("pending") + outbox("sending"), 0.0);
        assert_eq!(
            value(&samples, "runrate_loads_total", &[("outcome", "loaded")]),
            2.0
        );
        // Every connection the lanes opened is counted while open.
        assert!(value(&samples, "runrate_smtp_connections_open", &[]) >= 1.0);
        // Not finished while one delivery waits for its retry.
        assert_eq!(
            value(&samples, "runrate_fan_out_duration_seconds_count", &[]),
            0.0
        );
    });
}

/// Polls the delivery report of load 2 (the first after the seed) until `done` holds.
async fn wait_for_report(
    url: &str,
    done: impl Fn(&runrate::api::DeliveryReport) -> bool,
) -> runrate::api::DeliveryReport {
    let mut admin = runrate::api::admin_service_client::AdminServiceClient::connect(url.to_owned())
        .await
        .expect("connect");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut request = tonic::Request::new(runrate::api::GetDeliveryReportRequest {
            name: "loads/2/deliveryReport".into(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
        );
        let report = admin
            .get_delivery_report(request)
            .await
            .expect("a report")
            .into_inner();
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fan-out did not get there: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_finished_fan_out_is_timed_once() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let smtp = runtime.block_on(SmtpServer::start());
    let (server, metrics) = serve_with_metrics(
        &dir,
        &[
            ("RUNRATE__MAIL__TRANSPORT", "smtp".into()),
            ("RUNRATE__MAIL__SMTP__PORT", smtp.address.port().to_string()),
        ],
    );
    runtime.block_on(async {
        dir.seed_confirmed_subscribers(&dir.path().join("runrate-data"), 5)
            .await;
        load_example_through(&server.url, ADMIN_TOKEN, "2026-q2-example.toml").await;
        let report = wait_for_report(&server.url, |report| report.sent == 5).await;
        // The lane that finds the outbox empty after the last result times the fan-out.
        let deadline = tokio::time::Instant::now() + WAIT;
        let timed = loop {
            let text = http_client::request(metrics, "GET", "/metrics", None)
                .await
                .body;
            let timed = value(
                &samples(&text),
                "runrate_fan_out_duration_seconds_count",
                &[],
            );
            if timed > 0.0 || tokio::time::Instant::now() > deadline {
                break timed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(timed, 1.0, "{report:?}");
        let text = scrape(metrics).await;
        assert_eq!(
            value(
                &samples(&text),
                "runrate_emails_total",
                &[("outcome", "sent")]
            ),
            5.0
        );
    });
}

#[test]
fn the_scrape_names_the_build_and_counts_the_database_connections() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let (_server, metrics) = serve_with_metrics(&dir, &[]);
    let text = runtime.block_on(scrape(metrics));
    let samples = samples(&text);
    let build: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.name == "runrate_build_info")
        .collect();
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].value, 1.0);
    assert_eq!(
        build[0].labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let revision = build[0].labels.get("revision").expect("a revision label");
    assert!(
        revision == "unknown" || revision.chars().all(|ch| ch.is_ascii_hexdigit()),
        "{revision}"
    );
    let idle = value(
        &samples,
        "runrate_database_connections",
        &[("state", "idle")],
    );
    let in_use = value(
        &samples,
        "runrate_database_connections",
        &[("state", "in_use")],
    );
    assert!(
        idle + in_use >= 1.0,
        "the scrape itself read the outbox through a connection"
    );
}
