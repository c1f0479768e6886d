//! PostgreSQL only: an embedded SQLite file has no network between it and runrate.
//!
//! PostgreSQL unreachable or hung behind a proxy: gRPC health reports the services that
//! need the database NOT_SERVING while reads go on from the snapshot, and everything
//! comes back when the database does.

use std::time::Duration;

use runrate::{
    api::{GetFactRequest, SubscribeRequest},
    settings::{DatabaseUrl, TextDuration},
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    helpers::{TestDir, TestServer},
    tcp_proxy::{Mode, TcpProxy},
};

const NEWSLETTER: &str = "runrate.v1.NewsletterService";
const ADMIN: &str = "runrate.v1.AdminService";
const METRICS: &str = "runrate.v1.MetricsService";

async fn status_of(channel: &Channel, service: &str) -> ServingStatus {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("a health answer")
        .into_inner()
        .status()
}

/// Waits, through the health Watch stream, until `service` reports `wanted`.
async fn until_status(channel: &Channel, service: &str, wanted: ServingStatus) {
    let mut updates = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("watch health")
        .into_inner();
    let reached = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(update) = updates.message().await.expect("a health update") {
            if update.status() == wanted {
                return;
            }
        }
        panic!("the health stream ended");
    })
    .await;
    assert!(reached.is_ok(), "{service} did not become {wanted:?}");
}

async fn read_a_fact(channel: &Channel) {
    runrate::api::metrics_service_client::MetricsServiceClient::new(channel.clone())
        .get_fact(GetFactRequest {
            name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
            ..Default::default()
        })
        .await
        .expect("a read from the snapshot");
}

#[tokio::test]
async fn health_follows_the_database_through_an_outage_and_a_hang() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    let mut url = url::Url::parse(settings.database.url.expose()).expect("a URL");
    let upstream = url
        .socket_addrs(|| Some(5432))
        .expect("the database's address")[0];
    let proxy = TcpProxy::start(upstream).await;
    url.set_port(Some(proxy.address.port())).expect("a port");
    url.set_host(Some(&proxy.address.ip().to_string()))
        .expect("a host");
    settings.database.url = DatabaseUrl::new(url.as_str());
    settings.database.health_check_interval = TextDuration(Duration::from_millis(200));
    let server = TestServer::start_in(dir, settings).await;
    let channel = server.channel().await;
    for service in ["", NEWSLETTER, ADMIN, METRICS] {
        assert_eq!(status_of(&channel, service).await, ServingStatus::Serving);
    }

    for fault in [Mode::Drop, Mode::Hang] {
        proxy.set(fault);
        until_status(&channel, NEWSLETTER, ServingStatus::NotServing).await;
        assert_eq!(
            status_of(&channel, ADMIN).await,
            ServingStatus::NotServing,
            "{fault:?}"
        );
        assert_eq!(
            status_of(&channel, METRICS).await,
            ServingStatus::Serving,
            "{fault:?}"
        );
        read_a_fact(&channel).await;

        proxy.set(Mode::Forward);
        until_status(&channel, NEWSLETTER, ServingStatus::Serving).await;
        assert_eq!(status_of(&channel, ADMIN).await, ServingStatus::Serving);
        server
            .newsletter()
            .await
            .subscribe(SubscribeRequest {
                email: format!("back-after-{fault:?}@example.com").to_lowercase(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("a sign-up after {fault:?}: {status:?}"));
    }
}
