//! Cross-origin access for browsers, the same on the gRPC(-Web) and the web side: pages
//! on the configured origins may call the APIs and read their answers, gRPC's status
//! trailers included; a page on any other origin is refused by its browser, because no
//! `Access-Control-Allow-Origin` comes back for it.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

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
