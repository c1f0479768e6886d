//! Health, reflection and gRPC-Web, each through a real client on a real socket.

use std::time::Duration;

use prost::Message;
use runrate::api::{GetProviderRequest, Provider};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::support::helpers::TestServer;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_metrics_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "runrate.v1.MetricsService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_services_without_proto_files() {
    let server = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("open the reflection stream")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("not the end");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["runrate.v1.MetricsService", "grpc.health.v1.Health"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    // The descriptors of the API resolve, imports included, so grpcurl can call it.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "runrate.v1.Fact".into(),
        )),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("open the reflection stream")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("not the end");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("not a file descriptor response: {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// A gRPC-Web call over plain HTTP/1.1, framed by hand as a browser client frames it.
#[tokio::test]
async fn grpc_web_answers_over_http_1_1() {
    let server = TestServer::start().await;
    let message = GetProviderRequest {
        name: "providers/azure".into(),
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(&message);
    let head = format!(
        "POST /runrate.v1.MetricsService/GetProvider HTTP/1.1\r\nHost: {}\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.address,
        body.len()
    );
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    stream.write_all(&body).await.expect("send the body");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server answers in time")
        .expect("read the response");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/grpc-web"),
        "{text}"
    );
    assert!(
        text.contains("grpc-status:0"),
        "trailers with status 0 in {text}"
    );

    // The first data frame after the head (chunked or not) is the Provider message.
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    let payload = &response[split..];
    let frame_start = payload.iter().position(|b| *b == 0).expect("a data frame");
    let frame = &payload[frame_start..];
    let length = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let provider = Provider::decode(&frame[5..5 + length]).expect("a Provider message");
    assert_eq!(provider.display_name, "Azure");
    assert_eq!(provider.fiscal_year_start_month, 7);
}
