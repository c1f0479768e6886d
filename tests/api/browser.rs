//! SQLite only: the pages read the in-memory snapshot on either backend, the sign-ups
//! they make run on PostgreSQL in `newsletter`, and Chromium's minutes are spent once.
//!
//! Real headless Chromium (Debian's `chromium`, driven by playwright-core from npm):
//! pages served from other origins call runrate as a dashboard would. The browser
//! enforces CORS, so these show what a page can and cannot read.
//!
//! Runs when Chromium is installed (`.ci/run` installs it and requires the test to run
//! through `RUNRATE_TEST_CHROMIUM`); playwright-core is installed by the test into
//! Cargo's target directory from `tests/browser/package-lock.json`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde_json::json;
use tokio::net::TcpListener;

use runrate::api::SubscribeRequest;

use crate::support::{
    helpers::{TestDir, TestServer},
    smtp_server::SmtpServer,
};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The Chromium to drive, or `None` (the test is then skipped, saying so) when none is
/// installed and `.ci/run` did not ask for one.
fn chromium() -> Option<PathBuf> {
    let found = match std::env::var_os("RUNRATE_TEST_CHROMIUM") {
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from("/usr/bin/chromium")).filter(|path| path.exists()),
    };
    if found.is_none() {
        eprintln!("skipped: no Chromium (apt-get install chromium, or set RUNRATE_TEST_CHROMIUM)");
    }
    found
}

/// playwright-core's `node_modules`, installed once from the lock file.
fn node_modules() -> PathBuf {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
            let lock = std::fs::read_to_string(browser_dir().join("package-lock.json"))
                .expect("read the lock file");
            // The lock it was installed from, written last: a half-made one is redone.
            let marker = dir.join("runrate-package-lock.json");
            if std::fs::read_to_string(&marker).ok().as_deref() != Some(lock.as_str()) {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("make the install directory");
                for file in ["package.json", "package-lock.json"] {
                    std::fs::copy(browser_dir().join(file), dir.join(file)).expect("copy");
                }
                let output = Command::new("npm")
                    .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .output()
                    .expect("run npm");
                assert!(
                    output.status.success(),
                    "npm ci failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                std::fs::write(&marker, lock).expect("mark the install made");
            }
            dir.join("node_modules")
        })
        .clone()
}

/// Runs `script` from `tests/browser/` with `args` in node, with playwright-core and
/// axe-core and the Chromium to drive; what it printed, as JSON.
fn run_node(
    script: &str,
    chromium: &Path,
    args: &[&std::ffi::OsStr],
    extra_env: &[(&str, &std::ffi::OsStr)],
) -> serde_json::Value {
    let output = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .env("RUNRATE_NODE_MODULES", node_modules())
        .env("CHROMIUM", chromium)
        .envs(extra_env.iter().map(|(key, value)| (*key, *value)))
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{script} prints JSON: {err}"))
}

/// Opens each URL in Chromium; what each page put in `window.result`.
fn open_pages(chromium: &Path, urls: &[String]) -> Vec<serde_json::Value> {
    let args: Vec<&std::ffi::OsStr> = urls.iter().map(|url| url.as_ref()).collect();
    let pages = run_node("open_pages.js", chromium, &args, &[]);
    pages
        .as_array()
        .expect("an array of pages")
        .iter()
        .map(|page| page["result"].clone())
        .collect()
}

/// Serves `tests/browser/cross_origin.html` at `/` from `listener`: a page of its own
/// origin.
fn serve_page(listener: TcpListener) {
    let html = std::fs::read_to_string(browser_dir().join("cross_origin.html")).expect("the page");
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(html) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
}

async fn page_origin() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("an address");
    (listener, address)
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_reads_get_fact_over_grpc_web_and_json_and_another_cannot() {
    let Some(chromium) = chromium() else {
        return;
    };
    let (allowed, allowed_address) = page_origin().await;
    let (refused, refused_address) = page_origin().await;
    serve_page(allowed);
    serve_page(refused);
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.http.cors_allowed_origins = format!("http://{allowed_address}")
        .parse()
        .expect("an origin");
    let server = TestServer::start_in(dir, settings).await;

    let fact = "providers/aws/periods/2026-q1/facts/ai-revenue-run-rate";
    let query = format!(
        "?grpc=http://{}&http=http://{}&fact={fact}",
        server.address, server.http_address
    );
    let urls = [
        format!("http://{allowed_address}/{query}"),
        format!("http://{refused_address}/{query}"),
    ];
    // Off the test's runtime thread, which serves the pages and runrate meanwhile.
    let results = tokio::task::spawn_blocking(move || open_pages(&chromium, &urls))
        .await
        .expect("the browser run");

    for (call, status) in [("grpcWeb", json!("0")), ("json", json!(200))] {
        let read = &results[0][call];
        assert_eq!(read["ok"], true, "{call}: {read}");
        assert_eq!(read["status"], status, "{call}: {read}");
        assert_eq!(read["name"], fact, "{call}: {read}");
        assert_eq!(read["displayValue"], "over $15B", "{call}: {read}");

        let refused = &results[1][call];
        assert_eq!(
            refused["ok"], false,
            "{call}: the browser refuses the answer: {refused}"
        );
        assert!(
            refused["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Failed to fetch"),
            "{call}: {refused}"
        );
    }
}

/// Audits each URL at 1280 and 390 px (`audit_pages.js`), writing screenshots under
/// `target/`: one finding per page and width.
/// Audits each URL with `audit_pages.js` without the axe-core rules `disabled`
/// (comma-separated), its screenshots in `screenshots/{what}`.
fn audit_pages(
    chromium: &Path,
    urls: &[String],
    what: &str,
    disabled: &str,
) -> Vec<serde_json::Value> {
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("screenshots")
        .join(what);
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).expect("the screenshot directory");
    let args: Vec<&std::ffi::OsStr> = urls.iter().map(|url| url.as_ref()).collect();
    let findings = run_node(
        "audit_pages.js",
        chromium,
        &args,
        &[
            ("SCREENSHOTS", screenshots.as_os_str()),
            ("AXE_DISABLED", disabled.as_ref()),
        ],
    );
    findings.as_array().expect("an array of findings").clone()
}

#[tokio::test]
async fn every_page_passes_axe_and_fits_a_phone_without_sideways_scrolling() {
    let Some(chromium) = chromium() else {
        return;
    };
    let server = TestServer::start().await;
    for file in ["2026-q2-example.toml", "2026-q1-restatement-example.toml"] {
        server.load_example(file).await.expect("load");
    }
    let base = format!("http://{}", server.http_address);
    let urls: Vec<String> = [
        "/",
        "/?period=2026-q1",
        "/metrics/cloud-revenue",
        "/metrics/custom-ai-chips",
        "/providers/aws",
        "/privacy",
        "/confirm?token=from-an-email",
        "/unsubscribe?token=from-an-email",
        // A message page (the link's token is missing).
        "/unsubscribe",
    ]
    .iter()
    .map(|path| format!("{base}{path}"))
    .collect();
    let findings = tokio::task::spawn_blocking(move || audit_pages(&chromium, &urls, "pages", ""))
        .await
        .expect("the browser run");
    assert_eq!(findings.len(), 18, "nine pages at two widths");
    assert_accessible(&findings);
}

/// No axe-core violation, no sideways scrolling and no touch target under 24 px in any
/// of `audit_pages`' findings.
fn assert_accessible(findings: &[serde_json::Value]) {
    for finding in findings {
        let page = format!("{} at {}", finding["url"], finding["viewport"]);
        assert_eq!(finding["violations"], json!([]), "axe-core on {page}");
        assert_eq!(
            finding["refused"],
            json!([]),
            "the content security policy refused something {page} needs"
        );
        assert!(
            finding["scrollWidth"].as_u64() <= finding["innerWidth"].as_u64(),
            "{page} scrolls sideways: {finding}"
        );
        assert_eq!(
            finding["smallTargets"],
            json!([]),
            "touch targets under 24 px on {page}"
        );
    }
}

#[tokio::test]
async fn every_email_passes_axe_and_fits_a_phone_without_sideways_scrolling() {
    let Some(chromium) = chromium() else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with_smtp(smtp.address).await;
    server
        .newsletter()
        .await
        .subscribe(SubscribeRequest {
            email: "new.reader@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe");
    server.seed_confirmed_subscribers(1).await;
    for file in ["2026-q2-example.toml", "2026-q1-restatement-example.toml"] {
        server.load_example(file).await.expect("load");
        server.settle_outbox().await;
    }
    let mut emails = smtp.received_by("new.reader@example.com");
    emails.extend(smtp.received_by("reader1@example.com"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("emails");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the email directory");
    let names = ["confirmation", "update-new-quarter", "update-restatement"];
    assert_eq!(
        emails.len(),
        names.len(),
        "one confirmation and two updates"
    );
    let urls: Vec<String> = emails
        .iter()
        .zip(names)
        .map(|(email, name)| {
            let (html, _) = email.part("text/html").expect("an HTML part");
            let path = dir.join(format!("{name}.html"));
            std::fs::write(&path, html).expect("write the email's HTML");
            format!("file://{}", path.display())
        })
        .collect();
    // A message is read inside a mail client's page, which has the landmarks: an email
    // holds none of its own (it is one `role="article"`), so axe-core's landmark rules
    // are left out; every WCAG rule and the heading rule still apply.
    let findings = tokio::task::spawn_blocking(move || {
        audit_pages(&chromium, &urls, "emails", "landmark-one-main,region")
    })
    .await
    .expect("the browser run");
    assert_eq!(findings.len(), 6, "three emails at two widths");
    assert_accessible(&findings);
}

/// One step of `journey.js` as a reader at `address` on a phone; the headings it saw.
fn journey_step(
    chromium: &Path,
    step: &str,
    base: &str,
    maildir: &Path,
    address: &str,
) -> serde_json::Value {
    let args = [
        step.as_ref(),
        base.as_ref(),
        maildir.as_os_str(),
        address.as_ref(),
    ];
    run_node("journey.js", chromium, &args, &[])
}

#[tokio::test]
async fn a_reader_signs_up_confirms_and_is_forgotten_by_taps_on_a_phone() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = TestDir::new().await;
    let settings = dir.settings();
    // Its outbox at work, writing each email as a file for the browser to open.
    let server = TestServer::start_in_with_lanes(dir, settings).await;
    let base = format!("http://{}", server.http_address);
    let maildir = server.data_dir.join("mail");
    let address = "phone.reader@example.com";

    let (chromium_path, base_url, mail) = (chromium.clone(), base.clone(), maildir.clone());
    let seen = tokio::task::spawn_blocking(move || {
        journey_step(&chromium_path, "sign-up", &base_url, &mail, address)
    })
    .await
    .expect("the browser run");
    assert_eq!(seen["signedUp"], "Check your inbox");
    assert_eq!(seen["confirmed"], "You're subscribed");

    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    let seen = tokio::task::spawn_blocking(move || {
        journey_step(&chromium, "forget", &base, &maildir, address)
    })
    .await
    .expect("the browser run");
    assert_eq!(seen["forgotten"], "You're forgotten");
    assert!(
        !server.dump().await.contains(address),
        "the address is erased"
    );
}
