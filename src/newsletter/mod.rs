//! The newsletter: sign-up with double opt-in, confirmation, one-click unsubscribe and
//! provider preferences. This module owns the rules; the gRPC and HTTP sides call it,
//! the store keeps the records, and the delivery worker sends what it queues.

mod rate_limit;

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::{
    domain::ResourceId,
    settings::NewsletterSettings,
    snapshot::SharedSnapshot,
    store::{Store, StoreError},
};

use crate::domain::subscribers::{SubscribeCommand, SubscribeOutcome, TokenOutcome};
pub use crate::domain::{EmailAddress, EmailAddressError};
use rate_limit::RateLimiter;

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The digest stored for a token; the token itself is never stored.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct Newsletter {
    store: Arc<dyn Store>,
    snapshot: SharedSnapshot,
    settings: NewsletterSettings,
    limiter: RateLimiter,
    /// Wakes the delivery worker when a confirmation email is queued.
    wake_delivery: Arc<Notify>,
}

impl Newsletter {
    pub fn new(
        store: Arc<dyn Store>,
        snapshot: SharedSnapshot,
        settings: NewsletterSettings,
        wake_delivery: Arc<Notify>,
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
            wake_delivery,
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
            && !self.limiter.try_acquire(client)
        {
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
        let outcome = self
            .store
            .subscribe(&SubscribeCommand {
                email,
                language: language.to_owned(),
                providers,
                now: SystemTime::now(),
                resend_window: self.settings.confirmation_resend_window.0,
            })
            .await?;
        if matches!(
            outcome,
            SubscribeOutcome::Created | SubscribeOutcome::ConfirmationQueued
        ) {
            self.wake_delivery.notify_waiters();
        }
        tracing::debug!(?outcome, "sign-up");
        Ok(outcome)
    }

    pub async fn confirm(&self, token: &str) -> Result<TokenOutcome, NewsletterError> {
        let outcome = self
            .store
            .confirm(&token_digest(token), SystemTime::now())
            .await?;
        token_result(outcome)
    }

    /// Idempotent: unsubscribing twice answers the same as once.
    pub async fn unsubscribe(&self, token: &str) -> Result<TokenOutcome, NewsletterError> {
        let outcome = self
            .store
            .unsubscribe(&token_digest(token), SystemTime::now())
            .await?;
        token_result(outcome)
    }

    pub async fn update_preferences(
        &self,
        token: &str,
        providers: &[String],
    ) -> Result<TokenOutcome, NewsletterError> {
        let providers = self.parse_providers(providers)?;
        let outcome = self
            .store
            .update_preferences(
                &token_digest(token),
                providers.as_deref(),
                SystemTime::now(),
            )
            .await?;
        token_result(outcome)
    }
}

fn token_result(outcome: TokenOutcome) -> Result<TokenOutcome, NewsletterError> {
    match outcome {
        TokenOutcome::Unknown => Err(NewsletterError::UnknownToken),
        TokenOutcome::Expired => Err(NewsletterError::ExpiredToken),
        applied => Ok(applied),
    }
}
