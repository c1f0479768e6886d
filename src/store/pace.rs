//! What the send-rate limit and the sending quota share between processes: the next
//! free send slot of a channel, and how much it sent lately.

use std::time::{Duration, SystemTime};

use super::{Store, StoreError, from_micros, to_micros};

impl Store {
    /// Reserves `count` send slots `interval` apart on `channel`, after every slot any
    /// process reserved before and not before `now`; returns the first.
    pub async fn reserve_send_slots(
        &self,
        channel: &str,
        now: SystemTime,
        interval: Duration,
        count: u32,
    ) -> Result<SystemTime, StoreError> {
        let span = i64::try_from(interval.as_micros() * u128::from(count)).unwrap_or(i64::MAX);
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO send_pace (channel, next_slot_us) VALUES ($1, $2 + $3) \
             ON CONFLICT (channel) DO UPDATE SET next_slot_us = \
               CASE WHEN send_pace.next_slot_us > $2 THEN send_pace.next_slot_us ELSE $2 END + $3 \
             RETURNING next_slot_us",
        )
        .bind(channel)
        .bind(to_micros(now))
        .bind(span)
        .fetch_one(&self.pool)
        .await?;
        Ok(from_micros(next.saturating_sub(span)))
    }

    /// How many messages `channel` sent after `since`, and when the first of them went.
    pub async fn sent_since(
        &self,
        channel: &str,
        since: SystemTime,
    ) -> Result<(u64, Option<SystemTime>), StoreError> {
        let (count, first): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(sent_at_us) FROM deliveries \
             WHERE sent_at_us IS NOT NULL AND sent_at_us > $1 AND channel = $2",
        )
        .bind(to_micros(since))
        .bind(channel)
        .fetch_one(&self.pool)
        .await?;
        Ok((u64::try_from(count).unwrap_or(0), first.map(from_micros)))
    }
}
