//! SQLite only: the proxy stands in front of the server whatever its database, and the
//! sign-ups it passes on run on PostgreSQL in `newsletter`.
//!
//! `runrate serve` behind a real nginx (Debian's package), configured as
//! `docs/operations.md` shows: readers coming from different addresses get limits of
//! their own, an `X-Forwarded-For` from anyone but the proxy changes nothing, gRPC and the
//! server-sent event stream work through it, and the log names the reader's address.
//!
//! Runs when nginx is installed (`.ci/run` installs it and requires the test to run by
//! setting `RUNRATE_TEST_NGINX`); skipped otherwise.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use runrate::api::{
    GetFactRequest, SubscribeRequest, metrics_service_client::MetricsServiceClient,
    newsletter_service_client::NewsletterServiceClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    helpers::{ServeProcess, TestDir},
    http_client,
};

/// nginx, or `None` (with the reason printed) when the test cannot run here.
fn nginx() -> Option<PathBuf> {
    let required = std::env::var_os("RUNRATE_TEST_NGINX").is_some();
    let path = std::env::var_os("RUNRATE_TEST_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !required,
        "RUNRATE_TEST_NGINX names no nginx: {}",
        path.display()
    );
    eprintln!(
        "skipped: no nginx at {} (apt-get install nginx)",
        path.display()
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// nginx in front of runrate: the web side at `web`, gRPC at `grpc`; stopped when dropped.
struct Nginx {
    child: Child,
    web: SocketAddr,
    grpc: SocketAddr,
}

impl Nginx {
    fn start(
        binary: &Path,
        dir: &Path,
        runrate_http: SocketAddr,
        runrate_grpc: SocketAddr,
    ) -> Nginx {
        let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx's directory");
        let config = format!(
            r#"daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{site}
}}
"#,
            prefix = prefix.display(),
            site = site_config(web, grpc, runrate_http, runrate_grpc),
        );
        let config_file = prefix.join("nginx.conf");
        std::fs::write(&config_file, config).expect("write nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-c")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(web).is_err()
            || std::net::TcpStream::connect(grpc).is_err()
        {
            assert!(Instant::now() < deadline, "nginx did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, web, grpc }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server blocks of docs/operations.md's recipe, with this test's addresses.
fn site_config(
    web: SocketAddr,
    grpc: SocketAddr,
    runrate_http: SocketAddr,
    runrate_grpc: SocketAddr,
) -> String {
    let recipe =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .expect("read docs/operations.md");
    let (_, rest) = recipe
        .split_once("```nginx\n")
        .expect("an nginx block in docs/operations.md");
    let (block, _) = rest.split_once("```").expect("the end of the nginx block");
    // The recipe's public side is TLS on 443; here, plain on free ports.
    block
        .replace("listen 443 ssl;", &format!("listen {web};"))
        .replace("listen 8443 ssl http2;", &format!("listen {grpc} http2;"))
        .lines()
        .filter(|line| !line.trim_start().starts_with("ssl_certificate"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:8080", &runrate_http.to_string())
        .replace("127.0.0.1:50051", &runrate_grpc.to_string())
}

async fn sign_up_from(source: &str, through: SocketAddr, forwarded_for: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|value| ("X-Forwarded-For", value))
        .into_iter()
        .collect();
    http_client::request_from(
        source.parse::<IpAddr>().expect("an address"),
        through,
        "POST",
        "/subscribe",
        &headers,
        Some((
            "application/x-www-form-urlencoded",
            "email=reader@example.com",
        )),
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_nginx_each_reader_is_limited_by_their_own_address_and_forgeries_change_nothing() {
    let Some(binary) = nginx() else {
        return;
    };
    let dir = TestDir::new().await;
    let mut environment = dir.serve_environment();
    environment.extend(
        [
            ("RUNRATE__HTTP__TRUSTED_PROXIES", "127.0.0.1"),
            ("RUNRATE__GRPC__TRUSTED_PROXIES", "127.0.0.1"),
            ("RUNRATE__NEWSLETTER__SUBSCRIBE_RATE_LIMIT", "2"),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned())),
    );
    let server = ServeProcess::start(dir.path(), environment);
    let runrate_http = server.http_address.expect("the web side's address");
    let runrate_grpc: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("gRPC's address");
    let proxy = Nginx::start(&binary, dir.path(), runrate_http, runrate_grpc);

    // Two readers behind the proxy: each has a limit of two sign-ups of their own.
    for reader in ["127.0.0.2", "127.0.0.3"] {
        assert_eq!(sign_up_from(reader, proxy.web, None).await, 200, "{reader}");
        assert_eq!(sign_up_from(reader, proxy.web, None).await, 200, "{reader}");
    }
    assert_eq!(sign_up_from("127.0.0.2", proxy.web, None).await, 429);
    // A reader who forges X-Forwarded-For through the proxy is still themselves: nginx
    // appends the address it saw, and runrate reads from the right.
    for forged in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(
            sign_up_from("127.0.0.3", proxy.web, Some(forged)).await,
            429,
            "{forged}"
        );
    }
    // Straight to runrate, X-Forwarded-For from an untrusted peer is not read at all.
    let mut statuses = Vec::new();
    for forged in ["203.0.113.4", "203.0.113.5", "203.0.113.6"] {
        statuses.push(sign_up_from("127.0.0.4", runrate_http, Some(forged)).await);
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "each forged address would have passed"
    );

    // gRPC and the event stream pass through the proxy.
    let mut metrics = MetricsServiceClient::connect(format!("http://{}", proxy.grpc))
        .await
        .expect("gRPC through nginx");
    let fact = metrics
        .get_fact(GetFactRequest {
            name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
            read_time: None,
        })
        .await
        .expect("GetFact through nginx")
        .into_inner();
    assert_eq!(fact.display_value, "~$29B");
    let first_event = first_server_sent_event(proxy.web, "/v1/loads:watch").await;
    assert!(first_event.contains("\"current\""), "{first_event}");
    // gRPC sign-ups through the proxy count against the reader's own address too.
    let reader = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.grpc))
        .expect("an endpoint")
        .local_address(Some("127.0.0.5".parse().expect("an address")))
        .connect()
        .await
        .expect("gRPC through nginx from 127.0.0.5");
    let mut newsletter = NewsletterServiceClient::new(reader);
    let mut codes = Vec::new();
    for _ in 0..3 {
        let answer = newsletter
            .subscribe(SubscribeRequest {
                email: "grpc-reader@example.com".into(),
                ..SubscribeRequest::default()
            })
            .await;
        codes.push(answer.map_or_else(|status| status.code(), |_| tonic::Code::Ok));
    }
    assert_eq!(
        codes,
        [
            tonic::Code::Ok,
            tonic::Code::Ok,
            tonic::Code::ResourceExhausted
        ],
        "127.0.0.5 has a limit of its own"
    );

    // The log names the readers, not the proxy.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.output();
        let refused: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("sign-ups refused"))
            .collect();
        if ["127.0.0.2", "127.0.0.3", "127.0.0.5"]
            .iter()
            .all(|reader| refused.iter().any(|line| line.contains(reader)))
        {
            assert!(
                !refused.iter().any(|line| line.contains("client=127.0.0.1")),
                "{refused:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line names the readers:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The head of a server-sent event stream through `address`, up to its first event.
async fn first_server_sent_event(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .expect("an event within 10 s: the proxy must not buffer the stream")
            .expect("read");
        assert!(
            read > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}
