//! The newsletter: sign-up with double opt-in, confirmation, one-click unsubscribe and
//! provider preferences. This module owns the rules; the gRPC and HTTP sides call it,
//! the store keeps the records, and the delivery worker sends what it queues.

mod rate_limit;

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use crate::domain::Named;
use crate::{
    catalog::SharedSnapshot,
    domain::ResourceId,
    domain::subscribers::{
        SubscribeCommand, SubscribeOutcome, SubscriberState, TokenOutcome, TokenRequest,
        token_digest,
    },
    outbox::{EMAIL_CHANNEL, Wakeup},
    settings::NewsletterSettings,
    store::{Store, StoreError},
};

pub use crate::domain::{EmailAddress, EmailAddressError};
use rate_limit::{Admission, RateLimiter};

/// Languages emails and pages are written in.
pub const LANGUAGES: &[&str] = &["en"];

/// What every sign-up is told, whatever the address's state (no enumeration).
pub const SUBSCRIBE_ANSWER: &str = "Thanks! If this address can receive our emails, a confirmation link is on its way. Click it to start receiving updates.";

#[derive(Debug, thiserror::Error)]
pub enum NewsletterError {
    #[error(transparent)]
    InvalidEmail(#[from] EmailAddressError),
    #[error("language `{0}` is not offered (expected one of: en)")]
    UnsupportedLanguage(String),
    #[error("provider `{0}` is not one runrate has figures for")]
    UnknownProvider(String),
    #[error("too many sign-ups from this address; try again in a few minutes")]
    RateLimited,
    #[error("the link is not valid (it may have been used already, or mistyped)")]
    UnknownToken,
    #[error("the confirmation link has expired; sign up again for a new one")]
    ExpiredToken,
    #[error("the address is not suppressed ({})", .0.map_or("no subscriber has it", |state| state.as_str()))]
    NotSuppressed(Option<SubscriberState>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Newsletter {
    store: Arc<Store>,
    snapshot: SharedSnapshot,
    settings: NewsletterSettings,
    limiter: RateLimiter,
    /// Wakes the outbox worker when a confirmation email is queued.
    wakeup: Wakeup,
}

impl Newsletter {
    pub fn new(
        store: Arc<Store>,
        snapshot: SharedSnapshot,
        settings: NewsletterSettings,
        wakeup: Wakeup,
    ) -> Self {
        let limiter = RateLimiter::new(
            settings.subscribe_rate_limit,
            settings.subscribe_rate_window.0,
        );
        Newsletter {
            store,
            snapshot,
            settings,
            limiter,
            wakeup,
        }
    }

    /// Checks a provider list against the providers runrate knows; empty means all.
    pub fn parse_providers(
        &self,
        providers: &[String],
    ) -> Result<Option<Vec<ResourceId>>, NewsletterError> {
        if providers.is_empty() {
            return Ok(None);
        }
        let snapshot = self.snapshot.load();
        let mut ids = Vec::new();
        for text in providers {
            let text = text.trim();
            let id = text.strip_prefix("providers/").unwrap_or(text);
            let id = ResourceId::parse(id)
                .ok()
                .filter(|id| snapshot.provider(id).is_some())
                .ok_or_else(|| NewsletterError::UnknownProvider(text.to_owned()))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(Some(ids))
    }

    /// Signs an address up. Every accepted request gets the same answer, whatever the
    /// address's state, so the answer reveals nothing about who is subscribed.
    pub async fn subscribe(
        &self,
        client: Option<IpAddr>,
        email: &str,
        language: &str,
        providers: &[String],
    ) -> Result<SubscribeOutcome, NewsletterError> {
        if let Some(client) = client
            && let Admission::Refused { first } = self.limiter.try_acquire(client)
        {
            // Once per client and window: a flood of refusals writes no flood of lines.
            if first {
                tracing::info!(%client, "sign-ups refused: this client's limit is spent");
            }
            return Err(NewsletterError::RateLimited);
        }
        let email = EmailAddress::parse(email)?;
        let language = match language.trim() {
            "" => "en",
            other => other,
        };
        if !LANGUAGES.contains(&language) {
            return Err(NewsletterError::UnsupportedLanguage(language.to_owned()));
        }
        let providers = self.parse_providers(providers)?;
        let command = SubscribeCommand {
            email,
            language: language.to_owned(),
            providers,
            now: SystemTime::now(),
            resend_window: self.settings.confirmation_resend_window.0,
        };
        let outcome = self.record_sign_up(&command).await?;
        if outcome.queues_confirmation() {
            self.wakeup.wake();
        }
        tracing::debug!(?outcome, "sign-up");
        Ok(outcome)
    }

    /// Decides what a sign-up does to the address as stored, and writes that: a new
    /// pending subscriber, or a pending one again, each with a confirmation queued.
    async fn record_sign_up(
        &self,
        command: &SubscribeCommand,
    ) -> Result<SubscribeOutcome, StoreError> {
        let mut tx = self.store.begin().await?;
        tx.lock_address(&command.email).await?;
        let known = tx.known_address(&command.email).await?;
        let outcome = command.outcome(known.as_ref());
        if outcome.queues_confirmation() {
            let now = command.now;
            let id = match known {
                Some(known) => {
                    tx.move_subscriber(known.subscriber_id, SubscriberState::Pending, now)
                        .await?;
                    tx.set_language(known.subscriber_id, &command.language, now)
                        .await?;
                    known.subscriber_id
                }
                None => {
                    tx.insert_subscriber(&command.email, &command.language, now)
                        .await?
                }
            };
            tx.set_followed_providers(id, command.providers.as_deref(), now)
                .await?;
            tx.queue_confirmation(EMAIL_CHANNEL, id, command.email.as_str(), now)
                .await?;
            tx.set_confirmation_queued(id, now).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Lets a bounced or complained address be emailed again, as an operator decides
    /// (the mailbox was fixed; the report was a mistake). Returns the state it had, and
    /// the state it has now.
    pub async fn lift_suppression(
        &self,
        email: &str,
    ) -> Result<(SubscriberState, SubscriberState), NewsletterError> {
        let email = EmailAddress::parse(email)?;
        let mut tx = self.store.begin().await?;
        tx.lock_address(&email).await?;
        let known = tx
            .known_address(&email)
            .await?
            .ok_or(NewsletterError::NotSuppressed(None))?;
        let lifted = known
            .state
            .on_lifted_suppression()
            .ok_or(NewsletterError::NotSuppressed(Some(known.state)))?;
        tx.move_subscriber(known.subscriber_id, lifted, SystemTime::now())
            .await?;
        tx.commit().await?;
        tracing::info!(
            subscriber = known.subscriber_id,
            from = known.state.as_str(),
            "suppression lifted"
        );
        Ok((known.state, lifted))
    }

    /// Applies what a token asks for, as the domain decides it.
    async fn use_token(
        &self,
        request: TokenRequest,
        token: &str,
        providers: Option<&[ResourceId]>,
    ) -> Result<TokenOutcome, NewsletterError> {
        let now = SystemTime::now();
        let mut tx = self.store.begin().await?;
        let holder = tx
            .token_holder(&token_digest(token), request.purpose())
            .await?;
        let decision = request.decide(holder.as_ref(), now);
        if let (Some(holder), TokenOutcome::Applied) = (holder, decision.outcome) {
            if let Some(state) = decision.new_state {
                tx.move_subscriber(holder.subscriber_id, state, now).await?;
            }
            if request == TokenRequest::SetPreferences {
                tx.set_followed_providers(holder.subscriber_id, providers, now)
                    .await?;
            }
            if request == TokenRequest::Forget {
                tx.erase_subscriber(holder.subscriber_id, now).await?;
            }
        }
        tx.commit().await?;
        match decision.outcome {
            TokenOutcome::Unknown => Err(NewsletterError::UnknownToken),
            TokenOutcome::Expired => Err(NewsletterError::ExpiredToken),
            applied => Ok(applied),
        }
    }

    pub async fn confirm(&self, token: &str) -> Result<TokenOutcome, NewsletterError> {
        self.use_token(TokenRequest::Confirm, token, None).await
    }

    /// Idempotent: unsubscribing twice answers the same as once.
    pub async fn unsubscribe(&self, token: &str) -> Result<TokenOutcome, NewsletterError> {
        self.use_token(TokenRequest::Unsubscribe, token, None).await
    }

    /// Unsubscribes and erases the address everywhere it is kept (the subscriber, their
    /// choices, their links, the record of each email sent to them).
    pub async fn forget(&self, token: &str) -> Result<TokenOutcome, NewsletterError> {
        self.use_token(TokenRequest::Forget, token, None).await
    }

    pub async fn update_preferences(
        &self,
        token: &str,
        providers: &[String],
    ) -> Result<TokenOutcome, NewsletterError> {
        let providers = self.parse_providers(providers)?;
        self.use_token(TokenRequest::SetPreferences, token, providers.as_deref())
            .await
    }
}
