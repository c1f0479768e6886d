//! Cross-origin access for browsers, the same on the gRPC(-Web) and the web side: pages
//! on the configured origins may call the APIs and read their answers, gRPC's status
//! trailers included; a page on any other origin is refused by its browser, because no
//! `Access-Control-Allow-Origin` comes back for it.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::Either;
use http::{HeaderName, HeaderValue, Method, Request, Response, header::ORIGIN};
use tower_http::cors::{self, AllowOrigin, CorsLayer};
use tower_layer::Layer;
use tower_service::Service;

use crate::settings::CorsOrigins;

/// Request headers a gRPC-Web client (grpc-web, @connectrpc/connect-web) or a JSON
/// client sends beyond the CORS-safelisted ones, plus a bearer token and trace context.
const ALLOWED_HEADERS: [&str; 7] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
    "traceparent",
    "tracestate",
];

/// Answer headers a page's script may read: gRPC-Web's status comes in headers on a
/// trailers-only answer, and a feed's validator is its ETag.
const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "etag",
];

/// How long a browser may reuse a preflight's answer (Chromium caps it at two hours).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 3600);

pub fn layer(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::None => AllowOrigin::list([]),
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(origins) => AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE)
}

/// CORS for requests that name an `Origin` (a browser's cross-origin ones), on a
/// listener whose answers no cache keeps: gRPC and gRPC-Web are POSTs. Every other
/// caller's answer passes untouched, sparing it the `Vary` headers and the copy of the
/// whole CORS configuration that `tower_http`'s layer makes on each call (the server
/// clones its service stack per request).
#[derive(Clone)]
pub struct CrossOriginOnlyLayer(Arc<CorsLayer>);

impl CrossOriginOnlyLayer {
    pub fn new(origins: &CorsOrigins) -> Self {
        CrossOriginOnlyLayer(Arc::new(layer(origins)))
    }
}

impl<S> Layer<S> for CrossOriginOnlyLayer {
    type Service = CrossOriginOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CrossOriginOnly {
            inner,
            cors: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CrossOriginOnly<S> {
    inner: S,
    cors: Arc<CorsLayer>,
}

impl<S, B, ResBody> Service<Request<B>> for CrossOriginOnly<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<cors::ResponseFuture<S::Future>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.headers().contains_key(ORIGIN) {
            // The service made ready goes to the CORS wrapper; a clone stays for the next.
            let spare = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, spare);
            Either::Left(self.cors.layer(ready).call(request))
        } else {
            Either::Right(self.inner.call(request))
        }
    }
}
