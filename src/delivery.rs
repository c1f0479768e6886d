//! The delivery worker: drains the outbox. Lanes claim due deliveries in batches, re-check
//! that each subscriber still wants the email, store the digest of the token the email
//! carries, send, and record the result. Transient failures are retried with exponential
//! backoff; a 5xx refusal fails the row and suppresses the address. A stopped worker hands
//! back what it had not sent; a crashed one loses its claims only until their lease ends.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::generate_secret,
    domain::LoadId,
    domain::subscribers::{
        ClaimToken, ClaimedDelivery, DeliveryKind, DeliveryResult, NewToken, SubscriberState,
        TokenPurpose,
    },
    mail::{EmailComposer, Mailer, OutgoingEmail, SendError, UpdateEmail},
    newsletter::token_digest,
    settings::DeliverySettings,
    snapshot::SharedSnapshot,
    store::{Store, StoreError},
};

/// How long a lane waits before retrying to record a result the store refused, at
/// first and at most.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(50);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);
/// How often fan-out progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub struct DeliveryWorker {
    store: Arc<dyn Store>,
    snapshot: SharedSnapshot,
    mailer: Arc<dyn Mailer>,
    composer: Arc<EmailComposer>,
    settings: DeliverySettings,
    confirmation_ttl: Duration,
    wake: Arc<Notify>,
    rendered: Mutex<HashMap<LoadId, Arc<UpdateEmail>>>,
    progress: Mutex<HashMap<LoadId, FanOutProgress>>,
}

/// When a fan-out's progress was last logged.
struct FanOutProgress {
    last_logged: Instant,
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
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no randomness for a claim token: {0}")]
    Randomness(getrandom::Error),
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

/// A claimed delivery, ready to send or already decided.
enum Prepared {
    Send {
        delivery: ClaimedDelivery,
        token: String,
    },
    Decided(DeliveryResult),
}

impl DeliveryWorker {
    pub fn new(
        store: Arc<dyn Store>,
        snapshot: SharedSnapshot,
        mailer: Arc<dyn Mailer>,
        composer: Arc<EmailComposer>,
        settings: DeliverySettings,
        confirmation_ttl: Duration,
        wake: Arc<Notify>,
    ) -> Self {
        DeliveryWorker {
            store,
            snapshot,
            mailer,
            composer,
            settings,
            confirmation_ttl,
            wake,
            rendered: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
        }
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
        let mut loads = self.snapshot.subscribe();
        while !shutdown.is_cancelled() {
            // Registered before looking, so a wake-up between the two is not lost.
            let woken = self.wake.notified();
            match self.run_once(&shutdown).await {
                Ok(ExecutionOutcome::Processed(_)) => continue,
                Ok(ExecutionOutcome::Idle) => self.finish_progress().await,
                Err(err) => tracing::error!(error = %err, "cannot work the delivery outbox"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = woken => {}
                _ = loads.changed() => {}
                _ = tokio::time::sleep(self.settings.poll_interval.0) => {}
            }
        }
    }

    /// Claims one batch of due deliveries and deals with all of it, renewing the claim's
    /// lease while it works. Each result is recorded before the next email goes out, so
    /// a crash repeats at most the one email a lane had in flight.
    pub async fn run_once(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<ExecutionOutcome, DeliveryError> {
        let claim = ClaimToken::generate().map_err(DeliveryError::Randomness)?;
        let now = SystemTime::now();
        let lease = self.settings.lease.0;
        let claimed = self
            .store
            .claim_deliveries(claim, now, now + lease, self.settings.batch_size)
            .await?;
        if claimed.is_empty() {
            return Ok(ExecutionOutcome::Idle);
        }
        let count = claimed.len();
        let held = Mutex::new(HeldClaim {
            until: now + lease,
            ids: claimed.iter().map(|delivery| delivery.id).collect(),
        });
        let finished = CancellationToken::new();
        let (worked, ()) = tokio::join!(
            async {
                let worked = self.work_claim(claim, claimed, &held, shutdown, now).await;
                finished.cancel();
                worked
            },
            self.keep_lease(claim, &held, &finished),
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
    ) {
        let lease = self.settings.lease.0;
        loop {
            tokio::select! {
                _ = finished.cancelled() => return,
                _ = tokio::time::sleep(lease / 3) => {}
            }
            // Taken before the statement, so `held` never claims more than the store gave.
            let until = SystemTime::now() + lease;
            match self.store.renew_claim(claim, until).await {
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
        claim: ClaimToken,
        claimed: Vec<ClaimedDelivery>,
        held: &Mutex<HeldClaim>,
        shutdown: &CancellationToken,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = claimed.iter().map(|delivery| delivery.id).collect();
        let prepared = match self.prepare(claimed, now).await {
            Ok(prepared) => prepared,
            Err(err) => {
                self.release(claim, &ids).await;
                return Err(err);
            }
        };
        let mut decided = Vec::new();
        let mut to_send = Vec::new();
        for item in prepared {
            match item {
                Prepared::Decided(result) => decided.push(result),
                Prepared::Send { delivery, token } => to_send.push((delivery, token)),
            }
        }
        self.record(claim, &decided, shutdown).await?;
        let mut loads_touched = Vec::new();
        let mut to_send = to_send.into_iter();
        for (delivery, token) in to_send.by_ref() {
            let still_held = held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .holds(delivery.id, SystemTime::now());
            if shutdown.is_cancelled() || !still_held {
                if !still_held {
                    tracing::warn!(
                        delivery = delivery.id,
                        "the claim on these deliveries lapsed; leaving them to the next claim"
                    );
                }
                let mut rest = vec![delivery.id];
                rest.extend(to_send.map(|(delivery, _)| delivery.id));
                self.release(claim, &rest).await;
                break;
            }
            if let DeliveryKind::Update(load) = delivery.kind
                && !loads_touched.contains(&load)
            {
                loads_touched.push(load);
            }
            let result = self.send(&delivery, &token).await;
            self.record(claim, &[result], shutdown).await?;
        }
        for load in loads_touched {
            self.log_progress(load).await;
        }
        Ok(())
    }

    /// Records results, retrying until the store takes them: a sent email whose result
    /// is lost would be sent again once the lease ends. Gives up only when stopping.
    async fn record(
        &self,
        claim: ClaimToken,
        results: &[DeliveryResult],
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        let mut pause = RECORD_RETRY_FIRST;
        loop {
            match self
                .store
                .record_deliveries(claim, results, SystemTime::now())
                .await
            {
                Ok(recorded) => {
                    if recorded < results.len() as u64 {
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

    /// Hands unsent deliveries back, due at once, without counting the attempt. Only
    /// tried once: if it fails, the rows come back when the lease ends.
    async fn release(&self, claim: ClaimToken, ids: &[i64]) {
        let released: Vec<DeliveryResult> = ids
            .iter()
            .map(|&id| DeliveryResult::Released { id })
            .collect();
        if let Err(err) = self
            .store
            .record_deliveries(claim, &released, SystemTime::now())
            .await
        {
            tracing::warn!(error = %err, deliveries = ids.len(), "cannot hand back claimed deliveries; they come back when their lease ends");
        }
    }

    /// Re-checks each subscriber and stores the digests of the tokens about to be sent.
    async fn prepare(
        &self,
        claimed: Vec<ClaimedDelivery>,
        now: SystemTime,
    ) -> Result<Vec<Prepared>, StoreError> {
        let mut tokens = Vec::new();
        let mut prepared = Vec::with_capacity(claimed.len());
        for delivery in claimed {
            let purpose = match (delivery.kind, delivery.subscriber_state) {
                (DeliveryKind::Confirmation, SubscriberState::Pending) => TokenPurpose::Confirm,
                (DeliveryKind::Update(_), SubscriberState::Confirmed) => TokenPurpose::Unsubscribe,
                (_, state) => {
                    prepared.push(Prepared::Decided(DeliveryResult::Skipped {
                        id: delivery.id,
                        reason: format!("not sent: the subscriber is {} now", state.as_str()),
                    }));
                    continue;
                }
            };
            let token = match generate_secret() {
                Ok(token) => token,
                Err(err) => {
                    prepared.push(Prepared::Decided(self.retry_or_fail(
                        &delivery,
                        err.to_string(),
                        now,
                    )));
                    continue;
                }
            };
            tokens.push(NewToken {
                digest: token_digest(&token),
                subscriber_id: delivery.subscriber_id,
                purpose,
                expires_at: (purpose == TokenPurpose::Confirm).then(|| now + self.confirmation_ttl),
            });
            prepared.push(Prepared::Send { delivery, token });
        }
        self.store.store_tokens(&tokens).await?;
        Ok(prepared)
    }

    fn compose(&self, delivery: &ClaimedDelivery, token: &str) -> Result<OutgoingEmail, String> {
        match delivery.kind {
            DeliveryKind::Confirmation => self
                .composer
                .confirmation(&delivery.email, token)
                .map_err(|err| err.to_string()),
            DeliveryKind::Update(load) => {
                let update = self.rendered_update(load)?;
                self.composer
                    .personalise(&update, &delivery.email, token)
                    .map_err(|err| err.to_string())
            }
        }
    }

    /// The update for a load, rendered on first use.
    fn rendered_update(&self, load: LoadId) -> Result<Arc<UpdateEmail>, String> {
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(update) = rendered.get(&load) {
            return Ok(update.clone());
        }
        let update = Arc::new(
            self.composer
                .update(&self.snapshot.load(), load)
                .map_err(|err| err.to_string())?,
        );
        rendered.insert(load, update.clone());
        Ok(update)
    }

    async fn send(&self, delivery: &ClaimedDelivery, token: &str) -> DeliveryResult {
        let email = match self.compose(delivery, token) {
            Ok(email) => email,
            Err(err) => return self.retry_or_fail(delivery, err, SystemTime::now()),
        };
        match self.mailer.send(&email).await {
            Ok(()) => DeliveryResult::Sent { id: delivery.id },
            Err(SendError::Rejected(reply)) => {
                tracing::warn!(delivery = delivery.id, %reply, "the mail server refused the address; suppressing it");
                DeliveryResult::Failed {
                    id: delivery.id,
                    error: reply,
                    bounced: Some(delivery.subscriber_id),
                }
            }
            Err(SendError::SenderRefused(reply)) => {
                tracing::error!(delivery = delivery.id, %reply, "the mail server refused the sender; check mail.from and mail.smtp");
                self.retry_or_fail(delivery, reply, SystemTime::now())
            }
            Err(SendError::Transient(reason)) => {
                self.retry_or_fail(delivery, reason, SystemTime::now())
            }
        }
    }

    /// Retry later with exponential backoff, or give up after `max_attempts`.
    fn retry_or_fail(
        &self,
        delivery: &ClaimedDelivery,
        error: String,
        now: SystemTime,
    ) -> DeliveryResult {
        if delivery.attempts >= self.settings.max_attempts {
            tracing::warn!(delivery = delivery.id, attempts = delivery.attempts, %error, "giving up on a delivery");
            return DeliveryResult::Failed {
                id: delivery.id,
                error,
                bounced: None,
            };
        }
        let doublings = delivery.attempts.saturating_sub(1).min(20);
        let delay = self
            .settings
            .retry_base
            .0
            .saturating_mul(1 << doublings)
            .min(self.settings.retry_max.0);
        tracing::warn!(
            delivery = delivery.id,
            to = %delivery.email,
            attempt = delivery.attempts,
            retry_in = ?delay,
            %error,
            "a delivery failed; it will be retried"
        );
        DeliveryResult::Retry {
            id: delivery.id,
            next_attempt_at: now + delay,
            error,
        }
    }

    /// Logs sent / total and the rate of a load's fan-out, every few seconds and at the end.
    async fn log_progress(&self, load: LoadId) {
        let now = Instant::now();
        {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            let entry = progress
                .entry(load)
                .or_insert(FanOutProgress { last_logged: now });
            if now.duration_since(entry.last_logged) < PROGRESS_EVERY {
                return;
            }
            entry.last_logged = now;
        }
        self.report_progress(load).await;
    }

    /// The outbox ran dry for this lane: a last progress line for each fan-out it saw
    /// (other lanes may still be finishing theirs, and will log again when they are done).
    async fn finish_progress(&self) {
        let finished: Vec<LoadId> = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(load, _)| load)
            .collect();
        for load in finished {
            self.report_progress(load).await;
        }
    }

    /// Sent / total, and the rate since the load committed its deliveries.
    async fn report_progress(&self, load: LoadId) {
        let Ok(Some(report)) = self.store.delivery_report(load).await else {
            return;
        };
        let committed = self
            .snapshot
            .load()
            .load_record(load)
            .map_or(SystemTime::now(), |record| record.recorded_at);
        let elapsed = committed
            .elapsed()
            .unwrap_or_default()
            .as_secs_f64()
            .max(0.001);
        tracing::info!(
            load,
            sent = report.sent,
            total = report.recipients,
            pending = report.pending,
            retrying = report.retrying,
            failed = report.failed,
            rate_per_second = format!("{:.0}", report.sent as f64 / elapsed),
            "fan-out progress"
        );
    }
}
