//! The feeds of loads, read by a real feed parser: one entry per load, newest first,
//! ids that never change, and 304 for a poller that sends the ETag back.

use std::process::Command;

use crate::support::{
    helpers::TestServer,
    http_client::{HttpResponse, request_with_headers},
    python::{python, script},
};

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request_with_headers(server.http_address, "GET", path, headers, None).await
}

/// Both feeds as `read_feeds.py` reads them: `{"atom": [...], "json": [...]}`.
async fn read_feeds(server: &TestServer) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut files = Vec::new();
    for (path, content_type) in [
        ("/feed.atom", "application/atom+xml"),
        ("/feed.json", "application/feed+json"),
    ] {
        let answer = get(server, path, &[]).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some(content_type));
        let file = dir.path().join(path.trim_start_matches('/'));
        std::fs::write(&file, &answer.body).expect("write the feed");
        files.push(file);
    }
    let output = Command::new(python())
        .arg(script("read_feeds.py"))
        .args(&files)
        .output()
        .expect("run the feed reader");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the reader prints JSON")
}

fn ids(entries: &serde_json::Value) -> Vec<String> {
    entries
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["id"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn each_feed_has_one_entry_per_load_under_ids_that_stay() {
    let server = TestServer::start().await;
    let first = read_feeds(&server).await;
    for feed in ["atom", "json"] {
        let ids = ids(&first[feed]);
        assert_eq!(ids.len(), 1, "{feed}: the seed's load: {first}");
        assert!(ids[0].starts_with("tag:127.0.0.1,20"), "{feed}: {ids:?}");
        assert!(ids[0].ends_with(":runrate/loads/1"), "{feed}: {ids:?}");
    }

    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("the restatement loads");
    let second = read_feeds(&server).await;
    for feed in ["atom", "json"] {
        let entries = &second[feed];
        assert_eq!(
            ids(entries)[1..],
            ids(&first[feed])[..],
            "{feed}: the first load keeps its id"
        );
        let newest = &entries[0];
        assert!(
            newest["id"].as_str().unwrap().ends_with(":runrate/loads/2"),
            "{feed}: newest first: {entries}"
        );
        // What the restatement brought, in words, and no file name.
        let content = newest["content"].as_str().unwrap();
        assert!(
            content.contains("restated from ~$29B to $29.3B"),
            "{feed}: {content}"
        );
        assert!(!content.contains(".toml"), "{feed}: {content}");
        assert!(
            newest["title"].as_str().unwrap().contains("revised"),
            "{feed}: {newest}"
        );
    }
    assert_eq!(
        read_feeds(&server).await,
        second,
        "the same on every request"
    );
}

#[tokio::test]
async fn a_poller_with_the_etag_gets_304_until_the_next_load() {
    let server = TestServer::start().await;
    for path in ["/feed.atom", "/feed.json"] {
        let answer = get(&server, path, &[]).await;
        let etag = answer.header("etag").expect("an ETag").to_owned();

        let unchanged = get(&server, path, &[("If-None-Match", &etag)]).await;
        assert_eq!(unchanged.status, 304, "{path}: {unchanged:?}");
        assert!(unchanged.body.is_empty(), "{path}: {unchanged:?}");
        assert_eq!(unchanged.header("etag"), Some(etag.as_str()));
        let listed = format!("\"other\", W/{etag}");
        let weak = get(&server, path, &[("If-None-Match", &listed)]).await;
        assert_eq!(weak.status, 304, "{path}: one of a list, weakly compared");
        let other = get(&server, path, &[("If-None-Match", "\"other\"")]).await;
        assert_eq!(other.status, 200, "{path}: another tag gets the feed");
    }

    let before = get(&server, "/feed.json", &[]).await;
    let etag = before.header("etag").unwrap().to_owned();
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("a new quarter loads");
    let after = get(&server, "/feed.json", &[("If-None-Match", &etag)]).await;
    assert_eq!(after.status, 200, "a load changes the feed");
    assert_ne!(after.header("etag"), Some(etag.as_str()));
}
