//! WatchLoads over HTTP, as server-sent events: the same hub, caps and resume tokens as
//! the gRPC stream, read by a real HTTP client as it arrives.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::support::helpers::{TestDir, TestServer};

const WAIT: Duration = Duration::from_secs(20);

/// One server-sent event.
#[derive(Debug)]
struct Event {
    kind: String,
    id: String,
    data: serde_json::Value,
}

/// An open event stream, read event by event.
struct EventReader {
    body: hyper::body::Incoming,
    pending: String,
}

impl EventReader {
    async fn open(server: &TestServer, last_event_id: Option<&str>) -> (u16, String, Option<Self>) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut request =
            http::Request::get(format!("http://{}/v1/loads:watch", server.http_address));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = client
            .request(request.body(Empty::new()).expect("a request"))
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let reader = (status == 200).then(|| EventReader {
            body: response.into_body(),
            pending: String::new(),
        });
        (status, content_type, reader)
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some((event, rest)) = self.pending.split_once("\n\n") {
                    let event = parse(event);
                    self.pending = rest.to_owned();
                    return event;
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the stream stays open")
                    .expect("a frame");
                if let Ok(data) = frame.into_data() {
                    self.pending
                        .push_str(std::str::from_utf8(&data).expect("UTF-8"));
                }
            }
        })
        .await
        .expect("an event in time")
    }
}

fn parse(text: &str) -> Event {
    let mut event = Event {
        kind: "message".into(),
        id: String::new(),
        data: serde_json::Value::Null,
    };
    for line in text.lines() {
        match line.split_once(": ") {
            Some(("event", kind)) => event.kind = kind.into(),
            Some(("id", id)) => event.id = id.into(),
            Some(("data", data)) => event.data = serde_json::from_str(data).expect("JSON data"),
            _ => panic!("an unexpected line in an event: {line:?}"),
        }
    }
    event
}

#[tokio::test]
async fn loads_arrive_as_events_and_a_reconnect_with_last_event_id_misses_none() {
    let server = TestServer::start().await;
    let (status, content_type, reader) = EventReader::open(&server, None).await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    let mut reader = reader.expect("a stream");
    // From now: the marker that the stream is live.
    let current = reader.next().await;
    assert!(current.data.get("current").is_some(), "{current:?}");
    assert_eq!(
        current.id, current.data["resumeToken"],
        "the id is the resume token"
    );

    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    let load = reader.next().await;
    assert_eq!(load.kind, "message");
    assert_eq!(load.data["load"]["load"]["name"], "loads/2", "{load:?}");
    drop(reader);

    // As a browser's EventSource reconnects: from the last id it saw before the load.
    let (_, _, reader) = EventReader::open(&server, Some(&current.id)).await;
    let mut reader = reader.expect("a stream");
    let replayed = reader.next().await;
    assert_eq!(
        replayed.data["load"]["load"]["name"], "loads/2",
        "{replayed:?}"
    );
    assert_eq!(replayed.id, load.id);
    assert!(reader.next().await.data.get("current").is_some());
}

#[tokio::test]
async fn a_forged_last_event_id_is_a_400_naming_the_resume_token() {
    let server = TestServer::start().await;
    let (status, content_type, _) = EventReader::open(&server, Some("forged")).await;
    assert_eq!((status, content_type.as_str()), (400, "application/json"));
    let response = crate::support::http_client::request(
        server.http_address,
        "GET",
        "/v1/loads:watch?resume_token=forged",
        None,
    )
    .await;
    assert_eq!(response.status, 400);
    let status: serde_json::Value = serde_json::from_str(&response.body).expect("a Status");
    assert_eq!(status["code"], 3);
    let violation = &status["details"][1]["fieldViolations"][0];
    assert_eq!(violation["field"], "resume_token", "{status}");
}

#[tokio::test]
async fn event_streams_count_against_the_watch_cap_with_grpc_watches() {
    let dir = TestDir::new().await;
    let mut settings = dir.settings();
    settings.watch.max_streams = 1;
    let server = TestServer::start_in(dir, settings).await;
    let (status, _, first) = EventReader::open(&server, None).await;
    assert_eq!(status, 200);
    let mut first = first.expect("a stream");
    first.next().await;
    // The one place is taken: a second watch, over HTTP or gRPC, is refused.
    let (status, _, _) = EventReader::open(&server, None).await;
    assert_eq!(status, 429, "RESOURCE_EXHAUSTED");
    let refused = server
        .metrics()
        .await
        .watch_loads(runrate::api::WatchLoadsRequest::default())
        .await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
    // Closing the event stream gives its place back.
    drop(first);
    let admitted = tokio::time::timeout(WAIT, async {
        loop {
            if let (200, _, Some(reader)) = EventReader::open(&server, None).await {
                return reader;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(admitted.is_ok(), "the place came back");
}
