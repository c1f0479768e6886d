//! Traces: `runrate serve` continues the trace of an incoming `traceparent` and exports
//! its spans over OTLP/gRPC to a collector built here from the OpenTelemetry protos; its
//! JSON log lines inside a request carry the trace id.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::Span,
};
use runrate::api::{
    GetFactRequest, ListProvidersRequest, LoadFiguresRequest,
    admin_service_client::AdminServiceClient, metrics_service_client::MetricsServiceClient,
};
use tokio::sync::Notify;

use crate::support::helpers::{ServeProcess, TestDir, figures_file};

const ADMIN_TOKEN: &str = "traces-test-token-0123456789abcdef0123";
const WAIT: Duration = Duration::from_secs(60);

/// A collector that keeps every span it is sent, and the services they came from.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let resources = request.into_inner().resource_spans;
        let services = resources
            .iter()
            .filter_map(|resource| resource.resource.as_ref())
            .flat_map(|resource| &resource.attributes)
            .filter(|attribute| attribute.key == "service.name")
            .filter_map(|attribute| attribute.value.as_ref()?.value.as_ref())
            .filter_map(|value| match value {
                any_value::Value::StringValue(name) => Some(name.clone()),
                _ => None,
            });
        self.services.lock().expect("services").extend(services);
        let spans = resources
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans);
        self.spans.lock().expect("spans").extend(spans);
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    /// Waits until a span matching `wanted` has arrived, and hands it back.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Span) -> bool) -> Span {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.arrived.notified();
            if let Some(span) = self.spans.lock().expect("spans").iter().find(|s| wanted(s)) {
                return span.clone();
            }
            let names: Vec<String> = self
                .spans
                .lock()
                .expect("spans")
                .iter()
                .map(|span| span.name.clone())
                .collect();
            tokio::time::timeout_at(deadline, arrived)
                .await
                .unwrap_or_else(|_| panic!("no span {what} among {names:?}"));
        }
    }
}

/// `runrate serve` exporting its spans to `collector`, with `extra` environment.
async fn serve_exporting_to(
    collector: &Collector,
    dir: &TestDir,
    extra: &[(&str, &str)],
) -> ServeProcess {
    serve_exporting_through("RUNRATE__TRACING__OTLP_ENDPOINT", collector, dir, extra).await
}

/// `runrate serve` told the collector's address through `variable`.
async fn serve_exporting_through(
    variable: &str,
    collector: &Collector,
    dir: &TestDir,
    extra: &[(&str, &str)],
) -> ServeProcess {
    let address = collector.clone().start().await;
    let mut environment = dir.serve_environment();
    environment.extend(
        [
            (variable, format!("http://{address}")),
            ("RUNRATE__ADMIN__TOKEN", ADMIN_TOKEN.into()),
            // Export within 50 ms rather than the batch's default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ]
        .map(|(key, value)| (key.to_owned(), value)),
    );
    environment.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ServeProcess::start(dir.path(), environment)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn with_traceparent<T>(message: T, trace_id: &str, parent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01")
            .parse()
            .expect("header"),
    );
    request
}

#[test]
fn a_traceparent_is_continued_by_the_spans_exported_even_with_quiet_logs() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let collector = Collector::default();
    // The log filter is for the logs (here all but where it serves are quiet): spans
    // are exported all the same, with no trace id field, since no log line shows them.
    let server = runtime.block_on(serve_exporting_to(
        &collector,
        &dir,
        &[("RUST_LOG", "warn,runrate::app=info")],
    ));

    let read_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let read_parent = "00f067aa0ba902b7";
    let load_trace = "0af7651916cd43dd8448eb211c80319c";
    let load_parent = "b7ad6b7169203331";
    runtime.block_on(async {
        let mut metrics = MetricsServiceClient::connect(server.url.clone())
            .await
            .expect("connect");
        metrics
            .get_fact(with_traceparent(
                GetFactRequest {
                    name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
                    read_time: None,
                },
                read_trace,
                read_parent,
            ))
            .await
            .expect("a fact");
        load_example_in_trace(&server.url, load_trace, load_parent).await;

        let read = collector
            .wait_for("GetFact in the caller's trace", |span| {
                span.name == "runrate.v1.MetricsService/GetFact"
                    && hex(&span.trace_id) == read_trace
            })
            .await;
        assert_eq!(hex(&read.parent_span_id), read_parent);
        let mut attributes: Vec<&str> = read.attributes.iter().map(|kv| kv.key.as_str()).collect();
        attributes.sort_unstable();
        assert_eq!(
            attributes,
            ["client.address", "rpc.method", "rpc.service", "rpc.system"]
        );
        let client = read
            .attributes
            .iter()
            .find(|kv| kv.key == "client.address")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref());
        assert_eq!(
            client,
            Some(&any_value::Value::StringValue("127.0.0.1".into())),
            "the caller's address, as OpenTelemetry names it"
        );
        let call = collector
            .wait_for("LoadFigures in the caller's trace", |span| {
                span.name == "runrate.v1.AdminService/LoadFigures"
                    && hex(&span.trace_id) == load_trace
            })
            .await;
        assert_eq!(hex(&call.parent_span_id), load_parent);
        let load = collector
            .wait_for("the load", |span| {
                span.name == "load" && hex(&span.trace_id) == load_trace
            })
            .await;
        assert_eq!(
            load.parent_span_id, call.span_id,
            "the load is the call's child"
        );
    });
}

#[test]
fn at_a_sample_ratio_of_zero_only_the_callers_sampled_traces_are_exported() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let collector = Collector::default();
    let server = runtime.block_on(serve_exporting_to(
        &collector,
        &dir,
        &[("RUNRATE__TRACING__SAMPLE_RATIO", "0")],
    ));
    let sampled = "6e0c63257de34c926f9efcd03927272e";
    runtime.block_on(async {
        let mut metrics = MetricsServiceClient::connect(server.url.clone())
            .await
            .expect("connect");
        let get_fact = || GetFactRequest {
            name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
            read_time: None,
        };
        for _ in 0..3 {
            metrics
                .get_fact(tonic::Request::new(get_fact()))
                .await
                .expect("a fact");
        }
        metrics
            .get_fact(with_traceparent(get_fact(), sampled, "a3ce929d0e0e4736"))
            .await
            .expect("a fact");
        collector
            .wait_for("the caller's sampled GetFact", |span| {
                hex(&span.trace_id) == sampled
            })
            .await;
        // Spans are exported in the order they end: the three before it went first, if at all.
        let exported: Vec<String> = collector
            .spans
            .lock()
            .expect("spans")
            .iter()
            .map(|span| hex(&span.trace_id))
            .collect();
        assert_eq!(exported, [sampled]);
    });
}

#[test]
fn without_an_exporter_the_logs_still_name_the_callers_trace() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let mut environment = dir.serve_environment();
    environment.extend(
        [
            ("RUNRATE__LOG__FORMAT", "json"),
            ("RUNRATE__ADMIN__TOKEN", ADMIN_TOKEN),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned())),
    );
    let (process, lines) = ServeProcess::spawn(dir.path(), environment);
    let server = process.until_serving(&lines);
    let trace = "5c1b2f3577b34da6a3ce929d0e0e4737";
    runtime.block_on(load_example_in_trace(
        &server.url,
        trace,
        "11f067aa0ba902b8",
    ));
    assert_logged_in_trace(&server, &lines, trace);
}

/// Loads the example figures with a `traceparent` of `trace_id` and `parent`.
async fn load_example_in_trace(url: &str, trace_id: &str, parent: &str) {
    let mut admin = AdminServiceClient::connect(url.to_owned())
        .await
        .expect("connect");
    let name = "2026-q2-example.toml";
    let mut request = with_traceparent(
        LoadFiguresRequest {
            file_name: name.into(),
            content: std::fs::read(figures_file(name)).expect("the example"),
            ..Default::default()
        },
        trace_id,
        parent,
    );
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
    );
    admin.load_figures(request).await.expect("loaded");
}

/// The example load's JSON log line, read from `lines` as the server writes them, runs
/// in the load's span, inside the call's span with `trace_id`.
fn assert_logged_in_trace(
    server: &ServeProcess,
    lines: &std::sync::mpsc::Receiver<String>,
    trace_id: &str,
) {
    let logged = loop {
        let line = lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("a load line:\n{}", server.output()));
        if line.contains("figures loaded") && line.contains("2026-q2-example.toml") {
            break line;
        }
    };
    let event: serde_json::Value = serde_json::from_str(&logged).expect("a JSON line");
    assert_eq!(event["span"]["name"], "load", "{logged}");
    let spans = event["spans"].as_array().expect("the spans it ran in");
    assert!(
        spans.iter().any(|span| span["trace_id"] == trace_id),
        "{logged}"
    );
}

#[test]
fn the_standard_opentelemetry_variables_name_the_collector_and_the_service() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = runtime.block_on(TestDir::new());
    let collector = Collector::default();
    let server = runtime.block_on(serve_exporting_through(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &collector,
        &dir,
        &[("OTEL_SERVICE_NAME", "runrate-eu-west")],
    ));
    runtime.block_on(async {
        MetricsServiceClient::connect(server.url.clone())
            .await
            .expect("connect")
            .list_providers(ListProvidersRequest::default())
            .await
            .expect("providers");
        collector
            .wait_for("ListProviders", |span| {
                span.name.ends_with("/ListProviders")
            })
            .await;
    });
    let services = collector.services.lock().expect("services").clone();
    assert!(
        !services.is_empty() && services.iter().all(|name| name == "runrate-eu-west"),
        "{services:?}"
    );
}
