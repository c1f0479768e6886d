//! WatchLoads: each load as one event, in order, from a resume token.
//!
//! A load's event can be megabytes (every fact it added or revised), and thousands of
//! clients may watch. So the event is encoded once, as a complete gRPC message, and the
//! same bytes go to every watcher: the stream is served here as its own HTTP body rather
//! than through tonic's per-stream encoding, which would copy it for each. A watcher
//! holds no queue: its body reads the next event from the snapshot only when HTTP/2 asks
//! for more data, so a client that stops reading holds at most the event being sent and
//! the one hyper has in hand, both shared. A live
//! watcher that falls so far behind that its next event has left the cache of recent
//! events is ended with ABORTED and the resume token to continue from. The number of
//! open watches is capped, in all and per connection.
//!
//! A watcher learns of new loads from the snapshot cell and reads them from the snapshot
//! itself, so it can neither miss a load (it listens before reading) nor repeat one (it
//! remembers the last load it sent).

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tokio::time::Sleep;
use tokio_stream::{Stream, wrappers::WatchStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Code, Status, body::Body, server::NamedService, transport::server::TcpConnectInfo};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    catalog::{ReadSnapshot, SharedSnapshot},
    connections::Occasionally,
    domain::LoadId,
    store::to_micros,
    telemetry::{self, OpenGuard},
};

use crate::sealing::{TokenSealer, UnsealError};

use super::{
    ApiError, MetricsApi,
    error::ERROR_DOMAIN,
    pb::runrate::v1::{
        self as api, metrics_service_server::MetricsServiceServer, watch_loads_response::Event,
    },
    to_proto,
};

/// The path of the method served here.
const WATCH_LOADS_PATH: &str = "/runrate.v1.MetricsService/WatchLoads";
/// Largest WatchLoads request read; it holds one resume token.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct WatchConfig {
    pub heartbeat_interval: Duration,
    /// How many loads back a resume token may point.
    pub resume_history_loads: u32,
    /// Cancelled when the server shuts down, to end open streams.
    pub shutdown: CancellationToken,
    /// Seals resume tokens (and page tokens).
    pub tokens: Arc<TokenSealer>,
    /// Open watches at most, in all and on one connection.
    pub max_streams: usize,
    pub max_streams_per_connection: usize,
    /// Bytes of recent encoded events kept for live watchers (the newest is always kept).
    pub event_cache_bytes: usize,
}

/// The position after a load: its id and when it was recorded (which tells apart two
/// stores that reached the same id).
#[derive(Debug, PartialEq, Eq)]
struct Position {
    load: LoadId,
    recorded_at_us: i64,
}

const TOKEN_VERSION: &str = "w1";
/// What resume tokens are sealed for.
const PURPOSE: &str = "resume";
const NOT_THIS_HISTORY: &str = "the resume token does not belong to this server's history of loads; list the facts again and watch from now";

fn position_of(snapshot: &ReadSnapshot, load: LoadId) -> Position {
    Position {
        load,
        recorded_at_us: snapshot
            .load_record(load)
            .map_or(0, |record| to_micros(record.recorded_at)),
    }
}

fn encode(sealer: &TokenSealer, position: &Position) -> String {
    let (load, recorded) = (
        position.load.to_string(),
        position.recorded_at_us.to_string(),
    );
    sealer.seal_fields(PURPOSE, TOKEN_VERSION, &[&load, &recorded])
}

fn decode(sealer: &TokenSealer, token: &str) -> Result<Position, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "resume_token",
            "is not a resume token this server issued (pass resume_token from a WatchLoads response unchanged)",
        )
    };
    let [load, recorded] = sealer
        .open_fields(PURPOSE, TOKEN_VERSION, token)
        .map_err(|err| match err {
            UnsealError::Malformed => invalid(),
            // Well formed but not sealed here: another deployment's history (or a forgery).
            UnsealError::NotSealedHere => expired(NOT_THIS_HISTORY.into()),
        })?;
    Ok(Position {
        load: load.parse().map_err(|_| invalid())?,
        recorded_at_us: recorded.parse().map_err(|_| invalid())?,
    })
}

fn expired(message: String) -> ApiError {
    ApiError::FailedPrecondition {
        reason: "RESUME_TOKEN_EXPIRED",
        message,
    }
}

/// Checks a resume token against the snapshot and returns the last load it has seen.
fn starting_load(
    snapshot: &ReadSnapshot,
    token: &str,
    config: &WatchConfig,
) -> Result<LoadId, ApiError> {
    if token.is_empty() {
        return Ok(snapshot.head());
    }
    let position = decode(&config.tokens, token)?;
    let head = snapshot.head();
    if !(0..=head).contains(&position.load) || position != position_of(snapshot, position.load) {
        return Err(expired(NOT_THIS_HISTORY.into()));
    }
    let age = head - position.load;
    if age > i64::from(config.resume_history_loads) {
        return Err(expired(format!(
            "the resume token is {age} loads old, more than the {} a watch can resume from; list the facts again and watch from now",
            config.resume_history_loads
        )));
    }
    Ok(position.load)
}

/// For the fuzz targets: `token` checked as a resume token against an empty snapshot.
pub(super) fn check_resume_token_for_fuzzing(token: &str, tokens: Arc<TokenSealer>) {
    let config = WatchConfig {
        heartbeat_interval: Duration::from_secs(15),
        resume_history_loads: 1000,
        shutdown: CancellationToken::new(),
        tokens,
        max_streams: 1,
        max_streams_per_connection: 1,
        event_cache_bytes: 0,
    };
    let _ = starting_load(&ReadSnapshot::default(), token, &config);
}

/// `message` as one gRPC message on the wire: uncompressed flag, length, bytes.
fn grpc_message(message: &impl Message) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
    message
        .encode(&mut framed)
        .expect("a BytesMut grows to fit");
    framed.freeze()
}

/// A live watcher needs an event the cache of recent events no longer holds.
struct FellBehind;

/// Encoded events of the newest loads, oldest first, within a byte budget.
#[derive(Default)]
struct EventCache {
    events: VecDeque<(LoadId, Bytes)>,
    bytes: usize,
}

/// Open watches, and the recent events they share.
pub struct WatchHub {
    snapshot: SharedSnapshot,
    config: WatchConfig,
    cache: Mutex<EventCache>,
    open: AtomicUsize,
    per_connection: Mutex<HashMap<SocketAddr, usize>>,
    cap_warning: Occasionally,
}

impl WatchHub {
    pub fn new(snapshot: SharedSnapshot, config: WatchConfig) -> Arc<Self> {
        Arc::new(WatchHub {
            snapshot,
            config,
            cache: Mutex::new(EventCache::default()),
            open: AtomicUsize::new(0),
            per_connection: Mutex::new(HashMap::new()),
            cap_warning: Occasionally::default(),
        })
    }

    /// The event of `load`, encoded once for everyone who needs it while it is recent.
    fn event(
        &self,
        snapshot: &ReadSnapshot,
        load: LoadId,
        live: bool,
    ) -> Result<Bytes, FellBehind> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, bytes)) = cache.events.iter().find(|(id, _)| *id == load) {
            return Ok(bytes.clone());
        }
        let newest = cache.events.back().map(|(id, _)| *id);
        if live && newest.is_some_and(|newest| load < newest) {
            return Err(FellBehind);
        }
        let event = to_proto::load_event(snapshot, load);
        let bytes = grpc_message(&self.response(Event::Load(event), &position_of(snapshot, load)));
        if newest.is_none_or(|newest| load > newest) {
            cache.bytes += bytes.len();
            cache.events.push_back((load, bytes.clone()));
            while cache.events.len() > 1 && cache.bytes > self.config.event_cache_bytes {
                if let Some((_, evicted)) = cache.events.pop_front() {
                    cache.bytes -= evicted.len();
                }
            }
        }
        Ok(bytes)
    }

    fn response(&self, event: Event, position: &Position) -> api::WatchLoadsResponse {
        api::WatchLoadsResponse {
            event: Some(event),
            resume_token: encode(&self.config.tokens, position),
        }
    }

    /// Takes a place among the open watches, or says why there is none.
    fn admit(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<WatchSlot, ApiError> {
        let refuse = |message: String| {
            self.cap_warning.warn(|| {
                tracing::warn!(%message, "refusing watch streams past the cap");
            });
            ApiError::ResourceExhausted(message)
        };
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.config.max_streams {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(refuse(format!(
                "this server has its maximum of {} open watch streams; retry later, or with another server",
                self.config.max_streams
            )));
        }
        if let Some(peer) = peer {
            let mut per_connection = self
                .per_connection
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let count = per_connection.entry(peer).or_default();
            if *count >= self.config.max_streams_per_connection {
                drop(per_connection);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(refuse(format!(
                    "this connection has its maximum of {} open watch streams; one watch sees every load",
                    self.config.max_streams_per_connection
                )));
            }
            *count += 1;
        }
        Ok(WatchSlot {
            hub: self.clone(),
            peer,
            _open: OpenGuard::new(metrics::gauge!(telemetry::WATCH_STREAMS_OPEN)),
        })
    }

    /// Opens a watch: the token is checked now, events are read as the client takes them.
    fn open(
        self: &Arc<Self>,
        resume_token: &str,
        peer: Option<SocketAddr>,
    ) -> Result<WatchBody, ApiError> {
        // Listen before reading the snapshot: a load installed in between still wakes us.
        let heads = WatchStream::from_changes(self.snapshot.subscribe());
        let last_sent = starting_load(&self.snapshot.load(), resume_token, &self.config)?;
        let slot = self.admit(peer)?;
        Ok(WatchBody {
            hub: self.clone(),
            heads,
            shutdown: Box::pin(self.config.shutdown.clone().cancelled_owned()),
            heartbeat: Box::pin(tokio::time::sleep(self.config.heartbeat_interval)),
            last_sent,
            phase: Phase::Replaying,
            _slot: slot,
        })
    }

    /// Answers a WatchLoads request: reads it, then streams.
    async fn serve(self: Arc<Self>, request: http::Request<Body>) -> http::Response<Body> {
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let opened = match read_request(request.into_body()).await {
            Ok(request) => self.open(&request.resume_token, peer).map_err(Status::from),
            Err(status) => Err(status),
        };
        match opened {
            Ok(body) => http::Response::builder()
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .body(Body::new(body))
                .unwrap_or_else(|_| Status::internal("cannot build a response").into_http()),
            Err(status) => status.into_http(),
        }
    }
}

/// Reads the one request message of a server-streaming call.
async fn read_request(body: Body) -> Result<api::WatchLoadsRequest, Status> {
    let bytes = http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|_| {
            Status::resource_exhausted(format!(
                "a WatchLoads request is at most {MAX_REQUEST_BYTES} bytes"
            ))
        })?
        .to_bytes();
    let malformed = || Status::internal("the request is not one gRPC message");
    let (&compressed, rest) = bytes.split_first().ok_or_else(malformed)?;
    if compressed != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported",
        ));
    }
    let (length, message) = rest.split_at_checked(4).ok_or_else(malformed)?;
    let length = u32::from_be_bytes(length.try_into().map_err(|_| malformed())?);
    if usize::try_from(length).ok() != Some(message.len()) {
        return Err(malformed());
    }
    api::WatchLoadsRequest::decode(message).map_err(|err| Status::internal(err.to_string()))
}

/// A place among the open watches, given back when the watch ends.
struct WatchSlot {
    hub: Arc<WatchHub>,
    peer: Option<SocketAddr>,
    _open: OpenGuard,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(peer) = self.peer {
            let mut per_connection = self
                .hub
                .per_connection
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_connection.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    per_connection.remove(&peer);
                }
            }
        }
    }
}

enum Phase {
    /// Sending the loads after the resume token, then the `current` marker.
    Replaying,
    /// Sending each load as it comes, with heartbeats between.
    Live,
    /// Sending this status as the trailers.
    Ending(Box<Status>),
    Done,
}

/// One watch, as the response body of its call.
pub struct WatchBody {
    hub: Arc<WatchHub>,
    heads: WatchStream<LoadId>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    heartbeat: Pin<Box<Sleep>>,
    last_sent: LoadId,
    phase: Phase,
    _slot: WatchSlot,
}

impl WatchBody {
    /// The next load's event, if there is a load after the last one sent.
    fn next_load(&mut self, live: bool) -> Result<Option<Bytes>, FellBehind> {
        let snapshot = self.hub.snapshot.load();
        let loads = snapshot.loads();
        let next = loads.partition_point(|load| load.id <= self.last_sent);
        let Some(load) = loads.get(next) else {
            return Ok(None);
        };
        let event = self.hub.event(&snapshot, load.id, live)?;
        self.last_sent = load.id;
        Ok(Some(event))
    }

    fn small_message(&self, event: Event) -> Bytes {
        let position = position_of(&self.hub.snapshot.load(), self.last_sent);
        grpc_message(&self.hub.response(event, &position))
    }

    fn restart_heartbeat(&mut self) {
        let next = tokio::time::Instant::now() + self.hub.config.heartbeat_interval;
        self.heartbeat.as_mut().reset(next);
    }

    fn fell_behind(&self) -> Status {
        let token = encode(
            &self.hub.config.tokens,
            &position_of(&self.hub.snapshot.load(), self.last_sent),
        );
        let details = ErrorDetails::with_error_info(
            "WATCH_FELL_BEHIND",
            ERROR_DOMAIN,
            HashMap::from([("resume_token".to_owned(), token)]),
        );
        Status::with_error_details(
            Code::Aborted,
            "this watch fell too far behind the loads; reconnect with the resume_token in the ErrorInfo (or the last one received) to continue",
            details,
        )
    }
}

fn data(bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
    Poll::Ready(Some(Ok(Frame::data(bytes))))
}

impl http_body::Body for WatchBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Ending(status) => {
                    let mut trailers = http::HeaderMap::new();
                    let _ = status.add_header(&mut trailers);
                    this.phase = Phase::Done;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Phase::Replaying => match this.next_load(false) {
                    Ok(Some(event)) => return data(event),
                    Ok(None) | Err(FellBehind) => {
                        this.phase = Phase::Live;
                        this.restart_heartbeat();
                        return data(this.small_message(Event::Current(api::CurrentMarker {})));
                    }
                },
                Phase::Live => {
                    if this.shutdown.as_mut().poll(cx).is_ready() {
                        this.phase = Phase::Ending(Box::new(Status::unavailable(
                            "the server is shutting down; reconnect and resume with the last resume_token",
                        )));
                        continue;
                    }
                    // Drained until pending, so the next load wakes this body.
                    loop {
                        match Pin::new(&mut this.heads).poll_next(cx) {
                            Poll::Ready(Some(_)) => continue,
                            Poll::Ready(None) => {
                                this.phase = Phase::Done;
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    if matches!(this.phase, Phase::Done) {
                        continue;
                    }
                    match this.next_load(true) {
                        Ok(Some(event)) => {
                            this.restart_heartbeat();
                            return data(event);
                        }
                        Ok(None) => {}
                        Err(FellBehind) => {
                            this.phase = Phase::Ending(Box::new(this.fell_behind()));
                            continue;
                        }
                    }
                    if this.heartbeat.as_mut().poll(cx).is_ready() {
                        this.restart_heartbeat();
                        return data(this.small_message(Event::Heartbeat(api::Heartbeat {})));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// MetricsService with WatchLoads answered by the [`WatchHub`] and every other method by
/// tonic's generated server.
#[derive(Clone)]
pub struct MetricsWithWatch {
    inner: MetricsServiceServer<MetricsApi>,
    hub: Arc<WatchHub>,
}

impl MetricsWithWatch {
    pub fn new(inner: MetricsServiceServer<MetricsApi>, hub: Arc<WatchHub>) -> Self {
        MetricsWithWatch { inner, hub }
    }
}

impl NamedService for MetricsWithWatch {
    const NAME: &'static str = <MetricsServiceServer<MetricsApi> as NamedService>::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower_service::Service<http::Request<Body>> for MetricsWithWatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <MetricsServiceServer<MetricsApi> as tower_service::Service<http::Request<Body>>>::poll_ready(
            &mut self.inner,
            cx,
        )
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() == WATCH_LOADS_PATH {
            let hub = self.hub.clone();
            Box::pin(async move { Ok(hub.serve(request).await) })
        } else {
            Box::pin(self.inner.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_forgeries() {
        let sealer = TokenSealer::new([5; 32]);
        let position = Position {
            load: 7,
            recorded_at_us: 1_780_000_000_000_000,
        };
        let token = encode(&sealer, &position);
        assert_eq!(decode(&sealer, &token).unwrap(), position);
        let forged = Position {
            load: i64::MIN,
            recorded_at_us: 0,
        };
        let forged = encode(&TokenSealer::new([6; 32]), &forged);
        assert!(decode(&sealer, &forged).is_err());
        assert!(decode(&sealer, "garbage").is_err());
    }
}
