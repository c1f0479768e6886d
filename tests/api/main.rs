//! Integration tests: the real server on a real socket, driven by generated gRPC clients
//! (and, for the CLI, by the built binary).

mod atomic_reads;
mod bad_input;
mod browser;
mod channels;
mod cli;
mod connection_limits;
mod cors;
mod delivery;
mod derived;
mod disk_full;
mod emails;
mod feeds;
mod helpers;
mod history;
mod http_client;
mod json_api;
mod loading;
mod logs;
mod mail_feedback;
mod newsletter;
mod openapi;
mod pagination;
mod prometheus;
mod python;
mod revisions;
mod secrets;
mod seed;
mod sending;
mod smtp_server;
mod standard_services;
mod status_size;
mod traces;
mod watch_over_http;
mod watching;
mod webhooks;

/// This binary runs the suite on the embedded SQLite database; `api_postgres` runs the
/// same tests on PostgreSQL.
pub const BACKEND: helpers::Backend = helpers::Backend::Sqlite;
