//! `runrate.v1.MetricsService`: reads, all answered from the read snapshot.

use std::time::SystemTime;

use tonic::{Request, Response, Status};

use crate::{
    domain::{FactKey, Quarter},
    snapshot::{ReadSnapshot, SharedSnapshot},
};

use super::{
    ApiError, convert,
    filter::parse_fact_filter,
    names,
    paging::{PageRequest, fingerprint},
    pb::runrate::v1::{self as api, metrics_service_server::MetricsService},
};

pub struct MetricsApi {
    snapshot: SharedSnapshot,
}

impl MetricsApi {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        MetricsApi { snapshot }
    }
}

fn read_time(time: Option<&prost_types::Timestamp>) -> Result<Option<SystemTime>, ApiError> {
    let Some(time) = time else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            "read_time",
            "is not a valid timestamp (expected seconds from 1970 on and nanos from 0 to 999,999,999)",
        )
    };
    if time.seconds < 0 || !(0..1_000_000_000).contains(&time.nanos) {
        return Err(invalid());
    }
    SystemTime::try_from(*time).map(Some).map_err(|_| invalid())
}

fn require_period(snapshot: &ReadSnapshot, period: Quarter) -> Result<Quarter, ApiError> {
    if snapshot.has_period(&period) {
        Ok(period)
    } else {
        Err(ApiError::not_found(
            "runrate.v1.Period",
            names::period_name(&period),
        ))
    }
}

fn require_provider(
    snapshot: &ReadSnapshot,
    id: &crate::domain::ResourceId,
) -> Result<(), ApiError> {
    match snapshot.provider(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(
            "runrate.v1.Provider",
            names::provider_name(id),
        )),
    }
}

fn require_metric(snapshot: &ReadSnapshot, id: &crate::domain::ResourceId) -> Result<(), ApiError> {
    match snapshot.metric(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(
            "runrate.v1.Metric",
            names::metric_name(id),
        )),
    }
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
        )?;
        let snapshot = self.snapshot.load();
        let rest = snapshot.providers().filter(|p| {
            page.after
                .as_deref()
                .is_none_or(|after| p.id.as_str() > after)
        });
        let (providers, next_page_token) = page.page(rest, |p| p.id.to_string());
        Ok(Response::new(api::ListProvidersResponse {
            providers: providers.into_iter().map(convert::provider).collect(),
            next_page_token,
        }))
    }

    async fn get_provider(
        &self,
        request: Request<api::GetProviderRequest>,
    ) -> Result<Response<api::Provider>, Status> {
        let id = names::parse_provider_name("name", &request.get_ref().name)?;
        let snapshot = self.snapshot.load();
        let provider = snapshot
            .provider(&id)
            .ok_or_else(|| ApiError::not_found("runrate.v1.Provider", names::provider_name(&id)))?;
        Ok(Response::new(convert::provider(provider)))
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
        )?;
        let snapshot = self.snapshot.load();
        let rest = snapshot.metrics().filter(|m| {
            page.after
                .as_deref()
                .is_none_or(|after| m.id.as_str() > after)
        });
        let (metrics, next_page_token) = page.page(rest, |m| m.id.to_string());
        Ok(Response::new(api::ListMetricsResponse {
            metrics: metrics.into_iter().map(convert::metric).collect(),
            next_page_token,
        }))
    }

    async fn get_metric(
        &self,
        request: Request<api::GetMetricRequest>,
    ) -> Result<Response<api::Metric>, Status> {
        let id = names::parse_metric_name("name", &request.get_ref().name)?;
        let snapshot = self.snapshot.load();
        let metric = snapshot
            .metric(&id)
            .ok_or_else(|| ApiError::not_found("runrate.v1.Metric", names::metric_name(&id)))?;
        Ok(Response::new(convert::metric(metric)))
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
        )?;
        let after = page
            .after
            .as_deref()
            .map(|text| names::quarter("page_token", text))
            .transpose()?;
        let snapshot = self.snapshot.load();
        let rest = snapshot
            .periods()
            .iter()
            .filter(|q| after.is_none_or(|after| **q > after));
        let (periods, next_page_token) = page.page(rest, |q| q.to_string());
        Ok(Response::new(api::ListPeriodsResponse {
            periods: periods.into_iter().map(convert::period).collect(),
            next_page_token,
        }))
    }

    async fn get_period(
        &self,
        request: Request<api::GetPeriodRequest>,
    ) -> Result<Response<api::Period>, Status> {
        let period = names::parse_period_name("name", &request.get_ref().name)?;
        let period = require_period(&self.snapshot.load(), period)?;
        Ok(Response::new(convert::period(&period)))
    }

    async fn list_facts(
        &self,
        request: Request<api::ListFactsRequest>,
    ) -> Result<Response<api::ListFactsResponse>, Status> {
        let request = request.into_inner();
        let (parent_provider, parent_period) =
            names::parse_facts_parent("parent", &request.parent)?;
        let mut query = parse_fact_filter(&request.filter)?;
        let read_time = read_time(request.read_time.as_ref())?;
        let read_time_text = read_time.map(|t| format!("{t:?}")).unwrap_or_default();
        let page = PageRequest::parse(
            request.page_size,
            &request.page_token,
            fingerprint(&["facts", &request.parent, &request.filter, &read_time_text]),
        )?;
        let after = page
            .after
            .as_deref()
            .map(|cursor| names::parse_fact_name("page_token", cursor))
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
            require_metric(&snapshot, metric)?;
        }
        if let Some(period) = query.period {
            require_period(&snapshot, period)?;
        }
        let rest = snapshot.facts(&query, read_time, after.as_ref());
        let (facts, next_page_token) = page.page(rest, |fact| names::fact_name(&fact.key));
        Ok(Response::new(api::ListFactsResponse {
            facts: facts.into_iter().map(convert::fact).collect(),
            next_page_token,
        }))
    }

    async fn get_fact(
        &self,
        request: Request<api::GetFactRequest>,
    ) -> Result<Response<api::Fact>, Status> {
        let request = request.into_inner();
        let key: FactKey = names::parse_fact_name("name", &request.name)?;
        let read_time = read_time(request.read_time.as_ref())?;
        let snapshot = self.snapshot.load();
        require_provider(&snapshot, &key.provider)?;
        require_metric(&snapshot, &key.metric)?;
        require_period(&snapshot, key.period)?;
        let fact = snapshot
            .fact(&key, read_time)
            .ok_or_else(|| ApiError::not_found("runrate.v1.Fact", names::fact_name(&key)))?;
        Ok(Response::new(convert::fact(fact)))
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
            name => require_period(&snapshot, names::parse_period_name("period", name)?)?,
        };
        let comparison = snapshot.comparison(period);
        let rows = comparison
            .rows
            .iter()
            .map(|(metric, cells)| api::ComparisonRow {
                metric: Some(convert::metric(metric)),
                cells: comparison
                    .providers
                    .iter()
                    .zip(cells)
                    .map(|(provider, cell)| {
                        let fact = cell.map(convert::fact);
                        api::ComparisonCell {
                            provider: names::provider_name(&provider.id),
                            display_value: fact
                                .as_ref()
                                .map_or_else(|| "n/a".to_owned(), |f| f.display_value.clone()),
                            fact,
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(api::CompareProvidersResponse {
            period: Some(convert::period(&period)),
            providers: comparison
                .providers
                .iter()
                .map(|p| convert::provider(p))
                .collect(),
            rows,
        }))
    }
}
