//! The built `runrate` binary: `serve` with no configuration, `report` against it,
//! refusal of bad configuration, and a clean stop on SIGTERM.

use std::{process::Command, time::Duration};

use crate::support::helpers::{ServeProcess, TestDir};

const BINARY: &str = env!("CARGO_BIN_EXE_runrate");

/// Starts `runrate serve` in `dir` with no configuration but free ports (and, on the
/// PostgreSQL run, the test database).
fn serve_in(dir: &TestDir) -> ServeProcess {
    ServeProcess::start(dir.path(), dir.serve_environment())
}

#[test]
fn serve_with_no_configuration_then_report_prints_the_article_table() {
    let dir = TestDir::blocking_new();
    let server = serve_in(&dir);
    assert!(dir.is_postgres() || dir.path().join("runrate-data/runrate.db").is_file());

    let output = Command::new(BINARY)
        .args(["report", "--server", &server.url])
        .output()
        .expect("run runrate report");
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).expect("UTF-8");
    for expected in [
        "AWS (Amazon)",
        "~$29B",
        "~$12.5B",
        "~$13B (est.)",
        "Not disclosed",
        "TPU v5p, Axion",
        "DeepMind (internal)",
        "~33%",
    ] {
        assert!(table.contains(expected), "{expected} missing from\n{table}");
    }

    let output = Command::new(BINARY)
        .args(["report", "2026-Q1", "--json", "--server", &server.url])
        .output()
        .expect("run runrate report --json");
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["period"], "2026-Q1");
    assert_eq!(json["rows"][1]["cells"][1]["display"], "~$13B (est.)");
    assert_eq!(
        json["rows"][1]["cells"][1]["status"],
        "FACT_STATUS_ESTIMATED"
    );
    assert_eq!(json["rows"][0]["cells"][2]["value"]["units"], "12500000000");

    let output = Command::new(BINARY)
        .args(["report", "2026-Q5", "--server", &server.url])
        .output()
        .expect("run runrate report 2026-Q5");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("2026-Q5"));
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = TestDir::blocking_new();
    let mut server = serve_in(&dir);
    let health = run_in(dir.path(), &["health", "--server", &server.url]);
    assert!(health.status.success(), "{health:?}");
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = server.child.try_wait().expect("poll the server") {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("a working directory");
    let output = Command::new(BINARY)
        .arg("serve")
        .current_dir(dir.path())
        .env("RUNRATE__GRPC__REQUEST_TIMEOUT", "forever")
        .output()
        .expect("run runrate serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("grpc.request_timeout"), "{stderr}");
    assert!(stderr.contains("10s"), "{stderr}");

    std::fs::write(dir.path().join("runrate.toml"), "[grpc]\nlisten = 5\n")
        .expect("write the file");
    let output = Command::new(BINARY)
        .arg("serve")
        .current_dir(dir.path())
        .output()
        .expect("run runrate serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("grpc.listen"), "{stderr}");
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run runrate")
}

#[test]
fn load_sends_a_file_and_says_what_it_did() {
    let dir = TestDir::blocking_new();
    let server = serve_in(&dir);
    let example = crate::support::helpers::figures_file("2026-q2-example.toml");
    let example = example.to_str().expect("a UTF-8 path");
    let restatement = crate::support::helpers::figures_file("2026-q1-restatement-example.toml");
    let restatement = restatement.to_str().expect("a UTF-8 path");

    let output = run_in(
        dir.path(),
        &["load", restatement, "--dry-run", "--server", &server.url],
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("0 facts added, 2 revised"), "{stdout}");
    assert!(stdout.contains("Nothing was written"), "{stdout}");

    let output = run_in(dir.path(), &["load", example, "--server", &server.url]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("Loaded 2026-q2-example.toml as loads/2: 21 facts added, 0 revised"),
        "{stdout}"
    );

    let output = run_in(dir.path(), &["load", example, "--server", &server.url]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("Nothing to load"));

    let output = run_in(dir.path(), &["load", restatement, "--server", &server.url]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("  revised providers/azure/periods/2026-q1/facts/ai-revenue-run-rate to revision 2 (estimate replaced by a reported figure)"), "{stdout}");

    let bad = crate::support::helpers::figures_file("bad/negative-revenue.toml");
    let output = run_in(
        dir.path(),
        &[
            "load",
            bad.to_str().expect("UTF-8"),
            "--server",
            &server.url,
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("negative-revenue.toml:13: fact aws / cloud-revenue / 2026-Q3: value -5000000000 is negative"), "{stderr}");
    assert!(
        stderr.contains("rejected with 1 error(s); nothing was written"),
        "{stderr}"
    );

    let output = run_in(
        dir.path(),
        &[
            "load",
            example,
            "--server",
            &server.url,
            "--token",
            "wrong-token-wrong-token",
        ],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the admin token is wrong"),
        "{output:?}"
    );
}

#[test]
fn load_finds_the_server_and_its_token_from_the_servers_own_environment() {
    let dir = TestDir::blocking_new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let data_dir = dir.path().join("srv/runrate");
    let mut environment = dir.serve_environment();
    environment.extend([
        (
            "RUNRATE__GRPC__LISTEN".to_owned(),
            format!("0.0.0.0:{port}"),
        ),
        (
            "RUNRATE__DATA_DIR".to_owned(),
            data_dir.display().to_string(),
        ),
    ]);
    let _server = ServeProcess::start(dir.path(), environment.clone());
    // Run from elsewhere, with nothing but the server's environment.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("a working directory");
    let example = crate::support::helpers::figures_file("2026-q2-example.toml");
    let output = Command::new(BINARY)
        .args(["load", example.to_str().expect("UTF-8")])
        .current_dir(&elsewhere)
        .envs(environment)
        .output()
        .expect("run runrate load");
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("Loaded 2026-q2-example.toml"),
        "{output:?}"
    );
}

#[test]
fn deliveries_prints_the_report_of_a_load() {
    let dir = TestDir::blocking_new();
    let server = serve_in(&dir);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(dir.seed_confirmed_subscribers(&dir.path().join("runrate-data"), 2));
    let example = crate::support::helpers::figures_file("2026-q2-example.toml");
    let output = run_in(
        dir.path(),
        &[
            "load",
            example.to_str().expect("UTF-8"),
            "--server",
            &server.url,
        ],
    );
    assert!(output.status.success(), "{output:?}");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let output = run_in(dir.path(), &["deliveries", "2", "--server", &server.url]);
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            stdout.starts_with("Updates of loads/2: 2 recipients"),
            "{stdout}"
        );
        if stdout.contains("sent 2, pending 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let emails = std::fs::read_dir(dir.path().join("runrate-data/mail"))
        .expect("the mail directory")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count();
    assert_eq!(emails, 2);

    // With no load named: the newest load that sent updates.
    let output = run_in(dir.path(), &["deliveries", "--server", &server.url]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("Updates of loads/2:"));

    let output = run_in(
        dir.path(),
        &["deliveries", "loads/9", "--server", &server.url],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("loads/9"),
        "{output:?}"
    );
}
