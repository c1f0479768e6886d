//! The web side (axum): the sign-up page with the latest figures, and the pages behind
//! the links in emails. A GET never changes anything — mail scanners follow links — so
//! confirming and unsubscribing each take a POST; the RFC 8058 one-click POST works with
//! no cookie or login, answers 200 without a redirect, and may be repeated.

use std::sync::Arc;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use minijinja::context;
use serde::Deserialize;

mod feeds;
mod history;
mod json_api;
mod openapi;
pub mod security_headers;

pub use feeds::FeedCache;
pub use json_api::JsonApi;

use crate::domain::{Named, Quarter};
use crate::{
    auth::AdminToken,
    catalog::SharedSnapshot,
    client_address::ClientAddress,
    mail::{FeedbackDesk, FeedbackError, MAX_FEEDBACK_BYTES},
    newsletter::{Newsletter, NewsletterError, SUBSCRIBE_ANSWER},
    templates::{ComparisonTable, render},
};

/// Largest form body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct WebState {
    pub newsletter: Arc<Newsletter>,
    pub snapshot: SharedSnapshot,
    pub feedback: Arc<FeedbackDesk>,
    pub admin_token: Arc<AdminToken>,
    pub feeds: Arc<FeedCache>,
    pub json_api: Arc<JsonApi>,
    /// `http.public_base_url` without its trailing slash: the feeds' links.
    pub base_url: Arc<str>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(signup_page))
        .route("/openapi.json", get(json_api::openapi_document))
        .route("/feed.atom", get(feeds::atom))
        .route("/feed.json", get(feeds::json))
        .route("/v1/{*path}", get(json_api::handle))
        .route("/subscribe", post(subscribe))
        .route("/confirm", get(confirm_page).post(confirm))
        .route("/unsubscribe", get(unsubscribe_page).post(unsubscribe))
        .route("/forget", post(forget))
        .route("/privacy", get(privacy_page))
        .route("/metrics/{metric}", get(history::metric_page))
        .route("/providers/{provider}", get(history::provider_page))
        .route(
            "/admin/mail-feedback",
            post(mail_feedback).layer(DefaultBodyLimit::max(MAX_FEEDBACK_BYTES)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn page(status: StatusCode, template: &str, context: minijinja::Value) -> Response {
    match render(template, context) {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => {
            tracing::error!(template, %err, "cannot render a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong; please try again.",
            )
                .into_response()
        }
    }
}

fn message(status: StatusCode, heading: &str, text: &str) -> Response {
    let kind = if status.is_success() {
        "notice"
    } else {
        "error"
    };
    page(
        status,
        "message.html",
        context! { heading => heading, message => text, kind => kind },
    )
}

fn newsletter_error(err: NewsletterError) -> Response {
    let text = err.to_string();
    match err {
        NewsletterError::InvalidEmail(_)
        | NewsletterError::UnsupportedLanguage(_)
        | NewsletterError::UnknownProvider(_) => {
            message(StatusCode::BAD_REQUEST, "Please check the form", &text)
        }
        NewsletterError::RateLimited => message(StatusCode::TOO_MANY_REQUESTS, "Slow down", &text),
        NewsletterError::UnknownToken => message(StatusCode::NOT_FOUND, "Link not valid", &text),
        NewsletterError::ExpiredToken => message(StatusCode::GONE, "Link expired", &text),
        // Only an operator's call lifts a suppression; no page leads here.
        NewsletterError::NotSuppressed(_) => message(StatusCode::CONFLICT, "Not suppressed", &text),
        NewsletterError::Store(err) => {
            tracing::error!(error = %err, "newsletter store error");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please try again in a moment.",
            )
        }
    }
}

/// Values of a form body by name (a name may repeat, as checkboxes do).
fn form_values(body: &[u8], name: &str) -> Vec<String> {
    form_urlencoded::parse(body)
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .collect()
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    form_values(body, name).into_iter().next()
}

#[derive(Deserialize)]
struct PeriodQuery {
    period: Option<String>,
}

/// The front page: the comparison of the latest quarter, or of the one `?period=` names
/// (any quarter with figures; another is a 404 page that lists them), and the sign-up form.
async fn signup_page(State(state): State<WebState>, Query(query): Query<PeriodQuery>) -> Response {
    let snapshot = state.snapshot.load();
    let providers: Vec<_> = snapshot
        .providers()
        .map(|p| context! { id => p.id.as_str(), name => p.display_name.as_str() })
        .collect();
    let period = match query.period.as_deref().map(Quarter::parse) {
        None => snapshot.latest_period(),
        Some(Ok(period)) if snapshot.has_period(&period) => Some(period),
        Some(_) => {
            return message(
                StatusCode::NOT_FOUND,
                "No such quarter",
                "runrate has no figures for that quarter; the front page links every quarter it has.",
            );
        }
    };
    let periods: Vec<_> = snapshot
        .periods()
        .iter()
        .rev()
        .map(|p| context! { id => p.id(), name => p.to_string(), current => Some(*p) == period })
        .collect();
    page(
        StatusCode::OK,
        "signup.html",
        context! {
            table => period.map(|period| ComparisonTable::build(&snapshot, period, None)),
            periods => periods,
            providers => providers,
            link_metrics => true,
        },
    )
}

async fn subscribe(
    State(state): State<WebState>,
    Extension(ClientAddress(client)): Extension<ClientAddress>,
    body: Bytes,
) -> Response {
    let email = form_value(&body, "email").unwrap_or_default();
    let providers = form_values(&body, "providers");
    match state
        .newsletter
        .subscribe(Some(client), &email, "en", &providers)
        .await
    {
        Ok(_) => message(StatusCode::OK, "Check your inbox", SUBSCRIBE_ANSWER),
        Err(err) => newsletter_error(err),
    }
}

async fn confirm_page(Query(query): Query<TokenQuery>) -> Response {
    match query.token.filter(|t| !t.is_empty()) {
        Some(token) => page(StatusCode::OK, "confirm.html", context! { token => token }),
        None => message(
            StatusCode::BAD_REQUEST,
            "Link not valid",
            "The link has no token; open the link from the email as it is.",
        ),
    }
}

async fn confirm(State(state): State<WebState>, body: Bytes) -> Response {
    let token = form_value(&body, "token").unwrap_or_default();
    match state.newsletter.confirm(&token).await {
        Ok(_) => message(
            StatusCode::OK,
            "You're subscribed",
            "Thanks for confirming. You will get an email whenever new quarterly figures are published.",
        ),
        Err(err) => newsletter_error(err),
    }
}

async fn unsubscribe_page(Query(query): Query<TokenQuery>) -> Response {
    match query.token.filter(|t| !t.is_empty()) {
        Some(token) => page(
            StatusCode::OK,
            "unsubscribe.html",
            context! { token => token },
        ),
        None => message(
            StatusCode::BAD_REQUEST,
            "Link not valid",
            "The link has no token; open the link from the email as it is.",
        ),
    }
}

/// Both the RFC 8058 one-click POST (token in the URL, `List-Unsubscribe=One-Click` in
/// the body, from a mail client) and the page's form (token in the body).
async fn unsubscribe(
    State(state): State<WebState>,
    Query(query): Query<TokenQuery>,
    body: Bytes,
) -> Response {
    // RFC 8058 allows the one-click body urlencoded or as multipart/form-data.
    let text = String::from_utf8_lossy(&body);
    let one_click = form_value(&body, "List-Unsubscribe").as_deref() == Some("One-Click")
        || (text.contains("name=\"List-Unsubscribe\"") && text.contains("One-Click"));
    let token = form_value(&body, "token")
        .or(query.token)
        .unwrap_or_default();
    let result = state.newsletter.unsubscribe(&token).await;
    if one_click {
        return match result {
            Ok(_) => (
                StatusCode::OK,
                "Unsubscribed. You will get no more emails from runrate.\n",
            )
                .into_response(),
            Err(err @ (NewsletterError::UnknownToken | NewsletterError::ExpiredToken)) => {
                (StatusCode::NOT_FOUND, format!("{err}\n")).into_response()
            }
            Err(err) => newsletter_error(err),
        };
    }
    match result {
        Ok(_) => message(
            StatusCode::OK,
            "You're unsubscribed",
            "You will get no more emails from runrate. Changed your mind? Sign up again on the front page.",
        ),
        Err(err) => newsletter_error(err),
    }
}

/// The unsubscribe page's second button: unsubscribe, and erase the address.
async fn forget(State(state): State<WebState>, body: Bytes) -> Response {
    let token = form_value(&body, "token").unwrap_or_default();
    match state.newsletter.forget(&token).await {
        Ok(_) => message(
            StatusCode::OK,
            "You're forgotten",
            "Your address, your choices and the record of the emails sent to you are erased. You will get no more emails from runrate.",
        ),
        Err(err) => newsletter_error(err),
    }
}

async fn privacy_page() -> Response {
    page(StatusCode::OK, "privacy.html", context! {})
}

/// A bounce or abuse report, POSTed as the raw message by a mail system (a Postfix pipe
/// to curl, a provider's forwarding), behind the admin token; the same as the
/// IngestMailFeedback call. Answers in plain text what the report did.
async fn mail_feedback(
    State(state): State<WebState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION);
    let presented = AdminToken::presented(authorization.and_then(|value| value.to_str().ok()));
    if !presented.is_some_and(|token| state.admin_token.matches(token)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this needs `Authorization: Bearer <admin token>`\n",
        )
            .into_response();
    }
    match state.feedback.take(&body).await {
        Ok(outcome) => {
            let state = outcome
                .suppressed_as
                .map_or("unchanged".to_owned(), |state| {
                    format!("now {}", state.as_str())
                });
            (
                StatusCode::OK,
                format!(
                    "{:?}: {} (deliveries/{}) is {state}\n",
                    outcome.kind, outcome.address, outcome.delivery
                ),
            )
                .into_response()
        }
        Err(FeedbackError::Store(err)) => {
            tracing::error!(error = %err, "cannot record mail feedback");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the report could not be recorded; send it again\n",
            )
                .into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}
