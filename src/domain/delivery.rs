//! The delivery model: what a queued message is (its kind, state and recipient), how a
//! worker's claim on it is fenced, what sending it came to, and when a failed one is tried
//! again. Every channel's deliveries follow these rules; the outbox applies them.

use std::time::{Duration, SystemTime};

use strum::{EnumIter, EnumString, IntoStaticStr};

use super::{
    LoadId,
    subscribers::{SubscriberState, TokenPurpose},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    Confirmation,
    Update(LoadId),
}

impl DeliveryKind {
    /// The token a message of this kind carries, when a subscriber in `state` still wants
    /// it; `None`: skip it (the subscriber left, or confirmed already).
    pub fn wanted_by(self, state: SubscriberState) -> Option<TokenPurpose> {
        match (self, state) {
            (DeliveryKind::Confirmation, SubscriberState::Pending) => Some(TokenPurpose::Confirm),
            (DeliveryKind::Update(_), SubscriberState::Confirmed) => {
                Some(TokenPurpose::Unsubscribe)
            }
            _ => None,
        }
    }

    /// The order in which due deliveries are claimed, lowest first: a reader waiting on a
    /// confirmation goes ahead of any fan-out, however large.
    pub fn priority(self) -> i64 {
        match self {
            DeliveryKind::Confirmation => 0,
            DeliveryKind::Update(_) => 1,
        }
    }
}

/// Where a delivery is in the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumString, IntoStaticStr, EnumIter)]
#[strum(serialize_all = "kebab-case")]
pub enum DeliveryState {
    Pending,
    /// Claimed by a worker until its lease ends.
    Sending,
    Retrying,
    Sent,
    Failed,
    Skipped,
}

impl DeliveryState {
    /// Not done yet: a worker may still claim it.
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            DeliveryState::Pending | DeliveryState::Sending | DeliveryState::Retrying
        )
    }
}

/// When a delivery that failed for a passing reason is tried again: exponential backoff
/// from `base`, at most `max` apart, and no more after `max_attempts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// When to try again after attempt number `attempts` failed; `None`: give up.
    pub fn next_attempt(&self, attempts: u32, now: SystemTime) -> Option<SystemTime> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1).min(20);
        Some(now + self.base.saturating_mul(1 << doublings).min(self.max))
    }
}

/// What one claim of deliveries wrote into its rows: recording, renewing and releasing
/// touch only rows that still carry it, so a worker that lost its claim (its lease ran
/// out and another worker claimed the rows) cannot overwrite the new holder's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimToken(pub i64);

impl ClaimToken {
    /// A fresh random token; 64 random bits make two claims' tokens equal by chance
    /// practically never.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)?;
        Ok(ClaimToken(i64::from_le_bytes(bytes)))
    }
}

/// A delivery a worker holds until it records a result or its lease ends.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub id: i64,
    /// The channel that delivers it (`email`, ...).
    pub channel: String,
    pub kind: DeliveryKind,
    pub recipient: Recipient,
    /// Where it goes, as queued: for email the address, for a webhook `webhooks/{id}`.
    pub address: String,
    /// Attempts including this one.
    pub attempts: u32,
}

/// Whom a delivery is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// A newsletter subscriber, in the state they are in now (re-read at claim time).
    Subscriber { id: i64, state: SubscriberState },
    /// A registered webhook endpoint, by id.
    Webhook(i64),
}

/// Its resource name, as the admin API spells it (`subscribers/7`, `webhooks/2`): what
/// logs say instead of an address, which a reader may later ask to have forgotten.
impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Subscriber { id, .. } => write!(f, "subscribers/{id}"),
            Recipient::Webhook(id) => write!(f, "webhooks/{id}"),
        }
    }
}

impl ClaimedDelivery {
    /// The subscriber it is for, if it is for one.
    pub fn subscriber_id(&self) -> Option<i64> {
        match self.recipient {
            Recipient::Subscriber { id, .. } => Some(id),
            Recipient::Webhook(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryResult {
    /// Accepted by the mail server (or written out) at `at`.
    Sent { id: i64, at: SystemTime },
    /// Not sent, and never will be: the subscriber left meanwhile.
    Skipped { id: i64, reason: String },
    Retry {
        id: i64,
        next_attempt_at: SystemTime,
        error: String,
    },
    /// Given up; with `bounced`, the address is suppressed too.
    Failed {
        id: i64,
        error: String,
        bounced: Option<i64>,
    },
    /// Handed back unsent, the attempt not counted: due again at `due` (at once when
    /// the worker is stopping; later when the sending quota is spent).
    Released { id: i64, due: SystemTime },
}

impl DeliveryResult {
    pub fn id(&self) -> i64 {
        match self {
            DeliveryResult::Sent { id, .. }
            | DeliveryResult::Skipped { id, .. }
            | DeliveryResult::Retry { id, .. }
            | DeliveryResult::Failed { id, .. }
            | DeliveryResult::Released { id, .. } => *id,
        }
    }

    /// The state the delivery is in once this is recorded.
    pub fn state(&self) -> DeliveryState {
        match self {
            DeliveryResult::Sent { .. } => DeliveryState::Sent,
            DeliveryResult::Skipped { .. } => DeliveryState::Skipped,
            DeliveryResult::Retry { .. } => DeliveryState::Retrying,
            DeliveryResult::Failed { .. } => DeliveryState::Failed,
            DeliveryResult::Released { .. } => DeliveryState::Pending,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryFailure {
    pub email: String,
    /// Retrying or Failed.
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryReport {
    pub load_id: LoadId,
    pub recipients: u64,
    pub sent: u64,
    /// Waiting or being sent now.
    pub pending: u64,
    pub retrying: u64,
    pub failed: u64,
    /// Not sent because the subscriber left before it was their turn.
    pub skipped: u64,
    pub failures: Vec<DeliveryFailure>,
}

impl DeliveryReport {
    /// Counts `n` update deliveries in `state`.
    pub fn count(&mut self, state: DeliveryState, n: u64) {
        match state {
            DeliveryState::Sent => self.sent += n,
            DeliveryState::Pending | DeliveryState::Sending => self.pending += n,
            DeliveryState::Retrying => self.retrying += n,
            DeliveryState::Failed => self.failed += n,
            DeliveryState::Skipped => self.skipped += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Named;

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn messages_go_only_to_subscribers_who_still_want_them() {
        use SubscriberState::*;
        let update = DeliveryKind::Update(4);
        assert_eq!(update.wanted_by(Confirmed), Some(TokenPurpose::Unsubscribe));
        assert_eq!(
            DeliveryKind::Confirmation.wanted_by(Pending),
            Some(TokenPurpose::Confirm)
        );
        for state in [Pending, Unsubscribed, Bounced, Complained] {
            assert_eq!(update.wanted_by(state), None, "{state:?}");
        }
        for state in [Confirmed, Unsubscribed, Bounced, Complained] {
            assert_eq!(DeliveryKind::Confirmation.wanted_by(state), None);
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap_and_then_stop() {
        let policy = RetryPolicy {
            max_attempts: 6,
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
        };
        let delays: Vec<Option<u64>> = (1..=6)
            .map(|attempts| {
                policy
                    .next_attempt(attempts, NOW)
                    .map(|at| at.duration_since(NOW).unwrap().as_secs())
            })
            .collect();
        assert_eq!(
            delays,
            [Some(30), Some(60), Some(120), Some(240), Some(300), None]
        );
        let patient = RetryPolicy {
            max_attempts: u32::MAX,
            ..policy
        };
        assert!(patient.next_attempt(u32::MAX - 1, NOW).is_some());
    }

    #[test]
    fn delivery_states_round_trip_and_only_three_are_unfinished() {
        for state in DeliveryState::all() {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
        let unfinished: Vec<&str> = DeliveryState::all()
            .filter(|state| state.is_unfinished())
            .map(DeliveryState::as_str)
            .collect();
        assert_eq!(unfinished, ["pending", "sending", "retrying"]);
    }
}
