//! What `runrate serve` writes: one JSON object per line when asked for JSON, and text
//! without terminal escape codes when its output is not a terminal.

use std::time::Duration;

use crate::support::helpers::{ServeProcess, TestDir};

/// Starts `runrate serve` with `extra` environment and gathers its lines until it says
/// it serves HTTP, then stops it.
fn lines_until_serving(extra: &[(&str, &str)]) -> Vec<String> {
    let dir = TestDir::blocking_new();
    let mut environment = dir.serve_environment();
    environment.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (mut server, lines) = ServeProcess::spawn(dir.path(), environment);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|line: &String| line.contains("serving HTTP"))
    {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("runrate serve says it serves HTTP: {seen:?}"));
        seen.push(line);
    }
    server.kill();
    seen
}

#[test]
fn json_logs_are_one_object_per_line_with_their_fields() {
    let lines = lines_until_serving(&[("RUNRATE__LOG__FORMAT", "json")]);
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    for event in &events {
        assert!(event["timestamp"].is_string(), "{event}");
        assert!(event["level"].is_string(), "{event}");
        assert!(event["target"].is_string(), "{event}");
    }
    let serving = events
        .iter()
        .find(|event| event["message"] == "serving HTTP")
        .expect("the serving line");
    let address: std::net::SocketAddr = serving["address"]
        .as_str()
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("an address field: {serving}"));
    assert!(address.ip().is_loopback(), "{serving}");
}

#[test]
fn text_logs_to_a_pipe_carry_no_escape_codes() {
    // NO_COLOR empty counts as unset: only the output not being a terminal is left to
    // keep the colours off.
    let lines = lines_until_serving(&[("NO_COLOR", "")]);
    assert!(
        lines.iter().any(|line| line.contains(" INFO ")),
        "{lines:?}"
    );
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
}
