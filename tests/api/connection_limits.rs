//! Connections an anonymous client can open, pushed past their bounds: idle and
//! half-sent connections are closed after their deadlines, and a flood of idle
//! connections at the usual service limit of 1024 open files neither locks new clients
//! out nor makes the server spin.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use runrate::{api::GetFactRequest, settings::TextDuration};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::helpers::{ServeProcess, TestDir, TestServer};

/// How long `stream` stays open from now, reading and discarding whatever comes; `None`
/// if still open after `limit`.
fn open_for(mut stream: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(limit))
        .expect("a read timeout");
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => return None,
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed_after_their_deadlines() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.http.header_read_timeout = TextDuration(Duration::from_millis(500));
    settings.http.idle_timeout = TextDuration(Duration::from_millis(1500));
    settings.grpc.handshake_timeout = TextDuration(Duration::from_millis(500));
    let server = TestServer::start_in(dir, settings).await;
    let (http, grpc) = (server.http_address, server.address);

    let closed = tokio::task::spawn_blocking(move || {
        let silent_http = TcpStream::connect(http).expect("connect");
        let silent_grpc = TcpStream::connect(grpc).expect("connect");
        let mut half_sent = TcpStream::connect(http).expect("connect");
        half_sent
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .expect("one header line");
        let mut idle = TcpStream::connect(http).expect("connect");
        idle.write_all(b"GET /healthz-nope HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("a whole request");
        let limit = Duration::from_secs(10);
        let handles = [silent_http, silent_grpc, half_sent, idle]
            .map(|stream| std::thread::spawn(move || open_for(stream, limit)));
        handles.map(|handle| handle.join().expect("a reader thread"))
    })
    .await
    .expect("the client threads");

    let [silent_http, silent_grpc, half_sent, idle] = closed;
    for (what, open, at_most) in [
        ("a silent HTTP connection", silent_http, 3),
        ("a silent gRPC connection", silent_grpc, 3),
        ("a connection that sent one header line", half_sent, 3),
        ("an idle keep-alive connection", idle, 5),
    ] {
        let open = open.unwrap_or_else(|| panic!("{what} was still open after 10 s"));
        assert!(
            open <= Duration::from_secs(at_most),
            "{what} stayed open {open:?}"
        );
    }
}

/// CPU seconds the process has used (user and system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Opens `count` connections to `address` and keeps them; every other HTTP one sends a
/// single header line, as a slow-headers attack does.
/// Gives up after a few failed connects in a row: a server that stopped accepting.
fn hold_connections(address: SocketAddr, count: usize, header_line: bool) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    let mut failures_in_a_row = 0;
    for n in 0..count {
        match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Ok(mut stream) => {
                failures_in_a_row = 0;
                if header_line && n % 2 == 1 {
                    let _ = stream.write_all(b"GET / HTTP/1.1\r\n");
                }
                held.push(stream);
            }
            Err(_) if failures_in_a_row < 5 => failures_in_a_row += 1,
            Err(_) => break,
        }
    }
    held
}

#[test]
fn a_flood_of_idle_connections_at_1024_open_files_neither_locks_clients_out_nor_spins() {
    // This process holds 2,200 connections of its own.
    rlimit::increase_nofile_limit(8192).expect("raise this process's open-files limit");
    let dir = TestDir::blocking_new();
    let server = ServeProcess::start_with_fd_limit(dir.path(), dir.serve_environment(), 1024);
    let http = server.http_address.expect("the HTTP address");
    let grpc: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the gRPC address");

    let held_http = hold_connections(http, 1100, true);
    let held_grpc = hold_connections(grpc, 1100, false);
    assert!(
        held_http.len() + held_grpc.len() >= 2000,
        "the flood connected"
    );

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let started = Instant::now();
        // Locked out would be never; 5 s leaves room for one SYN the kernel dropped
        // while the flood filled the accept queue (the client resends it after 1 s).
        let channel = Channel::from_shared(server.url.clone())
            .expect("a URL")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("a new client connects");
        let health = tokio::time::timeout(
            Duration::from_secs(1),
            HealthClient::new(channel.clone()).check(HealthCheckRequest::default()),
        )
        .await
        .expect("health answers within 1 s")
        .expect("health");
        assert_eq!(health.into_inner().status, 1, "SERVING");
        let fact = tokio::time::timeout(
            Duration::from_secs(1),
            runrate::api::metrics_service_client::MetricsServiceClient::new(channel).get_fact(
                GetFactRequest {
                    name: "providers/aws/periods/2026-q1/facts/cloud-revenue".into(),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("GetFact answers within 1 s")
        .expect("GetFact");
        assert_eq!(fact.into_inner().display_value, "~$29B");
        println!(
            "health and GetFact under the flood: {:?}",
            started.elapsed()
        );
    });
    // The sign-up page answers too.
    let mut page = TcpStream::connect_timeout(&http, Duration::from_secs(1)).expect("connect");
    page.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("a timeout");
    page.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("a request");
    let mut answer = [0u8; 12];
    page.read_exact(&mut answer).expect("an answer within 1 s");
    assert_eq!(&answer, b"HTTP/1.1 200");

    let pid = server.child.id();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_seconds(pid) - before) / 2.0;
    assert!(used < 0.2, "the server used {:.0}% CPU", used * 100.0);
    assert!(
        server.output().contains("at the cap of open connections"),
        "{}",
        server.output()
    );
    drop((held_http, held_grpc));
}
