//! The Q1 2026 table of the article, cell by cell, as served over gRPC.

use runrate::api::{
    CompareProvidersRequest, FactStatus, GetFactRequest, ListFactsRequest, fact::Value,
};

use crate::support::helpers::TestServer;

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Whole US dollars.
    Usd(i64),
    Percent(&'static str),
    Text(&'static str),
    List(&'static [&'static str]),
    NotDisclosed,
}

struct Cell {
    provider: &'static str,
    metric: &'static str,
    value: Expect,
    status: FactStatus,
    approximate: bool,
    lower_bound: bool,
    note: &'static str,
    display: &'static str,
}

const fn cell(
    provider: &'static str,
    metric: &'static str,
    value: Expect,
    display: &'static str,
) -> Cell {
    Cell {
        provider,
        metric,
        value,
        status: FactStatus::Reported,
        approximate: false,
        lower_bound: false,
        note: "",
        display,
    }
}

const fn approx(mut cell: Cell) -> Cell {
    cell.approximate = true;
    cell
}

const fn estimated(mut cell: Cell) -> Cell {
    cell.status = FactStatus::Estimated;
    cell
}

const fn at_least(mut cell: Cell) -> Cell {
    cell.lower_bound = true;
    cell
}

const fn not_disclosed(provider: &'static str, metric: &'static str) -> Cell {
    let mut cell = cell(provider, metric, Expect::NotDisclosed, "Not disclosed");
    cell.status = FactStatus::NotDisclosed;
    cell
}

const B: i64 = 1_000_000_000;

/// The article's comparison table; the text adds that AWS's AI run rate is "over $15
/// billion" and its chip run rate "exceeding $20 billion".
fn article_table() -> Vec<Cell> {
    use Expect::*;
    vec![
        approx(cell("aws", "cloud-revenue", Usd(29 * B), "~$29B")),
        approx(cell("azure", "cloud-revenue", Usd(26 * B), "~$26B")),
        approx(cell(
            "google-cloud",
            "cloud-revenue",
            Usd(12 * B + B / 2),
            "~$12.5B",
        )),
        at_least(cell("aws", "ai-revenue-run-rate", Usd(15 * B), "over $15B")),
        estimated(approx(cell(
            "azure",
            "ai-revenue-run-rate",
            Usd(13 * B),
            "~$13B (est.)",
        ))),
        estimated(approx(cell(
            "google-cloud",
            "ai-revenue-run-rate",
            Usd(8 * B),
            "~$8B (est.)",
        ))),
        cell(
            "aws",
            "custom-ai-chips",
            List(&["Trainium", "Inferentia"]),
            "Trainium, Inferentia",
        ),
        cell("azure", "custom-ai-chips", List(&["Maia 100"]), "Maia 100"),
        cell(
            "google-cloud",
            "custom-ai-chips",
            List(&["TPU v5p", "Axion"]),
            "TPU v5p, Axion",
        ),
        // The article: the business "includes Graviton processors for general compute and
        // Trainium chips for AI".
        Cell {
            note: "incl. Graviton",
            ..at_least(cell(
                "aws",
                "custom-chip-revenue-run-rate",
                Usd(20 * B),
                "over $20B (incl. Graviton)",
            ))
        },
        not_disclosed("azure", "custom-chip-revenue-run-rate"),
        not_disclosed("google-cloud", "custom-chip-revenue-run-rate"),
        cell(
            "aws",
            "foundation-models",
            List(&["Amazon Titan"]),
            "Amazon Titan",
        ),
        cell(
            "azure",
            "foundation-models",
            List(&["Phi", "MAI"]),
            "Phi, MAI",
        ),
        cell(
            "google-cloud",
            "foundation-models",
            List(&["Gemini"]),
            "Gemini",
        ),
        cell("aws", "primary-ai-partner", Text("Anthropic"), "Anthropic"),
        cell("azure", "primary-ai-partner", Text("OpenAI"), "OpenAI"),
        Cell {
            note: "internal",
            ..cell(
                "google-cloud",
                "primary-ai-partner",
                Text("DeepMind"),
                "DeepMind (internal)",
            )
        },
        approx(cell("aws", "yoy-growth", Percent("22"), "~22%")),
        approx(cell("azure", "yoy-growth", Percent("33"), "~33%")),
        approx(cell("google-cloud", "yoy-growth", Percent("28"), "~28%")),
    ]
}

fn assert_value(expected: Expect, actual: Option<&Value>, context: &str) {
    match (expected, actual) {
        (Expect::Usd(units), Some(Value::MoneyValue(money))) => {
            assert_eq!(money.currency_code, "USD", "{context}");
            assert_eq!((money.units, money.nanos), (units, 0), "{context}");
        }
        (Expect::Percent(text), Some(Value::DecimalValue(decimal))) => {
            assert_eq!(decimal, text, "{context}")
        }
        (Expect::Text(text), Some(Value::TextValue(value))) => assert_eq!(value, text, "{context}"),
        (Expect::List(items), Some(Value::TextListValue(list))) => {
            assert_eq!(list.values, items, "{context}")
        }
        (Expect::NotDisclosed, None) => {}
        (expected, actual) => panic!("{context}: expected {expected:?}, got {actual:?}"),
    }
}

#[tokio::test]
async fn every_cell_of_the_article_table_is_served_with_its_qualifiers() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let table = article_table();
    assert_eq!(table.len(), 21);
    for expected in &table {
        let name = format!(
            "providers/{}/periods/2026-q1/facts/{}",
            expected.provider, expected.metric
        );
        let fact = client
            .get_fact(GetFactRequest {
                name: name.clone(),
                read_time: None,
            })
            .await
            .unwrap_or_else(|status| panic!("{name}: {status}"))
            .into_inner();
        assert_value(expected.value, fact.value.as_ref(), &name);
        assert_eq!(fact.status(), expected.status, "{name}");
        assert_eq!(fact.approximate, expected.approximate, "{name}");
        assert_eq!(fact.lower_bound, expected.lower_bound, "{name}");
        assert!(!fact.upper_bound, "{name}");
        assert_eq!(fact.note, expected.note, "{name}");
        assert_eq!(fact.display_value, expected.display, "{name}");
        assert!(!fact.sources.is_empty(), "{name} has a source");
        if expected.status == FactStatus::Estimated {
            assert_eq!(fact.estimated_by, "the article", "{name}");
        }
    }
}

#[tokio::test]
async fn the_comparison_is_the_article_table_with_no_cell_dropped() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let comparison = client
        .compare_providers(CompareProvidersRequest {
            period: String::new(),
        })
        .await
        .expect("compare the latest period")
        .into_inner();
    assert_eq!(
        comparison.period.as_ref().map(|p| p.name.as_str()),
        Some("periods/2026-q1")
    );
    let providers: Vec<&str> = comparison
        .providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        providers,
        ["providers/aws", "providers/azure", "providers/google-cloud"]
    );
    let rows: Vec<&str> = comparison
        .rows
        .iter()
        .map(|row| row.metric.as_ref().map_or("", |m| m.name.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            "metrics/cloud-revenue",
            "metrics/ai-revenue-run-rate",
            "metrics/custom-ai-chips",
            "metrics/custom-chip-revenue-run-rate",
            "metrics/foundation-models",
            "metrics/primary-ai-partner",
            "metrics/yoy-growth",
        ]
    );
    let table = article_table();
    for row in &comparison.rows {
        assert_eq!(row.cells.len(), 3);
        for cell in &row.cells {
            let fact = cell
                .fact
                .as_ref()
                .expect("every cell of the article has a fact");
            let expected = table
                .iter()
                .find(|c| {
                    fact.name
                        == format!(
                            "providers/{}/periods/2026-q1/facts/{}",
                            c.provider, c.metric
                        )
                })
                .expect("the cell is one of the article's");
            assert_eq!(cell.display_value, expected.display);
            assert_eq!(fact.status(), expected.status);
            assert_value(expected.value, fact.value.as_ref(), &fact.name);
        }
    }
    let undisclosed = comparison
        .rows
        .iter()
        .flat_map(|row| &row.cells)
        .filter(|cell| {
            cell.fact
                .as_ref()
                .is_some_and(|f| f.status() == FactStatus::NotDisclosed)
        })
        .count();
    assert_eq!(undisclosed, 2);
}

#[tokio::test]
async fn the_other_facts_of_the_article_are_served_too() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let facts = client
        .list_facts(ListFactsRequest {
            parent: "providers/aws/periods/2026-q1".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list AWS's facts")
        .into_inner()
        .facts;
    let display = |metric: &str| {
        facts
            .iter()
            .find(|f| f.metric == format!("metrics/{metric}"))
            .map(|f| f.display_value.clone())
            .unwrap_or_else(|| panic!("no {metric} fact"))
    };
    assert_eq!(
        display("ai-offerings"),
        "Amazon Bedrock, Amazon SageMaker, EC2 instances with GPUs and Trainium, Amazon Q, AWS Inferentia"
    );
    assert_eq!(
        display("current-training-chip-gain"),
        "up to 4x (Trainium 2 over Trainium 1)"
    );
    assert_eq!(
        display("next-training-chip-gain"),
        "3x (Trainium 3, expected late 2026)"
    );
    assert_eq!(display("custom-chip-run-rate-change"), "~2x");
    assert!(display("capex-commitment").starts_with("over $100B"));
}

#[tokio::test]
async fn a_restart_on_the_same_data_directory_does_not_load_the_seed_again() {
    let server = TestServer::start().await;
    let list_all = |mut client: runrate::api::metrics_service_client::MetricsServiceClient<_>| async move {
        client
            .list_facts(ListFactsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("list facts")
            .into_inner()
            .facts
    };
    let before = list_all(server.metrics().await).await;
    let server = server.restart().await;
    let after = list_all(server.metrics().await).await;
    assert_eq!(before, after);
    assert!(after.iter().all(|f| f.revision == 1 && f.load == "loads/1"));
}

#[tokio::test]
async fn an_as_of_read_before_the_seed_finds_nothing() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let status = client
        .get_fact(GetFactRequest {
            name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
            read_time: Some(prost_types::Timestamp {
                seconds: 1_000_000_000,
                nanos: 0,
            }),
        })
        .await
        .expect_err("nothing was known in 2001");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

/// The figures an earlier version of the embedded seed loaded (before its sources and the
/// chip run rate's scope were corrected).
fn earlier_seed() -> Vec<u8> {
    std::fs::read(crate::support::helpers::figures_file(
        "seed-before-corrections.toml",
    ))
    .expect("the fixture")
}

#[tokio::test]
async fn a_store_of_an_earlier_seed_is_corrected_at_start_in_one_load_that_emails_nobody() {
    use runrate::api::{GetFactRevisionRequest, GetLoadRequest, RevisionReason};
    let server = TestServer::start().await;
    let token = server.admin_token();
    // As if this store had loaded the earlier seed: its facts as that seed stated them, by
    // a load of the seed's name; then a restatement of AWS's cloud revenue.
    server
        .load_with_token("2026-q1-seed.toml", earlier_seed(), false, Some(&token))
        .await
        .expect("the earlier seed loads");
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("the restatement loads");
    server.seed_confirmed_subscribers(2).await;

    let server = server.restart().await;
    let mut metrics = server.metrics().await;
    let latest = |metric: &str| GetFactRevisionRequest {
        name: format!("providers/aws/periods/2026-q1/facts/{metric}/revisions/latest"),
    };
    let chips = metrics
        .get_fact_revision(latest("custom-chip-revenue-run-rate"))
        .await
        .expect("the chip run rate")
        .into_inner();
    assert_eq!(chips.load, "loads/4", "one correcting load after the three");
    assert_eq!(chips.revision_reason(), RevisionReason::Corrected);
    assert!(chips.note.contains("Graviton"), "{:?}", chips.note);
    let cited: Vec<&str> = chips.sources.iter().map(|s| s.title.as_str()).collect();
    assert!(
        !cited.contains(&"Amazon Q1 2026 Earnings Release"),
        "{cited:?}"
    );
    // The AI run rate keeps the earnings release, as the article ties it to it.
    let ai = metrics
        .get_fact_revision(latest("ai-revenue-run-rate"))
        .await
        .expect("the AI run rate")
        .into_inner();
    assert!(
        ai.sources
            .iter()
            .any(|s| s.title == "Amazon Q1 2026 Earnings Release")
    );
    // A bound keeps the article's own words.
    assert_eq!(ai.quote, "over $15 billion in annualized revenue");
    assert_eq!(ai.revision_reason(), RevisionReason::Corrected);
    // The restated figure is left as restated.
    let cloud = metrics
        .get_fact_revision(latest("cloud-revenue"))
        .await
        .expect("the cloud revenue")
        .into_inner();
    assert_eq!(
        (cloud.load.as_str(), cloud.revision_reason()),
        ("loads/3", RevisionReason::Restated)
    );
    let load = metrics
        .get_load(GetLoadRequest {
            name: "loads/4".into(),
        })
        .await
        .expect("the correcting load")
        .into_inner();
    assert_eq!(load.file_name, "2026-q1-seed.toml");
    assert!(
        load.changes
            .iter()
            .all(|change| change.fact.starts_with("providers/aws/")),
        "{load:?}"
    );
    // Nobody is emailed about it.
    let report = server
        .admin()
        .await
        .get_delivery_report(
            server.admin_request(runrate::api::GetDeliveryReportRequest {
                name: "loads/4/deliveryReport".into(),
            }),
        )
        .await;
    assert_eq!(report.unwrap_err().code(), tonic::Code::NotFound);

    // A further start has nothing to correct.
    let server = server.restart().await;
    let loads = server
        .metrics()
        .await
        .list_loads(runrate::api::ListLoadsRequest::default())
        .await
        .expect("loads")
        .into_inner()
        .loads;
    assert_eq!(loads.len(), 4);
}
