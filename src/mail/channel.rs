//! Email as an outbox channel: each message carries a fresh token (confirm, or
//! unsubscribe) whose digest is stored before it goes out, and is composed from the
//! templates, an update once per load and then personalised.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use super::{
    EmailComposer, Mailer, OutgoingEmail, SendError, UpdateEmail,
    pace::{SendPace, Turn},
};
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

/// Throttling replies one email is tried again through before the attempt counts.
const THROTTLED_RETRIES: u32 = 3;

pub struct EmailChannel {
    store: Arc<Store>,
    snapshot: SharedSnapshot,
    mailer: Arc<dyn Mailer>,
    composer: Arc<EmailComposer>,
    confirmation_ttl: Duration,
    pace: SendPace,
    rendered: Mutex<HashMap<LoadId, Arc<UpdateEmail>>>,
}

impl EmailChannel {
    pub fn new(
        store: Arc<Store>,
        snapshot: SharedSnapshot,
        mailer: Arc<dyn Mailer>,
        composer: Arc<EmailComposer>,
        confirmation_ttl: Duration,
        pace: SendPace,
    ) -> Self {
        EmailChannel {
            store,
            snapshot,
            mailer,
            composer,
            confirmation_ttl,
            pace,
            rendered: Mutex::new(HashMap::new()),
        }
    }

    fn compose(&self, delivery: &ClaimedDelivery, token: &str) -> Result<OutgoingEmail, String> {
        match delivery.kind {
            DeliveryKind::Confirmation => self
                .composer
                .confirmation(delivery.id, &delivery.address, token)
                .map_err(|err| err.to_string()),
            DeliveryKind::Update(load) => {
                let update = self.rendered_update(load)?;
                self.composer
                    .personalise(&update, delivery.id, &delivery.address, token)
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

    /// Sends when the pace gives a turn. A throttling reply slows every lane down and
    /// this email is tried again at its next turn, a few times before it counts as a
    /// failed attempt.
    async fn send(&self, delivery: &ClaimedDelivery, token: &str) -> Result<(), SendFailure> {
        let email = self
            .compose(delivery, token)
            .map_err(SendFailure::Transient)?;
        let mut throttled = 0;
        loop {
            match self.pace.take_turn().await {
                Ok(Turn::At(moment)) => {
                    if let Ok(wait) = moment.duration_since(SystemTime::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                Ok(Turn::QuotaSpentUntil(until)) => {
                    return Err(SendFailure::Deferred {
                        reason: "the sending quota is spent".into(),
                        until,
                    });
                }
                Err(err) => return Err(SendFailure::Transient(err.to_string())),
            }
            let reply = match self.mailer.send(&email).await {
                Ok(()) => {
                    self.pace.accepted();
                    return Ok(());
                }
                Err(SendError::Throttled(reply)) => reply,
                Err(SendError::Rejected(reply)) => {
                    return Err(SendFailure::Refused {
                        reason: reply,
                        suppress: true,
                    });
                }
                Err(SendError::SenderRefused(reply)) => {
                    tracing::error!(delivery = delivery.id, %reply, "the mail server refused the sender; check mail.from and mail.smtp");
                    return Err(SendFailure::Transient(reply));
                }
                Err(SendError::Transient(reason)) => return Err(SendFailure::Transient(reason)),
            };
            self.pace.throttled();
            throttled += 1;
            tracing::info!(delivery = delivery.id, %reply, "the mail server asks to slow down");
            if throttled > THROTTLED_RETRIES {
                return Err(SendFailure::Transient(reply));
            }
        }
    }
}
