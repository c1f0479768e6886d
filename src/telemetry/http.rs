//! HTTP request metrics and spans for the web side, labelled by route template rather
//! than path, so that no request can add a series. (axum-prometheus would install a
//! recorder of its own; these two series need only a middleware.)

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};

use tracing::Instrument;

use super::{HTTP_REQUEST_SECONDS, HTTP_REQUESTS, traces};
use crate::client_address::ClientAddress;

/// `axum::middleware::from_fn` over a router: counts each request, times it, and runs it
/// in a span that continues the caller's trace.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let client = request.extensions().get::<ClientAddress>().copied();
    let span = traces::http_span(method, &route, request.headers(), client);
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; anything else as one label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}
