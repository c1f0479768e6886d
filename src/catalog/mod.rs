//! The catalog, the read side: an immutable, in-memory snapshot of everything stored,
//! from which every client read is answered, and the figures derived from it on read. A
//! load builds a new snapshot and swaps it in whole, so a reader sees either all of a
//! load or none of it, and reads never wait on the database.

pub mod derived;
pub mod summary;

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::{
    domain::{
        FactKey, FactRevision, FactStatus, LoadId, LoadRecord, Metric, Provider, Quarter,
        ResourceId,
    },
    figures_file::KnownDefinitions,
    store::StoreContents,
};

/// The snapshot every reader shares; swapped atomically after each load.
pub type SharedSnapshot = Arc<SnapshotCell>;

/// Holds the current snapshot and tells watchers when a newer one is installed.
pub struct SnapshotCell {
    current: ArcSwap<ReadSnapshot>,
    head: watch::Sender<LoadId>,
    installing: Mutex<()>,
}

impl SnapshotCell {
    pub fn new(snapshot: ReadSnapshot) -> SharedSnapshot {
        let (head, _) = watch::channel(snapshot.head);
        Arc::new(SnapshotCell {
            current: ArcSwap::from_pointee(snapshot),
            head,
            installing: Mutex::new(()),
        })
    }

    /// The current snapshot, cheaply, for one request.
    pub fn load(&self) -> Guard<Arc<ReadSnapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<ReadSnapshot> {
        self.current.load_full()
    }

    /// Swaps in `snapshot` unless the current one is newer, then wakes watchers.
    pub fn install(&self, snapshot: ReadSnapshot) {
        let _one_at_a_time = self
            .installing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if snapshot.head < self.current.load().head {
            return;
        }
        let head = snapshot.head;
        self.current.store(Arc::new(snapshot));
        self.head.send_if_modified(|current| {
            let newer = *current < head;
            *current = head;
            newer
        });
    }

    /// Changes whenever a snapshot with a newer load is installed.
    pub fn subscribe(&self) -> watch::Receiver<LoadId> {
        self.head.subscribe()
    }
}

#[derive(Debug, Default)]
pub struct ReadSnapshot {
    head: LoadId,
    loads: Vec<LoadRecord>,
    providers: BTreeMap<ResourceId, Provider>,
    metrics: BTreeMap<ResourceId, Metric>,
    /// Every revision of each fact, oldest first.
    facts: BTreeMap<FactKey, Vec<FactRevision>>,
    /// The revisions each load recorded: fact and revision number.
    load_changes: BTreeMap<LoadId, Vec<(FactKey, i64)>>,
    /// Quarters with at least one fact, oldest first.
    periods: Vec<Quarter>,
    /// Metrics with a comparison row, in row order.
    comparison_metrics: Vec<ResourceId>,
}

/// See [`ReadSnapshot::vintages`].
pub struct VintageTable<'a> {
    pub periods: Vec<Quarter>,
    pub vintages: Vec<Vintage<'a>>,
}

/// The figures of one series as known right after `load`: one cell per period, `None`
/// where no figure was known yet.
pub struct Vintage<'a> {
    pub load: &'a LoadRecord,
    pub cells: Vec<Option<&'a FactRevision>>,
}

/// Which facts a listing wants; `None` matches anything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FactQuery {
    pub provider: Option<ResourceId>,
    pub period: Option<Quarter>,
    pub metric: Option<ResourceId>,
    pub status: Option<FactStatus>,
}

/// The table of the article for one period: every provider against every comparison
/// metric. A cell is `None` only when runrate holds no figure for it at all.
pub struct Comparison<'a> {
    pub period: Quarter,
    pub providers: Vec<&'a Provider>,
    pub rows: Vec<(&'a Metric, Vec<Option<&'a FactRevision>>)>,
}

impl ReadSnapshot {
    pub fn build(contents: StoreContents) -> Self {
        let head = contents.loads.last().map_or(0, |load| load.id);
        let providers: BTreeMap<_, _> = contents
            .providers
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let metrics: BTreeMap<_, _> = contents
            .metrics
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect();
        let mut facts: BTreeMap<FactKey, Vec<FactRevision>> = BTreeMap::new();
        let mut load_changes: BTreeMap<LoadId, Vec<(FactKey, i64)>> = BTreeMap::new();
        for revision in contents.fact_revisions {
            load_changes
                .entry(revision.load_id)
                .or_default()
                .push((revision.key.clone(), revision.revision));
            facts
                .entry(revision.key.clone())
                .or_default()
                .push(revision);
        }
        for revisions in facts.values_mut() {
            revisions.sort_by_key(|r| r.revision);
        }
        let periods: BTreeSet<Quarter> = facts.keys().map(|key| key.period).collect();
        let mut comparison: Vec<&Metric> = metrics
            .values()
            .filter(|m| m.comparison_row.is_some())
            .collect();
        comparison.sort_by_key(|m| (m.comparison_row, m.id.clone()));
        let comparison_metrics = comparison.into_iter().map(|m| m.id.clone()).collect();
        ReadSnapshot {
            head,
            loads: contents.loads,
            providers,
            metrics,
            facts,
            load_changes,
            periods: periods.into_iter().collect(),
            comparison_metrics,
        }
    }

    pub fn shared(self) -> SharedSnapshot {
        SnapshotCell::new(self)
    }

    /// Id of the newest load in the snapshot, 0 before the first.
    pub fn head(&self) -> LoadId {
        self.head
    }

    /// Every load, oldest first.
    pub fn loads(&self) -> &[LoadRecord] {
        &self.loads
    }

    pub fn load_record(&self, id: LoadId) -> Option<&LoadRecord> {
        let index = self.loads.binary_search_by_key(&id, |load| load.id).ok()?;
        self.loads.get(index)
    }

    /// The fact revisions a load recorded, ordered by fact.
    pub fn load_changes(&self, id: LoadId) -> impl Iterator<Item = &FactRevision> {
        self.load_changes
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|(key, revision)| {
                let revisions = self.facts.get(key)?;
                revisions.iter().find(|r| r.revision == *revision)
            })
    }

    /// Every revision of a fact, oldest first; empty for an unknown fact.
    pub fn revisions(&self, key: &FactKey) -> &[FactRevision] {
        self.facts.get(key).map_or(&[], Vec::as_slice)
    }

    /// One provider's metric across periods as known after each load that changed it,
    /// the vintages of ALFRED: `periods` are the columns (oldest first), and each
    /// vintage, newest first, holds per period the revision current after its load.
    pub fn vintages(&self, provider: &ResourceId, metric: &ResourceId) -> VintageTable<'_> {
        let series: Vec<(&Quarter, &Vec<FactRevision>)> = self
            .facts
            .iter()
            .filter(|(key, _)| key.provider == *provider && key.metric == *metric)
            .map(|(key, revisions)| (&key.period, revisions))
            .collect();
        let mut changed_by: Vec<LoadId> = series
            .iter()
            .flat_map(|(_, revisions)| revisions.iter().map(|r| r.load_id))
            .collect();
        changed_by.sort_unstable_by(|a, b| b.cmp(a));
        changed_by.dedup();
        let vintages = changed_by
            .into_iter()
            .filter_map(|load| self.load_record(load))
            .map(|load| Vintage {
                load,
                cells: series
                    .iter()
                    .map(|(_, revisions)| revisions.iter().rev().find(|r| r.load_id <= load.id))
                    .collect(),
            })
            .collect();
        VintageTable {
            periods: series.iter().map(|(period, _)| **period).collect(),
            vintages,
        }
    }

    /// The revision that replaced `revision`, if any: the end of its interval.
    pub fn successor(&self, revision: &FactRevision) -> Option<&FactRevision> {
        let revisions = self.revisions(&revision.key);
        let next = revisions.partition_point(|r| r.revision <= revision.revision);
        revisions.get(next)
    }

    /// Providers ordered by id.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    pub fn provider(&self, id: &ResourceId) -> Option<&Provider> {
        self.providers.get(id)
    }

    /// Metrics ordered by id.
    pub fn metrics(&self) -> impl Iterator<Item = &Metric> {
        self.metrics.values()
    }

    pub fn metric(&self, id: &ResourceId) -> Option<&Metric> {
        self.metrics.get(id)
    }

    /// Quarters with figures, oldest first.
    pub fn periods(&self) -> &[Quarter] {
        &self.periods
    }

    pub fn has_period(&self, period: &Quarter) -> bool {
        self.periods.binary_search(period).is_ok()
    }

    pub fn latest_period(&self) -> Option<Quarter> {
        self.periods.last().copied()
    }

    /// The fact's revision current at `read_time` (now when `None`).
    pub fn fact(&self, key: &FactKey, read_time: Option<SystemTime>) -> Option<&FactRevision> {
        current_revision(self.facts.get(key)?, read_time)
    }

    /// Facts matching the query, ordered by provider, period and metric, starting after
    /// `after`. Facts not yet recorded at `read_time` are left out.
    pub fn facts(
        &self,
        query: FactQuery,
        read_time: Option<SystemTime>,
        after: Option<&FactKey>,
    ) -> impl Iterator<Item = &FactRevision> {
        let start = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Unbounded,
        };
        let status = query.status;
        self.facts
            .range((start, Bound::Unbounded))
            .filter(move |(key, _)| {
                query.provider.as_ref().is_none_or(|p| &key.provider == p)
                    && query.period.is_none_or(|q| key.period == q)
                    && query.metric.as_ref().is_none_or(|m| &key.metric == m)
            })
            .filter_map(move |(_, revisions)| current_revision(revisions, read_time))
            .filter(move |revision| status.is_none_or(|s| revision.body.status == s))
    }

    /// The comparison of `period` as known at `read_time` (now when `None`).
    pub fn comparison(&self, period: Quarter, read_time: Option<SystemTime>) -> Comparison<'_> {
        let providers: Vec<&Provider> = self.providers.values().collect();
        let rows = self
            .comparison_metrics
            .iter()
            .filter_map(|id| self.metrics.get(id))
            .map(|metric| {
                let cells = providers
                    .iter()
                    .map(|provider| {
                        let key = FactKey {
                            provider: provider.id.clone(),
                            period,
                            metric: metric.id.clone(),
                        };
                        self.fact(&key, read_time)
                    })
                    .collect();
                (metric, cells)
            })
            .collect();
        Comparison {
            period,
            providers,
            rows,
        }
    }
}

fn current_revision(
    revisions: &[FactRevision],
    read_time: Option<SystemTime>,
) -> Option<&FactRevision> {
    match read_time {
        None => revisions.last(),
        Some(time) => revisions.iter().rev().find(|r| r.recorded_at <= time),
    }
}

impl KnownDefinitions for ReadSnapshot {
    fn known_provider(&self, id: &ResourceId) -> bool {
        self.providers.contains_key(id)
    }

    fn known_metric(&self, id: &ResourceId) -> Option<&Metric> {
        self.metrics.get(id)
    }
}
