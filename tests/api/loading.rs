//! Loading figures files through AdminService: new quarters, no-ops, restatements with
//! their history, as-of reads, dry runs, rejected files, and the bearer token.

use runrate::api::{
    CompareProvidersRequest, FactStatus, GetFactRequest, GetLoadRequest, ListFactRevisionsRequest,
    ListLoadsRequest, ListPeriodsRequest, RevisionReason, fact::Value,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::helpers::{TestDir, TestServer, figures_file};

fn usd_units(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::MoneyValue(money)) => {
            assert_eq!(money.currency_code, "USD");
            assert_eq!(money.nanos, 0);
            money.units
        }
        other => panic!("not money: {other:?}"),
    }
}

#[tokio::test]
async fn a_new_quarter_appears_in_periods_the_comparison_and_histories() {
    let server = TestServer::start().await;
    let response = server
        .load_example("2026-q2-example.toml")
        .await
        .expect("the example loads");
    assert_eq!((response.facts_added, response.facts_revised), (21, 0));
    assert!(!response.no_op);
    let load = response.load.expect("a load was written");
    assert_eq!(load.name, "loads/2");
    assert_eq!(load.changes.len(), 21);

    let mut client = server.metrics().await;
    let periods = client
        .list_periods(ListPeriodsRequest::default())
        .await
        .expect("list periods")
        .into_inner()
        .periods;
    let names: Vec<&str> = periods.iter().map(|p| p.display_name.as_str()).collect();
    assert_eq!(names, ["2026-Q1", "2026-Q2"]);

    let comparison = client
        .compare_providers(CompareProvidersRequest {
            period: String::new(),
        })
        .await
        .expect("the latest comparison")
        .into_inner();
    assert_eq!(comparison.period.expect("a period").display_name, "2026-Q2");
    let first_row: Vec<&str> = comparison.rows[0]
        .cells
        .iter()
        .map(|c| c.display_value.as_str())
        .collect();
    assert_eq!(first_row, ["~$31.5B", "~$28.1B", "~$13.9B"]);
    assert!(
        comparison
            .rows
            .iter()
            .all(|row| row.cells.iter().all(|c| c.fact.is_some()))
    );

    let revisions = client
        .list_fact_revisions(ListFactRevisionsRequest {
            parent: "providers/azure/periods/2026-q2/facts/cloud-revenue".into(),
            ..Default::default()
        })
        .await
        .expect("the fact's history")
        .into_inner()
        .revisions;
    assert_eq!(revisions.len(), 1);
    assert_eq!(
        (revisions[0].revision, revisions[0].load.as_str()),
        (1, "loads/2")
    );
}

#[tokio::test]
async fn loading_the_same_file_again_is_a_no_op_and_creates_no_load() {
    let server = TestServer::start().await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("first load");
    let before = server.dump().await;
    let again = server
        .load_example("2026-q2-example.toml")
        .await
        .expect("second load");
    assert!(again.no_op);
    assert!(again.load.is_none());
    assert_eq!(
        (
            again.facts_added,
            again.facts_revised,
            again.facts_unchanged
        ),
        (0, 0, 21)
    );
    assert_eq!(server.dump().await, before);
    let loads = server
        .metrics()
        .await
        .list_loads(ListLoadsRequest::default())
        .await
        .expect("list loads")
        .into_inner()
        .loads;
    assert_eq!(loads.len(), 2);
}

#[tokio::test]
async fn a_restatement_is_a_new_revision_and_the_old_value_stays_readable() {
    let server = TestServer::start().await;
    let mut client = server.metrics().await;
    let name = "providers/aws/periods/2026-q1/facts/cloud-revenue";
    let original = client
        .get_fact(GetFactRequest {
            name: name.into(),
            read_time: None,
        })
        .await
        .expect("the seed fact")
        .into_inner();

    let response = server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("the restatement loads");
    assert_eq!((response.facts_added, response.facts_revised), (0, 2));

    let current = client
        .get_fact(GetFactRequest {
            name: name.into(),
            read_time: None,
        })
        .await
        .expect("the restated fact")
        .into_inner();
    assert_eq!(usd_units(current.value.as_ref()), 29_300_000_000);
    assert!(!current.approximate);
    assert_eq!(current.revision, 2);
    assert_eq!(current.revision_reason(), RevisionReason::Restated);

    let as_of_before = client
        .get_fact(GetFactRequest {
            name: name.into(),
            read_time: current_minus_one(&current),
        })
        .await
        .expect("the fact as it was")
        .into_inner();
    assert_eq!(as_of_before, original);
    assert_eq!(usd_units(as_of_before.value.as_ref()), 29_000_000_000);

    let history = client
        .list_fact_revisions(ListFactRevisionsRequest {
            parent: name.into(),
            ..Default::default()
        })
        .await
        .expect("the history")
        .into_inner()
        .revisions;
    let revisions: Vec<i64> = history.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, [2, 1], "newest first");

    let azure = client
        .get_fact(GetFactRequest {
            name: "providers/azure/periods/2026-q1/facts/ai-revenue-run-rate".into(),
            read_time: None,
        })
        .await
        .expect("Azure's run rate")
        .into_inner();
    assert_eq!(azure.status(), FactStatus::Reported);
    assert_eq!(azure.revision_reason(), RevisionReason::EstimateReplaced);

    let load = client
        .get_load(GetLoadRequest {
            name: "loads/2".into(),
        })
        .await
        .expect("the load")
        .into_inner();
    assert_eq!(load.facts_revised, 2);
    let changed: Vec<&str> = load.changes.iter().map(|c| c.fact.as_str()).collect();
    assert_eq!(
        changed,
        [
            "providers/aws/periods/2026-q1/facts/cloud-revenue",
            "providers/azure/periods/2026-q1/facts/ai-revenue-run-rate",
        ]
    );
}

/// One microsecond before the revision was recorded.
fn current_minus_one(fact: &runrate::api::Fact) -> Option<prost_types::Timestamp> {
    let time = fact.record_time.expect("a record time");
    let (seconds, nanos) = if time.nanos >= 1_000 {
        (time.seconds, time.nanos - 1_000)
    } else {
        (time.seconds - 1, time.nanos + 999_999_000)
    };
    Some(prost_types::Timestamp { seconds, nanos })
}

#[tokio::test]
async fn a_dry_run_reports_what_it_would_do_and_writes_nothing() {
    let server = TestServer::start().await;
    let before = server.dump().await;
    let content = std::fs::read(figures_file("2026-q2-example.toml")).expect("read the example");
    let token = server.admin_token();
    let response = server
        .load_with_token("2026-q2-example.toml", content, true, Some(&token))
        .await
        .expect("the dry run");
    assert!(response.validate_only);
    assert!(response.load.is_none());
    assert_eq!(response.facts_added, 21);
    assert_eq!(server.dump().await, before);
}

#[tokio::test]
async fn a_file_can_bring_a_new_provider_and_metric() {
    let server = TestServer::start().await;
    let response = server
        .load_example("new-provider-example.toml")
        .await
        .expect("load");
    assert_eq!(response.definitions_changed, 2);
    let mut client = server.metrics().await;
    let fact = client
        .get_fact(GetFactRequest {
            name: "providers/oracle-cloud/periods/2026-q1/facts/remaining-performance-obligations"
                .into(),
            read_time: None,
        })
        .await
        .expect("the new provider's new metric")
        .into_inner();
    assert_eq!(fact.display_value, "over $450B");
    let comparison = client
        .compare_providers(CompareProvidersRequest {
            period: "periods/2026-q1".into(),
        })
        .await
        .expect("compare")
        .into_inner();
    assert_eq!(comparison.providers.len(), 4);
    let oracle_chip_cell = &comparison.rows[2].cells[3];
    assert!(
        oracle_chip_cell.fact.is_none(),
        "no figure at all is not 'not disclosed'"
    );
    assert_eq!(oracle_chip_cell.display_value, "n/a");
}

#[tokio::test]
async fn every_bad_file_is_rejected_with_its_error_and_changes_nothing() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.load.max_file_bytes = 16 * 1024;
    let server = TestServer::start_in(dir, settings).await;
    let token = server.admin_token();
    let before = server.dump().await;

    let bad_dir = figures_file("bad");
    let mut files: Vec<_> = std::fs::read_dir(&bad_dir)
        .expect("the bad examples")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 17, "one bad file per rule");
    let mut cases: Vec<(String, Vec<u8>, String)> = files
        .iter()
        .map(|path| {
            let content = std::fs::read(path).expect("read a bad example");
            let first_line = content.split(|b| *b == b'\n').next().unwrap_or_default();
            let expected = String::from_utf8_lossy(first_line)
                .strip_prefix("# expect: ")
                .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()))
                .to_owned();
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, content, expected)
        })
        .collect();
    let mut oversized = b"format_version = 1\n".to_vec();
    oversized.extend(std::iter::repeat_n(b"# padding\n".as_slice(), 2000).flatten());
    cases.push((
        "oversized.toml".into(),
        oversized,
        "over the limit of 16384 bytes".into(),
    ));

    for (name, content, expected) in cases {
        let status = server
            .load_with_token(&name, content, false, Some(&token))
            .await
            .expect_err(&format!("{name} is rejected"));
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "FIGURES_FILE_REJECTED", "{name}");
        let violations = status
            .get_details_bad_request()
            .expect("field violations")
            .field_violations;
        assert!(
            violations.iter().any(|v| v.description.contains(&expected)),
            "{name}: expected `{expected}` in {violations:#?}"
        );
        assert!(
            violations.iter().all(|v| v.description.starts_with(&name)),
            "{name}: every error names the file: {violations:#?}"
        );
        assert_eq!(server.dump().await, before, "{name} changed the store");
    }
}

#[tokio::test]
async fn errors_name_the_line_and_the_fact() {
    let server = TestServer::start().await;
    let token = server.admin_token();
    let content = std::fs::read(figures_file("bad/undefined-provider.toml")).expect("read");
    let status = server
        .load_with_token("undefined-provider.toml", content, false, Some(&token))
        .await
        .expect_err("rejected");
    let violations = status
        .get_details_bad_request()
        .expect("violations")
        .field_violations;
    assert_eq!(
        violations[0].description,
        "undefined-provider.toml:10: fact oracle / cloud-revenue / 2026-Q3: provider `oracle` is not defined (add it under [[providers]] in this file)"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused() {
    let server = TestServer::start().await;
    let before = server.dump().await;
    let content = std::fs::read(figures_file("2026-q2-example.toml")).expect("read");
    for token in [None, Some("not-the-token"), Some("")] {
        let status = server
            .load_with_token("2026-q2-example.toml", content.clone(), false, token)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }
    assert_eq!(server.dump().await, before);
}
