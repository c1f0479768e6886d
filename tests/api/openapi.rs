//! SQLite only: schemathesis's reads are answered from the in-memory snapshot on either
//! backend, and its minutes are spent once.
//!
//! The JSON API's OpenAPI document: served at `/openapi.json`, describing every annotated
//! read, and schemathesis (property-based, from the document alone) finds nothing wrong
//! with the server's answers.

use std::process::Command;

use crate::support::{helpers::TestServer, http_client, python};

async fn document(server: &TestServer) -> serde_json::Value {
    let response = http_client::request(server.http_address, "GET", "/openapi.json", None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_str(&response.body).expect("JSON")
}

#[tokio::test]
async fn the_document_describes_every_json_read_with_its_parameters_and_schemas() {
    let server = TestServer::start().await;
    let document = document(&server).await;
    assert_eq!(document["openapi"], "3.0.3");
    let paths = document["paths"].as_object().expect("paths");
    let operations: Vec<&str> = paths
        .values()
        .map(|item| item["get"]["operationId"].as_str().expect("an operationId"))
        .collect();
    for method in [
        "GetFact",
        "ListFacts",
        "CompareProviders",
        "GetVintageTable",
        "GetFactRevision",
        "ListLoads",
    ] {
        assert!(operations.contains(&method), "{method} in {operations:?}");
    }
    let get_fact = &paths["/v1/providers/{provider}/periods/{period}/facts/{fact}"]["get"];
    let parameters: Vec<(&str, &str)> = get_fact["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(
        parameters,
        [
            ("provider", "path"),
            ("period", "path"),
            ("fact", "path"),
            ("read_time", "query")
        ]
    );
    // Schemas as proto3 JSON writes them: lowerCamel names, int64 as strings.
    let schemas = &document["components"]["schemas"];
    let fact = &schemas["runrate.v1.Fact"]["properties"];
    assert_eq!(fact["displayValue"]["type"], "string");
    assert_eq!(fact["recordTime"]["format"], "date-time");
    assert_eq!(
        schemas["google.type.Money"]["properties"]["units"]["type"],
        "string"
    );
    assert_eq!(
        get_fact["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
}

#[tokio::test]
async fn schemathesis_finds_no_failure_against_the_served_document() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("a load with revisions");
    let url = format!("http://{}/openapi.json", server.http_address);
    let output = tokio::task::spawn_blocking(move || {
        let schemathesis = python::python().with_file_name("schemathesis");
        Command::new(schemathesis)
            .args(["run", &url, "--checks", "all"])
            // Requests the schema allows that the server must still refuse: a page token
            // it did not seal, a filter outside the grammar, a read_time before any load.
            // No OpenAPI schema can say which strings those are.
            .args(["--exclude-checks", "positive_data_acceptance"])
            // An endless event stream: `watch_over_http` tests it.
            .args(["--exclude-operation-id", "WatchLoads"])
            .args(["--max-examples", "25", "--seed", "1", "--no-color"])
            // It keeps a cache in its working directory: not in the checkout.
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis ran");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis reported failures:\n{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("Tested: 14"),
        "every operation was tested:\n{printed}"
    );
}
