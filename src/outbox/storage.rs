//! The outbox's storage seam: the few statements the worker needs — claim due
//! deliveries, renew a claim, read a fan-out's report — and the one transaction that
//! records what its lanes did. The store implements it for real; the worker's unit tests
//! implement it in memory, so claiming, sending, recording, lost claims and retries are
//! tested without a database.

use std::{collections::HashMap, time::SystemTime};

use async_trait::async_trait;

use crate::{
    domain::{
        LoadId,
        delivery::{ClaimToken, ClaimedDelivery, DeliveryReport, DeliveryResult, DeliveryState},
    },
    store::{Store, StoreError},
    telemetry,
};

/// One claim's results, to be recorded where the claim still holds the rows.
pub struct ClaimResults<'a> {
    pub claim: ClaimToken,
    /// The channel of each delivery, by id: what the counts are labelled with.
    pub channels: &'a HashMap<i64, &'static str>,
    pub results: &'a [DeliveryResult],
    pub now: SystemTime,
}

#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` due deliveries until `lease_until` under `claim`, counting an
    /// attempt each, on the named channels only, highest priority first. Updates about
    /// loads after `known_load` are left for a process that has read them.
    async fn claim_deliveries(
        &self,
        claim: ClaimToken,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
        known_load: LoadId,
        channels: &[&str],
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Extends the lease of those of `ids` that `claim` still holds; returns their ids.
    async fn renew_claim(
        &self,
        claim: ClaimToken,
        ids: &[i64],
        lease_until: SystemTime,
    ) -> Result<Vec<i64>, StoreError>;

    /// Records every claim's results in one transaction, each only where its claim still
    /// holds the row (a released one due again without its attempt counted), and
    /// suppresses the subscribers of failures that say so; how many of each were recorded.
    async fn record_results(&self, claims: &[ClaimResults<'_>]) -> Result<Vec<usize>, StoreError>;

    /// Whether writers wait for one another, so that lanes gain by committing together.
    fn writers_take_turns(&self) -> bool;

    /// A load's update deliveries, counted; `None` when it notified nobody.
    async fn delivery_report(&self, load: LoadId) -> Result<Option<DeliveryReport>, StoreError>;
}

#[async_trait]
impl OutboxStore for Store {
    async fn claim_deliveries(
        &self,
        claim: ClaimToken,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
        known_load: LoadId,
        channels: &[&str],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        Store::claim_deliveries(self, claim, now, lease_until, limit, known_load, channels).await
    }

    async fn renew_claim(
        &self,
        claim: ClaimToken,
        ids: &[i64],
        lease_until: SystemTime,
    ) -> Result<Vec<i64>, StoreError> {
        Store::renew_claim(self, claim, ids, lease_until).await
    }

    async fn record_results(&self, claims: &[ClaimResults<'_>]) -> Result<Vec<usize>, StoreError> {
        commit(self, claims).await
    }

    fn writers_take_turns(&self) -> bool {
        Store::writers_take_turns(self)
    }

    async fn delivery_report(&self, load: LoadId) -> Result<Option<DeliveryReport>, StoreError> {
        Store::delivery_report(self, load).await
    }
}

/// Every job's results in one transaction; how many of each job's were recorded. The
/// emails sent, most of any batch, are recorded in one statement.
async fn commit(store: &Store, jobs: &[ClaimResults<'_>]) -> Result<Vec<usize>, StoreError> {
    let mut tx = store.begin().await?;
    let mut counts = vec![0; jobs.len()];
    let mut outcomes = Outcomes::default();
    let mut sent = Vec::new();
    let mut sent_by = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        for result in job.results {
            if let DeliveryResult::Sent { id, at } = result {
                sent.push((*id, job.claim, *at));
                sent_by.insert(*id, index);
                continue;
            }
            if !tx.record_delivery(job.claim, result).await? {
                continue;
            }
            counts[index] += 1;
            outcomes.recorded(channel_of(job, result.id()), result.state());
            if let DeliveryResult::Failed {
                bounced: Some(subscriber_id),
                ..
            } = result
                && let Some(state) = tx.subscriber_state(*subscriber_id).await?
            {
                tx.move_subscriber(*subscriber_id, state.on_bounce(), job.now)
                    .await?;
                outcomes.suppressed += 1;
            }
        }
    }
    for id in tx.record_sent(&sent).await? {
        if let Some(&index) = sent_by.get(&id) {
            counts[index] += 1;
            outcomes.recorded(channel_of(&jobs[index], id), DeliveryState::Sent);
        }
    }
    tx.commit().await?;
    outcomes.publish();
    Ok(counts)
}

/// The channel a claim's delivery went through.
fn channel_of(job: &ClaimResults<'_>, id: i64) -> &'static str {
    job.channels.get(&id).copied().unwrap_or("unknown")
}

/// What one commit recorded, by channel and outcome, counted once it is committed.
#[derive(Default)]
struct Outcomes {
    recorded: HashMap<(&'static str, &'static str), u64>,
    suppressed: u64,
}

impl Outcomes {
    fn recorded(&mut self, channel: &'static str, state: DeliveryState) {
        let outcome = match state {
            DeliveryState::Sent => "sent",
            DeliveryState::Retrying => "retried",
            DeliveryState::Failed => "failed",
            DeliveryState::Skipped => "skipped",
            // Handed back unsent: not an outcome.
            DeliveryState::Pending | DeliveryState::Sending => return,
        };
        *self.recorded.entry((channel, outcome)).or_default() += 1;
    }

    fn publish(&self) {
        for (&(channel, outcome), &count) in &self.recorded {
            metrics::counter!(telemetry::EMAILS, "channel" => channel, "outcome" => outcome)
                .increment(count);
        }
        if self.suppressed > 0 {
            metrics::counter!(telemetry::SUPPRESSIONS, "reason" => "bounced")
                .increment(self.suppressed);
        }
    }
}
