//! Error statuses stay small enough for every client's header limits (grpcio: 8 KB soft,
//! 16 KB hard; hyper: 16 KB), however many errors a figures file has and however long
//! the input a status echoes; the operator still gets every error of a rejected file.

use std::{fmt::Write, process::Command};

use prost::Message;
use runrate::api::{CheckFiguresFileRequest, GetFactRequest, LoadFiguresRequest};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    helpers::TestServer,
    python::{python, script},
};

/// Largest status message and details runrate sends, in bytes.
const STATUS_BUDGET: usize = 4096;

fn assert_small_invalid_argument(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().len() + status.details().len() <= STATUS_BUDGET,
        "{} bytes of message and {} of details",
        status.message().len(),
        status.details().len()
    );
}

/// A figures file with `count` errors, one per fact: each names a provider nobody defined.
fn file_with_errors(count: usize) -> String {
    let mut text = String::from(
        "format_version = 1\n\n[[sources]]\nid = \"invented\"\ntitle = \"Invented example (not real data)\"\n",
    );
    for n in 0..count {
        write!(
            text,
            "\n[[facts]]\nprovider = \"nobody-{n}\"\nmetric = \"cloud-revenue\"\nperiod = \"2026-Q3\"\nvalue = \"1B\"\nsources = [\"invented\"]\n"
        )
        .expect("write to a string");
    }
    text
}

/// Calls `method` with grpcio's default options; returns the status code's name.
fn call_with_grpcio(
    server: &TestServer,
    method: &str,
    request: &impl Message,
    token: Option<&str>,
) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let request_file = dir.path().join("request.bin");
    std::fs::write(&request_file, request.encode_to_vec()).expect("write the request");
    let mut command = Command::new(python());
    command
        .arg(script("grpcio_call.py"))
        .arg(server.address.to_string())
        .arg(method)
        .arg(&request_file);
    if let Some(token) = token {
        command.arg(token);
    }
    let output = command.output().expect("run the grpcio client");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the client prints JSON");
    result["code"].as_str().expect("a code").to_owned()
}

#[tokio::test]
async fn a_file_with_five_thousand_errors_gets_a_small_status_and_every_error_on_request() {
    let server = TestServer::start().await;
    let token = server.admin_token();
    let content = file_with_errors(5000).into_bytes();

    let status = server
        .load_with_token("big.toml", content.clone(), false, Some(&token))
        .await
        .expect_err("rejected");
    assert_small_invalid_argument(&status);
    assert!(
        status.message().contains("5000 error(s)"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.metadata["error_count"], "5000");

    let all = server
        .admin()
        .await
        .check_figures_file(server.admin_request(CheckFiguresFileRequest {
            file_name: "big.toml".into(),
            content: content.clone(),
        }))
        .await
        .expect("check")
        .into_inner()
        .errors;
    assert_eq!(all.len(), 5000);
    assert!(all.iter().all(|error| error.line > 0));
    assert_eq!(
        all[4999].subject,
        "fact nobody-4999 / cloud-revenue / 2026-Q3"
    );

    // `runrate load` prints every error, each with its line.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("big.toml");
    std::fs::write(&file, &content).expect("write the file");
    let mut load = Command::new(env!("CARGO_BIN_EXE_runrate"));
    load.arg("load")
        .arg(&file)
        .args(["--server", &server.url(), "--token", &token]);
    // Off the runtime: the server answering it runs on this test's runtime.
    let output = tokio::task::spawn_blocking(move || load.output())
        .await
        .expect("the CLI's thread")
        .expect("run runrate load");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let printed: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("big.toml:"))
        .collect();
    assert_eq!(printed.len(), 5000, "{stderr}");
    assert!(
        printed[4999].ends_with(
            "provider `nobody-4999` is not defined (add it under [[providers]] in this file)"
        ),
        "{}",
        printed[4999]
    );
    assert!(stderr.contains("big.toml was rejected with 5000 error(s)"));

    let request = LoadFiguresRequest {
        file_name: "big.toml".into(),
        content,
        validate_only: false,
    };
    let code = tokio::task::spawn_blocking(move || {
        call_with_grpcio(
            &server,
            "/runrate.v1.AdminService/LoadFigures",
            &request,
            Some(&token),
        )
    })
    .await
    .expect("the grpcio call");
    assert_eq!(code, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn a_sixty_kilobyte_name_gets_a_small_status() {
    let server = TestServer::start().await;
    let name = format!(
        "providers/aws/periods/2026-q1/facts/{}",
        "x\u{1b}".repeat(30_000)
    );
    let status = server
        .metrics()
        .await
        .get_fact(GetFactRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_small_invalid_argument(&status);
    let request = GetFactRequest {
        name,
        ..Default::default()
    };
    let code = tokio::task::spawn_blocking(move || {
        call_with_grpcio(
            &server,
            "/runrate.v1.MetricsService/GetFact",
            &request,
            None,
        )
    })
    .await
    .expect("the grpcio call");
    assert_eq!(code, "INVALID_ARGUMENT");
}
