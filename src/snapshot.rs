//! The read snapshot: an immutable, in-memory copy of everything stored, from which every
//! client read is answered. A load builds a new snapshot and swaps it in whole, so a
//! reader sees either all of a load or none of it, and reads never wait on the database.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    sync::Arc,
    time::SystemTime,
};

use arc_swap::ArcSwap;

use crate::{
    domain::{
        FactKey, FactRevision, FactStatus, LoadId, LoadRecord, Metric, Provider, Quarter,
        ResourceId,
    },
    figures::KnownDefinitions,
    store::StoreContents,
};

/// The snapshot every reader shares; swapped atomically after each load.
pub type SharedSnapshot = Arc<ArcSwap<ReadSnapshot>>;

#[derive(Debug, Default)]
pub struct ReadSnapshot {
    head: LoadId,
    loads: Vec<LoadRecord>,
    providers: BTreeMap<ResourceId, Provider>,
    metrics: BTreeMap<ResourceId, Metric>,
    /// Every revision of each fact, oldest first.
    facts: BTreeMap<FactKey, Vec<FactRevision>>,
    /// Quarters with at least one fact, oldest first.
    periods: Vec<Quarter>,
    /// Metrics with a comparison row, in row order.
    comparison_metrics: Vec<ResourceId>,
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
        for revision in contents.fact_revisions {
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
            periods: periods.into_iter().collect(),
            comparison_metrics,
        }
    }

    pub fn shared(self) -> SharedSnapshot {
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// Id of the newest load in the snapshot, 0 before the first.
    pub fn head(&self) -> LoadId {
        self.head
    }

    pub fn loads(&self) -> &[LoadRecord] {
        &self.loads
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
    pub fn facts<'a>(
        &'a self,
        query: &'a FactQuery,
        read_time: Option<SystemTime>,
        after: Option<&FactKey>,
    ) -> impl Iterator<Item = &'a FactRevision> + 'a {
        let start = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Unbounded,
        };
        self.facts
            .range((start, Bound::Unbounded))
            .filter(move |(key, _)| {
                query.provider.as_ref().is_none_or(|p| &key.provider == p)
                    && query.period.is_none_or(|q| key.period == q)
                    && query.metric.as_ref().is_none_or(|m| &key.metric == m)
            })
            .filter_map(move |(_, revisions)| current_revision(revisions, read_time))
            .filter(move |revision| query.status.is_none_or(|s| revision.body.status == s))
    }

    pub fn comparison(&self, period: Quarter) -> Comparison<'_> {
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
                        self.fact(&key, None)
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
