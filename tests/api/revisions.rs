//! Revisions as resources (AIP-162 names, `first` and `latest`), each with the interval
//! it was the fact's value in: from the load that brought it to the load that replaced
//! it, one interval ending where the next begins, whatever sequence of loads came; and
//! the vintage table, a series as known after each load.

use proptest::prelude::*;
use runrate::api::{
    Fact, GetFactRequest, GetFactRevisionRequest, GetVintageTableRequest, ListFactRevisionsRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::helpers::TestServer;

const CLOUD_REVENUE: &str = "providers/aws/periods/2026-q1/facts/cloud-revenue";

async fn revision(server: &TestServer, name: &str) -> Result<Fact, tonic::Status> {
    server
        .metrics()
        .await
        .get_fact_revision(GetFactRevisionRequest { name: name.into() })
        .await
        .map(tonic::Response::into_inner)
}

/// Every revision of `fact`, newest first, over as many pages as it takes.
async fn all_revisions(server: &TestServer, fact: &str) -> Vec<Fact> {
    let mut client = server.metrics().await;
    let mut revisions = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_fact_revisions(ListFactRevisionsRequest {
                parent: fact.into(),
                page_size: 2,
                page_token,
            })
            .await
            .expect("the revisions")
            .into_inner();
        revisions.extend(page.revisions);
        if page.next_page_token.is_empty() {
            return revisions;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn first_is_the_value_first_released_and_latest_the_restated_one() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("the restatement loads");

    let first = revision(&server, &format!("{CLOUD_REVENUE}/revisions/first"))
        .await
        .expect("the first revision");
    let latest = revision(&server, &format!("{CLOUD_REVENUE}/revisions/latest"))
        .await
        .expect("the latest revision");
    assert_eq!((first.revision, latest.revision), (1, 2));
    assert_eq!(first.display_value, "~$29B");
    assert_eq!(latest.display_value, "$29.3B");
    assert_eq!(
        first.name, CLOUD_REVENUE,
        "a revision is the fact as it was"
    );

    // The original's interval ends where the restatement's begins; the latest's is open.
    assert_eq!(
        (first.load.as_str(), first.replaced_by_load.as_str()),
        ("loads/1", "loads/2")
    );
    assert_eq!(first.replace_time, latest.record_time);
    assert_eq!(
        (latest.replaced_by_load.as_str(), latest.replace_time),
        ("", None)
    );

    // By number, the same resources; and the list says the same, newest first.
    assert_eq!(
        revision(&server, &format!("{CLOUD_REVENUE}/revisions/1"))
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        all_revisions(&server, CLOUD_REVENUE).await,
        [latest.clone(), first.clone()]
    );

    // Read as of a moment before the restatement, the fact is as it was known then.
    let before = server
        .metrics()
        .await
        .get_fact(GetFactRequest {
            name: CLOUD_REVENUE.into(),
            read_time: first.record_time,
        })
        .await
        .expect("the fact as it was")
        .into_inner();
    assert_eq!(
        before,
        Fact {
            replaced_by_load: String::new(),
            replace_time: None,
            ..first
        }
    );
}

#[tokio::test]
async fn a_revision_that_does_not_exist_is_not_found_and_a_bad_name_is_named() {
    let server = TestServer::start().await;
    let missing = revision(&server, &format!("{CLOUD_REVENUE}/revisions/2"))
        .await
        .expect_err("the seed has one revision");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(missing.message().contains("revisions/2"), "{missing:?}");

    for bad in [
        format!("{CLOUD_REVENUE}/revisions/0"),
        format!("{CLOUD_REVENUE}/revisions/newest"),
        format!("{CLOUD_REVENUE}/revisions"),
        CLOUD_REVENUE.to_owned(),
    ] {
        let err = revision(&server, &bad).await.expect_err(&bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        let violations = err.get_details_bad_request().expect("BadRequest details");
        assert_eq!(violations.field_violations[0].field, "name", "{bad}");
    }
    let unknown = revision(
        &server,
        "providers/aws/periods/2026-q1/facts/no-such-metric/revisions/first",
    )
    .await
    .expect_err("an unknown metric");
    assert_eq!(unknown.code(), Code::NotFound);
}

const PROVIDERS: [&str; 3] = ["aws", "azure", "google-cloud"];
const PERIODS: [&str; 2] = ["2026-Q1", "2026-Q2"];
const VALUES: [&str; 3] = ["28B", "29B", "30B"];

/// A figures file stating cloud revenue for each (provider, period, value) index triple.
fn figures_file(facts: &[(usize, usize, usize)]) -> String {
    let mut file = String::from(
        "format_version = 1\n\n[[sources]]\nid = \"invented\"\ntitle = \"Invented\"\npublisher = \"runrate tests\"\nlocator = \"tests/api/revisions.rs\"\n",
    );
    for &(provider, period, value) in facts {
        file.push_str(&format!(
            "\n[[facts]]\nprovider = \"{}\"\nmetric = \"cloud-revenue\"\nperiod = \"{}\"\nvalue = \"{}\"\nsources = [\"invented\"]\n",
            PROVIDERS[provider], PERIODS[period], VALUES[value]
        ));
    }
    file
}

/// Each load states a few facts (each at most once); unchanged values make no revision.
fn load_sequences() -> impl Strategy<Value = Vec<Vec<(usize, usize, usize)>>> {
    let load = prop::collection::btree_map(
        (0..PROVIDERS.len(), 0..PERIODS.len()),
        0..VALUES.len(),
        1..4,
    )
    .prop_map(|facts| {
        facts
            .into_iter()
            .map(|((provider, period), value)| (provider, period, value))
            .collect::<Vec<_>>()
    });
    prop::collection::vec(load, 1..6)
}

fn seconds(time: &Option<prost_types::Timestamp>) -> (i64, i32) {
    let time = time.as_ref().expect("a time");
    (time.seconds, time.nanos)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn revision_intervals_follow_each_other_without_gap_or_overlap(loads in load_sequences()) {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async {
            let server = TestServer::start().await;
            let token = server.admin_token();
            for (number, facts) in loads.iter().enumerate() {
                server
                    .load_with_token(&format!("load-{number}.toml"), figures_file(facts).into_bytes(), false, Some(&token))
                    .await
                    .expect("the load is accepted");
            }
            for provider in PROVIDERS {
                for period in PERIODS {
                    let fact = format!("providers/{provider}/periods/{}/facts/cloud-revenue", period.to_lowercase());
                    let stated = loads.iter().flatten().any(|&(p, q, _)| PROVIDERS[p] == provider && PERIODS[q] == period);
                    if period == "2026-Q2" && !stated {
                        continue;
                    }
                    let mut revisions = all_revisions(&server, &fact).await;
                    revisions.reverse();
                    let numbers: Vec<i64> = revisions.iter().map(|r| r.revision).collect();
                    let expected: Vec<i64> = (1..=revisions.len() as i64).collect();
                    assert_eq!(numbers, expected, "{fact}: numbered from 1 with no hole");
                    for pair in revisions.windows(2) {
                        let (older, newer) = (&pair[0], &pair[1]);
                        assert_eq!(older.replaced_by_load, newer.load, "{fact}: no gap or overlap in loads");
                        assert_eq!(older.replace_time, newer.record_time, "{fact}: no gap or overlap in time");
                        assert!(seconds(&older.record_time) <= seconds(&older.replace_time), "{fact}: an interval runs forward");
                        assert_ne!(older.display_value, newer.display_value, "{fact}: a revision changes the value");
                    }
                    let latest = revisions.last().expect("at least one revision");
                    assert_eq!((latest.replaced_by_load.as_str(), latest.replace_time), ("", None), "{fact}: the latest is open");
                    let by_alias = revision(&server, &format!("{fact}/revisions/latest")).await.expect("latest");
                    assert_eq!(&by_alias, latest);
                    let first = revision(&server, &format!("{fact}/revisions/first")).await.expect("first");
                    assert_eq!(&first, &revisions[0]);
                }
            }
        });
    }
}

/// The display values of a vintage's cells, `-` where no figure was known yet.
fn cells(vintage: &runrate::api::Vintage) -> Vec<String> {
    vintage
        .cells
        .iter()
        .map(|cell| {
            cell.fact
                .as_ref()
                .map_or_else(|| "-".to_owned(), |fact| fact.display_value.clone())
        })
        .collect()
}

#[tokio::test]
async fn a_vintage_table_shows_a_series_as_known_after_each_load() {
    let server = TestServer::start().await;
    for example in ["2026-q2-example.toml", "2026-q1-restatement-example.toml"] {
        server
            .load_example(example)
            .await
            .expect("the example loads");
    }
    let mut client = server.metrics().await;
    let request = |page_size, page_token| GetVintageTableRequest {
        provider: "providers/aws".into(),
        metric: "metrics/cloud-revenue".into(),
        page_size,
        page_token,
    };
    let first_page = client
        .get_vintage_table(request(2, String::new()))
        .await
        .expect("the vintage table")
        .into_inner();
    assert_eq!(first_page.periods, ["periods/2026-q1", "periods/2026-q2"]);
    let loads: Vec<&str> = first_page
        .vintages
        .iter()
        .map(|v| v.load.as_str())
        .collect();
    assert_eq!(loads, ["loads/3", "loads/2"], "newest first");
    assert_eq!(
        cells(&first_page.vintages[0]),
        ["$29.3B", "~$31.5B"],
        "after the restatement"
    );
    assert_eq!(
        cells(&first_page.vintages[1]),
        ["~$29B", "~$31.5B"],
        "after Q2 came"
    );
    assert_eq!(
        first_page.vintages[1].cells[0]
            .fact
            .as_ref()
            .unwrap()
            .replaced_by_load,
        "loads/3"
    );

    let last_page = client
        .get_vintage_table(request(2, first_page.next_page_token.clone()))
        .await
        .expect("the next page")
        .into_inner();
    assert_eq!(last_page.vintages.len(), 1);
    assert_eq!(last_page.vintages[0].load, "loads/1");
    assert_eq!(
        cells(&last_page.vintages[0]),
        ["~$29B", "-"],
        "the seed had no Q2"
    );
    assert!(last_page.next_page_token.is_empty());

    let unknown = client
        .get_vintage_table(GetVintageTableRequest {
            provider: "providers/aws".into(),
            metric: "metrics/no-such-metric".into(),
            ..Default::default()
        })
        .await
        .expect_err("an unknown metric");
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = client
        .get_vintage_table(GetVintageTableRequest {
            provider: "aws".into(),
            metric: "metrics/cloud-revenue".into(),
            ..Default::default()
        })
        .await
        .expect_err("not a provider name");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let field = &bad.get_details_bad_request().unwrap().field_violations[0].field;
    assert_eq!(field, "provider");
}
