//! The newsletter's records: subscribers and their states, tokens, deliveries.

use std::time::SystemTime;

use crate::domain::{LoadId, ResourceId};

use super::EmailAddress;

/// pending → confirmed → unsubscribed; bounced and complained are suppressed for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriberState {
    Pending,
    Confirmed,
    Unsubscribed,
    Bounced,
    Complained,
}

impl SubscriberState {
    pub const ALL: [(SubscriberState, &'static str); 5] = [
        (SubscriberState::Pending, "pending"),
        (SubscriberState::Confirmed, "confirmed"),
        (SubscriberState::Unsubscribed, "unsubscribed"),
        (SubscriberState::Bounced, "bounced"),
        (SubscriberState::Complained, "complained"),
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(state, _)| *state)
    }

    pub fn as_str(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(state, _)| state == self)
            .map_or("", |(_, name)| name)
    }
}

/// What a token may do; a token does only the one thing it was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPurpose {
    Confirm,
    /// Unsubscribe, or change which providers to follow.
    Unsubscribe,
}

impl TokenPurpose {
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenPurpose::Confirm => "confirm",
            TokenPurpose::Unsubscribe => "unsubscribe",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub state: SubscriberState,
    pub language: String,
    /// `None` follows every provider.
    pub providers: Option<Vec<String>>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

#[derive(Clone, Debug)]
pub struct SubscribeCommand {
    pub email: EmailAddress,
    pub language: String,
    /// `None` follows every provider.
    pub providers: Option<Vec<ResourceId>>,
    pub now: SystemTime,
    pub resend_window: std::time::Duration,
}

/// What a sign-up did. Callers answer the same way whatever it was (no enumeration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// A new address: pending, with a confirmation email queued.
    Created,
    /// A pending or unsubscribed address: a new confirmation email queued.
    ConfirmationQueued,
    /// A pending address asked again within the window: nothing sent.
    WithinResendWindow,
    AlreadyConfirmed,
    /// Bounced or complained: never emailed again.
    Suppressed,
}

/// What presenting a token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    Applied,
    /// Already done before; doing it again changes nothing.
    AlreadyApplied,
    Expired,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    Confirmation,
    Update(LoadId),
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
    pub kind: DeliveryKind,
    pub subscriber_id: i64,
    pub email: String,
    /// The subscriber's state now, re-read at claim time.
    pub subscriber_state: SubscriberState,
    /// Attempts including this one.
    pub attempts: u32,
}

/// A token to store before the email carrying it is sent.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub digest: String,
    pub subscriber_id: i64,
    pub purpose: TokenPurpose,
    pub expires_at: Option<SystemTime>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryResult {
    Sent {
        id: i64,
    },
    /// Not sent, and never will be: the subscriber left meanwhile.
    Skipped {
        id: i64,
        reason: String,
    },
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
    /// Handed back unsent (the worker is stopping): due again at once.
    Released {
        id: i64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryFailure {
    pub email: String,
    /// retrying or failed
    pub state: String,
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
