//! Email as an outbox channel: each message carries a fresh token (confirm, or
//! unsubscribe) whose digest is stored before it goes out, and is composed from the
//! templates, an update once per load and then personalised.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use super::{EmailComposer, Mailer, OutgoingEmail, SendError, UpdateEmail};
use crate::domain::Named;
use crate::{
    auth::generate_secret,
    catalog::SharedSnapshot,
    domain::{
        LoadId,
        subscribers::{ClaimedDelivery, DeliveryKind, NewToken, TokenPurpose, token_digest},
    },
    outbox::{Channel, EMAIL_CHANNEL, Readiness, SendFailure},
    store::{Store, StoreError},
};

pub struct EmailChannel {
    store: Arc<Store>,
    snapshot: SharedSnapshot,
    mailer: Arc<dyn Mailer>,
    composer: Arc<EmailComposer>,
    confirmation_ttl: Duration,
    rendered: Mutex<HashMap<LoadId, Arc<UpdateEmail>>>,
}

impl EmailChannel {
    pub fn new(
        store: Arc<Store>,
        snapshot: SharedSnapshot,
        mailer: Arc<dyn Mailer>,
        composer: Arc<EmailComposer>,
        confirmation_ttl: Duration,
    ) -> Self {
        EmailChannel {
            store,
            snapshot,
            mailer,
            composer,
            confirmation_ttl,
            rendered: Mutex::new(HashMap::new()),
        }
    }

    fn compose(&self, delivery: &ClaimedDelivery, token: &str) -> Result<OutgoingEmail, String> {
        match delivery.kind {
            DeliveryKind::Confirmation => self
                .composer
                .confirmation(&delivery.address, token)
                .map_err(|err| err.to_string()),
            DeliveryKind::Update(load) => {
                let update = self.rendered_update(load)?;
                self.composer
                    .personalise(&update, &delivery.address, token)
                    .map_err(|err| err.to_string())
            }
        }
    }

    /// The update for a load, rendered on first use.
    fn rendered_update(&self, load: LoadId) -> Result<Arc<UpdateEmail>, String> {
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(update) = rendered.get(&load) {
            return Ok(update.clone());
        }
        let update = Arc::new(
            self.composer
                .update(&self.snapshot.load(), load)
                .map_err(|err| err.to_string())?,
        );
        rendered.insert(load, update.clone());
        Ok(update)
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &'static str {
        EMAIL_CHANNEL
    }

    /// Re-checks that each subscriber still wants the email, and stores the digests of
    /// the tokens about to be sent, all in one statement.
    async fn prepare(
        &self,
        batch: &[ClaimedDelivery],
        now: SystemTime,
    ) -> Result<Vec<Readiness>, StoreError> {
        let mut tokens = Vec::new();
        let mut prepared = Vec::with_capacity(batch.len());
        for delivery in batch {
            let Some(purpose) = delivery.kind.wanted_by(delivery.subscriber_state) else {
                prepared.push(Readiness::Skip(format!(
                    "not sent: the subscriber is {} now",
                    delivery.subscriber_state.as_str()
                )));
                continue;
            };
            let token = match generate_secret() {
                Ok(token) => token,
                Err(err) => {
                    prepared.push(Readiness::Failed(SendFailure::Transient(err.to_string())));
                    continue;
                }
            };
            tokens.push(NewToken {
                digest: token_digest(&token),
                subscriber_id: delivery.subscriber_id,
                purpose,
                expires_at: (purpose == TokenPurpose::Confirm).then(|| now + self.confirmation_ttl),
            });
            prepared.push(Readiness::Ready(token));
        }
        self.store.store_tokens(&tokens).await?;
        Ok(prepared)
    }

    async fn send(&self, delivery: &ClaimedDelivery, token: &str) -> Result<(), SendFailure> {
        let email = self
            .compose(delivery, token)
            .map_err(SendFailure::Transient)?;
        self.mailer.send(&email).await.map_err(|err| match err {
            SendError::Rejected(reply) => SendFailure::Refused {
                reason: reply,
                suppress: true,
            },
            SendError::SenderRefused(reply) => {
                tracing::error!(delivery = delivery.id, %reply, "the mail server refused the sender; check mail.from and mail.smtp");
                SendFailure::Transient(reply)
            }
            SendError::Transient(reason) => SendFailure::Transient(reason),
        })
    }
}
