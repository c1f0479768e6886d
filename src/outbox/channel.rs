//! The seam between the outbox and the ways a message reaches someone. The outbox owns
//! claiming, leases, retries and recording; a channel owns who gets an update, what a
//! message needs before it goes out, and sending it. Adding a channel is one module that
//! implements [`Channel`] (plus a migration for whatever it stores of its own).

use std::time::SystemTime;

use async_trait::async_trait;

use crate::{
    domain::LoadId,
    domain::delivery::ClaimedDelivery,
    domain::subscribers::Audience,
    store::{StoreError, StoreTx},
};

/// Followers read at a time when working out an update's recipients.
const FOLLOWERS_PAGE: u32 = 5_000;

/// A claimed delivery's state after [`Channel::prepare`].
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Ready to send, with what the channel made for this one message (for email, the
    /// token its links carry).
    Ready(String),
    /// Not to be sent, ever (the subscriber left meanwhile): why.
    Skip(String),
    /// Not ready this time.
    Failed(SendFailure),
}

/// Why a message did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// Trying again later may work (a timeout, a 4xx reply, a dropped connection).
    #[error("{0}")]
    Transient(String),
    /// Refused for good; with `suppress`, the recipient is never sent to again.
    #[error("{reason}")]
    Refused { reason: String, suppress: bool },
    /// Not tried: the channel may not send before `until` (its quota is spent). The
    /// delivery waits until then without counting an attempt.
    #[error("{reason}")]
    Deferred { reason: String, until: SystemTime },
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The name the outbox stores with each of this channel's deliveries.
    fn name(&self) -> &'static str;

    /// Queues this channel's updates about `load`, in the load's transaction, due at
    /// `due`; returns how many. `audience` is whom the load concerns, `None` when it
    /// changed no figures anyone follows. By default, an email-like channel: one update
    /// for each subscriber in the audience.
    async fn queue_update(
        &self,
        tx: &mut StoreTx,
        audience: Option<&Audience>,
        load: LoadId,
        due: SystemTime,
    ) -> Result<u64, StoreError> {
        let Some(audience) = audience else {
            return Ok(0);
        };
        let mut recipients = Vec::new();
        let mut after = 0;
        loop {
            let page = tx.confirmed_followers(after, FOLLOWERS_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.subscriber_id;
            recipients.extend(
                page.iter()
                    .filter(|follower| audience.includes(follower))
                    .map(|follower| follower.subscriber_id),
            );
        }
        tx.queue_updates(self.name(), load, &recipients, due)
            .await?;
        Ok(recipients.len() as u64)
    }

    /// Gets a claimed batch ready to send, one [`Readiness`] per delivery, in order. An
    /// error hands the whole batch back to be claimed again.
    async fn prepare(
        &self,
        batch: &[ClaimedDelivery],
        now: SystemTime,
    ) -> Result<Vec<Readiness>, StoreError>;

    /// Sends one message; `prepared` is what [`Channel::prepare`] made for it.
    async fn send(&self, delivery: &ClaimedDelivery, prepared: &str) -> Result<(), SendFailure>;

    /// A sender for a lane's messages, handed over one at a time. By default each is
    /// sent when handed over; a channel may send one later, together with the next.
    fn sender(&self) -> Box<dyn ChannelSender + '_> {
        Box::new(OneAtATime(self))
    }
}

/// A delivery and what became of its message.
pub type SendOutcome = (ClaimedDelivery, Result<(), SendFailure>);

/// A lane's messages through one channel, whose outcomes may come later than their
/// hand-over: every message handed over has its outcome by the end of
/// [`ChannelSender::finish`].
#[async_trait]
pub trait ChannelSender: Send {
    /// Hands over the next message; returns the outcomes known now.
    async fn send(&mut self, delivery: ClaimedDelivery, prepared: String) -> Vec<SendOutcome>;

    /// Sends whatever was held back; returns every outcome not returned yet.
    async fn finish(&mut self) -> Vec<SendOutcome>;
}

/// Each message sent when handed over, through [`Channel::send`].
struct OneAtATime<'a, C: ?Sized>(&'a C);

#[async_trait]
impl<C: Channel + ?Sized> ChannelSender for OneAtATime<'_, C> {
    async fn send(&mut self, delivery: ClaimedDelivery, prepared: String) -> Vec<SendOutcome> {
        let result = self.0.send(&delivery, &prepared).await;
        vec![(delivery, result)]
    }

    async fn finish(&mut self) -> Vec<SendOutcome> {
        Vec::new()
    }
}
