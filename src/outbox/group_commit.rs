//! Delivery results from every lane recorded together. A lane hands over its results
//! every `delivery.max_unrecorded` emails and waits until they are committed, so a crash
//! repeats at most that many per lane; whichever lane commits takes every result queued
//! meanwhile into the same transaction, so a fan-out pays one commit for many emails.
//! That is for SQLite, where writers take turns anyway; PostgreSQL commits the lanes'
//! separate transactions side by side, and each lane commits its own there.

use std::{collections::HashMap, sync::Mutex, time::SystemTime};

use tokio::sync::oneshot;

use crate::{
    domain::subscribers::{ClaimToken, DeliveryResult, DeliveryState},
    store::{Store, StoreError},
    telemetry,
};

/// One lane's results.
struct Results<'a> {
    claim: ClaimToken,
    results: &'a [DeliveryResult],
    now: SystemTime,
}

struct Job {
    claim: ClaimToken,
    results: Vec<DeliveryResult>,
    now: SystemTime,
    done: oneshot::Sender<Result<usize, String>>,
}

impl Job {
    fn results(&self) -> Results<'_> {
        Results {
            claim: self.claim,
            results: &self.results,
            now: self.now,
        }
    }
}

#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Mutex<Vec<Job>>,
    committing: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Records results the claim still holds, with whatever other lanes queued
    /// meanwhile, and suppresses the subscribers of refusals that say so; returns how
    /// many of these results were recorded.
    pub async fn record(
        &self,
        store: &Store,
        claim: ClaimToken,
        results: &[DeliveryResult],
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        if !store.writers_take_turns() {
            let own = Results {
                claim,
                results,
                now,
            };
            return Ok(commit(store, &[own]).await?[0]);
        }
        let (done, mut outcome) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Job {
                claim,
                results: results.to_vec(),
                now,
                done,
            });
        let turn = self.committing.lock().await;
        match outcome.try_recv() {
            // Another lane committed it while this one waited its turn.
            Ok(result) => return result.map_err(StoreError::Batch),
            Err(oneshot::error::TryRecvError::Closed) => {
                return Err(StoreError::Batch(
                    "the lane recording this result stopped first".into(),
                ));
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let jobs = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        let batches: Vec<Results<'_>> = jobs.iter().map(Job::results).collect();
        let committed = commit(store, &batches).await;
        drop(batches);
        match committed {
            Ok(counts) => {
                for (job, count) in jobs.into_iter().zip(counts) {
                    let _ = job.done.send(Ok(count));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for job in jobs {
                    let _ = job.done.send(Err(message.clone()));
                }
            }
        }
        drop(turn);
        outcome
            .await
            .unwrap_or_else(|_| Err("the result was dropped".into()))
            .map_err(StoreError::Batch)
    }
}

/// Every job's results in one transaction; how many of each job's were recorded. The
/// emails sent, most of any batch, are recorded in one statement.
async fn commit(store: &Store, jobs: &[Results<'_>]) -> Result<Vec<usize>, StoreError> {
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
            outcomes.recorded(result.state());
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
            outcomes.sent += 1;
        }
    }
    tx.commit().await?;
    outcomes.publish();
    Ok(counts)
}

/// What one commit recorded, counted once it is committed.
#[derive(Default)]
struct Outcomes {
    sent: u64,
    retried: u64,
    failed: u64,
    skipped: u64,
    suppressed: u64,
}

impl Outcomes {
    fn recorded(&mut self, state: DeliveryState) {
        match state {
            DeliveryState::Sent => self.sent += 1,
            DeliveryState::Retrying => self.retried += 1,
            DeliveryState::Failed => self.failed += 1,
            DeliveryState::Skipped => self.skipped += 1,
            // Handed back unsent: not an outcome.
            DeliveryState::Pending | DeliveryState::Sending => {}
        }
    }

    fn publish(&self) {
        for (outcome, count) in [
            ("sent", self.sent),
            ("retried", self.retried),
            ("failed", self.failed),
            ("skipped", self.skipped),
        ] {
            if count > 0 {
                metrics::counter!(telemetry::EMAILS, "outcome" => outcome).increment(count);
            }
        }
        if self.suppressed > 0 {
            metrics::counter!(telemetry::SUPPRESSIONS, "reason" => "bounced")
                .increment(self.suppressed);
        }
    }
}
