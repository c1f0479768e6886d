//! Delivery results from every lane recorded together. A lane hands over its results
//! every `delivery.max_unrecorded` emails and waits until they are committed, so a crash
//! repeats at most that many per lane; whichever lane commits takes every result queued
//! meanwhile into the same transaction, so a fan-out pays one commit for many emails.
//! That is for SQLite, where writers take turns anyway; PostgreSQL commits the lanes'
//! separate transactions side by side, and each lane commits its own there.

use std::{collections::HashMap, sync::Mutex, time::SystemTime};

use tokio::sync::oneshot;

use super::storage::{ClaimResults, OutboxStore};
use crate::{
    domain::delivery::{ClaimToken, DeliveryResult},
    store::StoreError,
};

struct Job {
    claim: ClaimToken,
    channels: HashMap<i64, &'static str>,
    results: Vec<DeliveryResult>,
    now: SystemTime,
    done: oneshot::Sender<Result<usize, String>>,
}

impl Job {
    fn results(&self) -> ClaimResults<'_> {
        ClaimResults {
            claim: self.claim,
            channels: &self.channels,
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
        store: &dyn OutboxStore,
        claim: ClaimToken,
        channels: &HashMap<i64, &'static str>,
        results: &[DeliveryResult],
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        if !store.writers_take_turns() {
            let own = ClaimResults {
                claim,
                channels,
                results,
                now,
            };
            return Ok(store.record_results(&[own]).await?[0]);
        }
        let (done, mut outcome) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Job {
                claim,
                channels: results
                    .iter()
                    .filter_map(|result| Some((result.id(), *channels.get(&result.id())?)))
                    .collect(),
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
        let batches: Vec<ClaimResults<'_>> = jobs.iter().map(Job::results).collect();
        let committed = store.record_results(&batches).await;
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
