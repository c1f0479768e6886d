//! Logs and traces. Every RPC and web request gets a span that continues the trace of an
//! incoming W3C `traceparent`; loads and deliveries get spans of their own. With
//! `tracing.otlp_endpoint` set, spans are exported over OTLP/gRPC; either way a span's
//! trace id is one of its fields, so every log line inside a request carries it.

use std::{
    io::IsTerminal,
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use http::{HeaderMap, HeaderName};
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{Link, SpanContext, SpanKind, TraceContextExt, TraceId, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    Layer,
    filter::{LevelFilter, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::{
    client_address::{self, ClientAddress},
    settings::{LogFormat, LogSettings, TracingSettings, TrustedProxies},
};

/// The service name spans are exported under.
const SERVICE_NAME: &str = "runrate";
/// Longest path a span is named after: a client picks the path.
const MAX_SPAN_NAME: usize = 128;
/// The target of request spans left out of the trace sample: logs see them (with the
/// caller's trace id, if any), the exporter does not.
const UNTRACED: &str = "runrate::untraced";

/// `tracing.sample_ratio` while spans are exported; unset when they are not.
static SAMPLE_RATIO: OnceLock<f64> = OnceLock::new();
/// Requests decided so far, for sampling an exact share of them.
static REQUESTS_SEEN: AtomicU64 = AtomicU64::new(0);
/// Whether log lines may show a request span's fields, its trace id among them
/// ([`logs_see_request_spans`]). When they cannot, a span is only exported, and the trace
/// id it is exported under needs no copy in a field.
static LOGS_SEE_REQUEST_SPANS: AtomicBool = AtomicBool::new(true);

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

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
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    LOGS_SEE_REQUEST_SPANS.store(logs_see_request_spans(filter()), Ordering::Relaxed);
    let logs = tracing_subscriber::fmt::layer();
    let logs = match log.format {
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let provider = match collector(traces).as_deref() {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("cannot export traces to {endpoint}"))?;
            let _ = SAMPLE_RATIO.set(traces.sample_ratio);
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(RequestsDecided(Sampler::ParentBased(Box::new(
                        Sampler::TraceIdRatioBased(traces.sample_ratio),
                    ))))
                    .with_resource(resource())
                    .build(),
            )
        }
    };
    // Each its own filter: quieting the logs must not stop the spans.
    let mut layers = vec![logs.with_filter(filter()).boxed()];
    if let Some(provider) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                // What a span costs per request: busy/idle timings (two clock reads on
                // every poll), an OpenTelemetry context made current on every poll
                // (parents come from the span tree), thread, source location and
                // `tracing` target attributes (in no OpenTelemetry convention); none is
                // needed.
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                // A static filter: each callsite is decided once, not on every span.
                .with_filter(
                    Targets::new()
                        .with_default(LevelFilter::INFO)
                        .with_target(UNTRACED, LevelFilter::OFF),
                )
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Tracing { provider })
}

/// Where spans go: `tracing.otlp_endpoint`, or else where OpenTelemetry's standard
/// variables say (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`);
/// `None` for nowhere.
fn collector(traces: &TracingSettings) -> Option<String> {
    let configured = traces.otlp_endpoint.trim();
    if !configured.is_empty() {
        return Some(configured.to_owned());
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .filter_map(|variable| std::env::var(variable).ok())
    .map(|endpoint| endpoint.trim().to_owned())
    .find(|endpoint| !endpoint.is_empty())
}

/// What the spans say they come from: the SDK reads `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`; without either naming the service, it is runrate.
fn resource() -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    if named {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// Whether the log filter lets request spans through, asked once of a throwaway
/// subscriber with that filter alone, for both targets a request span may have.
fn logs_see_request_spans(filter: tracing_subscriber::EnvFilter) -> bool {
    let probe = tracing_subscriber::registry().with(filter);
    tracing::subscriber::with_default(probe, || {
        tracing::enabled!(kind: tracing::metadata::Kind::SPAN, tracing::Level::INFO)
            || tracing::enabled!(
                kind: tracing::metadata::Kind::SPAN,
                target: UNTRACED,
                tracing::Level::INFO
            )
    })
}

/// A request's span, at the target the exporter reads or, when the request is not in
/// the trace sample, at [`UNTRACED`] (one macro, so the two cannot drift apart).
macro_rules! request_span {
    ($traced:expr, $name:literal, $($fields:tt)*) => {
        if $traced {
            tracing::info_span!($name, $($fields)*)
        } else {
            tracing::info_span!(target: UNTRACED, $name, $($fields)*)
        }
    };
}

/// The span of one gRPC call, named `package.Service/Method` as OpenTelemetry's RPC
/// conventions name it. Its fields are worked out only if a layer wants the span.
pub fn grpc_span(request: &http::Request<()>, trusted: &TrustedProxies) -> Span {
    let path = request.uri().path();
    let incoming = incoming_trace(request.headers());
    let span = request_span!(
        is_traced(&incoming),
        "grpc",
        otel.name = rpc_name(path).0,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = rpc_name(path).1,
        rpc.method = rpc_name(path).2,
        client.address =
            client_address::of_grpc_call(request, trusted).map(tracing::field::display),
        trace_id = tracing::field::Empty,
    );
    continue_trace(&span, incoming);
    span
}

/// `package.Service/Method` from a call's path, bounded (a client picks the path), with
/// its service and method.
fn rpc_name(path: &str) -> (&str, &str, &str) {
    let name = bounded(path.trim_start_matches('/'));
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    (name, service, method)
}

/// The span of one web request, named by its route template.
pub fn http_span(
    method: &str,
    route: &str,
    headers: &HeaderMap,
    client: Option<ClientAddress>,
) -> Span {
    let incoming = incoming_trace(headers);
    let span = request_span!(
        is_traced(&incoming),
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        client.address = client.map(|ClientAddress(address)| tracing::field::display(address)),
        trace_id = tracing::field::Empty,
    );
    continue_trace(&span, incoming);
    span
}

/// The trace a request's `traceparent` names, if it has a valid one.
fn incoming_trace(headers: &HeaderMap) -> Context {
    // Most requests carry none: spare them the propagator's work.
    if !headers.contains_key(TRACEPARENT) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Whether a request's span is exported: as its caller sampled it, or else for an exact
/// share of requests. Deciding before the span is made spares the requests left out the
/// exporter's cost of building a span, which is most of what a span costs.
fn is_traced(incoming: &Context) -> bool {
    let Some(&ratio) = SAMPLE_RATIO.get() else {
        return false;
    };
    let caller = incoming.span().span_context().clone();
    if caller.is_valid() {
        return caller.is_sampled();
    }
    in_share(REQUESTS_SEEN.fetch_add(1, Ordering::Relaxed), ratio)
}

/// Whether the request numbered `seen` is among an exact `ratio` of all requests.
fn in_share(seen: u64, ratio: f64) -> bool {
    let seen = seen as f64;
    ((seen + 1.0) * ratio).floor() > (seen * ratio).floor()
}

/// The exporter's sampler: a request span without a parent here was sampled already
/// ([`is_traced`]); every other span is sampled as its parent was, and a trace begun
/// elsewhere (a fan-out's deliveries) at the configured ratio.
#[derive(Clone, Debug)]
struct RequestsDecided(Sampler);

impl ShouldSample for RequestsDecided {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let has_parent = parent_context.is_some_and(|parent| parent.has_active_span());
        if *span_kind == SpanKind::Server && !has_parent {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

fn bounded(text: &str) -> &str {
    // No more bytes than the bound, so no more characters: nothing to count.
    if text.len() <= MAX_SPAN_NAME {
        return text;
    }
    match text.char_indices().nth(MAX_SPAN_NAME) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Makes `span` a child of the request's `traceparent`, if it has a valid one, and
/// records the trace id it belongs to for the log lines inside it: the incoming one, or
/// the one the exporter began.
fn continue_trace(span: &Span, parent: Context) {
    let incoming: SpanContext = parent.span().span_context().clone();
    if incoming.is_valid() {
        let _ = span.set_parent(parent);
    } else if span.is_disabled() {
        // Neither logged nor exported, and no trace to name.
        return;
    }
    if !LOGS_SEE_REQUEST_SPANS.load(Ordering::Relaxed) {
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_spans_reach_the_logs_when_the_filter_lets_their_target_through() {
        let sees = |directives: &str| {
            logs_see_request_spans(tracing_subscriber::EnvFilter::new(directives))
        };
        assert!(sees("info"));
        assert!(sees("warn,runrate=info"));
        assert!(sees("warn,runrate::untraced=debug"));
        assert!(!sees("warn"));
        assert!(
            !sees("warn,runrate::app=info"),
            "only another module at INFO"
        );
    }

    #[test]
    fn rpc_span_names_are_split_and_bounded_in_characters() {
        assert_eq!(
            rpc_name("/runrate.v1.MetricsService/GetFact"),
            (
                "runrate.v1.MetricsService/GetFact",
                "runrate.v1.MetricsService",
                "GetFact"
            )
        );
        assert_eq!(rpc_name("/no-method"), ("no-method", "no-method", ""));
        let ascii = "a".repeat(MAX_SPAN_NAME);
        assert_eq!(bounded(&ascii), ascii, "exactly at the bound");
        let long = "é".repeat(MAX_SPAN_NAME + 1);
        assert_eq!(bounded(&long).chars().count(), MAX_SPAN_NAME);
        let short_in_characters = "é".repeat(MAX_SPAN_NAME - 1);
        assert_eq!(
            bounded(&short_in_characters),
            short_in_characters,
            "more bytes than the bound, fewer characters"
        );
    }

    #[test]
    fn the_share_sampled_is_exact() {
        for (ratio, expected) in [(0.0, 0), (0.1, 100), (0.25, 250), (1.0, 1000)] {
            let sampled = (0..1000).filter(|&seen| in_share(seen, ratio)).count();
            assert_eq!(sampled, expected, "ratio {ratio}");
        }
    }
}
