//! Applying a figures file: parse and check it against what is known, work out what it
//! adds, revises and leaves unchanged, and commit that as one load together with the
//! update deliveries it owes its audience (the transactional outbox); then swap in a new
//! read snapshot and wake the outbox. Loads run one at a time.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::Mutex;
use tracing::Instrument;

use crate::{
    catalog::{ReadSnapshot, SharedSnapshot},
    domain::subscribers::Audience,
    domain::{
        FactBody, FactKey, FactStatus, LoadId, LoadRecord, Metric, Provider, ResourceId,
        RevisionReason,
    },
    figures_file::{self, FiguresFile, FileError, ParseLimits},
    outbox::{Channel, Wakeup},
    store::{Store, StoreError},
    telemetry,
};

/// A fact revision a load will append.
#[derive(Debug, Clone)]
pub struct FactChange {
    pub key: FactKey,
    /// 1 for a new fact, one more than the current revision otherwise.
    pub revision: i64,
    /// Why the fact changed; `None` for a new fact.
    pub reason: Option<RevisionReason>,
    pub body: FactBody,
}

/// What one load writes, computed against the store as it was at `base_load_id`.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub base_load_id: LoadId,
    pub file_name: String,
    pub content_sha256: String,
    pub providers: Vec<Provider>,
    pub metrics: Vec<Metric>,
    pub fact_changes: Vec<FactChange>,
    pub facts_added: u32,
    pub facts_revised: u32,
    pub facts_unchanged: u32,
    /// Providers whose facts the load adds or revises: their followers get an update.
    /// Empty: nobody is notified.
    pub notify_providers: Vec<ResourceId>,
}

impl LoadPlan {
    /// A load that would change nothing is not written at all.
    pub fn is_no_op(&self) -> bool {
        self.providers.is_empty() && self.metrics.is_empty() && self.fact_changes.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the figures file was rejected with {} error(s)", .0.len())]
    Rejected(Vec<FileError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a load did, or with a dry run, would do.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSummary {
    /// The load written; `None` for a dry run or a load that changed nothing.
    pub load: Option<LoadRecord>,
    pub facts_added: u32,
    pub facts_revised: u32,
    pub facts_unchanged: u32,
    pub definitions_changed: u32,
}

pub struct FigureLoader {
    store: Arc<Store>,
    snapshot: SharedSnapshot,
    limits: ParseLimits,
    /// The channels that announce loads.
    channels: Vec<Arc<dyn Channel>>,
    outbox: Wakeup,
    one_at_a_time: Mutex<()>,
}

/// How many times a load is planned again when another writer commits first.
const MAX_CONFLICT_RETRIES: usize = 5;

impl FigureLoader {
    pub fn new(
        store: Arc<Store>,
        snapshot: SharedSnapshot,
        limits: ParseLimits,
        channels: Vec<Arc<dyn Channel>>,
        outbox: Wakeup,
    ) -> Self {
        FigureLoader {
            store,
            snapshot,
            limits,
            channels,
            outbox,
            one_at_a_time: Mutex::new(()),
        }
    }

    pub fn snapshot(&self) -> SharedSnapshot {
        self.snapshot.clone()
    }

    /// Rebuilds the read snapshot from the store and swaps it in. The outbox is woken:
    /// updates about the loads just read can be sent from this process now.
    pub async fn refresh_snapshot(&self) -> Result<(), StoreError> {
        let contents = self.store.read_contents().await?;
        self.snapshot.install(ReadSnapshot::build(contents));
        self.outbox.wake();
        Ok(())
    }

    /// Loads the embedded seed figures, but only into a store that has never had a load:
    /// later loads may have restated the seed's figures, and those must stand.
    pub async fn load_seed_if_empty(&self) -> Result<Option<LoadSummary>, LoadError> {
        if self.store.head_load_id().await? != 0 {
            return Ok(None);
        }
        let summary = self
            .load(
                figures_file::SEED_FILE_NAME,
                figures_file::SEED.as_bytes(),
                false,
            )
            .await?;
        Ok(Some(summary))
    }

    /// Brings a store that loaded an earlier version of the embedded seed up to this one,
    /// as one load: each seed fact that no other load has revised since, and that the seed
    /// now states differently, gets a revision with reason `corrected`. Subscribers are not
    /// emailed for it (the software fixed its own data; no figures were published), but
    /// the load is in the history, the feeds and the webhooks like any other. Nothing
    /// when nothing differs, so every start may call it.
    pub async fn correct_seed(&self) -> Result<Option<LoadSummary>, LoadError> {
        let summary = self
            .load_as(
                figures_file::SEED_FILE_NAME,
                figures_file::SEED.as_bytes(),
                false,
                LoadKind::SeedCorrection,
            )
            .await?;
        Ok(summary.load.is_some().then_some(summary))
    }

    /// Every error `bytes` has as a figures file against the figures as they are now;
    /// empty when it could be loaded.
    pub fn check(&self, file_name: &str, bytes: &[u8]) -> Vec<FileError> {
        let snapshot = self.snapshot.load_full();
        figures_file::parse(file_name, bytes, snapshot.as_ref(), self.limits)
            .err()
            .unwrap_or_default()
    }

    pub async fn load(
        &self,
        file_name: &str,
        bytes: &[u8],
        dry_run: bool,
    ) -> Result<LoadSummary, LoadError> {
        self.load_as(file_name, bytes, dry_run, LoadKind::File)
            .await
    }

    async fn load_as(
        &self,
        file_name: &str,
        bytes: &[u8],
        dry_run: bool,
        kind: LoadKind,
    ) -> Result<LoadSummary, LoadError> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!("load", file = %file_name, dry_run);
        let result = self
            .load_once(file_name, bytes, dry_run, kind)
            .instrument(span)
            .await;
        let outcome = match &result {
            Ok(summary) if summary.load.is_some() => {
                metrics::counter!(telemetry::LOAD_FACTS, "change" => "added")
                    .increment(summary.facts_added.into());
                metrics::counter!(telemetry::LOAD_FACTS, "change" => "revised")
                    .increment(summary.facts_revised.into());
                "loaded"
            }
            Ok(_) if dry_run => "checked",
            Ok(_) => "unchanged",
            Err(LoadError::Rejected(_)) => "rejected",
            Err(_) => "failed",
        };
        metrics::counter!(telemetry::LOADS, "outcome" => outcome).increment(1);
        metrics::histogram!(telemetry::LOAD_SECONDS, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn load_once(
        &self,
        file_name: &str,
        bytes: &[u8],
        dry_run: bool,
        kind: LoadKind,
    ) -> Result<LoadSummary, LoadError> {
        let _guard = self.one_at_a_time.lock().await;
        let mut attempts = 0;
        loop {
            let snapshot = self.snapshot.load_full();
            let figures = figures_file::parse(file_name, bytes, snapshot.as_ref(), self.limits)
                .map_err(LoadError::Rejected)?;
            let plan = match kind {
                LoadKind::File => plan_load(&snapshot, figures),
                LoadKind::SeedCorrection => {
                    let mut plan = plan_load(&snapshot, seed_corrections(&snapshot, figures));
                    plan.notify_providers.clear();
                    plan
                }
            };
            let mut summary = LoadSummary {
                load: None,
                facts_added: plan.facts_added,
                facts_revised: plan.facts_revised,
                facts_unchanged: plan.facts_unchanged,
                definitions_changed: (plan.providers.len() + plan.metrics.len()) as u32,
            };
            if dry_run || plan.is_no_op() {
                return Ok(summary);
            }
            match self.commit(&plan).await {
                Ok(record) => {
                    self.refresh_snapshot().await?;
                    tracing::info!(
                        load = record.id,
                        file = %record.file_name,
                        added = record.facts_added,
                        revised = record.facts_revised,
                        unchanged = record.facts_unchanged,
                        "figures loaded"
                    );
                    summary.load = Some(record);
                    return Ok(summary);
                }
                Err(StoreError::Conflict { .. }) if attempts < MAX_CONFLICT_RETRIES => {
                    attempts += 1;
                    self.refresh_snapshot().await?;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
}

impl FigureLoader {
    /// Writes the plan as load `base_load_id + 1` in one transaction, or nothing at all:
    /// its definitions and facts, and when it notifies, one update delivery per recipient
    /// on each channel. Fails with [`StoreError::Conflict`] when another load committed
    /// since the plan.
    async fn commit(&self, plan: &LoadPlan) -> Result<LoadRecord, StoreError> {
        let mut tx = self.store.begin().await?;
        let (current, last_recorded) = tx.lock_load_head().await?;
        if current != plan.base_load_id {
            return Err(StoreError::Conflict {
                planned: plan.base_load_id,
                current,
            });
        }
        let record = LoadRecord {
            id: current + 1,
            // As-of reads need load times that only grow, even if a clock steps back.
            recorded_at: SystemTime::now().max(last_recorded + Duration::from_micros(1)),
            file_name: plan.file_name.clone(),
            content_sha256: plan.content_sha256.clone(),
            facts_added: plan.facts_added,
            facts_revised: plan.facts_revised,
            facts_unchanged: plan.facts_unchanged,
            definitions_changed: (plan.providers.len() + plan.metrics.len()) as u32,
        };
        tx.insert_load(&record).await?;
        for provider in &plan.providers {
            tx.insert_provider_version(record.id, provider).await?;
        }
        for metric in &plan.metrics {
            tx.insert_metric_version(record.id, metric).await?;
        }
        for change in &plan.fact_changes {
            tx.insert_fact_revision(
                record.id,
                &change.key,
                change.revision,
                change.reason,
                &change.body,
            )
            .await?;
        }
        // The audience is frozen here, with the load.
        let audience = (!plan.notify_providers.is_empty()).then(|| Audience {
            providers: plan.notify_providers.clone(),
        });
        let mut queued = 0;
        for channel in &self.channels {
            queued += channel
                .queue_update(&mut tx, audience.as_ref(), record.id, record.recorded_at)
                .await?;
        }
        if audience.is_some() || queued > 0 {
            tx.insert_notification(record.id, queued, record.recorded_at)
                .await?;
        }
        tx.commit().await?;
        Ok(record)
    }
}

/// What a load is.
#[derive(Clone, Copy)]
enum LoadKind {
    /// A figures file, as an operator loads it.
    File,
    /// The embedded seed, correcting what an earlier version of it loaded.
    SeedCorrection,
}

/// The seed's facts that correct what an earlier seed load stored: those whose current
/// revision a seed load recorded and whose body differs, each with reason `corrected`, and
/// those the store does not have yet. A fact another load revised since keeps that
/// revision: it was restated or corrected on purpose. Of the definitions, only those the
/// store lacks: one it has may have been redefined by a later file.
fn seed_corrections(snapshot: &ReadSnapshot, mut seed: FiguresFile) -> FiguresFile {
    seed.providers
        .retain(|provider| snapshot.provider(&provider.id).is_none());
    seed.metrics
        .retain(|metric| snapshot.metric(&metric.id).is_none());
    let from_seed = |load: LoadId| {
        snapshot
            .load_record(load)
            .is_some_and(|record| record.file_name == figures_file::SEED_FILE_NAME)
    };
    seed.facts
        .retain_mut(|stated| match snapshot.fact(&stated.key, None) {
            None => true,
            Some(current) if from_seed(current.load_id) && current.body != stated.body => {
                stated.revision_reason = Some(RevisionReason::Corrected);
                true
            }
            Some(_) => false,
        });
    seed
}

/// Compares a checked file with the snapshot: new and changed definitions, and for each
/// fact whether it is new, revised or unchanged.
fn plan_load(snapshot: &ReadSnapshot, figures: FiguresFile) -> LoadPlan {
    let providers = figures
        .providers
        .into_iter()
        .filter(|p| snapshot.provider(&p.id) != Some(p))
        .collect();
    let metrics = figures
        .metrics
        .into_iter()
        .filter(|m| snapshot.metric(&m.id) != Some(m))
        .collect();
    let mut plan = LoadPlan {
        base_load_id: snapshot.head(),
        file_name: figures.file_name,
        content_sha256: figures.content_sha256,
        providers,
        metrics,
        fact_changes: Vec::new(),
        facts_added: 0,
        facts_revised: 0,
        facts_unchanged: 0,
        notify_providers: Vec::new(),
    };
    for stated in figures.facts {
        let (revision, reason) = match snapshot.fact(&stated.key, None) {
            None => {
                plan.facts_added += 1;
                (1, None)
            }
            Some(current) if current.body == stated.body => {
                plan.facts_unchanged += 1;
                continue;
            }
            Some(current) => {
                plan.facts_revised += 1;
                let replaces_estimate = current.body.status == FactStatus::Estimated
                    && stated.body.status == FactStatus::Reported;
                let reason = stated.revision_reason.unwrap_or(if replaces_estimate {
                    RevisionReason::EstimateReplaced
                } else {
                    RevisionReason::Restated
                });
                (current.revision + 1, Some(reason))
            }
        };
        if !plan.notify_providers.contains(&stated.key.provider) {
            plan.notify_providers.push(stated.key.provider.clone());
        }
        plan.fact_changes.push(FactChange {
            key: stated.key,
            revision,
            reason,
            body: stated.body,
        });
    }
    plan
}
