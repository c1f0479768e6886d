//! The outbox worker without a database: [`MemoryOutbox`] keeps delivery rows the way the
//! store's statements do (a claim counts an attempt and leases the row; results land only
//! where their claim still holds it; a release hands the attempt back), and
//! [`ScriptedChannel`] answers each send as the test says. The worker is driven step by
//! step with `drain_at`, on a paused tokio clock where a lease must run.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use super::*;
use crate::{
    catalog::{ReadSnapshot, SnapshotCell},
    domain::{
        delivery::{DeliveryReport, DeliveryState, Recipient},
        subscribers::SubscriberState,
    },
    settings::{Settings, TextDuration},
    store::StoreContents,
};

const CHANNEL: &str = "scripted";
const RETRY_BASE: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(60);

/// One delivery row as the store keeps it.
#[derive(Clone, Debug)]
struct Row {
    id: i64,
    subscriber_id: i64,
    state: DeliveryState,
    attempts: u32,
    /// When it is due; while claimed, when the claim's lease ends.
    due: SystemTime,
    claim: Option<ClaimToken>,
}

/// The outbox's rows in memory, with every result recorded into them.
#[derive(Default)]
struct MemoryOutbox {
    rows: Mutex<Vec<Row>>,
    recorded: Mutex<Vec<DeliveryResult>>,
}

impl MemoryOutbox {
    fn with_deliveries(count: i64, due: SystemTime) -> Arc<Self> {
        let rows = (1..=count)
            .map(|id| Row {
                id,
                subscriber_id: 100 + id,
                state: DeliveryState::Pending,
                attempts: 0,
                due,
                claim: None,
            })
            .collect();
        Arc::new(MemoryOutbox {
            rows: Mutex::new(rows),
            recorded: Mutex::default(),
        })
    }

    fn row(&self, id: i64) -> Row {
        self.rows
            .lock()
            .unwrap()
            .iter()
            .find(|row| row.id == id)
            .cloned()
            .unwrap()
    }

    fn recorded(&self) -> Vec<DeliveryResult> {
        self.recorded.lock().unwrap().clone()
    }

    /// Another worker claims `ids`, as after this one's lease ended unrenewed.
    fn claim_elsewhere(&self, ids: &[i64], until: SystemTime) {
        for row in self.rows.lock().unwrap().iter_mut() {
            if ids.contains(&row.id) {
                row.claim = Some(ClaimToken(-1));
                row.attempts += 1;
                row.due = until;
            }
        }
    }
}

#[async_trait]
impl OutboxStore for MemoryOutbox {
    async fn claim_deliveries(
        &self,
        claim: ClaimToken,
        now: SystemTime,
        lease_until: SystemTime,
        limit: u32,
        _known_load: LoadId,
        channels: &[&str],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        assert_eq!(channels, [CHANNEL]);
        let mut claimed = Vec::new();
        for row in self.rows.lock().unwrap().iter_mut() {
            if claimed.len() == limit as usize || !row.state.is_unfinished() || row.due > now {
                continue;
            }
            row.state = DeliveryState::Sending;
            row.attempts += 1;
            row.due = lease_until;
            row.claim = Some(claim);
            claimed.push(ClaimedDelivery {
                id: row.id,
                channel: CHANNEL.into(),
                kind: DeliveryKind::Update(0),
                recipient: Recipient::Subscriber {
                    id: row.subscriber_id,
                    state: SubscriberState::Confirmed,
                },
                address: format!("reader{}@example.com", row.id),
                attempts: row.attempts,
            });
        }
        Ok(claimed)
    }

    async fn renew_claim(
        &self,
        claim: ClaimToken,
        ids: &[i64],
        lease_until: SystemTime,
    ) -> Result<Vec<i64>, StoreError> {
        let mut renewed = Vec::new();
        for row in self.rows.lock().unwrap().iter_mut() {
            if ids.contains(&row.id)
                && row.claim == Some(claim)
                && row.state == DeliveryState::Sending
            {
                row.due = lease_until;
                renewed.push(row.id);
            }
        }
        Ok(renewed)
    }

    async fn record_results(&self, claims: &[ClaimResults<'_>]) -> Result<Vec<usize>, StoreError> {
        let mut rows = self.rows.lock().unwrap();
        let mut counts = Vec::new();
        for claim in claims {
            let mut count = 0;
            for result in claim.results {
                let Some(row) = rows.iter_mut().find(|row| {
                    row.id == result.id()
                        && row.claim == Some(claim.claim)
                        && row.state == DeliveryState::Sending
                }) else {
                    continue;
                };
                row.state = result.state();
                match result {
                    DeliveryResult::Released { due, .. } => {
                        row.due = *due;
                        row.attempts = row.attempts.saturating_sub(1);
                    }
                    DeliveryResult::Retry {
                        next_attempt_at, ..
                    } => row.due = *next_attempt_at,
                    _ => {}
                }
                self.recorded.lock().unwrap().push(result.clone());
                count += 1;
            }
            counts.push(count);
        }
        Ok(counts)
    }

    fn writers_take_turns(&self) -> bool {
        true
    }

    async fn delivery_report(&self, _load: LoadId) -> Result<Option<DeliveryReport>, StoreError> {
        Ok(None)
    }
}

/// What one send does: how long it takes, and what it comes to.
struct Step {
    takes: Duration,
    outcome: Result<(), SendFailure>,
}

/// A channel whose sends go as scripted (then succeed at once), and which notes each.
#[derive(Default)]
struct ScriptedChannel {
    script: Mutex<VecDeque<Step>>,
    sent: Mutex<Vec<i64>>,
    /// Run once, during the first send: what happens elsewhere meanwhile.
    during_first_send: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl ScriptedChannel {
    fn answering(outcomes: impl IntoIterator<Item = Result<(), SendFailure>>) -> Arc<Self> {
        let script = outcomes
            .into_iter()
            .map(|outcome| Step {
                takes: Duration::ZERO,
                outcome,
            })
            .collect();
        Arc::new(ScriptedChannel {
            script: Mutex::new(script),
            ..ScriptedChannel::default()
        })
    }

    fn sent(&self) -> Vec<i64> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Channel for ScriptedChannel {
    fn name(&self) -> &'static str {
        CHANNEL
    }

    async fn prepare(
        &self,
        batch: &[ClaimedDelivery],
        _now: SystemTime,
    ) -> Result<Vec<Readiness>, StoreError> {
        Ok(batch
            .iter()
            .map(|_| Readiness::Ready(String::new()))
            .collect())
    }

    async fn send(&self, delivery: &ClaimedDelivery, _prepared: &str) -> Result<(), SendFailure> {
        self.sent.lock().unwrap().push(delivery.id);
        if let Some(elsewhere) = self.during_first_send.lock().unwrap().take() {
            elsewhere();
        }
        let step = self.script.lock().unwrap().pop_front();
        let Some(step) = step else {
            return Ok(());
        };
        tokio::time::sleep(step.takes).await;
        step.outcome
    }
}

fn worker(
    store: Arc<MemoryOutbox>,
    channel: Arc<ScriptedChannel>,
    max_attempts: u32,
) -> OutboxWorker {
    let mut settings = Settings::default().delivery;
    settings.concurrency = 1;
    settings.max_attempts = max_attempts;
    settings.retry_base = TextDuration(RETRY_BASE);
    settings.lease = TextDuration(LEASE);
    let snapshot = SnapshotCell::new(ReadSnapshot::build(StoreContents::default()));
    OutboxWorker::new(store, snapshot, vec![channel], settings, Wakeup::default())
}

#[tokio::test(start_paused = true)]
async fn a_claim_lost_mid_batch_sends_and_records_only_what_it_still_holds() {
    let now = SystemTime::now();
    let store = MemoryOutbox::with_deliveries(3, now);
    let channel = ScriptedChannel::answering([Ok(())]);
    // The first send outlasts the lease's renewal, and meanwhile another worker takes
    // the other two rows (as if this one's lease had ended).
    channel.script.lock().unwrap()[0].takes = LEASE;
    let elsewhere = store.clone();
    *channel.during_first_send.lock().unwrap() = Some(Box::new(move || {
        elsewhere.claim_elsewhere(&[2, 3], now + 10 * LEASE)
    }));
    let worker = worker(store.clone(), channel.clone(), 8);

    assert_eq!(worker.drain_at(now).await.unwrap(), 3, "one claim of three");

    assert_eq!(
        channel.sent(),
        [1],
        "nothing is sent on a claim that lapsed"
    );
    assert_eq!(store.row(1).state, DeliveryState::Sent);
    for id in [2, 3] {
        let row = store.row(id);
        assert_eq!(
            row.claim,
            Some(ClaimToken(-1)),
            "the other worker keeps row {id}"
        );
        assert_eq!(row.state, DeliveryState::Sending);
        assert_eq!(
            row.attempts, 2,
            "row {id}: this claim's and the other's, nothing handed back over it"
        );
    }
    assert!(
        store.recorded().iter().all(|result| result.id() == 1),
        "only the row still held got a result: {:?}",
        store.recorded()
    );
}

#[tokio::test]
async fn a_transient_failure_is_retried_once_its_backoff_falls_due() {
    let now = SystemTime::now();
    let store = MemoryOutbox::with_deliveries(1, now);
    let channel =
        ScriptedChannel::answering([Err(SendFailure::Transient("421 try again later".into()))]);
    let worker = worker(store.clone(), channel.clone(), 8);

    worker.drain_at(now).await.unwrap();
    let row = store.row(1);
    assert_eq!(row.state, DeliveryState::Retrying);
    let wait = row.due.duration_since(now).unwrap();
    assert!(
        wait >= RETRY_BASE && wait < RETRY_BASE + Duration::from_secs(5),
        "due after the first backoff, not {wait:?}"
    );

    assert_eq!(
        worker.drain_at(now).await.unwrap(),
        0,
        "not due before its backoff"
    );
    assert_eq!(channel.sent(), [1]);

    assert_eq!(worker.drain_at(row.due).await.unwrap(), 1);
    assert_eq!(channel.sent(), [1, 1]);
    let row = store.row(1);
    assert_eq!(row.state, DeliveryState::Sent);
    assert_eq!(row.attempts, 2);
}

#[tokio::test]
async fn a_refusal_for_good_fails_at_once_and_suppresses_when_the_channel_says_so() {
    let now = SystemTime::now();
    let store = MemoryOutbox::with_deliveries(2, now);
    let refused = |suppress| SendFailure::Refused {
        reason: "550 5.1.1 no such mailbox".into(),
        suppress,
    };
    let channel = ScriptedChannel::answering([Err(refused(true)), Err(refused(false))]);
    let worker = worker(store.clone(), channel.clone(), 8);

    worker.drain_at(now).await.unwrap();

    let bounced: Vec<(i64, Option<i64>)> = store
        .recorded()
        .iter()
        .map(|result| match result {
            DeliveryResult::Failed { id, bounced, .. } => (*id, *bounced),
            other => panic!("not a failure: {other:?}"),
        })
        .collect();
    assert_eq!(
        bounced,
        [(1, Some(101)), (2, None)],
        "only the refusal that says so suppresses its subscriber"
    );
    assert_eq!(
        worker
            .drain_at(now + Duration::from_secs(86_400))
            .await
            .unwrap(),
        0,
        "a refusal for good is never tried again"
    );
    assert_eq!(channel.sent(), [1, 2]);
}

#[tokio::test]
async fn a_deferred_send_waits_for_its_time_without_counting_an_attempt() {
    let now = SystemTime::now();
    let quota_back = now + Duration::from_secs(3600);
    let quota_back_again = quota_back + Duration::from_secs(3600);
    let deferred_until = |until| SendFailure::Deferred {
        reason: "the daily quota is spent".into(),
        until,
    };
    let store = MemoryOutbox::with_deliveries(1, now);
    // One attempt allowed: deferrals must not use it up.
    let channel = ScriptedChannel::answering([
        Err(deferred_until(quota_back)),
        Err(deferred_until(quota_back_again)),
    ]);
    let worker = worker(store.clone(), channel.clone(), 1);

    worker.drain_at(now).await.unwrap();
    let row = store.row(1);
    assert_eq!(
        (row.state, row.attempts, row.due),
        (DeliveryState::Pending, 0, quota_back)
    );
    assert_eq!(
        worker
            .drain_at(quota_back - Duration::from_secs(60))
            .await
            .unwrap(),
        0,
        "not tried before the quota is back"
    );

    worker.drain_at(quota_back).await.unwrap();
    let row = store.row(1);
    assert_eq!(
        (row.state, row.attempts, row.due),
        (DeliveryState::Pending, 0, quota_back_again),
        "deferred twice, and still no attempt counted"
    );

    worker.drain_at(quota_back_again).await.unwrap();
    let row = store.row(1);
    assert_eq!((row.state, row.attempts), (DeliveryState::Sent, 1));
    assert_eq!(channel.sent(), [1, 1, 1]);
}
