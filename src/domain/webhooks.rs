//! Webhook endpoints: where each load is POSTed, and the secret its POSTs are signed
//! with. The signature (`X-Runrate-Signature: sha256=<hex>`) is HMAC-SHA256 under the
//! endpoint's secret of `<timestamp>.<body>`, the timestamp being the
//! `X-Runrate-Timestamp` header (Unix seconds): a receiver that checks both can refuse
//! a replayed POST.

use std::{fmt, time::SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::hex;

/// Registered endpoints at most: each load is one POST to each, through the same lanes
/// as the newsletter.
pub const MAX_WEBHOOKS: usize = 100;
/// Longest URL accepted.
const MAX_URL_CHARS: usize = 2_048;
/// Shortest and longest secret a caller may choose; a generated one has 43 characters.
const MIN_SECRET_CHARS: usize = 24;
const MAX_SECRET_CHARS: usize = 256;

pub const SIGNATURE_HEADER: &str = "x-runrate-signature";
pub const TIMESTAMP_HEADER: &str = "x-runrate-timestamp";
/// The delivery's id: the same on every attempt, so a receiver can drop repeats.
pub const DELIVERY_HEADER: &str = "x-runrate-delivery";
pub const EVENT_HEADER: &str = "x-runrate-event";
/// The one event so far: a load was recorded.
pub const LOAD_EVENT: &str = "load.created";

/// A registered endpoint, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: i64,
    pub url: WebhookUrl,
    pub created_at: SystemTime,
}

/// What sending to an endpoint needs.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub id: i64,
    pub url: WebhookUrl,
    pub secret: WebhookSecret,
    /// Deleted since the delivery was queued: it is not sent.
    pub deleted: bool,
}

/// `webhooks/{id}`, the resource name; also the address the outbox records, since the
/// URL itself may hold a credential of the receiver's.
pub fn webhook_name(id: i64) -> String {
    format!("webhooks/{id}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("is not a URL: {0}")]
    NotAUrl(String),
    #[error("must be http or https, not `{0}`")]
    Scheme(String),
    #[error("must not carry a user name or password (put credentials in the path or query)")]
    Credentials,
    #[error("must not have a fragment (`#…`): it is never sent")]
    Fragment,
    #[error("is longer than {MAX_URL_CHARS} characters")]
    TooLong,
    #[error(
        "must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} printable ASCII characters without spaces (leave it empty to have one generated)"
    )]
    Secret,
}

/// An endpoint's URL: absolute, http or https, with a host.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<WebhookUrl, WebhookError> {
        if text.len() > MAX_URL_CHARS {
            return Err(WebhookError::TooLong);
        }
        let url =
            url::Url::parse(text.trim()).map_err(|err| WebhookError::NotAUrl(err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::Scheme(url.scheme().to_owned()));
        }
        if url.host().is_none() {
            return Err(WebhookError::NotAUrl("it has no host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(WebhookError::Fragment);
        }
        Ok(WebhookUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The scheme, host and port alone: what may be shown where the whole URL may not.
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }
}

/// Only the origin: the path or query may be a credential.
impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({}/…)", self.origin())
    }
}

/// The HMAC key an endpoint's POSTs are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<WebhookSecret, WebhookError> {
        let fits = (MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_graphic());
        if fits {
            Ok(WebhookSecret(text.to_owned()))
        } else {
            Err(WebhookError::Secret)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256=<hex>`: the HMAC-SHA256 of `<timestamp>.<body>` under this secret.
    pub fn signature(&self, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex(&mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(WebhookUrl::parse("https://hooks.example.com/runrate?key=1").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/in").is_ok());
        assert_eq!(
            WebhookUrl::parse("ftp://example.com/"),
            Err(WebhookError::Scheme("ftp".into()))
        );
        assert_eq!(
            WebhookUrl::parse("https://user:pw@example.com/"),
            Err(WebhookError::Credentials)
        );
        assert_eq!(
            WebhookUrl::parse("https://example.com/#part"),
            Err(WebhookError::Fragment)
        );
        assert!(matches!(
            WebhookUrl::parse("example.com/hook"),
            Err(WebhookError::NotAUrl(_))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(WebhookUrl::parse(&long), Err(WebhookError::TooLong));
    }

    #[test]
    fn a_url_shows_only_its_origin_when_debugged() {
        let url = WebhookUrl::parse("https://hooks.example.com/services/T0/B0/s3cret").unwrap();
        let shown = format!("{url:?}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn secrets_are_long_printable_and_never_debugged() {
        assert_eq!(WebhookSecret::parse("short"), Err(WebhookError::Secret));
        assert_eq!(
            WebhookSecret::parse("has a space in it but is long enough"),
            Err(WebhookError::Secret)
        );
        let secret = WebhookSecret::parse("0123456789abcdefghijklmnop").unwrap();
        assert!(!format!("{secret:?}").contains("0123"));
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        let secret = WebhookSecret::parse("0123456789abcdefghijklmnop").unwrap();
        let signature = secret.signature(1_700_000_000, b"{\"a\":1}");
        // As Python's hmac.new(secret, b'1700000000.{"a":1}', hashlib.sha256) computes it.
        assert_eq!(
            signature,
            "sha256=da94d8533fe66ee6e0c08c176be99ea0c54abfe8f9225c7deec280a3b6712cdd"
        );
        // Another timestamp or body signs differently.
        assert_ne!(signature, secret.signature(1_700_000_001, b"{\"a\":1}"));
        assert_ne!(signature, secret.signature(1_700_000_000, b"{\"a\":2}"));
    }
}
