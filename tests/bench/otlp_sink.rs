//! An OTLP/gRPC trace collector that takes every export and keeps nothing: what runrate
//! exports to in the read benchmark with tracing on (tests/bench/run.sh). It shares the
//! machine's cores with the server measured, so it does the least a collector can: it
//! reads each request's bytes without decoding them and answers an empty
//! `ExportTraceServiceResponse` with status OK. A real collector runs elsewhere.
//! Usage: bench-otlp-sink ADDRESS; prints the exports and bytes it took when stopped
//! (SIGTERM).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Default)]
struct Taken {
    exports: AtomicU64,
    bytes: AtomicU64,
}

type Answer = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn take(
    request: Request<hyper::body::Incoming>,
    taken: Arc<Taken>,
) -> Result<Response<Answer>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    taken.exports.fetch_add(1, Ordering::Relaxed);
    taken.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    // One empty message (a zero flag and a zero length), then the status.
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(tokio_stream::iter(frames)))
        .expect("a response"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let address: std::net::SocketAddr = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench-otlp-sink ADDRESS"))?
        .parse()?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    let taken = Arc::new(Taken::default());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            _ = terminate.recv() => break,
            accepted = listener.accept() => accepted?,
        };
        let taken = taken.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| take(request, taken.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    println!(
        "exports taken: {} ({} bytes)",
        taken.exports.load(Ordering::Relaxed),
        taken.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}
