//! Email as an outbox channel: each message carries a fresh token (confirm, or
//! unsubscribe) whose digest is stored before it goes out, and is composed from the
//! templates, an update once per load and then personalised.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use super::{
    EmailComposer, MailBatch, Mailer, Outcome, OutgoingEmail, SendError, UpdateEmail,
    pace::{SendPace, Turn},
};
use crate::domain::Named;
use crate::{
    auth::generate_secret,
    catalog::SharedSnapshot,
    domain::{
        LoadId,
        delivery::{ClaimedDelivery, DeliveryKind, Recipient},
        subscribers::{NewToken, TokenPurpose, new_token, token_digest},
    },
    outbox::{Channel, ChannelSender, EMAIL_CHANNEL, Readiness, SendFailure, SendOutcome},
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
            let Recipient::Subscriber {
                id: subscriber_id,
                state,
            } = delivery.recipient
            else {
                prepared.push(Readiness::Skip("not sent: not for a subscriber".into()));
                continue;
            };
            let Some(purpose) = delivery.kind.wanted_by(state) else {
                prepared.push(Readiness::Skip(format!(
                    "not sent: the subscriber is {} now",
                    state.as_str()
                )));
                continue;
            };
            let token = match generate_secret() {
                Ok(secret) => new_token(delivery.id, &secret),
                Err(err) => {
                    prepared.push(Readiness::Failed(SendFailure::Transient(err.to_string())));
                    continue;
                }
            };
            tokens.push(NewToken {
                digest: token_digest(&token),
                subscriber_id,
                purpose,
                expires_at: (purpose == TokenPurpose::Confirm).then(|| now + self.confirmation_ttl),
            });
            prepared.push(Readiness::Ready(token));
        }
        self.store.store_tokens(&tokens).await?;
        Ok(prepared)
    }

    /// Sends one message through a sender of its own.
    async fn send(&self, delivery: &ClaimedDelivery, token: &str) -> Result<(), SendFailure> {
        let mut sender = self.sender();
        let mut outcomes = sender.send(delivery.clone(), token.to_owned()).await;
        outcomes.extend(sender.finish().await);
        outcomes.pop().map_or_else(
            || Err(SendFailure::Transient("the email had no outcome".into())),
            |(_, result)| result,
        )
    }

    /// Unpaced, the transport may send each email together with the next (SMTP
    /// pipelining across messages); under a pace, each goes out at its turn.
    fn sender(&self) -> Box<dyn ChannelSender + '_> {
        Box::new(EmailSender {
            channel: self,
            batch: self.mailer.batch(!self.pace.is_paced()),
            handed: HashMap::new(),
            next_key: 0,
        })
    }
}

/// A lane's emails through one [`MailBatch`]. Each takes a turn from the pace before it
/// is handed over. A throttling reply slows every lane down and the email is handed
/// over again at its next turn, a few times before it counts as a failed attempt.
struct EmailSender<'a> {
    channel: &'a EmailChannel,
    batch: Box<dyn MailBatch + 'a>,
    /// Deliveries handed to the batch and not settled, by key, with the throttling
    /// replies each has met.
    handed: HashMap<usize, (ClaimedDelivery, u32)>,
    next_key: usize,
}

/// An email to hand over, with the throttling replies it has met.
type Queued = (ClaimedDelivery, OutgoingEmail, u32);

impl EmailSender<'_> {
    /// Hands over each queued email at its turn, and any that meet a throttling reply
    /// again after them.
    async fn hand_over(&mut self, mut queue: VecDeque<Queued>, done: &mut Vec<SendOutcome>) {
        while let Some((delivery, email, throttled)) = queue.pop_front() {
            match self.channel.pace.take_turn().await {
                Ok(Turn::At(moment)) => {
                    if let Ok(wait) = moment.duration_since(SystemTime::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                Ok(Turn::QuotaSpentUntil(until)) => {
                    let reason = "the sending quota is spent".into();
                    done.push((delivery, Err(SendFailure::Deferred { reason, until })));
                    continue;
                }
                Err(err) => {
                    done.push((delivery, Err(SendFailure::Transient(err.to_string()))));
                    continue;
                }
            }
            let key = self.next_key;
            self.next_key += 1;
            self.handed.insert(key, (delivery, throttled));
            let outcomes = self.batch.send(key, email).await;
            self.settle(outcomes, &mut queue, done);
        }
    }

    /// Turns the transport's outcomes into the outbox's, queueing throttled emails to be
    /// handed over again.
    fn settle(
        &mut self,
        outcomes: Vec<Outcome>,
        again: &mut VecDeque<Queued>,
        done: &mut Vec<SendOutcome>,
    ) {
        let pace = &self.channel.pace;
        for Outcome { key, email, result } in outcomes {
            let Some((delivery, throttled)) = self.handed.remove(&key) else {
                continue;
            };
            let result = match result {
                Ok(()) => {
                    pace.accepted();
                    Ok(())
                }
                Err(SendError::Throttled(reply)) => {
                    // Logged once per slow-down, not for every email it meets.
                    if pace.throttled() {
                        tracing::info!(delivery = delivery.id, %reply, "the mail server asks to slow down; pausing between sends");
                    } else {
                        tracing::debug!(delivery = delivery.id, %reply, "the mail server asks to slow down");
                    }
                    if throttled < THROTTLED_RETRIES {
                        again.push_back((delivery, email, throttled + 1));
                        continue;
                    }
                    Err(SendFailure::Transient(reply))
                }
                Err(SendError::Rejected(reply)) => Err(SendFailure::Refused {
                    reason: reply,
                    suppress: true,
                }),
                Err(SendError::SenderRefused(reply)) => {
                    tracing::error!(delivery = delivery.id, %reply, "the mail server refused the sender; check mail.from and mail.smtp");
                    Err(SendFailure::Transient(reply))
                }
                Err(SendError::Transient(reason)) => Err(SendFailure::Transient(reason)),
            };
            done.push((delivery, result));
        }
    }
}

#[async_trait]
impl ChannelSender for EmailSender<'_> {
    async fn send(&mut self, delivery: ClaimedDelivery, token: String) -> Vec<SendOutcome> {
        let email = match self.channel.compose(&delivery, &token) {
            Ok(email) => email,
            Err(reason) => return vec![(delivery, Err(SendFailure::Transient(reason)))],
        };
        let mut done = Vec::new();
        self.hand_over(VecDeque::from([(delivery, email, 0)]), &mut done)
            .await;
        done
    }

    async fn finish(&mut self) -> Vec<SendOutcome> {
        let mut done = Vec::new();
        loop {
            let outcomes = self.batch.finish().await;
            let mut again = VecDeque::new();
            self.settle(outcomes, &mut again, &mut done);
            if again.is_empty() {
                break;
            }
            self.hand_over(again, &mut done).await;
        }
        // Anything the transport never answered for is tried again later.
        for (_, (delivery, _)) in self.handed.drain() {
            let reason = "the mail transport gave no outcome".into();
            done.push((delivery, Err(SendFailure::Transient(reason))));
        }
        done
    }
}
