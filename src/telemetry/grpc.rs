//! The gRPC server metrics under the names of go-grpc-prometheus, which most gRPC
//! dashboards are built on. No maintained crate emits these through the `metrics` facade
//! (tonic-prometheus-layer writes to the `prometheus` crate's registry under names of its
//! own), so this tower layer does: it sits inside the gRPC-Web layer, sees every call as
//! plain gRPC, counts the length-prefixed messages each way, and takes the status from
//! the trailers (or from the headers of a trailers-only answer).

use std::{
    pin::Pin,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics::{Counter, Histogram, Label};
use prost::Message;
use tonic::{Code, body::Body};
use tower_service::Service;

use super::{GRPC_HANDLED, GRPC_HANDLING_SECONDS, GRPC_MSG_RECEIVED, GRPC_MSG_SENT, GRPC_STARTED};

/// Every code a status can carry, in wire order.
const CODES: usize = 17;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The series of every served method. The methods are compiled in and the recorder
/// the series live in is process-wide, so one table serves every server of the process,
/// and a call borrows its method's series with no reference count to keep.
static METHODS: OnceLock<MethodTable> = OnceLock::new();

/// How many threads count apart (more than tokio's workers on most hosts).
const SHARDS: usize = 8;

/// One thread's counts of one method, on cache lines of its own: the workers serving
/// calls at once would otherwise contend for the exporter's counters on every call,
/// each increment there being two atomic adds (a generation beside the value) on lines
/// every worker writes. [`publish`] sums the shards into those counters before a scrape
/// renders them; no crate keeps per-thread counts behind the `metrics` facade.
#[repr(align(128))]
#[derive(Default)]
struct Counts {
    started: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    handled: [AtomicU64; CODES],
}

/// Which of a call's message counts a body adds to.
type MessageCount = fn(&Counts) -> &AtomicU64;

/// The shard of the calling thread, given out in turn as threads first count.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// One method's series, registered once; `handled` by code as codes occur.
struct MethodSeries {
    labels: Vec<Label>,
    counts: [Counts; SHARDS],
    started: Counter,
    received: Counter,
    sent: Counter,
    handling: Histogram,
    handled: [OnceLock<Counter>; CODES],
}

impl MethodSeries {
    fn new(grpc_type: &'static str, service: &str, method: &str) -> Self {
        let labels = vec![
            Label::new("grpc_type", grpc_type),
            Label::new("grpc_service", service.to_owned()),
            Label::new("grpc_method", method.to_owned()),
        ];
        MethodSeries {
            counts: Default::default(),
            started: metrics::counter!(GRPC_STARTED, labels.clone()),
            received: metrics::counter!(GRPC_MSG_RECEIVED, labels.clone()),
            sent: metrics::counter!(GRPC_MSG_SENT, labels.clone()),
            handling: metrics::histogram!(GRPC_HANDLING_SECONDS, labels.clone()),
            handled: Default::default(),
            labels,
        }
    }

    /// The calling thread's counts.
    fn counts(&self) -> &Counts {
        &self.counts[shard()]
    }

    fn handled(&self, code: Code) -> &Counter {
        self.handled[code_index(code)].get_or_init(|| {
            let mut labels = self.labels.clone();
            labels.push(Label::new("grpc_code", code_name(code)));
            metrics::counter!(GRPC_HANDLED, labels)
        })
    }

    /// Sets the exporter's counters to the sums of the shards.
    fn publish(&self) {
        let total = |count: &dyn Fn(&Counts) -> &AtomicU64| -> u64 {
            self.counts
                .iter()
                .map(|counts| count(counts).load(Ordering::Relaxed))
                .sum()
        };
        self.started.absolute(total(&|counts| &counts.started));
        self.received.absolute(total(&|counts| &counts.received));
        self.sent.absolute(total(&|counts| &counts.sent));
        for index in 0..CODES {
            let handled = total(&|counts| &counts.handled[index]);
            // A code no call ended with gets no series.
            if handled > 0 {
                self.handled(Code::from_i32(index as i32)).absolute(handled);
            }
        }
    }
}

/// Brings the exporter's gRPC counters up to date; call before rendering them. Scrapes
/// publish one at a time, so that a later total is never overwritten by an earlier one.
pub fn publish() {
    static PUBLISHING: Mutex<()> = Mutex::new(());
    let Some(table) = METHODS.get() else {
        return;
    };
    let _one_at_a_time = PUBLISHING.lock().unwrap_or_else(|p| p.into_inner());
    for method in table.by_path.values().chain([&table.unknown]) {
        method.publish();
    }
}

/// Where a code's counts are kept: its number on the wire.
fn code_index(code: Code) -> usize {
    (code as usize).min(CODES - 1)
}

/// A code as go-grpc-prometheus labels it (Go's `codes.Code.String()`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The served methods by path (`/package.Service/Method`), read from the descriptor
/// sets the server registers for reflection, so the table cannot drift from the API.
/// A path that names no method shares one series: a scanner cannot mint labels.
/// (foldhash rather than SipHash: the table is filled once from the descriptors, so a
/// client's paths can only look it up, never crowd it.)
struct MethodTable {
    by_path: foldhash::HashMap<String, MethodSeries>,
    unknown: MethodSeries,
}

impl MethodTable {
    fn new(descriptor_sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut by_path = foldhash::HashMap::default();
        for encoded in descriptor_sets {
            let set = prost_types::FileDescriptorSet::decode(*encoded)?;
            for file in set.file {
                for service in &file.service {
                    let service_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        let grpc_type = match (method.client_streaming(), method.server_streaming())
                        {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        by_path.insert(
                            format!("/{service_name}/{}", method.name()),
                            MethodSeries::new(grpc_type, &service_name, method.name()),
                        );
                    }
                }
            }
        }
        Ok(MethodTable {
            by_path,
            unknown: MethodSeries::new("unary", "unknown", "unknown"),
        })
    }

    fn get(&self, path: &str) -> &MethodSeries {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }
}

/// The layer, or with no `/metrics` to read them, a pass-through: no clock read, method
/// lookup or body wrapped per call for series nobody renders.
#[derive(Clone, Copy)]
pub struct GrpcPrometheusLayer(Option<&'static MethodTable>);

impl GrpcPrometheusLayer {
    /// Series for every method of these encoded `FileDescriptorSet`s, in the recorder
    /// of [`super::prometheus`] (installed now if it is not yet). The first server of the
    /// process decides the table; every server serves the same compiled-in methods.
    pub fn new(descriptor_sets: &[&[u8]]) -> anyhow::Result<Self> {
        super::prometheus()?;
        if let Some(table) = METHODS.get() {
            return Ok(GrpcPrometheusLayer(Some(table)));
        }
        let table = MethodTable::new(descriptor_sets)?;
        Ok(GrpcPrometheusLayer(Some(METHODS.get_or_init(|| table))))
    }

    /// Counts nothing.
    pub fn off() -> Self {
        GrpcPrometheusLayer(None)
    }
}

impl<S> tower_layer::Layer<S> for GrpcPrometheusLayer {
    type Service = GrpcPrometheus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcPrometheus {
            inner,
            methods: self.0,
        }
    }
}

#[derive(Clone)]
pub struct GrpcPrometheus<S> {
    inner: S,
    methods: Option<&'static MethodTable>,
}

impl<S, ResBody> Service<Request<Body>> for GrpcPrometheus<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: HttpBody<Data = Bytes>,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(methods) = self.methods else {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(MeteredBody::unmetered)) });
        };
        let method = methods.get(request.uri().path());
        method.counts().started.fetch_add(1, Ordering::Relaxed);
        let request = request.map(|body| {
            Body::new(MeteredBody {
                inner: body,
                counting: Some((Framing::default(), method, |counts| &counts.received)),
                call: None,
            })
        });
        let mut call = Call {
            method,
            started: Instant::now(),
            code: None,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(err) => {
                    call.ended(Code::Unknown);
                    return Err(err);
                }
            };
            call.code = grpc_status(response.headers());
            let method = call.method;
            Ok(response.map(|body| MeteredBody {
                inner: body,
                counting: Some((Framing::default(), method, |counts| &counts.sent)),
                call: Some(call),
            }))
        })
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers
        .get(GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

/// One call in flight; counted as handled when its status is known, or as cancelled
/// when its answer is dropped unfinished (the client went away).
struct Call {
    method: &'static MethodSeries,
    started: Instant,
    code: Option<Code>,
}

impl Call {
    fn ended(&mut self, code: Code) {
        self.code = Some(code);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        self.method.counts().handled[code_index(code)].fetch_add(1, Ordering::Relaxed);
        self.method
            .handling
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Where a byte stream of length-prefixed gRPC messages (a flag byte, then a 4-byte
/// big-endian length) stands between frames.
#[derive(Default)]
struct Framing {
    prefix_seen: usize,
    prefix: [u8; 5],
    message_left: u64,
}

impl Framing {
    /// How many messages begin in `data`.
    fn count(&mut self, mut data: &[u8]) -> u64 {
        let mut begun = 0;
        while !data.is_empty() {
            if self.message_left > 0 {
                let skip = self.message_left.min(data.len() as u64);
                self.message_left -= skip;
                data = &data[skip as usize..];
                continue;
            }
            let take = (self.prefix.len() - self.prefix_seen).min(data.len());
            self.prefix[self.prefix_seen..self.prefix_seen + take].copy_from_slice(&data[..take]);
            self.prefix_seen += take;
            data = &data[take..];
            if self.prefix_seen == self.prefix.len() {
                begun += 1;
                self.prefix_seen = 0;
                let length = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.message_left = u64::from(u32::from_be_bytes(length));
            }
        }
        begun
    }
}

/// A body that counts the messages passing through it and, on the answer's side, takes
/// the call's status from the trailers.
pub struct MeteredBody<B> {
    inner: B,
    /// Where the messages stand, and the method and count they are counted in; `None`
    /// when uncounted.
    counting: Option<(Framing, &'static MethodSeries, MessageCount)>,
    call: Option<Call>,
}

impl<B> MeteredBody<B> {
    /// A body passed through uncounted.
    fn unmetered(inner: B) -> Self {
        MeteredBody {
            inner,
            counting: None,
            call: None,
        }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some((framing, method, messages)) = &mut this.counting {
                        let begun = framing.count(data);
                        if begun > 0 {
                            messages(method.counts()).fetch_add(begun, Ordering::Relaxed);
                        }
                    }
                } else if let (Some(trailers), Some(call)) = (frame.trailers_ref(), &mut this.call)
                {
                    call.code = grpc_status(trailers).or(call.code);
                    this.call = None;
                }
            }
            Poll::Ready(None) => {
                // The end: a status from the headers (trailers-only), or none at all.
                if let Some(mut call) = this.call.take() {
                    call.code = call.code.or(Some(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, length as usize));
        bytes
    }

    #[test]
    fn counts_messages_however_the_frames_split_them() {
        let mut stream = message(3);
        stream.extend(message(0));
        stream.extend(message(300));
        for frame_size in [1, 2, 4, 5, 6, 64, stream.len()] {
            let mut framing = Framing::default();
            let counted: u64 = stream
                .chunks(frame_size)
                .map(|chunk| framing.count(chunk))
                .sum();
            assert_eq!(counted, 3, "frames of {frame_size} bytes");
        }
    }

    #[test]
    fn every_registered_method_has_its_type() {
        let table = MethodTable::new(&[
            crate::grpc::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .expect("descriptor sets");
        let type_of = |path: &str| {
            let method = table.get(path);
            method.labels[0].value().to_owned()
        };
        assert_eq!(type_of("/runrate.v1.MetricsService/GetFact"), "unary");
        assert_eq!(
            type_of("/runrate.v1.MetricsService/WatchLoads"),
            "server_stream"
        );
        assert_eq!(type_of("/grpc.health.v1.Health/Watch"), "server_stream");
        assert_eq!(
            table.get("/no.Such/Method").labels[1].value(),
            "unknown",
            "an unknown path shares one series"
        );
    }
}
