//! The newsletter's records and every rule about them: how a subscriber's state moves,
//! what a sign-up or a token does, who receives an update, and when a failed delivery is
//! tried again. Plain functions over plain values: the store only keeps what they decide.

use std::time::{Duration, SystemTime};

use strum::{EnumIter, EnumString, IntoStaticStr};

use crate::domain::{LoadId, ResourceId};

use super::EmailAddress;

/// pending → confirmed → unsubscribed; bounced and complained are suppressed for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumString, IntoStaticStr, EnumIter)]
#[strum(serialize_all = "kebab-case")]
pub enum SubscriberState {
    Pending,
    Confirmed,
    Unsubscribed,
    Bounced,
    Complained,
}

impl SubscriberState {
    /// A confirmation link is good for one pending period only: leaving pending voids it.
    pub fn keeps_confirmation_links(self) -> bool {
        self == SubscriberState::Pending
    }

    /// The state a refused address moves to: suppressed for good, whatever it was.
    pub fn on_bounce(self) -> SubscriberState {
        match self {
            SubscriberState::Complained => SubscriberState::Complained,
            _ => SubscriberState::Bounced,
        }
    }

    /// The state a reader who reported an email as abuse moves to, whatever it was.
    pub fn on_complaint(self) -> SubscriberState {
        SubscriberState::Complained
    }

    /// Whether nothing is sent to this address until an operator lifts the suppression.
    pub fn is_suppressed(self) -> bool {
        matches!(self, SubscriberState::Bounced | SubscriberState::Complained)
    }

    /// The state an operator's lifting of a suppression moves a subscriber to: back to
    /// confirmed, since only a confirmed address is ever emailed, bounced or reported.
    pub fn on_lifted_suppression(self) -> Option<SubscriberState> {
        self.is_suppressed().then_some(SubscriberState::Confirmed)
    }
}

/// What a token may do; a token does only the one thing it was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumString, IntoStaticStr, EnumIter)]
#[strum(serialize_all = "kebab-case")]
pub enum TokenPurpose {
    Confirm,
    /// Unsubscribe, or change which providers to follow.
    Unsubscribe,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Subscriber {
    pub id: i64,
    pub email: EmailAddress,
    pub state: SubscriberState,
    pub language: String,
    /// `None` follows every provider.
    pub providers: Option<Vec<ResourceId>>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A subscriber as an update's audience sees it: their state and what they follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Follower {
    pub subscriber_id: i64,
    pub state: SubscriberState,
    /// `None` follows every provider.
    pub providers: Option<Vec<ResourceId>>,
}

/// Who receives the update about a load: confirmed subscribers who follow at least one
/// of the providers it changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Audience {
    pub providers: Vec<ResourceId>,
}

impl Audience {
    pub fn includes(&self, follower: &Follower) -> bool {
        follower.state == SubscriberState::Confirmed
            && follower.providers.as_ref().is_none_or(|followed| {
                followed
                    .iter()
                    .any(|provider| self.providers.contains(provider))
            })
    }
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

impl SubscribeCommand {
    /// What this sign-up does to an address the store may already know.
    pub fn outcome(&self, known: Option<&KnownAddress>) -> SubscribeOutcome {
        let Some(known) = known else {
            return SubscribeOutcome::Created;
        };
        let recently_queued = known.confirmation_queued_at.is_some_and(|queued| {
            self.now.duration_since(queued).unwrap_or_default() < self.resend_window
        });
        match known.state {
            SubscriberState::Confirmed => SubscribeOutcome::AlreadyConfirmed,
            SubscriberState::Bounced | SubscriberState::Complained => SubscribeOutcome::Suppressed,
            SubscriberState::Pending | SubscriberState::Unsubscribed if recently_queued => {
                SubscribeOutcome::WithinResendWindow
            }
            SubscriberState::Pending | SubscriberState::Unsubscribed => {
                SubscribeOutcome::ConfirmationQueued
            }
        }
    }
}

/// An address the store already has, as a sign-up sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownAddress {
    pub subscriber_id: i64,
    pub state: SubscriberState,
    /// When the last confirmation email was queued.
    pub confirmation_queued_at: Option<SystemTime>,
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

impl SubscribeOutcome {
    /// Whether the sign-up (re)opens the pending state and queues a confirmation email.
    pub fn queues_confirmation(self) -> bool {
        matches!(
            self,
            SubscribeOutcome::Created | SubscribeOutcome::ConfirmationQueued
        )
    }
}

/// The subscriber a presented token belongs to, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenHolder {
    pub subscriber_id: i64,
    pub state: SubscriberState,
    /// `None`: never expires.
    pub expires_at: Option<SystemTime>,
}

/// What a link asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRequest {
    Confirm,
    Unsubscribe,
    /// Change which providers to follow (with an unsubscribe token).
    SetPreferences,
    /// Unsubscribe and erase what is kept about the subscriber (with an unsubscribe token).
    Forget,
}

/// What a token request does: its outcome, and the state the subscriber moves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenDecision {
    pub outcome: TokenOutcome,
    pub new_state: Option<SubscriberState>,
}

impl TokenRequest {
    /// The tokens that can make this request.
    pub fn purpose(self) -> TokenPurpose {
        match self {
            TokenRequest::Confirm => TokenPurpose::Confirm,
            TokenRequest::Unsubscribe | TokenRequest::SetPreferences | TokenRequest::Forget => {
                TokenPurpose::Unsubscribe
            }
        }
    }

    pub fn decide(self, holder: Option<&TokenHolder>, now: SystemTime) -> TokenDecision {
        let decision = |outcome, new_state| TokenDecision { outcome, new_state };
        let Some(holder) = holder else {
            return decision(TokenOutcome::Unknown, None);
        };
        if holder.expires_at.is_some_and(|expires| expires <= now) {
            return decision(TokenOutcome::Expired, None);
        }
        use SubscriberState::*;
        match (self, holder.state) {
            (TokenRequest::Confirm, Pending) => decision(TokenOutcome::Applied, Some(Confirmed)),
            // Confirm tokens are deleted when a subscriber leaves pending; only a race
            // with another confirmation gets here.
            (TokenRequest::Confirm, Confirmed) => decision(TokenOutcome::AlreadyApplied, None),
            (TokenRequest::Confirm, _) => decision(TokenOutcome::Unknown, None),
            (TokenRequest::Unsubscribe, Pending | Confirmed) => {
                decision(TokenOutcome::Applied, Some(Unsubscribed))
            }
            // Unsubscribed already, or suppressed: nothing more to stop.
            (TokenRequest::Unsubscribe, _) => decision(TokenOutcome::AlreadyApplied, None),
            (TokenRequest::SetPreferences, _) => decision(TokenOutcome::Applied, None),
            // Erased in any state; one who still got emails stops getting them.
            (TokenRequest::Forget, Pending | Confirmed) => {
                decision(TokenOutcome::Applied, Some(Unsubscribed))
            }
            (TokenRequest::Forget, _) => decision(TokenOutcome::Applied, None),
        }
    }
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

/// A fresh token for the message of delivery `delivery`: a public sequence part, the
/// delivery id in 16 hex digits, then 256 random bits (see [`token_digest`]).
pub fn new_token(delivery: i64, secret: &str) -> String {
    format!("{delivery:016x}.{secret}")
}

/// The digest stored for a token; the token itself is never stored. A token's public
/// sequence part (see [`new_token`]) stays in front of its digest, so that tokens made
/// in order are stored in order: a fan-out appends to the digest index instead of
/// rewriting a random page of it for every email. Tokens without one (those made
/// before) are their bare hash, as they always were.
pub fn token_digest(token: &str) -> String {
    let token = token.trim();
    let hash = super::sha256_hex(token.as_bytes());
    match token.split_once('.') {
        Some((sequence, _))
            if sequence.len() == 16 && sequence.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("{sequence}.{hash}")
        }
        _ => hash,
    }
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
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_token_digest_keeps_the_sequence_in_front_and_old_tokens_hash_bare() {
        let token = new_token(0x2a, "SECRET");
        assert_eq!(token, "000000000000002a.SECRET");
        let digest = token_digest(&token);
        assert_eq!(
            digest,
            format!(
                "000000000000002a.{}",
                crate::domain::sha256_hex(token.as_bytes())
            )
        );
        assert!(
            token_digest(&new_token(0x2b, "SECRET")) > digest,
            "stored in order"
        );
        assert_eq!(token_digest("SECRET"), crate::domain::sha256_hex(b"SECRET"));
        // Only a 16-hex-digit lead counts as a sequence.
        assert_eq!(
            token_digest("2a.SECRET"),
            crate::domain::sha256_hex(b"2a.SECRET")
        );
    }

    fn command(now: SystemTime) -> SubscribeCommand {
        SubscribeCommand {
            email: EmailAddress::parse("reader@example.com").unwrap(),
            language: "en".into(),
            providers: None,
            now,
            resend_window: HOUR,
        }
    }

    fn known(state: SubscriberState, queued_ago: Option<Duration>) -> KnownAddress {
        KnownAddress {
            subscriber_id: 7,
            state,
            confirmation_queued_at: queued_ago.map(|ago| NOW + 2 * HOUR - ago),
        }
    }

    #[test]
    fn a_sign_up_creates_reopens_waits_or_leaves_alone() {
        use SubscriberState::*;
        let sign_up = command(NOW + 2 * HOUR);
        let minute = Some(Duration::from_secs(60));
        let day = Some(24 * HOUR);
        let cases = [
            (None, SubscribeOutcome::Created),
            (
                Some(known(Pending, day)),
                SubscribeOutcome::ConfirmationQueued,
            ),
            (
                Some(known(Pending, minute)),
                SubscribeOutcome::WithinResendWindow,
            ),
            (
                Some(known(Unsubscribed, None)),
                SubscribeOutcome::ConfirmationQueued,
            ),
            (
                Some(known(Unsubscribed, minute)),
                SubscribeOutcome::WithinResendWindow,
            ),
            (
                Some(known(Confirmed, day)),
                SubscribeOutcome::AlreadyConfirmed,
            ),
            (Some(known(Bounced, None)), SubscribeOutcome::Suppressed),
            (
                Some(known(Complained, minute)),
                SubscribeOutcome::Suppressed,
            ),
        ];
        for (address, expected) in cases {
            assert_eq!(sign_up.outcome(address.as_ref()), expected, "{address:?}");
        }
        assert!(SubscribeOutcome::Created.queues_confirmation());
        assert!(SubscribeOutcome::ConfirmationQueued.queues_confirmation());
        assert!(!SubscribeOutcome::WithinResendWindow.queues_confirmation());
        assert!(!SubscribeOutcome::Suppressed.queues_confirmation());
    }

    #[test]
    fn a_clock_that_stepped_back_does_not_hold_a_confirmation_back_for_ever() {
        // Queued "in the future": treated as just now, so within the window.
        let address = known(SubscriberState::Pending, Some(Duration::ZERO));
        let earlier = command(NOW);
        assert_eq!(
            earlier.outcome(Some(&address)),
            SubscribeOutcome::WithinResendWindow
        );
    }

    fn holder(state: SubscriberState, expires_at: Option<SystemTime>) -> TokenHolder {
        TokenHolder {
            subscriber_id: 3,
            state,
            expires_at,
        }
    }

    #[test]
    fn tokens_move_subscribers_only_along_the_allowed_edges() {
        use SubscriberState::*;
        use TokenOutcome::*;
        use TokenRequest::*;
        let cases = [
            (Confirm, Pending, Applied, Some(Confirmed)),
            (Confirm, Confirmed, AlreadyApplied, None),
            (Confirm, Unsubscribed, Unknown, None),
            (Confirm, Bounced, Unknown, None),
            (Unsubscribe, Pending, Applied, Some(Unsubscribed)),
            (Unsubscribe, Confirmed, Applied, Some(Unsubscribed)),
            (Unsubscribe, Unsubscribed, AlreadyApplied, None),
            (Unsubscribe, Bounced, AlreadyApplied, None),
            (Unsubscribe, Complained, AlreadyApplied, None),
            (SetPreferences, Confirmed, Applied, None),
            (SetPreferences, Unsubscribed, Applied, None),
            // Forgetting stops the emails and erases, in any state.
            (Forget, Pending, Applied, Some(Unsubscribed)),
            (Forget, Confirmed, Applied, Some(Unsubscribed)),
            (Forget, Unsubscribed, Applied, None),
            (Forget, Bounced, Applied, None),
        ];
        for (request, state, outcome, new_state) in cases {
            let decided = request.decide(Some(&holder(state, None)), NOW);
            assert_eq!(
                decided,
                TokenDecision { outcome, new_state },
                "{request:?} while {state:?}"
            );
        }
    }

    #[test]
    fn unknown_and_expired_tokens_change_nothing() {
        let unknown = TokenRequest::Confirm.decide(None, NOW);
        assert_eq!(unknown.outcome, TokenOutcome::Unknown);
        let lapsed = holder(SubscriberState::Pending, Some(NOW));
        let expired = TokenRequest::Confirm.decide(Some(&lapsed), NOW);
        assert_eq!(expired.outcome, TokenOutcome::Expired);
        assert_eq!(expired.new_state, None);
        let live = TokenRequest::Confirm.decide(Some(&lapsed), NOW - HOUR);
        assert_eq!(live.outcome, TokenOutcome::Applied);
        assert_eq!(
            TokenRequest::SetPreferences.purpose(),
            TokenPurpose::Unsubscribe
        );
        assert_eq!(TokenRequest::Forget.purpose(), TokenPurpose::Unsubscribe);
        assert_eq!(TokenRequest::Confirm.purpose(), TokenPurpose::Confirm);
    }

    #[test]
    fn only_pending_keeps_confirmation_links_and_a_bounce_suppresses_for_good() {
        for state in SubscriberState::all() {
            assert_eq!(
                state.keeps_confirmation_links(),
                state == SubscriberState::Pending
            );
            assert!(matches!(
                state.on_bounce(),
                SubscriberState::Bounced | SubscriberState::Complained
            ));
        }
        assert_eq!(
            SubscriberState::Confirmed.on_bounce(),
            SubscriberState::Bounced
        );
    }

    fn follower(state: SubscriberState, providers: Option<&[&str]>) -> Follower {
        Follower {
            subscriber_id: 1,
            state,
            providers: providers.map(|ids| {
                ids.iter()
                    .map(|id| ResourceId::parse(id).unwrap())
                    .collect()
            }),
        }
    }

    #[test]
    fn an_update_goes_to_confirmed_followers_of_a_changed_provider() {
        let audience = Audience {
            providers: vec![ResourceId::parse("aws").unwrap()],
        };
        use SubscriberState::*;
        assert!(audience.includes(&follower(Confirmed, None)));
        assert!(audience.includes(&follower(Confirmed, Some(&["azure", "aws"]))));
        assert!(!audience.includes(&follower(Confirmed, Some(&["azure"]))));
        assert!(!audience.includes(&follower(Confirmed, Some(&[]))));
        for state in [Pending, Unsubscribed, Bounced, Complained] {
            assert!(!audience.includes(&follower(state, None)), "{state:?}");
        }
    }

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
