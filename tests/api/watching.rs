//! WatchLoads: live events, resuming without gaps or repeats, heartbeats, and expired
//! tokens.

use std::time::Duration;

use runrate::api::{WatchLoadsRequest, WatchLoadsResponse, watch_loads_response::Event};
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

use crate::support::helpers::{TestDir, TestServer};

async fn next(stream: &mut Streaming<WatchLoadsResponse>) -> WatchLoadsResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("a healthy stream")
        .expect("the stream is open")
}

async fn watch(server: &TestServer, resume_token: &str) -> Streaming<WatchLoadsResponse> {
    server
        .metrics()
        .await
        .watch_loads(WatchLoadsRequest {
            resume_token: resume_token.into(),
        })
        .await
        .expect("open a watch")
        .into_inner()
}

fn load_name(response: &WatchLoadsResponse) -> Option<&str> {
    match &response.event {
        Some(Event::Load(event)) => event.load.as_ref().map(|load| load.name.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn a_watcher_receives_each_load_as_one_event() {
    let server = TestServer::start().await;
    let mut stream = watch(&server, "").await;
    let current = next(&mut stream).await;
    assert!(
        matches!(current.event, Some(Event::Current(_))),
        "{current:?}"
    );

    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    let event = next(&mut stream).await;
    let Some(Event::Load(load_event)) = &event.event else {
        panic!("not a load event: {event:?}");
    };
    assert_eq!(
        load_event.load.as_ref().map(|l| l.name.as_str()),
        Some("loads/2")
    );
    assert_eq!(
        load_event.facts.len(),
        21,
        "every fact of the load in the one event"
    );
    assert!(
        load_event
            .facts
            .iter()
            .all(|f| f.period == "periods/2026-q2")
    );
    assert_ne!(event.resume_token, current.resume_token);

    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load");
    let event = next(&mut stream).await;
    assert_eq!(load_name(&event), Some("loads/3"));
}

#[tokio::test]
async fn resuming_delivers_exactly_the_loads_missed() {
    let server = TestServer::start().await;
    let mut stream = watch(&server, "").await;
    let token_at_seed = next(&mut stream).await.resume_token;
    drop(stream);

    load_q2_and_restatement(&server).await;

    let mut stream = watch(&server, &token_at_seed).await;
    let second = next(&mut stream).await;
    assert_eq!(load_name(&second), Some("loads/2"));
    let third = next(&mut stream).await;
    assert_eq!(load_name(&third), Some("loads/3"));
    let current = next(&mut stream).await;
    assert!(
        matches!(current.event, Some(Event::Current(_))),
        "{current:?}"
    );

    // From the token of load 2, only load 3 is missing.
    let mut stream = watch(&server, &second.resume_token).await;
    assert_eq!(load_name(&next(&mut stream).await), Some("loads/3"));
    assert!(matches!(
        next(&mut stream).await.event,
        Some(Event::Current(_))
    ));

    // And a load after resuming arrives live, once.
    server
        .load_example("new-provider-example.toml")
        .await
        .expect("load 4");
    assert_eq!(load_name(&next(&mut stream).await), Some("loads/4"));
}

#[tokio::test]
async fn heartbeats_carry_the_current_token() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.watch.heartbeat_interval = runrate::settings::TextDuration(Duration::from_millis(100));
    let server = TestServer::start_in(dir, settings).await;
    let mut stream = watch(&server, "").await;
    let current = next(&mut stream).await;
    let beat = next(&mut stream).await;
    assert!(matches!(beat.event, Some(Event::Heartbeat(_))), "{beat:?}");
    assert_eq!(beat.resume_token, current.resume_token);
}

#[tokio::test]
async fn a_token_too_old_fails_with_a_reason_to_list_again() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.watch.resume_history_loads = 1;
    let server = TestServer::start_in(dir, settings).await;
    let mut stream = watch(&server, "").await;
    let old_token = next(&mut stream).await.resume_token;
    drop(stream);
    load_q2_and_restatement(&server).await;

    let status = server
        .metrics()
        .await
        .watch_loads(WatchLoadsRequest {
            resume_token: old_token,
        })
        .await
        .expect_err("too old");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("RESUME_TOKEN_EXPIRED".to_owned())
    );

    let status = server
        .metrics()
        .await
        .watch_loads(WatchLoadsRequest {
            resume_token: "made-up".into(),
        })
        .await
        .expect_err("not a token");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_token_from_another_store_is_refused() {
    let first = TestServer::start().await;
    load_q2_and_restatement(&first).await;
    let mut stream = watch(&first, "").await;
    let token_at_three = next(&mut stream).await.resume_token;

    let second = TestServer::start().await;
    let status = second
        .metrics()
        .await
        .watch_loads(WatchLoadsRequest {
            resume_token: token_at_three,
        })
        .await
        .expect_err("another history");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

/// Loads the Q2 example (load 2) and then the restatement (load 3).
async fn load_q2_and_restatement(server: &TestServer) {
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load 2");
    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load 3");
}

#[tokio::test]
async fn shutting_down_ends_open_watches_so_shutdown_is_prompt() {
    let server = TestServer::start().await;
    let mut stream = watch(&server, "").await;
    next(&mut stream).await;
    // A watch never ends by itself: shutdown must end it, well inside the 10 s deadline.
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop()).await;
    assert!(stopped.is_ok(), "the server did not stop within 5 s");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends");
    match ended {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(message)) => panic!("a message after shutdown: {message:?}"),
    }
}

/// A token made the way runrate's tokens once were: a payload and an unkeyed checksum.
fn forged_token(kind: &str, payload: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("runrate {kind} token {payload}").as_bytes());
    let sum: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{payload}|{sum}"))
}

#[tokio::test]
async fn forged_resume_and_page_tokens_are_refused() {
    let server = TestServer::start().await;
    // A load far outside the history, which once overflowed the age check.
    let status = server
        .metrics()
        .await
        .watch_loads(WatchLoadsRequest {
            resume_token: forged_token("resume", &format!("w1|{}|0", i64::MIN)),
        })
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("does not belong to this server's history")
    );

    let status = server
        .metrics()
        .await
        .list_loads(runrate::api::ListLoadsRequest {
            page_size: 1,
            page_token: forged_token("page", "p1|0000000000000000|-9223372036854775808"),
        })
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("page_token:"), "{status:?}");
    // The server is unharmed.
    watch(&server, "").await;
}

#[tokio::test]
async fn open_watches_are_capped_in_all_and_per_connection() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.watch.max_streams = 3;
    settings.watch.max_streams_per_connection = 2;
    let server = TestServer::start_in(dir, settings).await;
    let open_on = |channel: tonic::transport::Channel| async move {
        runrate::api::metrics_service_client::MetricsServiceClient::new(channel)
            .watch_loads(WatchLoadsRequest::default())
            .await
            .map(tonic::Response::into_inner)
    };
    let first_connection = server.channel().await;
    let second_connection = server.channel().await;

    let _a = open_on(first_connection.clone()).await.expect("first");
    let b = open_on(first_connection.clone()).await.expect("second");
    let refused = open_on(first_connection.clone())
        .await
        .expect_err("a third on one connection");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("this connection"), "{refused:?}");

    let _c = open_on(second_connection.clone())
        .await
        .expect("another connection");
    let refused = open_on(second_connection.clone())
        .await
        .expect_err("a fourth in all");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("this server"), "{refused:?}");

    // A watch that ends gives its place back.
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open_on(first_connection.clone()).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the place never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_watcher_that_falls_behind_the_recent_events_ends_with_a_token_to_resume_from() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    // Only the newest event is kept.
    settings.watch.event_cache_bytes = 1;
    let server = TestServer::start_in(dir, settings).await;

    // A client whose stream window is one byte: the server can hand it the `current`
    // marker and nothing more until it reads.
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{}/runrate.v1.MetricsService/WatchLoads",
        server.address
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("a request");
    let (response, mut send) = client.send_request(request, false).expect("send");
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("an empty WatchLoadsRequest");
    let mut slow = response.await.expect("the response").into_body();

    // Meanwhile three loads come. The slow watcher takes the first in hand and then
    // waits for its window; a reading watcher makes each new one the only one kept.
    let mut reader = watch(&server, "").await;
    next(&mut reader).await;
    load_q2_and_restatement(&server).await;
    server
        .load_example("new-provider-example.toml")
        .await
        .expect("load 4");
    for _ in 2..=4 {
        next(&mut reader).await;
    }

    // The slow client reads at last: past the marker, its stream ends with ABORTED.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut received = 0;
        while let Some(chunk) = slow.data().await {
            let chunk = chunk.expect("data");
            received += chunk.len();
            let _ = slow.flow_control().release_capacity(chunk.len());
        }
        assert!(received > 0, "the current marker");
        slow.trailers().await
    })
    .await
    .expect("the slow watch ends");
    let trailers = ended.expect("trailers").expect("a status in the trailers");
    let status = tonic::Status::from_header_map(&trailers).expect("a gRPC status");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "WATCH_FELL_BEHIND");

    // Its token replays the loads it missed, without a gap, up to the newest.
    let mut resumed = watch(&server, &info.metadata["resume_token"]).await;
    let mut replayed = Vec::new();
    while let Some(Event::Load(event)) = next(&mut resumed).await.event {
        replayed.push(event.load.expect("the load").name);
    }
    assert!(
        replayed == ["loads/3", "loads/4"] || replayed == ["loads/2", "loads/3", "loads/4"],
        "{replayed:?}"
    );
}
