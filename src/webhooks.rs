//! Webhooks as an outbox channel: every load is POSTed as JSON to each registered
//! endpoint, signed with the endpoint's secret at the moment it is sent. Claiming,
//! retries with backoff, leases and the delivery ledger are the outbox's, as for email.
//!
//! The body is `{"type": "load.created", "load": <the Load resource>}`, the load exactly
//! as GetLoad answers it in the JSON API. Headers: `X-Runrate-Event`, `X-Runrate-Delivery`
//! (the same on every attempt), `X-Runrate-Timestamp` and `X-Runrate-Signature` (see
//! [`crate::domain::webhooks`]). A 2xx answer is success; anything else, a redirect
//! included, or no answer within `webhook.timeout`, is tried again later. Logs and the
//! ledger name an endpoint by `webhooks/{id}`, never by its URL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    catalog::{ReadSnapshot, SharedSnapshot},
    domain::{
        LoadId,
        delivery::{ClaimedDelivery, DeliveryKind, Recipient},
        subscribers::Audience,
        webhooks::{
            DELIVERY_HEADER, EVENT_HEADER, LOAD_EVENT, SIGNATURE_HEADER, TIMESTAMP_HEADER,
            WebhookTarget, webhook_name,
        },
    },
    outbox::{Channel, Readiness, SendFailure},
    settings::WebhookSettings,
    store::{Store, StoreError, StoreTx},
};
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// The name the outbox stores with webhook deliveries.
pub const WEBHOOK_CHANNEL: &str = "webhook";
/// Bodies of the newest loads kept for their POSTs.
const KEPT_BODIES: usize = 4;
/// Idle connections kept per endpoint host, and for how long.
const IDLE_CONNECTIONS_PER_HOST: usize = 2;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Writes a load of a snapshot as the API's JSON resource. Given by the wiring, so that
/// this channel shares the API's one encoder without depending on the API's layer.
pub type LoadResource =
    Box<dyn Fn(&ReadSnapshot, LoadId) -> anyhow::Result<serde_json::Value> + Send + Sync>;

pub struct WebhookChannel {
    store: Arc<Store>,
    snapshot: SharedSnapshot,
    client: HttpsClient,
    timeout: Duration,
    load_resource: LoadResource,
    user_agent: String,
    /// The bodies of the newest loads, each made on first use.
    bodies: Mutex<HashMap<LoadId, Bytes>>,
    /// The endpoints of the deliveries prepared, for signing them as they are sent.
    targets: Mutex<HashMap<i64, WebhookTarget>>,
}

impl WebhookChannel {
    pub fn new(
        store: Arc<Store>,
        snapshot: SharedSnapshot,
        settings: &WebhookSettings,
        load_resource: LoadResource,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.timeout.0));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        WebhookChannel {
            store,
            snapshot,
            client,
            timeout: settings.timeout.0,
            load_resource,
            user_agent: format!("runrate/{}", env!("CARGO_PKG_VERSION")),
            bodies: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// The body POSTed about a load.
    fn body(&self, load: LoadId) -> Result<Bytes, String> {
        let mut bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(body) = bodies.get(&load) {
            return Ok(body.clone());
        }
        let resource = (self.load_resource)(&self.snapshot.load(), load)
            .map_err(|err| format!("cannot write load {load} as JSON: {err}"))?;
        let event = serde_json::json!({ "type": LOAD_EVENT, "load": resource });
        let body = Bytes::from(event.to_string());
        bodies.insert(load, body.clone());
        // Retries of older loads make their body again: a load's body can be megabytes.
        while bodies.len() > KEPT_BODIES {
            let Some(oldest) = bodies.keys().min().copied() else {
                break;
            };
            bodies.remove(&oldest);
        }
        Ok(body)
    }

    async fn post(
        &self,
        delivery: &ClaimedDelivery,
        target: &WebhookTarget,
        body: Bytes,
    ) -> Result<(), SendFailure> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let request = Request::builder()
            .method(Method::POST)
            .uri(target.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, &self.user_agent)
            .header(EVENT_HEADER, LOAD_EVENT)
            .header(DELIVERY_HEADER, delivery.id.to_string())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, target.secret.signature(timestamp, &body))
            .body(Full::new(body))
            .map_err(|err| SendFailure::Transient(format!("cannot build the POST: {err}")))?;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => {
                return Err(SendFailure::Transient(format!(
                    "no answer within {:?}",
                    self.timeout
                )));
            }
            Ok(Err(err)) => return Err(SendFailure::Transient(describe(&err))),
            Ok(Ok(response)) => response,
        };
        // The body is not read: dropping it closes the connection instead of letting a
        // receiver stream an endless answer into this process.
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SendFailure::Transient(format!(
                "the endpoint answered {status}"
            )))
        }
    }
}

/// A client error with its causes, which name what went wrong (refused, reset, a TLS
/// failure) but not the URL.
fn describe(err: &hyper_util::client::legacy::Error) -> String {
    let mut text = if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the POST failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &'static str {
        WEBHOOK_CHANNEL
    }

    /// Every load goes to every registered endpoint, whoever follows what.
    async fn queue_update(
        &self,
        tx: &mut StoreTx,
        _audience: Option<&Audience>,
        load: LoadId,
        due: SystemTime,
    ) -> Result<u64, StoreError> {
        tx.queue_webhook_updates(WEBHOOK_CHANNEL, load, due).await
    }

    /// Reads the batch's endpoints: one deleted since is skipped.
    async fn prepare(
        &self,
        batch: &[ClaimedDelivery],
        _now: SystemTime,
    ) -> Result<Vec<Readiness>, StoreError> {
        let mut ids: Vec<i64> = batch
            .iter()
            .filter_map(|delivery| match delivery.recipient {
                Recipient::Webhook(id) => Some(id),
                Recipient::Subscriber { .. } => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let found = self.store.webhook_targets(&ids).await?;
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        for target in found {
            if target.deleted {
                targets.remove(&target.id);
            } else {
                targets.insert(target.id, target);
            }
        }
        Ok(batch
            .iter()
            .map(|delivery| match (delivery.recipient, delivery.kind) {
                (Recipient::Webhook(id), DeliveryKind::Update(_)) if targets.contains_key(&id) => {
                    Readiness::Ready(String::new())
                }
                (Recipient::Webhook(_), DeliveryKind::Update(_)) => {
                    Readiness::Skip("not sent: the webhook was deleted".into())
                }
                _ => Readiness::Skip("not sent: not a webhook's load".into()),
            })
            .collect())
    }

    async fn send(&self, delivery: &ClaimedDelivery, _: &str) -> Result<(), SendFailure> {
        let (Recipient::Webhook(id), DeliveryKind::Update(load)) =
            (delivery.recipient, delivery.kind)
        else {
            return Err(SendFailure::Refused {
                reason: "not a webhook's load".into(),
                suppress: false,
            });
        };
        let target = self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                SendFailure::Transient(format!("{} was not prepared", webhook_name(id)))
            })?;
        let body = self.body(load).map_err(SendFailure::Transient)?;
        self.post(delivery, &target, body).await
    }
}
