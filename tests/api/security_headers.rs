//! Every web response — pages, forms, feeds, the JSON API, errors — carries the security
//! headers: a content security policy that forbids scripts, outside resources and
//! framing, `nosniff`, and a referrer policy that keeps link tokens to this site.

use runrate::http::security_headers;

use crate::support::{helpers::TestServer, http_client};

#[tokio::test]
async fn every_web_response_carries_the_security_headers() {
    let server = TestServer::start().await;
    let requests: [(&str, &str, Option<&str>); 11] = [
        ("GET", "/", None),
        ("GET", "/?period=2026-q1", None),
        ("GET", "/metrics/cloud-revenue", None),
        ("GET", "/providers/aws", None),
        ("GET", "/privacy", None),
        ("GET", "/confirm?token=not-a-token", None),
        ("POST", "/subscribe", Some("email=reader@example.com")),
        ("GET", "/feed.atom", None),
        ("GET", "/v1/providers/aws", None),
        ("GET", "/v1/providers/nowhere", None),
        ("GET", "/no-such-page", None),
    ];
    let mut statuses = Vec::new();
    for (method, path, form) in requests {
        let response = http_client::request(server.http_address, method, path, form).await;
        statuses.push(response.status);
        for (name, value) in security_headers::headers() {
            assert_eq!(
                response.header(name.as_str()),
                Some(value.to_str().unwrap()),
                "{method} {path} ({}) lacks {name}",
                response.status
            );
        }
    }
    // Answers of every kind were checked: pages, a refused link, a JSON error, a 404.
    for status in [200, 404] {
        assert!(statuses.contains(&status), "no {status} among {statuses:?}");
    }
    assert!(
        security_headers::CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'")
            && !security_headers::CONTENT_SECURITY_POLICY.contains("script-src"),
        "scripts stay under default-src 'none'"
    );
}
