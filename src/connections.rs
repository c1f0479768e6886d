//! Accepting connections within bounds, for both listeners. Each listener has a cap on
//! open connections (sized from the process's file-descriptor limit unless configured);
//! a connection arriving at the cap closes the one that has been quiet longest, so that
//! idle connections cannot lock new clients out. A connection that sends nothing within
//! `first_byte_timeout`, or (where set) stays quiet for `idle_timeout`, is closed. When
//! `accept` fails (out of file descriptors, above all) the loop backs off instead of
//! spinning, and says so in the log, once a minute at most.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// File descriptors kept back from the listeners' caps, for the database pool, SMTP
/// connections, log and data files.
const RESERVED_FDS: u64 = 128;
/// The smallest cap a listener gets, however low the fd limit.
const MIN_CONNECTIONS: usize = 16;
/// Longest pause after a failed `accept`; the pause doubles from `FIRST_ACCEPT_PAUSE`.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// How often a repeated warning (a cap reached, accept failing) may be logged.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// TCP keepalive probes find peers that vanished without a FIN (half-open connections).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Raises the soft limit on open files to the hard limit, and returns the limit now in
/// force (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise the open-files limit");
            None
        }
    }
}

/// The cap for each of the two listeners: what the fd limit leaves after the reserve,
/// shared between them.
pub fn default_cap(fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return 1024;
    };
    let per_listener = limit.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(per_listener)
        .unwrap_or(usize::MAX)
        .max(MIN_CONNECTIONS)
}

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// A connection that has sent no byte by then is closed.
    pub first_byte_timeout: Duration,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Option<Duration>,
}

/// What the listener knows of one open connection.
struct Tracked {
    opened: Instant,
    /// Milliseconds since the registry's epoch of the last byte read or written.
    last_activity_ms: AtomicU64,
    got_bytes: AtomicBool,
    closed: AtomicBool,
    /// The task reading the connection, woken to notice `closed`.
    reader: Mutex<Option<Waker>>,
}

impl Tracked {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(waker) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() {
            waker.wake();
        }
    }
}

/// A warning that repeats under attack, logged once a minute at most.
#[derive(Default)]
pub struct Occasionally {
    last: Mutex<Option<Instant>>,
}

impl Occasionally {
    /// Runs `log` unless it ran within the last `WARN_EVERY`.
    pub fn warn(&self, log: impl FnOnce()) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            log();
        }
    }
}

struct Registry {
    what: &'static str,
    limits: ConnectionLimits,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    warning: Occasionally,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection, closing the quietest one first when at the cap.
    fn admit(self: &Arc<Self>) -> (u64, Arc<Tracked>) {
        let tracked = Arc::new(Tracked {
            opened: Instant::now(),
            last_activity_ms: AtomicU64::new(self.now_ms()),
            got_bytes: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reader: Mutex::new(None),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.limits.max_connections {
            let quietest = open
                .iter()
                .min_by_key(|(_, t)| t.last_activity_ms.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            if let Some(quietest) = quietest.and_then(|id| open.remove(&id)) {
                quietest.close();
            }
            self.warning.warn(|| {
                tracing::warn!(
                    listener = self.what,
                    max_connections = self.limits.max_connections,
                    "at the cap of open connections: closing the quietest to admit new ones"
                )
            });
        }
        open.insert(id, tracked.clone());
        (id, tracked)
    }

    /// Closes connections past their first-byte or idle deadline.
    fn sweep(&self) {
        let now_ms = self.now_ms();
        let idle_ms = self
            .limits
            .idle_timeout
            .map(|idle| u64::try_from(idle.as_millis()).unwrap_or(u64::MAX));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, tracked| {
            let silent = !tracked.got_bytes.load(Ordering::Relaxed)
                && tracked.opened.elapsed() >= self.limits.first_byte_timeout;
            let quiet_ms = now_ms.saturating_sub(tracked.last_activity_ms.load(Ordering::Relaxed));
            let idle = idle_ms.is_some_and(|limit| quiet_ms >= limit);
            if silent || idle {
                tracked.close();
            }
            !(silent || idle)
        });
    }
}

/// A TCP connection the listener keeps track of: its traffic counts as activity, and it
/// fails its reads and writes once the listener closes it.
pub struct TrackedStream {
    inner: TcpStream,
    id: u64,
    tracked: Arc<Tracked>,
    registry: Arc<Registry>,
}

impl TrackedStream {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    fn closed_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed by runrate (idle, silent, or making room under the connection cap)",
        )
    }

    fn touch(&self) {
        self.tracked
            .last_activity_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.registry
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tracked.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.tracked.got_bytes.store(true, Ordering::Relaxed);
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let mut reader = this
                    .tracked
                    .reader
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
                drop(reader);
                // Closed between the check above and registering the waker: say so now.
                if this.tracked.closed.load(Ordering::Acquire) {
                    return Poll::Ready(Err(Self::closed_error()));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tracked.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tracked.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TrackedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// An accepted connection: plain, or TLS over the tracked TCP stream.
pub enum Connection {
    Plain(TrackedStream),
    Tls(Box<tokio_rustls::server::TlsStream<TrackedStream>>),
}

impl Connection {
    fn tcp(&self) -> &TrackedStream {
        match self {
            Connection::Plain(stream) => stream,
            Connection::Tls(stream) => stream.get_ref().0,
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Connection::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Connection::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Connection::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(stream) => stream.is_write_vectored(),
            Connection::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Connection::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Connection::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

/// Accepts connections on `listener` within `limits` until `stopping`, handing them out
/// through the returned stream; with `tls`, once their handshake is done (within
/// `first_byte_timeout`, and apart from the accept loop, so a slow client holds up no
/// one else).
pub fn accept(
    listener: TcpListener,
    what: &'static str,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stopping: CancellationToken,
) -> ReceiverStream<io::Result<Connection>> {
    let registry = Arc::new(Registry {
        what,
        limits,
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        warning: Occasionally::default(),
    });
    let (sender, receiver) = mpsc::channel(16);
    let sweeping = registry.clone();
    let sweep_stopping = stopping.clone();
    let sweep_every = limits
        .first_byte_timeout
        .min(limits.idle_timeout.unwrap_or(Duration::MAX))
        / 4;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(sweep_every.max(Duration::from_millis(10)));
        loop {
            tokio::select! {
                _ = sweep_stopping.cancelled() => return,
                _ = ticks.tick() => sweeping.sweep(),
            }
        }
    });
    tokio::spawn(async move {
        let mut pause = FIRST_ACCEPT_PAUSE;
        loop {
            let accepted = tokio::select! {
                _ = stopping.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    pause = FIRST_ACCEPT_PAUSE;
                    stream
                }
                Err(err) => {
                    // Out of file descriptors (EMFILE, ENFILE) above all: retrying at once
                    // would spin. Open connections closing will make room.
                    registry.warning.warn(|| {
                        tracing::warn!(listener = what, error = %err, "cannot accept connections; retrying with a pause")
                    });
                    tokio::select! {
                        _ = stopping.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(TCP_KEEPALIVE)
                .with_interval(TCP_KEEPALIVE / 4);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let (id, tracked) = registry.admit();
            let stream = TrackedStream {
                inner: stream,
                id,
                tracked,
                registry: registry.clone(),
            };
            let Some(tls) = &tls else {
                if sender.send(Ok(Connection::Plain(stream))).await.is_err() {
                    return;
                }
                continue;
            };
            let (tls, sender) = (tls.clone(), sender.clone());
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(limits.first_byte_timeout, tls.accept(stream)).await;
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(Connection::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(listener = what, error = %err, "a TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(listener = what, "a TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_share_what_the_fd_limit_leaves() {
        assert_eq!(default_cap(Some(1024)), 448);
        assert_eq!(default_cap(Some(100)), MIN_CONNECTIONS);
        assert_eq!(default_cap(None), 1024);
    }
}
