//! Derived figures: computed exactly on read, marked derived, naming their inputs, and
//! never in place of a reported figure.

use runrate::api::{Derivation, FactStatus, GetFactRequest, ListFactsRequest, fact::Value};
use tonic::Code;

use crate::support::helpers::TestServer;

fn decimal(fact: &runrate::api::Fact) -> &str {
    match &fact.value {
        Some(Value::DecimalValue(text)) => text,
        other => panic!("not a decimal: {other:?}"),
    }
}

async fn get(server: &TestServer, name: &str) -> Result<runrate::api::Fact, tonic::Status> {
    server
        .metrics()
        .await
        .get_fact(GetFactRequest {
            name: name.into(),
            read_time: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn quarter_on_quarter_change_is_computed_from_both_quarters() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load Q2");
    let fact = get(
        &server,
        "providers/aws/periods/2026-q2/facts/cloud-revenue-qoq",
    )
    .await
    .expect("derivable");
    assert_eq!(fact.status(), FactStatus::Derived);
    assert_eq!(fact.derivation(), Derivation::QuarterOnQuarterChange);
    // (31.5B - 29B) / 29B = 8.6206...%
    assert_eq!(decimal(&fact), "8.62");
    assert_eq!(fact.precision, Some(2));
    assert!(fact.approximate, "computed from approximate figures");
    assert_eq!(
        fact.derived_from,
        [
            "providers/aws/periods/2026-q1/facts/cloud-revenue",
            "providers/aws/periods/2026-q2/facts/cloud-revenue",
        ]
    );
    assert_eq!(fact.display_value, "~8.62%");
}

#[tokio::test]
async fn shares_of_the_total_add_up_and_the_reported_growth_stays_reported() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load Q2");
    let facts = server
        .metrics()
        .await
        .list_facts(ListFactsRequest {
            parent: "providers/-/periods/2026-q2".into(),
            filter: "metric = \"cloud-revenue-share\"".into(),
            include_derived: true,
            ..Default::default()
        })
        .await
        .expect("list the shares")
        .into_inner()
        .facts;
    let shares: Vec<&str> = facts.iter().map(decimal).collect();
    // 31.5 / 73.5, 28.1 / 73.5, 13.9 / 73.5
    assert_eq!(shares, ["42.86", "38.23", "18.91"]);
    assert!(facts.iter().all(|f| f.derived_from.len() == 3));

    let reported = get(&server, "providers/aws/periods/2026-q2/facts/yoy-growth")
        .await
        .expect("the reported growth");
    assert_eq!(reported.status(), FactStatus::Reported);
    assert_eq!(decimal(&reported), "25");
}

#[tokio::test]
async fn derived_facts_are_listed_only_when_asked_for_and_need_their_inputs() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load Q2");
    let mut client = server.metrics().await;
    let plain = client
        .list_facts(ListFactsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .facts;
    assert!(plain.iter().all(|f| f.status() != FactStatus::Derived));
    let with_derived = client
        .list_facts(ListFactsRequest {
            page_size: 1000,
            include_derived: true,
            filter: "status = \"derived\"".into(),
            ..Default::default()
        })
        .await
        .expect("list derived")
        .into_inner()
        .facts;
    assert!(!with_derived.is_empty());
    assert!(
        with_derived
            .iter()
            .all(|f| f.status() == FactStatus::Derived)
    );

    // Nothing a year before 2026-Q2 is loaded, so there is no year-on-year change.
    let status = get(
        &server,
        "providers/aws/periods/2026-q2/facts/cloud-revenue-yoy",
    )
    .await
    .expect_err("no input a year earlier");
    assert_eq!(status.code(), Code::NotFound);
    // Only money metrics are derived.
    let status = get(
        &server,
        "providers/aws/periods/2026-q2/facts/custom-ai-chips-share",
    )
    .await
    .expect_err("not a money metric");
    assert_eq!(status.code(), Code::NotFound);
}
