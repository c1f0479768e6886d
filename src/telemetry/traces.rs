//! Logs and traces. Every RPC and web request gets a span that continues the trace of an
//! incoming W3C `traceparent`; loads and deliveries get spans of their own. With
//! `tracing.otlp_endpoint` set, spans are exported over OTLP/gRPC; either way a span's
//! trace id is one of its fields, so every log line inside a request carries it.

use std::io::IsTerminal;

use anyhow::Context as _;
use http::HeaderMap;
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::{LogFormat, LogSettings, TracingSettings};

/// The service name spans are exported under.
const SERVICE_NAME: &str = "runrate";
/// Longest path a span is named after: a client picks the path.
const MAX_SPAN_NAME: usize = 128;

/// What must outlive serving: the exporter, flushed at the end.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Exports the spans still buffered; call once serving has ended.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "cannot export the last spans");
        }
    }
}

/// Logs to standard output (text, coloured only on a terminal, or one JSON object per
/// line) and, when configured, spans to an OTLP collector. Call inside the runtime: the
/// exporter's connection lives on it.
pub fn init(log: &LogSettings, traces: &TracingSettings) -> anyhow::Result<Tracing> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer();
    let logs = match log.format {
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let provider = match traces.otlp_endpoint.trim() {
        "" => None,
        endpoint => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("cannot export traces to {endpoint}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        traces.sample_ratio,
                    ))))
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(SERVICE_NAME)
                            .build(),
                    )
                    .build(),
            )
        }
    };
    // Each its own filter: quieting the logs must not stop the spans.
    let mut layers = vec![logs.with_filter(filter).boxed()];
    if let Some(provider) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                // What a span costs per request: busy/idle timings (two clock reads on
                // every poll), an OpenTelemetry context made current on every poll
                // (parents come from the span tree), thread and source location
                // attributes; none is needed.
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_threads(false)
                .with_location(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Tracing { provider })
}

/// The span of one gRPC call, named `package.Service/Method` as OpenTelemetry's RPC
/// conventions name it.
pub fn grpc_span(request: &http::Request<()>) -> Span {
    let path = bounded(request.uri().path().trim_start_matches('/'));
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        trace_id = tracing::field::Empty,
    );
    continue_trace(&span, request.headers());
    span
}

/// The span of one web request, named by its route template.
pub fn http_span(method: &str, route: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        trace_id = tracing::field::Empty,
    );
    continue_trace(&span, headers);
    span
}

fn bounded(text: &str) -> &str {
    match text.char_indices().nth(MAX_SPAN_NAME) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Makes `span` a child of the request's `traceparent`, if it has a valid one, and
/// records the trace id it belongs to: the incoming one, or the one the exporter began.
fn continue_trace(span: &Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let incoming = parent.span().span_context().clone();
    let _ = span.set_parent(parent);
    let own = span.context().span().span_context().clone();
    let trace_id = if own.is_valid() {
        own.trace_id()
    } else if incoming.is_valid() {
        incoming.trace_id()
    } else {
        return;
    };
    span.record("trace_id", tracing::field::display(trace_id));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
