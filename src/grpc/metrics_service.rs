//! `runrate.v1.MetricsService`: reads, all answered from the read snapshot.

use std::{borrow::Borrow, hash::Hash, sync::Arc, time::SystemTime};

use arc_swap::ArcSwap;

use tonic::{Request, Response, Status};

use crate::{
    catalog::derived::{self, DerivedFact},
    catalog::{FactQuery, ReadSnapshot, SharedSnapshot},
    domain::{FactKey, FactRevision, FactStatus, LoadId, Quarter, ResourceId},
};

use crate::sealing::TokenSealer;

use super::{
    ApiError, from_proto,
    from_proto::RevisionRef,
    from_proto::filter::parse_fact_filter,
    from_proto::paging::{Order, PageRequest, fingerprint},
    pb::runrate::v1::{self as api, metrics_service_server::MetricsService},
    to_proto,
};

pub struct MetricsApi {
    snapshot: SharedSnapshot,
    comparisons: AnswerCache<Quarter, api::CompareProvidersResponse>,
    /// Facts as of now, by their canonical names.
    facts: AnswerCache<String, api::Fact>,
    tokens: Arc<TokenSealer>,
}

impl MetricsApi {
    pub fn new(snapshot: SharedSnapshot, tokens: Arc<TokenSealer>) -> Self {
        MetricsApi {
            snapshot,
            comparisons: AnswerCache::default(),
            facts: AnswerCache::default(),
            tokens,
        }
    }
}

/// Answers built from the current snapshot, shared by every request that asks for the
/// same thing: an answer is the same until the next load, and building one (a fact with
/// its sources and display values, or a comparison of 21 of them) costs more than
/// answering with it. Only answers the snapshot holds are kept, so the entries are bounded
/// by what was loaded, not by what clients ask for (and a client's keys can only look
/// the map up, never crowd it, so it hashes with foldhash rather than SipHash).
struct AnswerCache<K, V> {
    current: ArcSwap<CachedAnswers<K, V>>,
}

struct CachedAnswers<K, V> {
    head: LoadId,
    answers: foldhash::HashMap<K, Arc<V>>,
}

impl<K, V> Default for AnswerCache<K, V> {
    fn default() -> Self {
        AnswerCache {
            current: ArcSwap::from_pointee(CachedAnswers {
                head: LoadId::default(),
                answers: foldhash::HashMap::default(),
            }),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> AnswerCache<K, V> {
    /// A copy of the answer for `key`, taken while the cache is borrowed: every worker
    /// asks for the same few answers, and counting references to them would make the
    /// workers contend for one cache line.
    fn get<Q>(&self, snapshot: &ReadSnapshot, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let cached = self.current.load();
        if cached.head != snapshot.head() {
            return None;
        }
        cached.answers.get(key).map(|answer| V::clone(answer))
    }

    fn insert(&self, snapshot: &ReadSnapshot, key: K, answer: Arc<V>) {
        let head = snapshot.head();
        self.current.rcu(|current| {
            let mut answers = if current.head == head {
                current.answers.clone()
            } else {
                foldhash::HashMap::default()
            };
            answers.insert(key.clone(), answer.clone());
            CachedAnswers { head, answers }
        });
    }

    fn get_or_build(&self, snapshot: &ReadSnapshot, key: K, build: impl FnOnce() -> V) -> V {
        if let Some(answer) = self.get(snapshot, &key) {
            return answer;
        }
        let built = build();
        self.insert(snapshot, key, Arc::new(built.clone()));
        built
    }
}

fn require_period(snapshot: &ReadSnapshot, period: Quarter) -> Result<Quarter, ApiError> {
    if snapshot.has_period(&period) {
        Ok(period)
    } else {
        Err(ApiError::not_found(
            "runrate.v1.Period",
            to_proto::period_name(&period),
        ))
    }
}

fn require_provider(snapshot: &ReadSnapshot, id: &ResourceId) -> Result<(), ApiError> {
    match snapshot.provider(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(
            "runrate.v1.Provider",
            to_proto::provider_name(id),
        )),
    }
}

/// A stored metric, or with `derived`, a derived metric id of a stored one.
fn require_metric(snapshot: &ReadSnapshot, id: &ResourceId, derived: bool) -> Result<(), ApiError> {
    let known = snapshot.metric(id).is_some()
        || (derived
            && derived::parse_derived_metric(id)
                .is_some_and(|(base, _)| snapshot.metric(&base).is_some()));
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "runrate.v1.Metric",
            to_proto::metric_name(id),
        ))
    }
}

/// A fact a listing returns: stored, or computed on read.
enum Listed<'a> {
    Stored(&'a FactRevision),
    Derived(Box<DerivedFact>),
}

impl Listed<'_> {
    fn key(&self) -> &FactKey {
        match self {
            Listed::Stored(fact) => &fact.key,
            Listed::Derived(fact) => &fact.key,
        }
    }

    fn to_message(&self) -> api::Fact {
        match self {
            Listed::Stored(fact) => to_proto::fact(fact),
            Listed::Derived(fact) => to_proto::derived_fact(fact),
        }
    }
}

/// Stored facts matching `query`, and the facts derived from the stored facts of the same
/// providers and periods, merged in key order.
fn facts_with_derived<'a>(
    snapshot: &'a ReadSnapshot,
    query: &FactQuery,
    read_time: Option<SystemTime>,
) -> Vec<Listed<'a>> {
    let scope = FactQuery {
        provider: query.provider.clone(),
        period: query.period,
        ..FactQuery::default()
    };
    let in_scope: Vec<&FactRevision> = snapshot.facts(scope, read_time, None).collect();
    let derived = derived::derive_all(snapshot, &in_scope, read_time);
    let metric_matches = |key: &FactKey| query.metric.as_ref().is_none_or(|m| &key.metric == m);
    let mut listed: Vec<Listed<'a>> = in_scope
        .into_iter()
        .filter(|fact| {
            metric_matches(&fact.key) && query.status.is_none_or(|s| fact.body.status == s)
        })
        .map(Listed::Stored)
        .collect();
    if query.status.is_none_or(|s| s == FactStatus::Derived) {
        listed.extend(
            derived
                .into_iter()
                .filter(|fact| metric_matches(&fact.key))
                .map(|fact| Listed::Derived(Box::new(fact))),
        );
    }
    listed.sort_by(|a, b| a.key().cmp(b.key()));
    listed
}

#[tonic::async_trait]
impl MetricsService for MetricsApi {
    async fn list_providers(
        &self,
        request: Request<api::ListProvidersRequest>,
    ) -> Result<Response<api::ListProvidersResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["providers"]),
            &self.tokens,
        )?;
        let snapshot = self.snapshot.load();
        let (providers, next_page_token) =
            page.page_by(snapshot.providers(), Order::Ascending, |p| p.id.to_string())?;
        Ok(Response::new(api::ListProvidersResponse {
            providers: providers.into_iter().map(to_proto::provider).collect(),
            next_page_token,
        }))
    }

    async fn get_provider(
        &self,
        request: Request<api::GetProviderRequest>,
    ) -> Result<Response<api::Provider>, Status> {
        let id = from_proto::parse_provider_name("name", &request.get_ref().name)?;
        let snapshot = self.snapshot.load();
        let provider = snapshot.provider(&id).ok_or_else(|| {
            ApiError::not_found("runrate.v1.Provider", to_proto::provider_name(&id))
        })?;
        Ok(Response::new(to_proto::provider(provider)))
    }

    async fn list_metrics(
        &self,
        request: Request<api::ListMetricsRequest>,
    ) -> Result<Response<api::ListMetricsResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["metrics"]),
            &self.tokens,
        )?;
        let snapshot = self.snapshot.load();
        let (metrics, next_page_token) =
            page.page_by(snapshot.metrics(), Order::Ascending, |m| m.id.to_string())?;
        Ok(Response::new(api::ListMetricsResponse {
            metrics: metrics.into_iter().map(to_proto::metric).collect(),
            next_page_token,
        }))
    }

    async fn get_metric(
        &self,
        request: Request<api::GetMetricRequest>,
    ) -> Result<Response<api::Metric>, Status> {
        let id = from_proto::parse_metric_name("name", &request.get_ref().name)?;
        let snapshot = self.snapshot.load();
        let metric = snapshot
            .metric(&id)
            .ok_or_else(|| ApiError::not_found("runrate.v1.Metric", to_proto::metric_name(&id)))?;
        Ok(Response::new(to_proto::metric(metric)))
    }

    async fn list_periods(
        &self,
        request: Request<api::ListPeriodsRequest>,
    ) -> Result<Response<api::ListPeriodsResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["periods"]),
            &self.tokens,
        )?;
        let snapshot = self.snapshot.load();
        let (periods, next_page_token) =
            page.page_by(snapshot.periods().iter(), Order::Ascending, |q| **q)?;
        Ok(Response::new(api::ListPeriodsResponse {
            periods: periods.into_iter().map(to_proto::period).collect(),
            next_page_token,
        }))
    }

    async fn get_period(
        &self,
        request: Request<api::GetPeriodRequest>,
    ) -> Result<Response<api::Period>, Status> {
        let period = from_proto::parse_period_name("name", &request.get_ref().name)?;
        let period = require_period(&self.snapshot.load(), period)?;
        Ok(Response::new(to_proto::period(&period)))
    }

    async fn list_facts(
        &self,
        request: Request<api::ListFactsRequest>,
    ) -> Result<Response<api::ListFactsResponse>, Status> {
        let request = request.into_inner();
        let (parent_provider, parent_period) =
            from_proto::parse_facts_parent("parent", &request.parent)?;
        let mut query = parse_fact_filter(&request.filter)?;
        let read_time = from_proto::read_time(request.read_time.as_ref())?;
        let read_time_text = read_time.map(|t| format!("{t:?}")).unwrap_or_default();
        let derived_text = if request.include_derived {
            "derived"
        } else {
            ""
        };
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&[
                "facts",
                &request.parent,
                &request.filter,
                &read_time_text,
                derived_text,
            ]),
            &self.tokens,
        )?;
        let after = page
            .after
            .as_deref()
            .map(|cursor| from_proto::parse_fact_name("page_token", cursor))
            .transpose()?;

        // The parent and the filter narrow the same fields; both must hold.
        let provider_conflict =
            matches!((&parent_provider, &query.provider), (Some(a), Some(b)) if a != b);
        let period_conflict = matches!((parent_period, query.period), (Some(a), Some(b)) if a != b);
        if provider_conflict || period_conflict {
            return Ok(Response::new(api::ListFactsResponse::default()));
        }
        query.provider = query.provider.or(parent_provider);
        query.period = query.period.or(parent_period);

        let snapshot = self.snapshot.load();
        if let Some(provider) = &query.provider {
            require_provider(&snapshot, provider)?;
        }
        if let Some(metric) = &query.metric {
            require_metric(&snapshot, metric, request.include_derived)?;
        }
        if let Some(period) = query.period {
            require_period(&snapshot, period)?;
        }
        let (facts, next_page_token) = if request.include_derived {
            let listed = facts_with_derived(&snapshot, &query, read_time);
            let rest = listed
                .into_iter()
                .filter(|fact| after.as_ref().is_none_or(|after| fact.key() > after));
            let (page, token) = page.page(rest, |fact| to_proto::fact_name(fact.key()));
            (page.iter().map(Listed::to_message).collect(), token)
        } else {
            let rest = snapshot.facts(query, read_time, after.as_ref());
            let (page, token) = page.page(rest, |fact| to_proto::fact_name(&fact.key));
            (page.into_iter().map(to_proto::fact).collect(), token)
        };
        Ok(Response::new(api::ListFactsResponse {
            facts,
            next_page_token,
        }))
    }

    async fn get_fact(
        &self,
        request: Request<api::GetFactRequest>,
    ) -> Result<Response<api::Fact>, Status> {
        let request = request.into_inner();
        let read_time = from_proto::read_time(request.read_time.as_ref())?;
        let snapshot = self.snapshot.load();
        let as_of_now = read_time.is_none();
        if as_of_now && let Some(fact) = self.facts.get(&snapshot, request.name.as_str()) {
            return Ok(Response::new(fact));
        }
        let key: FactKey = from_proto::parse_fact_name("name", &request.name)?;
        require_provider(&snapshot, &key.provider)?;
        require_metric(&snapshot, &key.metric, true)?;
        require_period(&snapshot, key.period)?;
        let not_found = || ApiError::not_found("runrate.v1.Fact", to_proto::fact_name(&key));
        let fact = if snapshot.metric(&key.metric).is_some() {
            to_proto::fact(snapshot.fact(&key, read_time).ok_or_else(not_found)?)
        } else {
            to_proto::derived_fact(
                &derived::derive(&snapshot, &key, read_time).ok_or_else(not_found)?,
            )
        };
        // Kept under its canonical name only: another spelling of it parses again.
        if as_of_now && request.name == fact.name {
            self.facts
                .insert(&snapshot, request.name, Arc::new(fact.clone()));
        }
        Ok(Response::new(fact))
    }

    async fn compare_providers(
        &self,
        request: Request<api::CompareProvidersRequest>,
    ) -> Result<Response<api::CompareProvidersResponse>, Status> {
        let snapshot = self.snapshot.load();
        let period = match request.get_ref().period.as_str() {
            "" => snapshot.latest_period().ok_or_else(|| {
                ApiError::not_found("runrate.v1.Period", "periods/- (no figures are loaded yet)")
            })?,
            name => require_period(&snapshot, from_proto::parse_period_name("period", name)?)?,
        };
        let comparison = self.comparisons.get_or_build(&snapshot, period, || {
            to_proto::comparison(&snapshot, period)
        });
        Ok(Response::new(comparison))
    }

    async fn list_fact_revisions(
        &self,
        request: Request<api::ListFactRevisionsRequest>,
    ) -> Result<Response<api::ListFactRevisionsResponse>, Status> {
        let request = request.into_inner();
        let key = from_proto::parse_fact_name("parent", &request.parent)?;
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["revisions", &request.parent]),
            &self.tokens,
        )?;
        let snapshot = self.snapshot.load();
        require_provider(&snapshot, &key.provider)?;
        require_metric(&snapshot, &key.metric, false)?;
        let revisions = snapshot.revisions(&key);
        if revisions.is_empty() {
            return Err(ApiError::not_found("runrate.v1.Fact", to_proto::fact_name(&key)).into());
        }
        let (page, next_page_token) =
            page.page_by(revisions.iter().rev(), Order::Descending, |r| r.revision)?;
        Ok(Response::new(api::ListFactRevisionsResponse {
            revisions: page
                .into_iter()
                .map(|revision| to_proto::revision(&snapshot, revision))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_vintage_table(
        &self,
        request: Request<api::GetVintageTableRequest>,
    ) -> Result<Response<api::VintageTable>, Status> {
        let request = request.into_inner();
        let provider = from_proto::parse_provider_name("provider", &request.provider)?;
        let metric = from_proto::parse_metric_name("metric", &request.metric)?;
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["vintages", &request.provider, &request.metric]),
            &self.tokens,
        )?;
        let snapshot = self.snapshot.load();
        require_provider(&snapshot, &provider)?;
        require_metric(&snapshot, &metric, false)?;
        let table = snapshot.vintages(&provider, &metric);
        let (page, next_page_token) =
            page.page_by(table.vintages.iter(), Order::Descending, |vintage| {
                vintage.load.id
            })?;
        Ok(Response::new(api::VintageTable {
            provider: to_proto::provider_name(&provider),
            metric: to_proto::metric_name(&metric),
            periods: table.periods.iter().map(to_proto::period_name).collect(),
            vintages: page
                .into_iter()
                .map(|vintage| api::Vintage {
                    load: to_proto::load_name(vintage.load.id),
                    record_time: Some(vintage.load.recorded_at.into()),
                    cells: vintage
                        .cells
                        .iter()
                        .map(|cell| api::VintageCell {
                            fact: cell.map(|revision| to_proto::revision(&snapshot, revision)),
                        })
                        .collect(),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn get_fact_revision(
        &self,
        request: Request<api::GetFactRevisionRequest>,
    ) -> Result<Response<api::Fact>, Status> {
        let name = request.into_inner().name;
        let (key, wanted) = from_proto::parse_fact_revision_name("name", &name)?;
        let snapshot = self.snapshot.load();
        require_provider(&snapshot, &key.provider)?;
        require_metric(&snapshot, &key.metric, false)?;
        require_period(&snapshot, key.period)?;
        let revisions = snapshot.revisions(&key);
        let found = match wanted {
            RevisionRef::First => revisions.first(),
            RevisionRef::Latest => revisions.last(),
            RevisionRef::Number(number) => revisions.iter().find(|r| r.revision == number),
        };
        let revision = found.ok_or_else(|| ApiError::not_found("runrate.v1.Fact", name))?;
        Ok(Response::new(to_proto::revision(&snapshot, revision)))
    }

    async fn list_loads(
        &self,
        request: Request<api::ListLoadsRequest>,
    ) -> Result<Response<api::ListLoadsResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["loads"]),
            &self.tokens,
        )?;
        let snapshot = self.snapshot.load();
        let (page, next_page_token) =
            page.page_by(snapshot.loads().iter().rev(), Order::Descending, |load| {
                load.id
            })?;
        Ok(Response::new(api::ListLoadsResponse {
            loads: page
                .into_iter()
                .map(|load| to_proto::load(load, snapshot.load_changes(load.id)))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_load(
        &self,
        request: Request<api::GetLoadRequest>,
    ) -> Result<Response<api::Load>, Status> {
        let id = from_proto::parse_load_name("name", &request.get_ref().name)?;
        let snapshot = self.snapshot.load();
        let load = snapshot
            .load_record(id)
            .ok_or_else(|| ApiError::not_found("runrate.v1.Load", to_proto::load_name(id)))?;
        Ok(Response::new(to_proto::load(
            load,
            snapshot.load_changes(id),
        )))
    }

    type WatchLoadsStream = tokio_stream::Empty<Result<api::WatchLoadsResponse, Status>>;

    /// Never called: [`super::watch::MetricsWithWatch`] answers WatchLoads before a
    /// request gets here, sharing each encoded event among all watchers.
    async fn watch_loads(
        &self,
        _: Request<api::WatchLoadsRequest>,
    ) -> Result<Response<Self::WatchLoadsStream>, Status> {
        Err(Status::internal("WatchLoads is served by the watch hub"))
    }
}
