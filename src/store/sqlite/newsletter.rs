//! The newsletter on SQLite: subscribers, token digests and the delivery outbox.

use std::time::SystemTime;

use async_trait::async_trait;
use sqlx::{Row, Sqlite, Transaction};

use super::SqliteStore;
use crate::{
    domain::subscribers::{
        ClaimToken, ClaimedDelivery, DeliveryFailure, DeliveryReport, DeliveryResult, NewToken,
        SubscribeCommand, SubscribeOutcome, Subscriber, SubscriberState, TokenOutcome,
        TokenPurpose,
    },
    domain::{LoadId, ResourceId},
    store::{
        NewsletterStore, StoreError, from_micros,
        rows::{
            ClaimedDeliveryRow, DeliveryFailureRow, SubscriberRow, encode_json, subscriber_state,
            tally,
        },
        to_micros,
    },
};

/// Failures listed in a delivery report.
const MAX_REPORTED_FAILURES: i64 = 100;

/// The subscriber a live token of `purpose` belongs to: id, state, and whether it expired.
async fn token_owner(
    tx: &mut Transaction<'_, Sqlite>,
    digest: &str,
    purpose: TokenPurpose,
    now_us: i64,
) -> Result<Option<(i64, SubscriberState, bool)>, StoreError> {
    let row = sqlx::query(
        "SELECT t.subscriber_id, s.state, t.expires_at_us FROM subscription_tokens t \
         JOIN subscribers s ON s.id = t.subscriber_id WHERE t.digest = ? AND t.purpose = ?",
    )
    .bind(digest)
    .bind(purpose.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let expired = row
        .get::<Option<i64>, _>(2)
        .is_some_and(|expires| expires <= now_us);
    Ok(Some((row.get(0), subscriber_state(row.get(1))?, expired)))
}

async fn set_state(
    tx: &mut Transaction<'_, Sqlite>,
    subscriber_id: i64,
    new_state: SubscriberState,
    now_us: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE subscribers SET state = ?, updated_at_us = ? WHERE id = ?")
        .bind(new_state.as_str())
        .bind(now_us)
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    if new_state != SubscriberState::Pending {
        // A confirmation link is for one pending period only.
        sqlx::query(
            "DELETE FROM subscription_tokens WHERE subscriber_id = ? AND purpose = 'confirm'",
        )
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn set_providers(
    tx: &mut Transaction<'_, Sqlite>,
    subscriber_id: i64,
    providers: Option<&[ResourceId]>,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM subscriber_providers WHERE subscriber_id = ?")
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE subscribers SET follows_all = ? WHERE id = ?")
        .bind(providers.is_none())
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    for provider in providers.unwrap_or_default() {
        sqlx::query(
            "INSERT OR IGNORE INTO subscriber_providers (subscriber_id, provider_id) VALUES (?, ?)",
        )
        .bind(subscriber_id)
        .bind(provider.as_str())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn queue_confirmation(
    tx: &mut Transaction<'_, Sqlite>,
    subscriber_id: i64,
    email: &str,
    now_us: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deliveries (kind, load_id, subscriber_id, email, state, attempts, \
         next_attempt_at_us, created_at_us) VALUES ('confirmation', NULL, ?, ?, 'pending', 0, ?, ?)",
    )
    .bind(subscriber_id)
    .bind(email)
    .bind(now_us)
    .bind(now_us)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE subscribers SET confirmation_queued_at_us = ? WHERE id = ?")
        .bind(now_us)
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl NewsletterStore for SqliteStore {
    async fn subscribe(&self, command: &SubscribeCommand) -> Result<SubscribeOutcome, StoreError> {
        let now_us = to_micros(command.now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing = sqlx::query(
            "SELECT id, state, confirmation_queued_at_us FROM subscribers WHERE email = ?",
        )
        .bind(command.email.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match existing {
            None => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO subscribers (email, state, language, follows_all, created_at_us, updated_at_us) \
                     VALUES (?, 'pending', ?, 1, ?, ?) RETURNING id",
                )
                .bind(command.email.as_str())
                .bind(&command.language)
                .bind(now_us)
                .bind(now_us)
                .fetch_one(&mut *tx)
                .await?;
                set_providers(&mut tx, id, command.providers.as_deref()).await?;
                queue_confirmation(&mut tx, id, command.email.as_str(), now_us).await?;
                SubscribeOutcome::Created
            }
            Some(row) => {
                let id: i64 = row.get(0);
                let window_us =
                    i64::try_from(command.resend_window.as_micros()).unwrap_or(i64::MAX);
                let recently_queued = row
                    .get::<Option<i64>, _>(2)
                    .is_some_and(|queued| now_us.saturating_sub(queued) < window_us);
                match subscriber_state(row.get(1))? {
                    SubscriberState::Confirmed => SubscribeOutcome::AlreadyConfirmed,
                    SubscriberState::Bounced | SubscriberState::Complained => {
                        SubscribeOutcome::Suppressed
                    }
                    SubscriberState::Pending | SubscriberState::Unsubscribed if recently_queued => {
                        SubscribeOutcome::WithinResendWindow
                    }
                    SubscriberState::Pending | SubscriberState::Unsubscribed => {
                        set_state(&mut tx, id, SubscriberState::Pending, now_us).await?;
                        sqlx::query("UPDATE subscribers SET language = ? WHERE id = ?")
                            .bind(&command.language)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        set_providers(&mut tx, id, command.providers.as_deref()).await?;
                        queue_confirmation(&mut tx, id, command.email.as_str(), now_us).await?;
                        SubscribeOutcome::ConfirmationQueued
                    }
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn confirm(&self, digest: &str, now: SystemTime) -> Result<TokenOutcome, StoreError> {
        let now_us = to_micros(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let outcome = match token_owner(&mut tx, digest, TokenPurpose::Confirm, now_us).await? {
            None => TokenOutcome::Unknown,
            Some((_, _, true)) => TokenOutcome::Expired,
            Some((id, SubscriberState::Pending, false)) => {
                set_state(&mut tx, id, SubscriberState::Confirmed, now_us).await?;
                TokenOutcome::Applied
            }
            // Confirm tokens are deleted when a subscriber leaves pending; only a race
            // with another confirmation gets here.
            Some((_, SubscriberState::Confirmed, false)) => TokenOutcome::AlreadyApplied,
            Some(_) => TokenOutcome::Unknown,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn unsubscribe(&self, digest: &str, now: SystemTime) -> Result<TokenOutcome, StoreError> {
        let now_us = to_micros(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let outcome = match token_owner(&mut tx, digest, TokenPurpose::Unsubscribe, now_us).await? {
            None => TokenOutcome::Unknown,
            Some((_, _, true)) => TokenOutcome::Expired,
            Some((id, SubscriberState::Confirmed | SubscriberState::Pending, false)) => {
                set_state(&mut tx, id, SubscriberState::Unsubscribed, now_us).await?;
                TokenOutcome::Applied
            }
            // Unsubscribed already, or suppressed: nothing more to stop.
            Some(_) => TokenOutcome::AlreadyApplied,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn update_preferences(
        &self,
        digest: &str,
        providers: Option<&[ResourceId]>,
        now: SystemTime,
    ) -> Result<TokenOutcome, StoreError> {
        let now_us = to_micros(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let outcome = match token_owner(&mut tx, digest, TokenPurpose::Unsubscribe, now_us).await? {
            None => TokenOutcome::Unknown,
            Some((_, _, true)) => TokenOutcome::Expired,
            Some((id, _, false)) => {
                set_providers(&mut tx, id, providers).await?;
                sqlx::query("UPDATE subscribers SET updated_at_us = ? WHERE id = ?")
                    .bind(now_us)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                TokenOutcome::Applied
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn list_subscribers(
        &self,
        state_filter: Option<SubscriberState>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Subscriber>, StoreError> {
        let rows = sqlx::query_as::<_, SubscriberRow>(
            "SELECT s.id, s.email, s.state, s.language, s.follows_all, s.created_at_us, s.updated_at_us, \
             (SELECT json_group_array(provider_id) FROM (SELECT provider_id FROM subscriber_providers \
              WHERE subscriber_id = s.id ORDER BY provider_id)) AS providers \
             FROM subscribers s WHERE s.id > ? AND (? IS NULL OR s.state = ?) ORDER BY s.id LIMIT ?",
        )
        .bind(after_id)
        .bind(state_filter.map(|s| s.as_str()))
        .bind(state_filter.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Subscriber::try_from).collect()
    }

    async fn claim_deliveries(
        &self,
        claim: ClaimToken,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query_as::<_, ClaimedDeliveryRow>(
            "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, next_attempt_at_us = ?1, \
             claim_token = ?4 WHERE id IN (SELECT id FROM deliveries WHERE state IN ('pending', 'sending', 'retrying') \
               AND next_attempt_at_us <= ?2 ORDER BY next_attempt_at_us, id LIMIT ?3) \
             RETURNING id, kind, load_id, subscriber_id, email, attempts, \
               (SELECT state FROM subscribers WHERE subscribers.id = deliveries.subscriber_id) AS subscriber_state",
        )
        .bind(to_micros(lease_until))
        .bind(to_micros(now))
        .bind(i64::from(limit))
        .bind(claim.0)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut claimed = rows
            .into_iter()
            .map(ClaimedDelivery::try_from)
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|delivery| delivery.id);
        Ok(claimed)
    }

    async fn renew_claim(
        &self,
        claim: ClaimToken,
        lease_until: SystemTime,
    ) -> Result<Vec<i64>, StoreError> {
        let ids = sqlx::query_scalar(
            "UPDATE deliveries SET next_attempt_at_us = ? WHERE claim_token = ? AND state = 'sending' RETURNING id",
        )
        .bind(to_micros(lease_until))
        .bind(claim.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn store_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let now_us = to_micros(SystemTime::now());
        let rows: Vec<serde_json::Value> = tokens
            .iter()
            .map(|token| {
                serde_json::json!([
                    token.digest,
                    token.subscriber_id,
                    token.purpose.as_str(),
                    token.expires_at.map(to_micros)
                ])
            })
            .collect();
        sqlx::query(
            "INSERT INTO subscription_tokens (digest, subscriber_id, purpose, created_at_us, expires_at_us) \
             SELECT value ->> 0, value ->> 1, value ->> 2, ?, value ->> 3 FROM json_each(?)",
        )
        .bind(now_us)
        .bind(encode_json(&rows)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_deliveries(
        &self,
        claim: ClaimToken,
        results: &[DeliveryResult],
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let now_us = to_micros(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut recorded = 0;
        for result in results {
            let query = match result {
                DeliveryResult::Sent { id } => sqlx::query(
                    "UPDATE deliveries SET state = 'sent', sent_at_us = ?, last_error = NULL WHERE id = ? AND claim_token = ? AND state = 'sending'",
                )
                .bind(now_us)
                .bind(id),
                DeliveryResult::Released { id } => sqlx::query(
                    "UPDATE deliveries SET state = 'pending', attempts = MAX(attempts - 1, 0), next_attempt_at_us = ? WHERE id = ? AND claim_token = ? AND state = 'sending'",
                )
                .bind(now_us)
                .bind(id),
                DeliveryResult::Skipped { id, reason } => sqlx::query(
                    "UPDATE deliveries SET state = 'skipped', last_error = ? WHERE id = ? AND claim_token = ? AND state = 'sending'",
                )
                .bind(reason)
                .bind(id),
                DeliveryResult::Retry {
                    id,
                    next_attempt_at,
                    error,
                } => sqlx::query(
                    "UPDATE deliveries SET state = 'retrying', next_attempt_at_us = ?, last_error = ? WHERE id = ? AND claim_token = ? AND state = 'sending'",
                )
                .bind(to_micros(*next_attempt_at))
                .bind(error)
                .bind(id),
                DeliveryResult::Failed { id, error, .. } => sqlx::query(
                    "UPDATE deliveries SET state = 'failed', last_error = ? WHERE id = ? AND claim_token = ? AND state = 'sending'",
                )
                .bind(error)
                .bind(id),
            };
            let affected = query.bind(claim.0).execute(&mut *tx).await?.rows_affected();
            if affected == 0 {
                continue;
            }
            recorded += affected;
            if let DeliveryResult::Failed {
                bounced: Some(subscriber_id),
                ..
            } = result
            {
                set_state(&mut tx, *subscriber_id, SubscriberState::Bounced, now_us).await?;
            }
        }
        tx.commit().await?;
        Ok(recorded)
    }

    async fn next_delivery_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at_us) FROM deliveries WHERE state IN ('pending', 'sending', 'retrying')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(due.map(from_micros))
    }

    async fn latest_notified_load(&self) -> Result<Option<LoadId>, StoreError> {
        let load: Option<i64> = sqlx::query_scalar("SELECT MAX(load_id) FROM notifications")
            .fetch_one(&self.pool)
            .await?;
        Ok(load)
    }

    async fn delivery_report(&self, load_id: LoadId) -> Result<Option<DeliveryReport>, StoreError> {
        let recipients: Option<i64> =
            sqlx::query_scalar("SELECT recipients FROM notifications WHERE load_id = ?")
                .bind(load_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(recipients) = recipients else {
            return Ok(None);
        };
        let mut report = DeliveryReport {
            load_id,
            recipients: u64::try_from(recipients).unwrap_or(0),
            ..DeliveryReport::default()
        };
        let counts = sqlx::query(
            "SELECT state, COUNT(*) FROM deliveries WHERE load_id = ? AND kind = 'update' GROUP BY state",
        )
        .bind(load_id)
        .fetch_all(&self.pool)
        .await?;
        for row in counts {
            tally(&mut report, row.get(0), row.get(1))?;
        }
        let failures = sqlx::query_as::<_, DeliveryFailureRow>(
            "SELECT email, state, attempts, COALESCE(last_error, '') AS last_error FROM deliveries \
             WHERE load_id = ? AND kind = 'update' AND state IN ('failed', 'retrying') ORDER BY id LIMIT ?",
        )
        .bind(load_id)
        .bind(MAX_REPORTED_FAILURES)
        .fetch_all(&self.pool)
        .await?;
        report.failures = failures.into_iter().map(DeliveryFailure::from).collect();
        Ok(Some(report))
    }

    async fn retry_failed_deliveries(
        &self,
        load_id: Option<LoadId>,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE deliveries SET state = 'retrying', attempts = 0, next_attempt_at_us = ? \
             WHERE state = 'failed' AND kind = 'update' AND (? IS NULL OR load_id = ?)",
        )
        .bind(to_micros(now))
        .bind(load_id)
        .bind(load_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}
