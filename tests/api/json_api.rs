//! The JSON API against grpcurl: for every MetricsService read, the JSON the web side
//! answers equals what grpcurl prints for the same gRPC call; errors are
//! `google.rpc.Status` bodies under AIP-193's HTTP codes.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{
    helpers::TestServer,
    http_client::{HttpResponse, request_with_headers},
    python::grpcurl,
};

/// What grpcurl prints for `method` called with `request` (JSON), parsed. It runs off
/// the test's runtime thread, which serves runrate meanwhile.
async fn grpcurl_call(server: &TestServer, method: &str, request: &Value) -> Value {
    let address = server.address.to_string();
    let (method, request) = (method.to_owned(), request.to_string());
    tokio::task::spawn_blocking(move || {
        let output = Command::new(grpcurl())
            .args(["-plaintext", "-d", &request, &address])
            .arg(format!("runrate.v1.MetricsService/{method}"))
            .output()
            .expect("run grpcurl");
        assert!(
            output.status.success(),
            "grpcurl {method} {request}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("grpcurl prints JSON")
    })
    .await
    .expect("grpcurl ran")
}

async fn get(server: &TestServer, path: &str) -> HttpResponse {
    request_with_headers(server.http_address, "GET", path, &[], None).await
}

async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let answer = get(server, path).await;
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{path}: {answer:?}"
    );
    let body = serde_json::from_str(&answer.body).expect("a JSON body");
    (answer.status, body)
}

/// Page tokens are sealed afresh for every answer; the rest must be equal.
fn without_page_token(mut answer: Value) -> Value {
    if let Some(object) = answer.as_object_mut() {
        object.remove("nextPageToken");
    }
    answer
}

#[tokio::test]
async fn every_read_answers_as_grpcurl_prints_it() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("the restatement loads");
    let fact = "providers/aws/periods/2026-q1/facts/cloud-revenue";
    let (_, first) = get_json(&server, &format!("/v1/{fact}/revisions/first")).await;
    let read_time = first["recordTime"]
        .as_str()
        .expect("a record time")
        .to_owned();

    let cases = [
        ("ListProviders", json!({}), "/v1/providers".to_owned()),
        ("GetProvider", json!({"name": "providers/aws"}), "/v1/providers/aws".into()),
        ("ListMetrics", json!({"pageSize": 3}), "/v1/metrics?page_size=3".into()),
        ("GetMetric", json!({"name": "metrics/cloud-revenue"}), "/v1/metrics/cloud-revenue".into()),
        ("ListPeriods", json!({}), "/v1/periods".into()),
        ("GetPeriod", json!({"name": "periods/2026-q1"}), "/v1/periods/2026-q1".into()),
        (
            "ListFacts",
            json!({"parent": "providers/aws/periods/-", "filter": "status = \"estimated\"", "includeDerived": true}),
            "/v1/providers/aws/periods/-/facts?filter=status%20%3D%20%22estimated%22&includeDerived=true".into(),
        ),
        ("GetFact", json!({"name": fact}), format!("/v1/{fact}")),
        (
            "GetFact",
            json!({"name": fact, "readTime": read_time}),
            format!("/v1/{fact}?read_time={read_time}"),
        ),
        (
            "CompareProviders",
            json!({"period": "periods/2026-q1"}),
            "/v1/periods/2026-q1:compareProviders".into(),
        ),
        ("ListFactRevisions", json!({"parent": fact}), format!("/v1/{fact}/revisions")),
        (
            "GetFactRevision",
            json!({"name": format!("{fact}/revisions/latest")}),
            format!("/v1/{fact}/revisions/latest"),
        ),
        (
            "GetVintageTable",
            json!({"provider": "providers/aws", "metric": "metrics/cloud-revenue"}),
            "/v1/providers/aws/metrics/cloud-revenue:vintageTable".into(),
        ),
        ("ListLoads", json!({}), "/v1/loads".into()),
        ("GetLoad", json!({"name": "loads/2"}), "/v1/loads/2".into()),
    ];
    for (method, request, path) in cases {
        let (status, answer) = get_json(&server, &path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(
            without_page_token(answer),
            without_page_token(grpcurl_call(&server, method, &request).await),
            "{method}: {path}"
        );
    }

    // A page token from the JSON API continues the listing over gRPC, and back.
    let (_, page) = get_json(&server, "/v1/metrics?page_size=3").await;
    let token = page["nextPageToken"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let next = grpcurl_call(
        &server,
        "ListMetrics",
        &json!({"pageSize": 3, "pageToken": token}),
    )
    .await;
    let (_, next_json) = get_json(
        &server,
        &format!("/v1/metrics?pageSize=3&pageToken={token}"),
    )
    .await;
    assert_eq!(without_page_token(next_json), without_page_token(next));
}

#[tokio::test]
async fn errors_are_google_rpc_status_bodies_under_their_http_codes() {
    let server = TestServer::start().await;

    let (status, body) = get_json(&server, "/v1/providers/no-such-provider").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 5, "NOT_FOUND: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("providers/no-such-provider"),
        "{body}"
    );
    let details = body["details"].as_array().expect("details");
    assert!(
        details
            .iter()
            .any(|detail| detail["@type"] == "type.googleapis.com/google.rpc.ResourceInfo"),
        "{body}"
    );

    let (status, body) = get_json(&server, "/v1/providers?page_size=-1").await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(3)), "{body}");
    let bad_request = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|detail| detail["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .expect("a BadRequest");
    assert_eq!(
        bad_request["fieldViolations"][0]["field"], "page_size",
        "{body}"
    );

    for (path, field, named) in [
        ("/v1/providers?bogus=1", "bogus", "not a parameter"),
        (
            "/v1/providers?page_size=1&pageSize=2",
            "pageSize",
            "more than once",
        ),
        (
            "/v1/providers/aws?name=providers/azure",
            "name",
            "given by the path",
        ),
        (
            "/v1/providers/aws/periods/-/facts?includeDerived=maybe",
            "includeDerived",
            "true or false",
        ),
    ] {
        let (status, body) = get_json(&server, path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(3)),
            "{path}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{path}: {body}"
        );
        let bad_request = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|detail| detail["@type"] == "type.googleapis.com/google.rpc.BadRequest")
            .expect("a BadRequest naming the parameter");
        assert_eq!(
            bad_request["fieldViolations"][0]["field"], field,
            "{path}: {body}"
        );
    }

    let (status, body) = get_json(&server, "/v1/no/such/thing").await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(5)), "{body}");
}
