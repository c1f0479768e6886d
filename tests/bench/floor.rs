//! The floor for runrate's read benchmarks: a minimal tonic server on the same API that
//! answers GetFact and CompareProviders with copies of runrate's own answers, fetched once
//! at start, doing no other work. Whatever runrate does beyond this costs it throughput.
//!
//!     cargo run --release --example bench-floor -- LISTEN RUNRATE_URL FACT_NAME

use std::{net::SocketAddr, time::Duration};

use runrate::api::{
    self, CompareProvidersRequest, GetFactRequest,
    metrics_service_client::MetricsServiceClient,
    metrics_service_server::{MetricsService, MetricsServiceServer},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, transport::Server};

struct Floor {
    fact: api::Fact,
    comparison: api::CompareProvidersResponse,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the floor answers GetFact and CompareProviders only",
    ))
}

#[tonic::async_trait]
impl MetricsService for Floor {
    async fn get_fact(&self, _: Request<GetFactRequest>) -> Result<Response<api::Fact>, Status> {
        Ok(Response::new(self.fact.clone()))
    }

    async fn compare_providers(
        &self,
        _: Request<CompareProvidersRequest>,
    ) -> Result<Response<api::CompareProvidersResponse>, Status> {
        Ok(Response::new(self.comparison.clone()))
    }

    async fn list_providers(
        &self,
        _: Request<api::ListProvidersRequest>,
    ) -> Result<Response<api::ListProvidersResponse>, Status> {
        unimplemented()
    }
    async fn get_provider(
        &self,
        _: Request<api::GetProviderRequest>,
    ) -> Result<Response<api::Provider>, Status> {
        unimplemented()
    }
    async fn list_metrics(
        &self,
        _: Request<api::ListMetricsRequest>,
    ) -> Result<Response<api::ListMetricsResponse>, Status> {
        unimplemented()
    }
    async fn get_vintage_table(
        &self,
        _: Request<api::GetVintageTableRequest>,
    ) -> Result<Response<api::VintageTable>, Status> {
        unimplemented()
    }
    async fn get_fact_revision(
        &self,
        _: Request<api::GetFactRevisionRequest>,
    ) -> Result<Response<api::Fact>, Status> {
        unimplemented()
    }
    async fn get_metric(
        &self,
        _: Request<api::GetMetricRequest>,
    ) -> Result<Response<api::Metric>, Status> {
        unimplemented()
    }
    async fn list_periods(
        &self,
        _: Request<api::ListPeriodsRequest>,
    ) -> Result<Response<api::ListPeriodsResponse>, Status> {
        unimplemented()
    }
    async fn get_period(
        &self,
        _: Request<api::GetPeriodRequest>,
    ) -> Result<Response<api::Period>, Status> {
        unimplemented()
    }
    async fn list_facts(
        &self,
        _: Request<api::ListFactsRequest>,
    ) -> Result<Response<api::ListFactsResponse>, Status> {
        unimplemented()
    }
    async fn list_fact_revisions(
        &self,
        _: Request<api::ListFactRevisionsRequest>,
    ) -> Result<Response<api::ListFactRevisionsResponse>, Status> {
        unimplemented()
    }
    async fn list_loads(
        &self,
        _: Request<api::ListLoadsRequest>,
    ) -> Result<Response<api::ListLoadsResponse>, Status> {
        unimplemented()
    }
    async fn get_load(
        &self,
        _: Request<api::GetLoadRequest>,
    ) -> Result<Response<api::Load>, Status> {
        unimplemented()
    }
    type WatchLoadsStream = ReceiverStream<Result<api::WatchLoadsResponse, Status>>;
    async fn watch_loads(
        &self,
        _: Request<api::WatchLoadsRequest>,
    ) -> Result<Response<Self::WatchLoadsStream>, Status> {
        unimplemented()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, source, fact_name] = args.as_slice() else {
        return Err("usage: bench-floor LISTEN RUNRATE_URL FACT_NAME".into());
    };
    let listen: SocketAddr = listen.parse()?;
    // With no subscriber at all, `tracing` (built with its `log` feature, which sqlx turns
    // on) hands every span of h2 and tonic to `log`: work a minimal server does not do and
    // runrate, which always installs a subscriber, does not either.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())?;
    let mut client = MetricsServiceClient::connect(source.clone()).await?;
    let fact = client
        .get_fact(GetFactRequest {
            name: fact_name.clone(),
            read_time: None,
        })
        .await?
        .into_inner();
    let comparison = client
        .compare_providers(CompareProvidersRequest {
            period: String::new(),
        })
        .await?
        .into_inner();
    // Configured as runrate's own server is, so that only the work differs.
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(200)
        .timeout(Duration::from_secs(30))
        .add_service(MetricsServiceServer::new(Floor { fact, comparison }))
        .serve(listen)
        .await?;
    Ok(())
}
