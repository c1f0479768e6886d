//! The transactional outbox: deliveries queued in the transaction that makes them due,
//! claimed by workers under a fencing token, and the result of each recorded.

use std::time::SystemTime;

use sqlx::Row;

use super::{
    Store, StoreError, StoreTx, from_micros,
    rows::{ClaimedDeliveryRow, DeliveryFailureRow, delivery_state, encode_json},
    to_micros,
};
use crate::domain::Named;
use crate::domain::{
    LoadId,
    delivery::{
        ClaimToken, ClaimedDelivery, DeliveryFailure, DeliveryKind, DeliveryReport, DeliveryResult,
        DeliveryState,
    },
};

/// The unfinished states, spelled as in the partial index `deliveries_due`: a query
/// must repeat its predicate word for word for SQLite to use the index.
const UNFINISHED: &str = "('pending', 'sending', 'retrying')";
/// Failures listed in a delivery report.
const MAX_REPORTED_FAILURES: i64 = 100;
/// Recipients queued per statement.
const QUEUE_CHUNK: usize = 10_000;
const KIND_CONFIRMATION: &str = "confirmation";
pub(super) const KIND_UPDATE: &str = "update";

impl Store {
    /// Claims up to `limit` due deliveries until `lease_until` under `claim`, counting an
    /// attempt each, on the named channels only. Updates about loads after `known_load`
    /// are left for a process that has read them.
    pub async fn claim_deliveries(
        &self,
        claim: ClaimToken,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
        known_load: LoadId,
        channels: &[&str],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let rows = sqlx::query_as::<_, ClaimedDeliveryRow>(&format!(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, next_attempt_at_us = $2, \
             claim_token = $3 WHERE id IN (SELECT id FROM deliveries WHERE state IN {UNFINISHED} \
               AND next_attempt_at_us <= $4 AND (load_id IS NULL OR load_id <= $5) \
               AND channel IN (SELECT value FROM {}) \
               ORDER BY priority, next_attempt_at_us, id LIMIT $6{}) \
             RETURNING id, channel, kind, load_id, subscriber_id, endpoint_id, email, attempts, \
               (SELECT s.state FROM subscribers s WHERE s.id = deliveries.subscriber_id) AS subscriber_state",
            self.backend.json_text_elements(7),
            self.backend.skip_locked()
        ))
        .bind(DeliveryState::Sending.as_str())
        .bind(to_micros(lease_until))
        .bind(claim.0)
        .bind(to_micros(now))
        .bind(known_load)
        .bind(i64::from(limit))
        .bind(encode_json(&channels)?)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .into_iter()
            .map(ClaimedDelivery::try_from)
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|delivery| (delivery.kind.priority(), delivery.id));
        Ok(claimed)
    }

    /// Extends the lease of those of `ids` that `claim` still holds to `lease_until`;
    /// returns their ids.
    pub async fn renew_claim(
        &self,
        claim: ClaimToken,
        ids: &[i64],
        lease_until: SystemTime,
    ) -> Result<Vec<i64>, StoreError> {
        let ids = sqlx::query_scalar(&format!(
            "UPDATE deliveries SET next_attempt_at_us = $1 WHERE claim_token = $2 AND state = $3 \
             AND id IN (SELECT CAST(value AS BIGINT) FROM {}) RETURNING id",
            self.backend.json_text_elements(4)
        ))
        .bind(to_micros(lease_until))
        .bind(claim.0)
        .bind(DeliveryState::Sending.as_str())
        .bind(encode_json(&ids)?)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// When the next unfinished delivery falls due (or its claim's lease ends), if any.
    pub async fn next_delivery_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT MIN(next_attempt_at_us) FROM deliveries WHERE state IN {UNFINISHED}"
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(due.map(from_micros))
    }

    /// The newest load that notified subscribers, if any did.
    pub async fn latest_notified_load(&self) -> Result<Option<LoadId>, StoreError> {
        let load = sqlx::query_scalar("SELECT MAX(load_id) FROM notifications")
            .fetch_one(&self.pool)
            .await?;
        Ok(load)
    }

    /// The update deliveries of one load; `None` when the load notified nobody.
    pub async fn delivery_report(
        &self,
        load_id: LoadId,
    ) -> Result<Option<DeliveryReport>, StoreError> {
        let recipients: Option<i64> =
            sqlx::query_scalar("SELECT recipients FROM notifications WHERE load_id = $1")
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
        // Only updates have a load, so the (load_id, state) index answers this alone,
        // without reading a fan-out's rows: it is asked often while one runs.
        let counts =
            sqlx::query("SELECT state, COUNT(*) FROM deliveries WHERE load_id = $1 GROUP BY state")
                .bind(load_id)
                .fetch_all(&self.pool)
                .await?;
        for row in counts {
            let state = delivery_state(row.try_get(0)?)?;
            report.count(state, u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0));
        }
        let failures = sqlx::query_as::<_, DeliveryFailureRow>(
            "SELECT email, state, attempts, COALESCE(last_error, '') AS last_error FROM deliveries \
             WHERE load_id = $1 AND kind = $2 AND state IN ($3, $4) ORDER BY id LIMIT $5",
        )
        .bind(load_id)
        .bind(KIND_UPDATE)
        .bind(DeliveryState::Failed.as_str())
        .bind(DeliveryState::Retrying.as_str())
        .bind(MAX_REPORTED_FAILURES)
        .fetch_all(&self.pool)
        .await?;
        report.failures = failures
            .into_iter()
            .map(DeliveryFailure::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Some(report))
    }

    /// How many deliveries are unfinished, by kind and state, zeros included (read from
    /// the partial index of unfinished deliveries, not the finished history).
    pub async fn unfinished_deliveries(
        &self,
    ) -> Result<Vec<(&'static str, DeliveryState, u64)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT kind, state, COUNT(*) FROM deliveries WHERE state IN {UNFINISHED} \
             GROUP BY kind, state"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Vec::new();
        for kind in [KIND_CONFIRMATION, KIND_UPDATE] {
            for state in DeliveryState::all().filter(|state| state.is_unfinished()) {
                counts.push((kind, state, 0));
            }
        }
        for row in rows {
            let kind: String = row.try_get(0)?;
            let state = delivery_state(row.try_get(1)?)?;
            let count = u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0);
            if let Some(entry) = counts
                .iter_mut()
                .find(|(known, known_state, _)| *known == kind && *known_state == state)
            {
                entry.2 = count;
            }
        }
        Ok(counts)
    }

    /// Makes failed update deliveries (of one load, or all) due again; returns how many.
    pub async fn retry_failed_deliveries(
        &self,
        load_id: Option<LoadId>,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = 0, next_attempt_at_us = $2 \
             WHERE state = $3 AND kind = $4 AND (CAST($5 AS BIGINT) IS NULL OR load_id = $5)",
        )
        .bind(DeliveryState::Retrying.as_str())
        .bind(to_micros(now))
        .bind(DeliveryState::Failed.as_str())
        .bind(KIND_UPDATE)
        .bind(load_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}

impl StoreTx {
    /// Queues a confirmation message for a subscriber, due now.
    pub async fn queue_confirmation(
        &mut self,
        channel: &str,
        subscriber_id: i64,
        address: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO deliveries (channel, kind, load_id, subscriber_id, email, state, attempts, \
             next_attempt_at_us, created_at_us, priority) \
             VALUES ($1, $2, NULL, $3, $4, $5, 0, $6, $6, $7)",
        )
        .bind(channel)
        .bind(KIND_CONFIRMATION)
        .bind(subscriber_id)
        .bind(address)
        .bind(DeliveryState::Pending.as_str())
        .bind(to_micros(now))
        .bind(DeliveryKind::Confirmation.priority())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Queues the update about `load` on `channel` for each subscriber, at the address
    /// they have now, due at `due`.
    pub async fn queue_updates(
        &mut self,
        channel: &str,
        load: LoadId,
        subscriber_ids: &[i64],
        due: SystemTime,
    ) -> Result<(), StoreError> {
        let statement = format!(
            "INSERT INTO deliveries (channel, kind, load_id, subscriber_id, email, state, attempts, \
             next_attempt_at_us, created_at_us, priority) \
             SELECT $1, $2, $3, s.id, s.email, $4, 0, $5, $5, $7 FROM subscribers s \
             WHERE s.id IN (SELECT CAST(value AS BIGINT) FROM {}) ORDER BY s.id",
            self.backend.json_text_elements(6)
        );
        for chunk in subscriber_ids.chunks(QUEUE_CHUNK) {
            sqlx::query(&statement)
                .bind(channel)
                .bind(KIND_UPDATE)
                .bind(load)
                .bind(DeliveryState::Pending.as_str())
                .bind(to_micros(due))
                .bind(encode_json(&chunk)?)
                .bind(DeliveryKind::Update(load).priority())
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Records that `load` notified `recipients` deliveries.
    pub async fn insert_notification(
        &mut self,
        load: LoadId,
        recipients: u64,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notifications (load_id, created_at_us, recipients) VALUES ($1, $2, $3)",
        )
        .bind(load)
        .bind(to_micros(now))
        .bind(i64::try_from(recipients).unwrap_or(i64::MAX))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The subscriber a delivery went to and the address it went to.
    pub async fn delivery_recipient(
        &mut self,
        delivery: i64,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let recipient = sqlx::query_as("SELECT subscriber_id, email FROM deliveries WHERE id = $1")
            .bind(delivery)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(recipient)
    }

    /// Marks a delivery failed after the fact (a bounce or a complaint that came later).
    pub async fn fail_delivery(&mut self, delivery: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE deliveries SET state = $1, last_error = $2 WHERE id = $3")
            .bind(DeliveryState::Failed.as_str())
            .bind(reason)
            .bind(delivery)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records deliveries as sent, each at its own moment and if its claim still holds
    /// it, in one statement; returns the ids it recorded.
    pub async fn record_sent(
        &mut self,
        sent: &[(i64, ClaimToken, SystemTime)],
    ) -> Result<Vec<i64>, StoreError> {
        if sent.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<[i64; 3]> = sent
            .iter()
            .map(|(id, claim, at)| [*id, claim.0, to_micros(*at)])
            .collect();
        let ids = sqlx::query_scalar(&format!(
            "UPDATE deliveries SET state = $1, sent_at_us = sent.at_us, last_error = NULL \
             FROM (SELECT CAST(value ->> 0 AS BIGINT) AS id, CAST(value ->> 1 AS BIGINT) AS claim, \
                     CAST(value ->> 2 AS BIGINT) AS at_us FROM {}) AS sent \
             WHERE deliveries.id = sent.id AND deliveries.claim_token = sent.claim \
               AND deliveries.state = $2 \
             RETURNING deliveries.id",
            self.backend.json_elements(3)
        ))
        .bind(DeliveryState::Sent.as_str())
        .bind(DeliveryState::Sending.as_str())
        .bind(encode_json(&rows)?)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(ids)
    }

    /// Writes one result into its delivery if `claim` still holds it; returns whether it did.
    pub async fn record_delivery(
        &mut self,
        claim: ClaimToken,
        result: &DeliveryResult,
    ) -> Result<bool, StoreError> {
        let set = match result {
            DeliveryResult::Sent { .. } => "sent_at_us = $5, last_error = NULL",
            // Handed back unsent: due again when it says, and the attempt not counted.
            DeliveryResult::Released { .. } => {
                "next_attempt_at_us = $5, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
            }
            DeliveryResult::Skipped { .. } | DeliveryResult::Failed { .. } => "last_error = $5",
            DeliveryResult::Retry { .. } => "last_error = $5, next_attempt_at_us = $6",
        };
        let statement = format!(
            "UPDATE deliveries SET state = $4, {set} WHERE id = $1 AND claim_token = $2 AND state = $3"
        );
        let query = sqlx::query(&statement)
            .bind(result.id())
            .bind(claim.0)
            .bind(DeliveryState::Sending.as_str())
            .bind(result.state().as_str());
        let query = match result {
            DeliveryResult::Sent { at, .. } => query.bind(to_micros(*at)),
            DeliveryResult::Released { due, .. } => query.bind(to_micros(*due)),
            DeliveryResult::Skipped { reason: error, .. }
            | DeliveryResult::Failed { error, .. } => query.bind(error.as_str()),
            DeliveryResult::Retry {
                next_attempt_at,
                error,
                ..
            } => query.bind(error.as_str()).bind(to_micros(*next_attempt_at)),
        };
        let affected = query.execute(&mut *self.tx).await?.rows_affected();
        Ok(affected > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unfinished_states_in_sql_are_the_domain_s() {
        let listed: Vec<&str> = DeliveryState::all()
            .filter(|state| state.is_unfinished())
            .map(DeliveryState::as_str)
            .collect();
        let spelled = format!("('{}')", listed.join("', '"));
        assert_eq!(UNFINISHED, spelled);
    }
}
