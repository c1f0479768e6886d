//! A metric's page: its history across the loaded quarters as a server-rendered SVG chart
//! with a text alternative and a table, and its restatements listed.

use crate::support::{helpers::TestServer, http_client::request};

async fn with_history() -> TestServer {
    let server = TestServer::start().await;
    for file in ["2026-q2-example.toml", "2026-q1-restatement-example.toml"] {
        server.load_example(file).await.expect("load");
    }
    server
}

#[tokio::test]
async fn the_chart_has_a_point_per_quarter_per_provider_and_rings_the_restated_one() {
    let server = with_history().await;
    let page = request(server.http_address, "GET", "/metrics/cloud-revenue", None).await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(body.contains("<svg viewBox="), "drawn on the server");
    assert!(!body.contains("<script"), "without JavaScript");
    // Two quarters, three providers.
    assert_eq!(body.matches("<circle class=\"point").count(), 6, "{body}");
    assert_eq!(body.matches("<circle class=\"point restated\"").count(), 1);
    assert!(body.contains("<title>AWS 2026-Q1 $29.3B (restated)</title>"));
    // The text alternative states the same numbers.
    for said in [
        "AWS: 2026-Q1 $29.3B, 2026-Q2 ~$31.5B",
        "Azure: 2026-Q1 ~$26B, 2026-Q2 ~$28.1B",
        "Google Cloud: 2026-Q1 ~$12.5B, 2026-Q2 ~$13.9B",
        "A ring marks a restated figure.",
    ] {
        assert!(body.contains(said), "the description says {said:?}");
    }
    // And the table beside it, and the restatement in words.
    assert!(body.contains("<th scope=\"row\">2026-Q2</th><td data-label=\"AWS\">~$31.5B</td>"));
    assert!(
        body.contains(
            "<li>AWS 2026-Q1 total cloud revenue restated from ~$29B to $29.3B (load 3, "
        )
    );
}

#[tokio::test]
async fn a_metric_of_words_has_its_table_and_an_unknown_one_is_a_404() {
    let server = with_history().await;
    let chips = request(server.http_address, "GET", "/metrics/custom-ai-chips", None).await;
    assert_eq!(chips.status, 200);
    assert!(!chips.body.contains("<svg viewBox="), "nothing to plot");
    assert!(chips.body.contains("Trainium, Inferentia"));
    assert!(
        chips
            .body
            .contains("None: every figure stands as first published.")
    );
    let front = request(server.http_address, "GET", "/", None).await;
    assert!(
        front
            .body
            .contains("<a href=\"/metrics/cloud-revenue\">Total cloud revenue</a>")
    );
    for missing in ["/metrics/no-such-metric", "/metrics/NOT-AN-ID"] {
        let page = request(server.http_address, "GET", missing, None).await;
        assert_eq!(page.status, 404, "{missing}");
    }
}

#[tokio::test]
async fn a_provider_s_page_has_every_metric_by_quarter_and_its_restatements() {
    let server = with_history().await;
    let page = request(server.http_address, "GET", "/providers/aws", None).await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(body.contains("<h1>AWS (Amazon)</h1>"));
    assert!(
        body.contains(
            "<th scope=\"row\"><a href=\"/metrics/cloud-revenue\">Total cloud revenue</a></th>\
         <td data-label=\"2026-Q1\">$29.3B</td><td data-label=\"2026-Q2\">~$31.5B</td>"
        ),
        "{body}"
    );
    assert!(
        body.contains(
            "<li>AWS 2026-Q1 total cloud revenue restated from ~$29B to $29.3B (load 3, "
        )
    );
    // Azure's own restatement is on Azure's page, not this one.
    assert!(!body.contains("Azure 2026-Q1"));
    let azure = request(server.http_address, "GET", "/providers/azure", None).await;
    assert!(azure.body.contains(
        "Azure 2026-Q1 AI run rate reported as $13.2B, replacing the estimate of ~$13B (load 3, "
    ));
    let front = request(server.http_address, "GET", "/", None).await;
    assert!(
        front
            .body
            .contains("<a href=\"/providers/aws\">AWS (Amazon)</a>")
    );
    let missing = request(server.http_address, "GET", "/providers/nobody", None).await;
    assert_eq!(missing.status, 404);
}
