//! The headers every web response carries, pages and API alike: a content security
//! policy under which a page can load nothing from elsewhere, run no script and be framed
//! by no one (the pages have no scripts; their styles are inline), `nosniff`, and a
//! referrer policy that keeps the tokens in confirm and unsubscribe links from leaking
//! to other sites.

use axum::{
    Router,
    http::{HeaderName, HeaderValue, header},
};
use tower_http::set_header::SetResponseHeaderLayer;

/// What a page may load: its inline styles, its own images and SVG, forms posted back to
/// this server; nothing else, and no framing (clickjacking of the buttons).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers, each set only where a handler has not set its own.
pub fn headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// `router` with every response carrying [`headers`].
pub fn apply(router: Router) -> Router {
    headers().into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(name, value))
    })
}
