//! The memory cost of WatchLoads streams whose clients stop reading (tests/bench/watch-memory.sh).
//!
//! Starts `runrate serve`, opens many WatchLoads streams over a few HTTP/2 connections
//! whose flow-control windows are never released (the clients never read past the first
//! 64 KB), measures the server's resident memory idle, then loads a file with many facts
//! (one large event for every watcher) and samples the resident memory while they stall.
//! Prints one line per measurement as `name<TAB>value`.
//!
//! Usage: bench-watch-memory RUNRATE_BINARY WATCHERS FACTS CONNECTIONS

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use runrate::api::{LoadFiguresRequest, admin_service_client::AdminServiceClient};

fn resident_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A figures file with `facts` money facts: 3 providers x `facts / 300` metrics x 100 quarters.
fn figures_file(facts: usize) -> String {
    let metrics = facts.div_ceil(300).max(1);
    let mut text = String::from(
        "format_version = 1\n\n[[sources]]\nid = \"invented\"\ntitle = \"Invented figures for a memory benchmark (not real data)\"\n",
    );
    for metric in 0..metrics {
        write!(
            text,
            "\n[[metrics]]\nid = \"bench-metric-{metric}\"\ndisplay_name = \"Benchmark metric {metric}\"\nunit = \"USD\"\nkind = \"quarterly-total\"\n"
        )
        .expect("write");
    }
    let mut written = 0;
    'all: for metric in 0..metrics {
        for provider in ["aws", "azure", "google-cloud"] {
            for quarter in 0..100 {
                if written == facts {
                    break 'all;
                }
                let (year, q) = (2001 + quarter / 4, quarter % 4 + 1);
                write!(
                    text,
                    "\n[[facts]]\nprovider = \"{provider}\"\nmetric = \"bench-metric-{metric}\"\nperiod = \"{year}-Q{q}\"\nvalue = \"{}.5B\"\nnote = \"invented for the benchmark\"\nsources = [\"invented\"]\n",
                    written % 97 + 1
                )
                .expect("write");
                written += 1;
            }
        }
    }
    text
}

/// Opens `count` WatchLoads streams on one HTTP/2 connection and keeps them unread.
async fn stalled_watchers(
    address: std::net::SocketAddr,
    count: usize,
) -> (h2::client::SendRequest<Bytes>, Vec<h2::RecvStream>) {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake(tcp)
        .await
        .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut client = client.clone().ready().await.expect("a stream slot");
        let request = http::Request::post(format!(
            "http://{address}/runrate.v1.MetricsService/WatchLoads"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
        let (response, mut send) = client.send_request(request, false).expect("send");
        // One empty WatchLoadsRequest: watch from now.
        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .expect("the request body");
        let response = response.await.expect("response headers");
        assert_eq!(response.status(), 200);
        streams.push(response.into_body());
    }
    (client, streams)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, binary, watchers, facts, connections] = args.as_slice() else {
        panic!("usage: bench-watch-memory RUNRATE_BINARY WATCHERS FACTS CONNECTIONS");
    };
    let watchers: usize = watchers.parse().expect("WATCHERS");
    let facts: usize = facts.parse().expect("FACTS");
    let connections: usize = connections.parse().expect("CONNECTIONS");
    let per_connection = watchers.div_ceil(connections);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut server = Command::new(binary)
        .arg("serve")
        .current_dir(dir.path())
        .env("RUNRATE__GRPC__LISTEN", "127.0.0.1:0")
        .env("RUNRATE__HTTP__LISTEN", "127.0.0.1:0")
        .env(
            "RUNRATE__GRPC__MAX_CONCURRENT_STREAMS",
            (per_connection + 10).to_string(),
        )
        .env(
            "RUNRATE__WATCH__MAX_STREAMS_PER_CONNECTION",
            per_connection.to_string(),
        )
        .env(
            "RUNRATE__LOAD__MAX_FILE_BYTES",
            (64 * 1024 * 1024).to_string(),
        )
        .env("RUNRATE__LOG__FILTER", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runrate serve");
    let stdout = server.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let address: std::net::SocketAddr = loop {
        let line = lines.next().expect("runrate serve logs").expect("a line");
        if let Some(rest) = line.split("serving gRPC address=").nth(1) {
            break rest.trim().parse().expect("an address");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let pid = server.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = resident_kib(pid);

    let mut held = Vec::new();
    for _ in 0..connections {
        held.push(stalled_watchers(address, per_connection).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = resident_kib(pid);
    let streams = per_connection * connections;

    let token = std::fs::read_to_string(dir.path().join("runrate-data/admin-token"))
        .expect("the admin token");
    let mut request = tonic::Request::new(LoadFiguresRequest {
        file_name: "memory-benchmark.toml".into(),
        content: figures_file(facts).into_bytes(),
        validate_only: false,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim())
            .parse()
            .expect("a header"),
    );
    let mut admin = AdminServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect")
        .max_decoding_message_size(256 * 1024 * 1024);
    admin.load_figures(request).await.expect("the load");
    let mut peak = idle;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(resident_kib(pid));
    }

    println!("watchers\t{streams}");
    println!("facts\t{facts}");
    println!("resident_before_watchers_kib\t{baseline}");
    println!("resident_idle_kib\t{idle}");
    println!(
        "idle_bytes_per_watcher\t{}",
        idle.saturating_sub(baseline) * 1024 / streams as u64
    );
    println!("resident_peak_stalled_kib\t{peak}");
    println!("growth_while_stalled_kib\t{}", peak.saturating_sub(idle));
    drop(held);
    let _ = server.kill();
    let _ = server.wait();
}
