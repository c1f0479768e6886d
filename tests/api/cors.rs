//! Browsers on other origins: a page on an allowed origin may call gRPC-Web and the web
//! side and read the answers (gRPC's status included); any other origin gets no
//! `Access-Control-Allow-Origin`, so its browser refuses the answer.

use base64::Engine;
use prost::Message;
use runrate::{api::GetFactRequest, settings::CorsOrigins};

use crate::support::{
    helpers::{TestDir, TestServer},
    http_client::{HttpResponse, request_with_headers},
};

const DASHBOARD: &str = "https://dashboard.example";
const FACT: &str = "providers/aws/periods/2026-q1/facts/ai-revenue-run-rate";

async fn server_allowing(origins: &str) -> TestServer {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.http.cors_allowed_origins = origins.parse().expect("origins");
    TestServer::start_in(dir, settings).await
}

/// A browser's preflight before a gRPC-Web call from a page on `origin`.
async fn preflight(server: &TestServer, origin: &str) -> HttpResponse {
    request_with_headers(
        server.address,
        "OPTIONS",
        "/runrate.v1.MetricsService/GetFact",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type,x-grpc-web,x-user-agent",
            ),
        ],
        None,
    )
    .await
}

/// A gRPC-Web (text) GetFact from a page on `origin`, as grpc-web's text mode frames it.
async fn get_fact_from(server: &TestServer, origin: &str, name: &str) -> HttpResponse {
    get_fact_with(server, &[("Origin", origin)], name).await
}

/// A gRPC-Web (text) GetFact with these headers besides gRPC-Web's own.
async fn get_fact_with(server: &TestServer, headers: &[(&str, &str)], name: &str) -> HttpResponse {
    let message = GetFactRequest {
        name: name.into(),
        read_time: None,
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(&message);
    let body = base64::engine::general_purpose::STANDARD.encode(frame);
    request_with_headers(
        server.address,
        "POST",
        "/runrate.v1.MetricsService/GetFact",
        &[headers, &[("X-Grpc-Web", "1")]].concat(),
        Some(("application/grpc-web-text", &body)),
    )
    .await
}

fn listed(response: &HttpResponse, header: &str) -> Vec<String> {
    response
        .header(header)
        .unwrap_or_default()
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

#[tokio::test]
async fn an_allowed_origin_calls_grpc_web_and_reads_the_status() {
    let server = server_allowing(&format!("{DASHBOARD}, http://127.0.0.1:3000")).await;

    let answer = preflight(&server, DASHBOARD).await;
    assert!(answer.status == 200 || answer.status == 204, "{answer:?}");
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(DASHBOARD)
    );
    let allowed = listed(&answer, "access-control-allow-headers");
    for header in ["content-type", "x-grpc-web", "x-user-agent"] {
        assert!(allowed.contains(&header.to_owned()), "{header}: {answer:?}");
    }
    assert!(listed(&answer, "access-control-allow-methods").contains(&"post".to_owned()));

    let answer = get_fact_from(&server, DASHBOARD, FACT).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(DASHBOARD)
    );
    let exposed = listed(&answer, "access-control-expose-headers");
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(&header.to_owned()), "{header}: {answer:?}");
    }
    // The answer's trailer frame, read as the page's client reads it.
    assert!(answer.body.contains("grpc-status:0"), "{answer:?}");
    assert!(answer.body.contains(FACT), "{answer:?}");

    // A trailers-only error carries its status in headers, which the page may read.
    let missing = get_fact_from(
        &server,
        DASHBOARD,
        "providers/aws/periods/2026-q1/facts/no-such-metric",
    )
    .await;
    assert_eq!(missing.header("grpc-status"), Some("5"), "{missing:?}");
    assert_eq!(
        missing.header("access-control-allow-origin"),
        Some(DASHBOARD)
    );
}

#[tokio::test]
async fn another_origin_gets_nothing_that_lets_its_page_read() {
    let server = server_allowing(DASHBOARD).await;
    for origin in [
        "https://evil.example",
        "https://dashboard.example.evil.test",
    ] {
        let answer = preflight(&server, origin).await;
        assert_eq!(
            answer.header("access-control-allow-origin"),
            None,
            "{answer:?}"
        );
        let answer = get_fact_from(&server, origin, FACT).await;
        assert_eq!(
            answer.header("access-control-allow-origin"),
            None,
            "{answer:?}"
        );
        let answer =
            request_with_headers(server.http_address, "GET", "/", &[("Origin", origin)], None)
                .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("access-control-allow-origin"),
            None,
            "{answer:?}"
        );
    }
    // The web side answers the allowed origin in the same way.
    let answer = request_with_headers(
        server.http_address,
        "GET",
        "/",
        &[("Origin", DASHBOARD)],
        None,
    )
    .await;
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(DASHBOARD)
    );
}

#[tokio::test]
async fn no_origin_is_allowed_unless_configured_and_any_with_a_star() {
    let closed = TestServer::start().await;
    assert_eq!(
        TestDir::new().await.settings().http.cors_allowed_origins,
        CorsOrigins::None
    );
    let answer = preflight(&closed, DASHBOARD).await;
    assert_eq!(
        answer.header("access-control-allow-origin"),
        None,
        "{answer:?}"
    );

    let open = server_allowing("*").await;
    let answer = get_fact_from(&open, "https://anyone.example", FACT).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn a_caller_that_names_no_origin_gets_no_cors_headers_on_the_grpc_side() {
    let server = server_allowing("*").await;
    let answer = get_fact_with(&server, &[], FACT).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains(FACT), "{answer:?}");
    let cors_headers: Vec<_> = answer
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            name.starts_with("access-control-") || name == "vary"
        })
        .collect();
    assert!(cors_headers.is_empty(), "{answer:?}");
}
