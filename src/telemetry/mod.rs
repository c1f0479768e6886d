//! What an operator sees from outside: Prometheus metrics on their own listener, and
//! logs and traces ([`traces`]).
//!
//! The `metrics` facade records and `metrics-exporter-prometheus` renders the text
//! format. Its recorder is process-wide: it is installed once, by the first
//! application that serves metrics, and handles taken before that record nothing — so
//! an application without `metrics.listen` pays next to nothing for the calls.

pub mod grpc;
pub mod http;
pub mod traces;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context;
use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics::{Gauge, Unit};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::{domain::Named, store::Store};

pub const GRPC_STARTED: &str = "grpc_server_started_total";
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
pub const GRPC_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
pub const GRPC_MSG_RECEIVED: &str = "grpc_server_msg_received_total";
pub const GRPC_MSG_SENT: &str = "grpc_server_msg_sent_total";
pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_REQUEST_SECONDS: &str = "http_request_duration_seconds";
pub const LOADS: &str = "runrate_loads_total";
pub const LOAD_SECONDS: &str = "runrate_load_duration_seconds";
pub const LOAD_FACTS: &str = "runrate_load_facts_total";
pub const OUTBOX_DELIVERIES: &str = "runrate_outbox_deliveries";
pub const EMAILS: &str = "runrate_emails_total";
pub const SUPPRESSIONS: &str = "runrate_suppressions_total";
pub const FAN_OUT_SECONDS: &str = "runrate_fan_out_duration_seconds";
pub const SMTP_CONNECTIONS_OPEN: &str = "runrate_smtp_connections_open";
pub const WATCH_STREAMS_OPEN: &str = "runrate_watch_streams_open";
pub const BUILD_INFO: &str = "runrate_build_info";
pub const DATABASE_CONNECTIONS: &str = "runrate_database_connections";
/// Every name above, for whatever reads them by name (the Grafana dashboard's test).
pub const NAMES: &[&str] = &[
    GRPC_STARTED,
    GRPC_HANDLED,
    GRPC_HANDLING_SECONDS,
    GRPC_MSG_RECEIVED,
    GRPC_MSG_SENT,
    HTTP_REQUESTS,
    HTTP_REQUEST_SECONDS,
    LOADS,
    LOAD_SECONDS,
    LOAD_FACTS,
    OUTBOX_DELIVERIES,
    EMAILS,
    SUPPRESSIONS,
    FAN_OUT_SECONDS,
    SMTP_CONNECTIONS_OPEN,
    WATCH_STREAMS_OPEN,
    BUILD_INFO,
    DATABASE_CONNECTIONS,
];

/// This build's version and the commit it was built from (`build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("RUNRATE_REVISION");

/// Bucket bounds of every `*_seconds` histogram: from a cached read (well under a
/// millisecond) to a long fan-out (half an hour).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

/// How often histograms are drained into their buckets when nobody scrapes: observations
/// wait in a queue until then, which must not grow without bound.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = PROMETHEUS.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .context("cannot configure the metrics' buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => VERSION, "revision" => REVISION).set(1.0);
    let handle = PROMETHEUS.get_or_init(|| handle).clone();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .context("cannot start the metrics upkeep thread")?;
    Ok(handle)
}

struct Scrape {
    prometheus: PrometheusHandle,
    process: metrics_process::Collector,
    store: Arc<Store>,
}

/// `GET /metrics`, for the metrics listener, rendering the recorder [`prometheus`]
/// installed.
pub fn router(prometheus: PrometheusHandle, store: Arc<Store>) -> Router {
    let process = metrics_process::Collector::default();
    process.describe();
    let scrape = Scrape {
        prometheus,
        process,
        store,
    };
    Router::new()
        .route("/metrics", get(render))
        .with_state(Arc::new(scrape))
}

/// Prometheus's text format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn render(State(scrape): State<Arc<Scrape>>) -> Response {
    scrape.process.collect();
    // What the database holds now, for every replica alike.
    match scrape.store.unfinished_deliveries().await {
        Ok(counts) => {
            for (kind, state, count) in counts {
                metrics::gauge!(OUTBOX_DELIVERIES, "kind" => kind, "state" => state.as_str())
                    .set(count as f64);
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot count the outbox for a scrape"),
    }
    let pool = scrape.store.pool_status();
    metrics::gauge!(DATABASE_CONNECTIONS, "state" => "idle").set(pool.idle as f64);
    metrics::gauge!(DATABASE_CONNECTIONS, "state" => "in_use").set(pool.in_use as f64);
    grpc::publish();
    let mut response = scrape.prometheus.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    response
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(GRPC_STARTED, "RPCs started on the server.");
    describe_counter!(
        GRPC_HANDLED,
        "RPCs completed on the server, regardless of success or failure."
    );
    describe_histogram!(
        GRPC_HANDLING_SECONDS,
        Unit::Seconds,
        "Time from an RPC's start to its status (the whole stream for streaming RPCs)."
    );
    describe_counter!(GRPC_MSG_RECEIVED, "Messages received in RPCs.");
    describe_counter!(GRPC_MSG_SENT, "Messages sent in RPCs.");
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests on the web side, by route and status."
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request on the web side."
    );
    describe_counter!(LOADS, "Figure loads, by outcome.");
    describe_histogram!(
        LOAD_SECONDS,
        Unit::Seconds,
        "Time to validate and commit a figure load."
    );
    describe_counter!(LOAD_FACTS, "Facts added by committed loads.");
    describe_gauge!(
        OUTBOX_DELIVERIES,
        "Unfinished outbox deliveries in the database, by kind and state (read at scrape)."
    );
    describe_counter!(
        EMAILS,
        "Delivery results recorded by this process, by outcome."
    );
    describe_counter!(
        SUPPRESSIONS,
        "Addresses suppressed by this process, by reason."
    );
    describe_histogram!(
        FAN_OUT_SECONDS,
        Unit::Seconds,
        "From a load's commit to the last of its update emails recorded."
    );
    describe_gauge!(SMTP_CONNECTIONS_OPEN, "SMTP connections open.");
    describe_gauge!(WATCH_STREAMS_OPEN, "WatchLoads streams open.");
    describe_gauge!(
        BUILD_INFO,
        "1, labelled with the version and the commit this process was built from."
    );
    describe_gauge!(
        DATABASE_CONNECTIONS,
        "This process's database connections, idle or in use (read at scrape)."
    );
}

/// One more of something open (a connection, a stream) for as long as this lives.
pub struct OpenGuard(Gauge);

impl OpenGuard {
    pub fn new(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        OpenGuard(gauge)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
