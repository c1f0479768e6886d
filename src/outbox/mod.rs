//! The outbox worker: delivers what the outbox holds through its channels. Lanes claim
//! due deliveries in batches, have the channel prepare them, hand them to a sender per
//! channel, and record the results every `delivery.max_unrecorded` emails and at the end
//! of the batch. Transient failures are retried as the [`RetryPolicy`] says; a refusal for good
//! fails the row and, when the channel says so, suppresses the subscriber. A stopped
//! worker hands back what it had not sent; a crashed one loses its claims only until
//! their lease ends. A process claims only updates about loads its snapshot already has,
//! so no replica spends an attempt on a load it has not read yet.

mod channel;
mod group_commit;
mod progress;
mod storage;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    catalog::SharedSnapshot,
    domain::LoadId,
    domain::delivery::{ClaimToken, ClaimedDelivery, DeliveryKind, DeliveryResult, RetryPolicy},
    settings::DeliverySettings,
    store::StoreError,
};

pub use channel::{Channel, ChannelSender, Readiness, SendFailure, SendOutcome};
use group_commit::GroupCommit;
pub use storage::{ClaimResults, OutboxStore};

/// The channel confirmation emails go through.
pub const EMAIL_CHANNEL: &str = "email";

/// The time the worker works by: the wall clock, or for [`OutboxWorker::drain_at`], a
/// fixed moment, so that a test can let retries fall due without waiting for them.
#[derive(Clone, Copy, Debug)]
enum Clock {
    Wall,
    At(SystemTime),
}

impl Clock {
    fn now(self) -> SystemTime {
        match self {
            Clock::Wall => SystemTime::now(),
            Clock::At(moment) => moment,
        }
    }
}

/// Wakes the worker's idle lanes: something became due.
#[derive(Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_waiters();
    }
}

/// How long a lane waits before retrying to record a result the store refused, at
/// first and at most.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(50);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct OutboxWorker {
    store: Arc<dyn OutboxStore>,
    snapshot: SharedSnapshot,
    channels: Vec<Arc<dyn Channel>>,
    settings: DeliverySettings,
    retry: RetryPolicy,
    wakeup: Wakeup,
    results: GroupCommit,
    progress: Mutex<HashMap<LoadId, progress::FanOutProgress>>,
}

/// What one round of work did, for callers that drive the worker step by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionOutcome {
    /// Nothing was due.
    Idle,
    /// This many deliveries were claimed and dealt with.
    Processed(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no randomness for a claim token: {0}")]
    Randomness(getrandom::Error),
}

/// One claim of deliveries: its token, and the channel each delivery goes through (for
/// the counts of what was recorded).
struct Claim {
    token: ClaimToken,
    channels: HashMap<i64, &'static str>,
}

/// What a lane's claim still holds, as of its last renewal.
struct HeldClaim {
    until: SystemTime,
    ids: HashSet<i64>,
}

impl HeldClaim {
    fn holds(&self, id: i64, now: SystemTime) -> bool {
        now < self.until && self.ids.contains(&id)
    }
}

impl OutboxWorker {
    pub fn new(
        store: Arc<dyn OutboxStore>,
        snapshot: SharedSnapshot,
        channels: Vec<Arc<dyn Channel>>,
        settings: DeliverySettings,
        wakeup: Wakeup,
    ) -> Self {
        let retry = RetryPolicy {
            max_attempts: settings.max_attempts,
            base: settings.retry_base.0,
            max: settings.retry_max.0,
        };
        OutboxWorker {
            store,
            snapshot,
            channels,
            settings,
            retry,
            wakeup,
            results: GroupCommit::default(),
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// Works the outbox until nothing is due: for tests and tools that drive it step by
    /// step. Returns how many deliveries it dealt with.
    pub async fn drain(&self) -> Result<usize, OutboxError> {
        self.drain_with(Clock::Wall).await
    }

    /// As [`OutboxWorker::drain`], as if it were `moment` (not before now): what falls
    /// due by then is sent, and retries are scheduled from then.
    pub async fn drain_at(&self, moment: SystemTime) -> Result<usize, OutboxError> {
        self.drain_with(Clock::At(moment.max(SystemTime::now())))
            .await
    }

    async fn drain_with(&self, clock: Clock) -> Result<usize, OutboxError> {
        let running = CancellationToken::new();
        let mut total = 0;
        while let ExecutionOutcome::Processed(count) = self.run_once_with(&running, clock).await? {
            total += count;
        }
        Ok(total)
    }

    /// Runs `delivery.concurrency` lanes until `shutdown`; each finishes its current
    /// email, records what it did and hands back the rest.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut lanes = JoinSet::new();
        for _ in 0..self.settings.concurrency {
            let worker = self.clone();
            let shutdown = shutdown.clone();
            lanes.spawn(async move { worker.lane(shutdown).await });
        }
        while lanes.join_next().await.is_some() {}
    }

    async fn lane(&self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            // Registered before looking, so a wake-up between the two is not lost.
            let woken = self.wakeup.0.notified();
            match self.run_once(&shutdown).await {
                Ok(ExecutionOutcome::Processed(_)) => continue,
                Ok(ExecutionOutcome::Idle) => self.finish_progress().await,
                Err(err) => tracing::error!(error = %err, "cannot work the delivery outbox"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = woken => {}
                _ = tokio::time::sleep(self.settings.poll_interval.0) => {}
            }
        }
    }

    /// Claims one batch of due deliveries and deals with all of it, renewing the claim's
    /// lease while it works. Results are recorded at least every `max_unrecorded`
    /// emails and before the lane claims again, so a crash repeats at most that many.
    pub async fn run_once(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<ExecutionOutcome, OutboxError> {
        self.run_once_with(shutdown, Clock::Wall).await
    }

    async fn run_once_with(
        &self,
        shutdown: &CancellationToken,
        clock: Clock,
    ) -> Result<ExecutionOutcome, OutboxError> {
        let claim = ClaimToken::generate().map_err(OutboxError::Randomness)?;
        let now = clock.now();
        let lease = self.settings.lease.0;
        let known_load = self.snapshot.load().head();
        let channels: Vec<&str> = self.channels.iter().map(|channel| channel.name()).collect();
        let claimed = self
            .store
            .claim_deliveries(
                claim,
                now,
                now + lease,
                self.claim_size(),
                known_load,
                &channels,
            )
            .await?;
        if claimed.is_empty() {
            return Ok(ExecutionOutcome::Idle);
        }
        let count = claimed.len();
        let claim = Claim {
            token: claim,
            channels: claimed
                .iter()
                .map(|delivery| {
                    let channel = self
                        .channel(&delivery.channel)
                        .map_or("unknown", |c| c.name());
                    (delivery.id, channel)
                })
                .collect(),
        };
        let held = Mutex::new(HeldClaim {
            until: now + lease,
            ids: claimed.iter().map(|delivery| delivery.id).collect(),
        });
        let finished = CancellationToken::new();
        let (worked, ()) = tokio::join!(
            async {
                let worked = self
                    .work_claim(&claim, claimed, &held, shutdown, clock)
                    .instrument(tracing::info_span!("deliveries", claimed = count))
                    .await;
                finished.cancel();
                worked
            },
            self.keep_lease(claim.token, &held, &finished, clock),
        );
        worked?;
        Ok(ExecutionOutcome::Processed(count))
    }

    /// Renews the claim's lease every third of it until `finished`, and keeps `held` to
    /// what the store says the claim still holds.
    async fn keep_lease(
        &self,
        claim: ClaimToken,
        held: &Mutex<HeldClaim>,
        finished: &CancellationToken,
        clock: Clock,
    ) {
        let lease = self.settings.lease.0;
        loop {
            tokio::select! {
                _ = finished.cancelled() => return,
                _ = tokio::time::sleep(lease / 3) => {}
            }
            // Taken before the statement, so `held` never claims more than the store gave.
            let until = clock.now() + lease;
            let ids: Vec<i64> = held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ids
                .iter()
                .copied()
                .collect();
            match self.store.renew_claim(claim, &ids, until).await {
                Ok(ids) => {
                    *held.lock().unwrap_or_else(|p| p.into_inner()) = HeldClaim {
                        until,
                        ids: ids.into_iter().collect(),
                    }
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    "cannot renew the lease of claimed deliveries; sending stops when it ends"
                ),
            }
        }
    }

    async fn work_claim(
        &self,
        claim: &Claim,
        claimed: Vec<ClaimedDelivery>,
        held: &Mutex<HeldClaim>,
        shutdown: &CancellationToken,
        clock: Clock,
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = claimed.iter().map(|delivery| delivery.id).collect();
        let now = clock.now();
        let prepared = match self.prepare(claimed, now).await {
            Ok(prepared) => prepared,
            Err(err) => {
                self.release(claim, &ids, clock).await;
                return Err(err);
            }
        };
        let mut decided = Vec::new();
        let mut to_send = Vec::new();
        for (delivery, readiness) in prepared {
            match readiness {
                Readiness::Ready(message) => to_send.push((delivery, message)),
                Readiness::Skip(reason) => decided.push(DeliveryResult::Skipped {
                    id: delivery.id,
                    reason,
                }),
                Readiness::Failed(failure) => {
                    decided.push(self.after_failure(&delivery, failure, now))
                }
            }
        }
        self.record(claim, &decided, shutdown, clock).await?;
        let mut loads_touched = Vec::new();
        // Results of emails sent and not yet recorded: up to `max_unrecorded`, then one
        // commit records them all.
        let window = self.unrecorded_window();
        let mut unrecorded = Vec::with_capacity(window);
        let mut senders: Vec<(&str, Box<dyn ChannelSender + '_>)> = Vec::new();
        let mut unsent = Vec::new();
        let mut to_send = to_send.into_iter();
        for (delivery, message) in to_send.by_ref() {
            let still_held = held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .holds(delivery.id, clock.now());
            if shutdown.is_cancelled() || !still_held {
                if !still_held {
                    tracing::warn!(
                        delivery = delivery.id,
                        "the claim on these deliveries lapsed; leaving them to the next claim"
                    );
                }
                unsent.push(delivery.id);
                unsent.extend(to_send.map(|(delivery, _)| delivery.id));
                break;
            }
            if let DeliveryKind::Update(load) = delivery.kind
                && !loads_touched.contains(&load)
            {
                loads_touched.push(load);
            }
            let outcomes = match self.channel(&delivery.channel) {
                Some(channel) => {
                    let at = match senders.iter().position(|(name, _)| *name == channel.name()) {
                        Some(at) => at,
                        None => {
                            senders.push((channel.name(), channel.sender()));
                            senders.len() - 1
                        }
                    };
                    let span = tracing::info_span!(
                        "delivery",
                        delivery = delivery.id,
                        channel = %delivery.channel
                    );
                    senders[at].1.send(delivery, message).instrument(span).await
                }
                None => {
                    let reason = format!("no channel `{}` here", delivery.channel);
                    vec![(delivery, Err(SendFailure::Transient(reason)))]
                }
            };
            unrecorded.extend(self.results_of(outcomes, clock));
            if unrecorded.len() >= window {
                self.record(claim, &unrecorded, shutdown, clock).await?;
                unrecorded.clear();
            }
        }
        // What a sender held back goes out now, even when stopping: it was handed over
        // while the claim held it.
        for (_, sender) in &mut senders {
            let outcomes = sender.finish().await;
            unrecorded.extend(self.results_of(outcomes, clock));
        }
        drop(senders);
        self.record(claim, &unrecorded, shutdown, clock).await?;
        if !unsent.is_empty() {
            self.release(claim, &unsent, clock).await;
        }
        for load in loads_touched {
            self.log_progress(load).await;
        }
        Ok(())
    }

    /// What the lane records of messages' outcomes.
    fn results_of(&self, outcomes: Vec<SendOutcome>, clock: Clock) -> Vec<DeliveryResult> {
        outcomes
            .into_iter()
            .map(|(delivery, outcome)| match outcome {
                Ok(()) => DeliveryResult::Sent {
                    id: delivery.id,
                    at: clock.now(),
                },
                Err(failure) => self.after_failure(&delivery, failure, clock.now()),
            })
            .collect()
    }

    /// Results a lane may hold unrecorded: `delivery.max_unrecorded`, or one at a time
    /// under a pace (see [`DeliverySettings::is_paced`]).
    fn unrecorded_window(&self) -> usize {
        if self.settings.is_paced() {
            return 1;
        }
        self.settings.max_unrecorded as usize
    }

    /// Deliveries claimed at a time: a batch, or under a send-rate limit about a second
    /// of each lane's share of it, so that a confirmation queued meanwhile is not stuck
    /// behind a long paced batch.
    fn claim_size(&self) -> u32 {
        let DeliverySettings {
            batch_size,
            max_rate,
            concurrency,
            ..
        } = self.settings;
        if max_rate == 0 {
            return batch_size;
        }
        batch_size.min(max_rate.div_ceil(concurrency))
    }

    /// The channel of this name, if this process has it.
    fn channel(&self, name: &str) -> Option<&Arc<dyn Channel>> {
        self.channels.iter().find(|channel| channel.name() == name)
    }

    /// Each delivery with what its channel made ready, a batch per channel.
    async fn prepare(
        &self,
        claimed: Vec<ClaimedDelivery>,
        now: SystemTime,
    ) -> Result<Vec<(ClaimedDelivery, Readiness)>, StoreError> {
        let mut batches: Vec<(&str, Vec<ClaimedDelivery>)> = Vec::new();
        for delivery in claimed {
            match batches
                .iter_mut()
                .find(|(name, _)| *name == delivery.channel)
            {
                Some((_, batch)) => batch.push(delivery),
                None => {
                    let name = self.channel(&delivery.channel).map_or("", |c| c.name());
                    batches.push((name, vec![delivery]));
                }
            }
        }
        let mut prepared = Vec::new();
        for (name, batch) in batches {
            // Claims ask only for this process's channels; a channel that answers for
            // fewer deliveries than it was given leaves the rest to be tried again.
            let mut readiness = match self.channel(name) {
                Some(channel) => channel.prepare(&batch, now).await?.into_iter(),
                None => Vec::new().into_iter(),
            };
            for delivery in batch {
                let ready = readiness.next().unwrap_or_else(|| {
                    Readiness::Failed(SendFailure::Transient(format!(
                        "channel `{}` did not prepare it",
                        delivery.channel
                    )))
                });
                prepared.push((delivery, ready));
            }
        }
        Ok(prepared)
    }

    /// Records results, retrying until the store takes them: a sent email whose result
    /// is lost would be sent again once the lease ends. Gives up only when stopping.
    async fn record(
        &self,
        claim: &Claim,
        results: &[DeliveryResult],
        shutdown: &CancellationToken,
        clock: Clock,
    ) -> Result<(), StoreError> {
        let mut pause = RECORD_RETRY_FIRST;
        loop {
            match self.try_record(claim, results, clock.now()).await {
                Ok(recorded) => {
                    if recorded < results.len() {
                        tracing::warn!(
                            results = results.len(),
                            recorded,
                            "another worker holds some of these deliveries now; their results were dropped"
                        );
                    }
                    return Ok(());
                }
                Err(err) if shutdown.is_cancelled() => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?pause, "cannot record delivery results; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RECORD_RETRY_MAX);
                }
            }
        }
    }

    /// Records results the claim still holds, with other lanes' (see [`GroupCommit`]);
    /// returns how many it recorded.
    async fn try_record(
        &self,
        claim: &Claim,
        results: &[DeliveryResult],
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        self.results
            .record(
                self.store.as_ref(),
                claim.token,
                &claim.channels,
                results,
                now,
            )
            .await
    }

    /// Hands unsent deliveries back, due at once, without counting the attempt. Only
    /// tried once: if it fails, the rows come back when the lease ends.
    async fn release(&self, claim: &Claim, ids: &[i64], clock: Clock) {
        let released: Vec<DeliveryResult> = ids
            .iter()
            .map(|&id| DeliveryResult::Released {
                id,
                due: clock.now(),
            })
            .collect();
        if let Err(err) = self.try_record(claim, &released, clock.now()).await {
            tracing::warn!(error = %err, deliveries = ids.len(), "cannot hand back claimed deliveries; they come back when their lease ends");
        }
    }

    /// What a failed attempt leads to: a retry as the policy says, or giving up; a
    /// refusal for good gives up at once.
    fn after_failure(
        &self,
        delivery: &ClaimedDelivery,
        failure: SendFailure,
        now: SystemTime,
    ) -> DeliveryResult {
        let load = match delivery.kind {
            DeliveryKind::Update(load) => Some(load),
            DeliveryKind::Confirmation => None,
        };
        let error = failure.to_string();
        let retry_at = match failure {
            SendFailure::Refused { suppress, .. } => {
                tracing::warn!(
                    delivery = delivery.id, load, recipient = %delivery.recipient, channel = %delivery.channel,
                    %error, suppress, "a delivery was refused for good"
                );
                return DeliveryResult::Failed {
                    id: delivery.id,
                    error,
                    bounced: delivery.subscriber_id().filter(|_| suppress),
                };
            }
            SendFailure::Deferred { until, .. } => {
                tracing::debug!(delivery = delivery.id, load, %error, "a delivery waits for the sending quota");
                return DeliveryResult::Released {
                    id: delivery.id,
                    due: until,
                };
            }
            SendFailure::Transient(_) => self.retry.next_attempt(delivery.attempts, now),
        };
        let Some(next_attempt_at) = retry_at else {
            tracing::warn!(
                delivery = delivery.id, load, recipient = %delivery.recipient, attempts = delivery.attempts,
                %error, "giving up on a delivery"
            );
            return DeliveryResult::Failed {
                id: delivery.id,
                error,
                bounced: None,
            };
        };
        tracing::warn!(
            delivery = delivery.id,
            load,
            recipient = %delivery.recipient,
            attempt = delivery.attempts,
            retry_in = ?next_attempt_at.duration_since(now).unwrap_or_default(),
            %error,
            "a delivery failed; it will be retried"
        );
        DeliveryResult::Retry {
            id: delivery.id,
            next_attempt_at,
            error,
        }
    }
}
