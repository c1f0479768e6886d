//! Readers never see part of a load: every response is wholly before or wholly after.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use prost::Message;
use runrate::api::{CompareProvidersRequest, ListFactsRequest};

use crate::support::helpers::TestServer;

async fn list_state(server: &TestServer) -> Vec<u8> {
    server
        .metrics()
        .await
        .list_facts(ListFactsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list facts")
        .into_inner()
        .encode_to_vec()
}

async fn comparison_state(server: &TestServer) -> Vec<u8> {
    server
        .metrics()
        .await
        .compare_providers(CompareProvidersRequest {
            period: "periods/2026-q1".into(),
        })
        .await
        .expect("compare")
        .into_inner()
        .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_is_wholly_before_or_after_each_load() {
    let server = Arc::new(TestServer::start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let server = server.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut client = server.metrics().await;
            let mut seen_lists = BTreeSet::new();
            let mut seen_comparisons = BTreeSet::new();
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let list = client
                    .list_facts(ListFactsRequest {
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await
                    .expect("list facts")
                    .into_inner();
                seen_lists.insert(list.encode_to_vec());
                let comparison = client
                    .compare_providers(CompareProvidersRequest {
                        period: "periods/2026-q1".into(),
                    })
                    .await
                    .expect("compare")
                    .into_inner();
                seen_comparisons.insert(comparison.encode_to_vec());
                reads += 1;
            }
            (seen_lists, seen_comparisons, reads)
        }));
    }

    let lists_before = list_state(&server).await;
    let comparison_before = comparison_state(&server).await;
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("restate");
    let lists_restated = list_state(&server).await;
    let comparison_restated = comparison_state(&server).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load Q2");
    let lists_after = list_state(&server).await;
    stop.store(true, Ordering::Relaxed);

    let allowed_lists = [lists_before, lists_restated, lists_after];
    let allowed_comparisons = [comparison_before, comparison_restated];
    let mut total_reads = 0;
    for reader in readers {
        let (lists, comparisons, reads) = reader.await.expect("the reader finishes");
        total_reads += reads;
        for list in &lists {
            assert!(
                allowed_lists.contains(list),
                "a ListFacts response showed part of a load"
            );
        }
        for comparison in &comparisons {
            assert!(
                allowed_comparisons.contains(comparison),
                "a comparison showed part of a load"
            );
        }
    }
    assert!(total_reads >= 4, "the readers ran during the loads");
}
