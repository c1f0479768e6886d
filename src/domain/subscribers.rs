//! The newsletter's subscribers and every rule about them: how a subscriber's state
//! moves, what a sign-up or a token does, and who receives an update. Plain functions
//! over plain values: the store only keeps what they decide. What happens to a message
//! once queued is the delivery model's (`domain::delivery`).

use std::time::SystemTime;

use strum::{EnumIter, EnumString, IntoStaticStr};

use crate::domain::ResourceId;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Named;
    use std::time::Duration;

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
}
