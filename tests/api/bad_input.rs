//! Every RPC checks its request: unknown things are NOT_FOUND and name themselves,
//! malformed fields are INVALID_ARGUMENT with a BadRequest violation naming the field.

use runrate::api::{
    CompareProvidersRequest, GetFactRequest, GetMetricRequest, GetPeriodRequest,
    GetProviderRequest, ListFactsRequest, ListPeriodsRequest, ListProvidersRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::support::helpers::TestServer;

fn assert_invalid(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad_request = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    let fields: Vec<&str> = bad_request
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, [field], "{status:?}");
    assert!(status.message().starts_with(field), "{status:?}");
}

fn assert_not_found(status: &Status, resource: &str) {
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains(resource),
        "{status:?} should name {resource}"
    );
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "RESOURCE_NOT_FOUND");
}

#[tokio::test]
async fn unknown_providers_metrics_and_periods_are_not_found() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let get_provider = |name: &str| GetProviderRequest { name: name.into() };
    let status = client
        .get_provider(get_provider("providers/oracle"))
        .await
        .unwrap_err();
    assert_not_found(&status, "providers/oracle");
    let status = client
        .get_metric(GetMetricRequest {
            name: "metrics/headcount".into(),
        })
        .await
        .unwrap_err();
    assert_not_found(&status, "metrics/headcount");
    let status = client
        .get_period(GetPeriodRequest {
            name: "periods/2031-q1".into(),
        })
        .await
        .unwrap_err();
    assert_not_found(&status, "periods/2031-q1");
    let get_fact = |name: &str| GetFactRequest {
        name: name.into(),
        read_time: None,
    };
    for (name, missing) in [
        (
            "providers/oracle/periods/2026-q1/facts/cloud-revenue",
            "providers/oracle",
        ),
        (
            "providers/aws/periods/2026-q1/facts/headcount",
            "metrics/headcount",
        ),
        (
            "providers/aws/periods/2019-q1/facts/cloud-revenue",
            "periods/2019-q1",
        ),
    ] {
        let status = client.get_fact(get_fact(name)).await.unwrap_err();
        assert_not_found(&status, missing);
    }
    let status = client
        .list_facts(ListFactsRequest {
            parent: "providers/oracle/periods/-".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_not_found(&status, "providers/oracle");
    let status = client
        .list_facts(ListFactsRequest {
            filter: "metric = \"headcount\"".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_not_found(&status, "metrics/headcount");
    let status = client
        .compare_providers(CompareProvidersRequest {
            period: "periods/2025-q4".into(),
        })
        .await
        .unwrap_err();
    assert_not_found(&status, "periods/2025-q4");
}

#[tokio::test]
async fn malformed_names_are_invalid_arguments_naming_the_field() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    for name in [
        "",
        "aws",
        "providers/AWS",
        "providers/aws/extra",
        "providers/",
    ] {
        let status = client
            .get_provider(GetProviderRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_invalid(&status, "name");
    }
    for name in [
        "providers/aws/periods/2026-Q5/facts/cloud-revenue",
        "providers/aws/periods/26Q1/facts/cloud-revenue",
        "providers/aws/facts/cloud-revenue",
        "providers/aws/periods/2026-q1/facts/Cloud_Revenue",
    ] {
        let status = client
            .get_fact(GetFactRequest {
                name: name.into(),
                read_time: None,
            })
            .await
            .unwrap_err();
        assert_invalid(&status, "name");
    }
    for parent in ["providers/-", "periods/2026-q1", "providers/-/periods/q1"] {
        let status = client
            .list_facts(ListFactsRequest {
                parent: parent.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&status, "parent");
    }
    let status = client
        .compare_providers(CompareProvidersRequest {
            period: "2026-Q1".into(),
        })
        .await
        .unwrap_err();
    assert_invalid(&status, "period");
}

#[tokio::test]
async fn bad_page_sizes_tokens_and_filters_are_invalid_arguments() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let status = client
        .list_facts(ListFactsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&status, "page_size");
    let status = client
        .list_providers(ListProvidersRequest {
            page_size: -5,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&status, "page_size");
    for token in ["not-a-token", "cDF8MHwxMjM", "🙂"] {
        let status = client
            .list_facts(ListFactsRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&status, "page_token");
        let status = client
            .list_periods(ListPeriodsRequest {
                page_size: 1,
                page_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_invalid(&status, "page_token");
    }
    // A real token, reused with another filter, is refused too.
    let first = client
        .list_facts(ListFactsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    let status = client
        .list_facts(ListFactsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            filter: "provider = \"aws\"".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&status, "page_token");
    for filter in [
        "metric",
        "colour = \"red\"",
        "metric = \"x\" OR metric = \"y\"",
        "period = \"2026-Q5\"",
        "metric = \"open",
    ] {
        let status = client
            .list_facts(ListFactsRequest {
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&status, "filter");
    }
    let status = client
        .get_fact(GetFactRequest {
            name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
            read_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
        })
        .await
        .unwrap_err();
    assert_invalid(&status, "read_time");
}
