//! What the integration tests share: the server under test and its clients (`helpers`),
//! and the real peers they talk to — an SMTP server, an HTTP client, a TCP proxy that
//! delays, drops or hangs, and the Python tools.

pub mod helpers;
pub mod http_client;
pub mod python;
pub mod smtp_server;
// Only PostgreSQL-only modules put a proxy between runrate and its database.
#[allow(dead_code)]
pub mod tcp_proxy;
