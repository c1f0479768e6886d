//! Newsletter subscribers, the providers they follow, and the digests of their tokens.

use std::{collections::HashMap, time::SystemTime};

use sqlx::Row;

use super::{
    Store, StoreError, StoreTx, from_micros,
    rows::{SubscriberRow, encode_json, subscriber_state},
    to_micros,
};
use crate::domain::Named;
use crate::domain::{
    EmailAddress, ResourceId,
    subscribers::{
        Follower, KnownAddress, NewToken, Subscriber, SubscriberState, TokenHolder, TokenPurpose,
    },
};

const SUBSCRIBER_COLUMNS: &str = "s.id, s.email, s.state, s.language, \
    CASE WHEN s.follows_all THEN 1 ELSE 0 END AS follows_all, s.created_at_us, s.updated_at_us";

impl Store {
    /// Subscribers by id, after `after_id`, optionally in one state.
    pub async fn list_subscribers(
        &self,
        state: Option<SubscriberState>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Subscriber>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, SubscriberRow>(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers s WHERE s.id > $1 \
             AND (CAST($2 AS TEXT) IS NULL OR s.state = $2) ORDER BY s.id LIMIT $3"
        ))
        .bind(after_id)
        .bind(state.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&mut *connection)
        .await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let followed = sqlx::query(
            "SELECT subscriber_id, provider_id FROM subscriber_providers \
             WHERE subscriber_id BETWEEN $1 AND $2 ORDER BY subscriber_id, provider_id",
        )
        .bind(first.id)
        .bind(last.id)
        .fetch_all(&mut *connection)
        .await?;
        with_followed(rows, followed)
    }

    /// Stores the digests of tokens about to be sent.
    pub async fn store_tokens(&self, tokens: &[NewToken]) -> Result<(), StoreError> {
        if tokens.is_empty() {
            return Ok(());
        }
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
        sqlx::query(&format!(
            "INSERT INTO subscription_tokens (digest, subscriber_id, purpose, created_at_us, expires_at_us) \
             SELECT value ->> 0, CAST(value ->> 1 AS BIGINT), value ->> 2, $1, \
             CAST(value ->> 3 AS BIGINT) FROM {}",
            self.backend.json_elements(2)
        ))
        .bind(to_micros(SystemTime::now()))
        .bind(encode_json(&rows)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl StoreTx {
    /// Holds sign-ups of `address` back until this transaction ends.
    pub async fn lock_address(&mut self, address: &EmailAddress) -> Result<(), StoreError> {
        self.backend
            .lock_address(&mut self.tx, address.as_str())
            .await?;
        Ok(())
    }

    pub async fn known_address(
        &mut self,
        address: &EmailAddress,
    ) -> Result<Option<KnownAddress>, StoreError> {
        let row = sqlx::query(
            "SELECT id, state, confirmation_queued_at_us FROM subscribers WHERE email = $1",
        )
        .bind(address.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|row| {
            Ok(KnownAddress {
                subscriber_id: row.try_get(0)?,
                state: subscriber_state(row.try_get(1)?)?,
                confirmation_queued_at: row.try_get::<Option<i64>, _>(2)?.map(from_micros),
            })
        })
        .transpose()
    }

    /// A new pending subscriber following every provider; returns its id.
    pub async fn insert_subscriber(
        &mut self,
        address: &EmailAddress,
        language: &str,
        now: SystemTime,
    ) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO subscribers (email, state, language, follows_all, created_at_us, updated_at_us) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(address.as_str())
        .bind(SubscriberState::Pending.as_str())
        .bind(language)
        .bind(true)
        .bind(to_micros(now))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(id)
    }

    /// Moves a subscriber to `state`, voiding the confirmation links the new state does
    /// not keep.
    pub async fn move_subscriber(
        &mut self,
        subscriber_id: i64,
        state: SubscriberState,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.set_subscriber_state(subscriber_id, state, now).await?;
        if !state.keeps_confirmation_links() {
            self.delete_tokens(subscriber_id, TokenPurpose::Confirm)
                .await?;
        }
        Ok(())
    }

    async fn set_subscriber_state(
        &mut self,
        subscriber_id: i64,
        state: SubscriberState,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE subscribers SET state = $1, updated_at_us = $2 WHERE id = $3")
            .bind(state.as_str())
            .bind(to_micros(now))
            .bind(subscriber_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn subscriber_state(
        &mut self,
        subscriber_id: i64,
    ) -> Result<Option<SubscriberState>, StoreError> {
        let state: Option<String> = sqlx::query_scalar(&format!(
            "SELECT s.state FROM subscribers s WHERE s.id = $1{}",
            self.backend.for_update("s")
        ))
        .bind(subscriber_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        state.as_deref().map(subscriber_state).transpose()
    }

    /// Erases a subscriber's address wherever it is kept, and their choices and links:
    /// the rows stay (delivery reports still count them) under a placeholder address that
    /// cannot be delivered to (`.invalid`, RFC 2606).
    pub async fn erase_subscriber(
        &mut self,
        subscriber_id: i64,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let placeholder = format!("forgotten-{subscriber_id}@forgotten.invalid");
        sqlx::query(
            "UPDATE subscribers SET email = $1, created_at_us = $2, updated_at_us = $2, \
             confirmation_queued_at_us = NULL WHERE id = $3",
        )
        .bind(&placeholder)
        .bind(to_micros(now))
        .bind(subscriber_id)
        .execute(&mut *self.tx)
        .await?;
        for statement in [
            "DELETE FROM subscriber_providers WHERE subscriber_id = $1",
            "DELETE FROM subscription_tokens WHERE subscriber_id = $1",
        ] {
            sqlx::query(statement)
                .bind(subscriber_id)
                .execute(&mut *self.tx)
                .await?;
        }
        sqlx::query("UPDATE deliveries SET email = $1 WHERE subscriber_id = $2")
            .bind(&placeholder)
            .bind(subscriber_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn delete_tokens(
        &mut self,
        subscriber_id: i64,
        purpose: TokenPurpose,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM subscription_tokens WHERE subscriber_id = $1 AND purpose = $2")
            .bind(subscriber_id)
            .bind(purpose.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn set_language(
        &mut self,
        subscriber_id: i64,
        language: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE subscribers SET language = $1, updated_at_us = $2 WHERE id = $3")
            .bind(language)
            .bind(to_micros(now))
            .bind(subscriber_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Replaces the providers a subscriber follows (`None`: all).
    pub async fn set_followed_providers(
        &mut self,
        subscriber_id: i64,
        providers: Option<&[ResourceId]>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM subscriber_providers WHERE subscriber_id = $1")
            .bind(subscriber_id)
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("UPDATE subscribers SET follows_all = $1, updated_at_us = $2 WHERE id = $3")
            .bind(providers.is_none())
            .bind(to_micros(now))
            .bind(subscriber_id)
            .execute(&mut *self.tx)
            .await?;
        for provider in providers.unwrap_or_default() {
            sqlx::query(
                "INSERT INTO subscriber_providers (subscriber_id, provider_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(subscriber_id)
            .bind(provider.as_str())
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    pub async fn set_confirmation_queued(
        &mut self,
        subscriber_id: i64,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE subscribers SET confirmation_queued_at_us = $1 WHERE id = $2")
            .bind(to_micros(now))
            .bind(subscriber_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The subscriber a token of `purpose` belongs to, locked for this transaction.
    pub async fn token_holder(
        &mut self,
        digest: &str,
        purpose: TokenPurpose,
    ) -> Result<Option<TokenHolder>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT t.subscriber_id, s.state, t.expires_at_us FROM subscription_tokens t \
             JOIN subscribers s ON s.id = t.subscriber_id WHERE t.digest = $1 AND t.purpose = $2{}",
            self.backend.for_update("s")
        ))
        .bind(digest)
        .bind(purpose.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|row| {
            Ok(TokenHolder {
                subscriber_id: row.try_get(0)?,
                state: subscriber_state(row.try_get(1)?)?,
                expires_at: row.try_get::<Option<i64>, _>(2)?.map(from_micros),
            })
        })
        .transpose()
    }

    /// Confirmed subscribers after `after_id`, by id, at most `limit` of them, with what
    /// they follow: read page by page, so that a large audience is never all in memory.
    pub async fn confirmed_followers(
        &mut self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Follower>, StoreError> {
        let confirmed = SubscriberState::Confirmed.as_str();
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, CASE WHEN follows_all THEN 1 ELSE 0 END FROM subscribers \
             WHERE state = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(confirmed)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.tx)
        .await?;
        let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let followed = sqlx::query(
            "SELECT p.subscriber_id, p.provider_id FROM subscriber_providers p \
             JOIN subscribers s ON s.id = p.subscriber_id \
             WHERE s.state = $1 AND NOT s.follows_all AND p.subscriber_id BETWEEN $2 AND $3 \
             ORDER BY p.subscriber_id, p.provider_id",
        )
        .bind(confirmed)
        .bind(*first)
        .bind(*last)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut providers = followed_providers(followed)?;
        Ok(rows
            .into_iter()
            .map(|(subscriber_id, follows_all)| Follower {
                subscriber_id,
                state: SubscriberState::Confirmed,
                providers: (follows_all == 0)
                    .then(|| providers.remove(&subscriber_id).unwrap_or_default()),
            })
            .collect())
    }
}

/// The (subscriber id, provider id) rows of what subscribers follow, by subscriber.
fn followed_providers(
    rows: Vec<sqlx::any::AnyRow>,
) -> Result<HashMap<i64, Vec<ResourceId>>, StoreError> {
    let mut providers: HashMap<i64, Vec<ResourceId>> = HashMap::new();
    for row in rows {
        let provider: String = row.try_get(1)?;
        let provider = ResourceId::parse(&provider)
            .map_err(|_| StoreError::Corrupt(format!("followed provider `{provider}`")))?;
        providers.entry(row.try_get(0)?).or_default().push(provider);
    }
    Ok(providers)
}

/// Subscribers from their rows and the (subscriber id, provider id) rows of what they follow.
fn with_followed(
    rows: Vec<SubscriberRow>,
    followed: Vec<sqlx::any::AnyRow>,
) -> Result<Vec<Subscriber>, StoreError> {
    let mut providers = followed_providers(followed)?;
    rows.into_iter()
        .map(|row| {
            let followed = providers.remove(&row.id).unwrap_or_default();
            row.into_subscriber(followed)
        })
        .collect()
}
