//! A minimal HTTP/1.1 client over a TCP socket: the requests a browser or a mail client
//! would make, byte for byte, with nothing hidden (no redirects followed, no cookies).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> HttpResponse {
    let body = form.map(|body| ("application/x-www-form-urlencoded", body));
    request_with_body(address, method, path, body).await
}

/// A request with a body of the given content type.
pub async fn request_with_body(
    address: SocketAddr,
    method: &str,
    path: &str,
    content: Option<(&str, &str)>,
) -> HttpResponse {
    request_with_headers(address, method, path, &[], content).await
}

/// A request with extra headers (`("Authorization", "Bearer …")`) and a body.
pub async fn request_with_headers(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content: Option<(&str, &str)>,
) -> HttpResponse {
    let stream = TcpStream::connect(address)
        .await
        .expect("connect to the web side");
    exchange(stream, address, method, path, headers, content).await
}

/// A request sent from the local address `source` (any of 127.0.0.0/8 on loopback), as
/// a client on another machine would come from its own.
// Only SQLite-only modules (`reverse_proxy`) send from other addresses.
#[allow(dead_code)]
pub async fn request_from(
    source: IpAddr,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content: Option<(&str, &str)>,
) -> HttpResponse {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    let stream = socket
        .connect(address)
        .await
        .expect("connect to the web side");
    exchange(stream, address, method, path, headers, content).await
}

async fn exchange(
    mut stream: TcpStream,
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content: Option<(&str, &str)>,
) -> HttpResponse {
    let body = content.map_or("", |(_, body)| body);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, body)) = content {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the request");
    stream
        .write_all(body.as_bytes())
        .await
        .expect("send the body");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The path and query of a URL from an email, to request on the test server.
pub fn path_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or_else(|| "/".to_owned(), |start| after_scheme[start..].to_owned())
}

/// The token in a link's query string.
pub fn token_of(url: &str) -> String {
    url.split_once("token=")
        .map(|(_, token)| token.split('&').next().unwrap_or_default().to_owned())
        .expect("the link carries a token")
}
