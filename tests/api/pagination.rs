//! Paging through facts returns every fact exactly once, whatever the page size.

use std::collections::BTreeSet;

use runrate::api::{ListFactsRequest, ListMetricsRequest, ListProvidersRequest};

use crate::support::helpers::TestServer;

async fn all_fact_names(
    client: &mut runrate::api::metrics_service_client::MetricsServiceClient<
        tonic::transport::Channel,
    >,
    parent: &str,
    filter: &str,
    page_size: i32,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_facts(ListFactsRequest {
                parent: parent.into(),
                filter: filter.into(),
                page_size,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list a page of facts")
            .into_inner();
        assert!(page.facts.len() <= page_size as usize);
        names.extend(page.facts.into_iter().map(|f| f.name));
        if page.next_page_token.is_empty() {
            return names;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn every_fact_appears_exactly_once_at_several_page_sizes() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let everything = all_fact_names(&mut client, "", "", 1000).await;
    let distinct: BTreeSet<&String> = everything.iter().collect();
    assert_eq!(
        distinct.len(),
        everything.len(),
        "no fact twice in one page"
    );
    assert!(everything.len() >= 26, "the seed has at least 26 facts");
    for page_size in [1, 2, 3, 7, 25] {
        let paged = all_fact_names(&mut client, "providers/-/periods/-", "", page_size).await;
        assert_eq!(paged, everything, "page size {page_size}");
    }
}

#[tokio::test]
async fn parents_and_filters_narrow_the_listing() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let azure = all_fact_names(&mut client, "providers/azure/periods/2026-q1", "", 2).await;
    assert_eq!(azure.len(), 7);
    assert!(azure.iter().all(|n| n.starts_with("providers/azure/")));

    let growth = all_fact_names(
        &mut client,
        "providers/-/periods/-",
        "metric = \"yoy-growth\"",
        1,
    )
    .await;
    assert_eq!(
        growth,
        [
            "providers/aws/periods/2026-q1/facts/yoy-growth",
            "providers/azure/periods/2026-q1/facts/yoy-growth",
            "providers/google-cloud/periods/2026-q1/facts/yoy-growth",
        ]
    );

    let undisclosed = all_fact_names(
        &mut client,
        "",
        "status = \"not-disclosed\" AND period = \"2026-Q1\"",
        5,
    )
    .await;
    assert_eq!(undisclosed.len(), 2);

    let contradictory = all_fact_names(
        &mut client,
        "providers/aws/periods/-",
        "provider = \"azure\"",
        5,
    )
    .await;
    assert!(contradictory.is_empty());
}

#[tokio::test]
async fn providers_and_metrics_page_too() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let mut providers = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_providers(ListProvidersRequest {
                page_size: 1,
                page_token,
            })
            .await
            .expect("list providers")
            .into_inner();
        providers.extend(page.providers.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        providers,
        ["providers/aws", "providers/azure", "providers/google-cloud"]
    );

    let first = client
        .list_metrics(ListMetricsRequest {
            page_size: 5,
            page_token: String::new(),
        })
        .await
        .expect("list metrics")
        .into_inner();
    let second = client
        .list_metrics(ListMetricsRequest {
            page_size: 1000,
            page_token: first.next_page_token,
        })
        .await
        .expect("list the rest")
        .into_inner();
    assert_eq!(first.metrics.len() + second.metrics.len(), 12);
    assert!(second.next_page_token.is_empty());
}
