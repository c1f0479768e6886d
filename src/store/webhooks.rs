//! Webhook endpoints, and queueing a load's POSTs to them in the load's transaction.

use std::time::SystemTime;

use super::{
    Store, StoreError, StoreTx, from_micros, outbox::KIND_UPDATE, rows::encode_json, to_micros,
};
use crate::domain::{
    LoadId, Named,
    delivery::{DeliveryKind, DeliveryState},
    webhooks::{MAX_WEBHOOKS, Webhook, WebhookSecret, WebhookTarget, WebhookUrl},
};

/// Why an endpoint could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum CreateWebhookError {
    #[error("{MAX_WEBHOOKS} webhooks are registered already; delete one first")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Registers an endpoint, unless [`MAX_WEBHOOKS`] are registered already.
    pub async fn create_webhook(
        &self,
        url: &WebhookUrl,
        secret: &WebhookSecret,
        now: SystemTime,
    ) -> Result<Webhook, CreateWebhookError> {
        // In a write transaction, so that two registrations cannot both pass the count.
        let mut tx = self.begin().await?;
        let registered: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE deleted_at_us IS NULL",
        )
        .fetch_one(&mut *tx.tx)
        .await
        .map_err(StoreError::from)?;
        if registered >= MAX_WEBHOOKS as i64 {
            return Err(CreateWebhookError::TooMany);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_endpoints (url, secret, created_at_us) VALUES ($1, $2, $3) \
             RETURNING id",
        )
        .bind(url.as_str())
        .bind(secret.expose())
        .bind(to_micros(now))
        .fetch_one(&mut *tx.tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await?;
        Ok(Webhook {
            id,
            url: url.clone(),
            created_at: now,
        })
    }

    /// The registered endpoints, oldest first.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, url, created_at_us FROM webhook_endpoints WHERE deleted_at_us IS NULL \
             ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, url, created_at)| {
                Ok(Webhook {
                    id,
                    url: stored_url(id, &url)?,
                    created_at: from_micros(created_at),
                })
            })
            .collect()
    }

    /// Deletes a registered endpoint: nothing more is queued for it, and what is queued
    /// is skipped. Returns whether it was registered.
    pub async fn delete_webhook(&self, id: i64, now: SystemTime) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at_us = $1 WHERE id = $2 AND deleted_at_us IS NULL",
        )
        .bind(to_micros(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// What sending to these endpoints needs, deleted ones included.
    pub async fn webhook_targets(&self, ids: &[i64]) -> Result<Vec<WebhookTarget>, StoreError> {
        let rows: Vec<(i64, String, String, Option<i64>)> = sqlx::query_as(&format!(
            "SELECT id, url, secret, deleted_at_us FROM webhook_endpoints \
             WHERE id IN (SELECT CAST(value AS BIGINT) FROM {})",
            self.backend.json_text_elements(1)
        ))
        .bind(encode_json(&ids)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, url, secret, deleted_at)| {
                Ok(WebhookTarget {
                    id,
                    url: stored_url(id, &url)?,
                    secret: WebhookSecret::parse(&secret).map_err(|err| {
                        StoreError::Corrupt(format!("the secret of webhooks/{id} {err}"))
                    })?,
                    deleted: deleted_at.is_some(),
                })
            })
            .collect()
    }
}

fn stored_url(id: i64, url: &str) -> Result<WebhookUrl, StoreError> {
    WebhookUrl::parse(url)
        .map_err(|err| StoreError::Corrupt(format!("the URL of webhooks/{id} {err}")))
}

impl StoreTx {
    /// Queues one POST about `load` on `channel` to each registered endpoint, due at
    /// `due`; returns how many. Each is addressed to the endpoint's resource name (as
    /// [`crate::domain::webhooks::webhook_name`] spells it), never its URL.
    pub async fn queue_webhook_updates(
        &mut self,
        channel: &str,
        load: LoadId,
        due: SystemTime,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "INSERT INTO deliveries (channel, kind, load_id, endpoint_id, email, state, attempts, \
             next_attempt_at_us, created_at_us, priority) \
             SELECT $1, $2, $3, e.id, 'webhooks/' || CAST(e.id AS TEXT), $4, 0, $5, $5, $6 \
             FROM webhook_endpoints e WHERE e.deleted_at_us IS NULL ORDER BY e.id",
        )
        .bind(channel)
        .bind(KIND_UPDATE)
        .bind(load)
        .bind(DeliveryState::Pending.as_str())
        .bind(to_micros(due))
        .bind(DeliveryKind::Update(load).priority())
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected())
    }
}
