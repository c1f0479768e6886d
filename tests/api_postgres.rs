//! The integration suite of `tests/api/`, run on PostgreSQL, and the two-replica test
//! that only PostgreSQL can host: each test gets a new
//! database on the server `RUNRATE_TEST_DATABASE_URL` names, dropped afterwards. Built
//! only when that variable is set at build time (see `build.rs`), so `cargo test` passes
//! on a machine without PostgreSQL; `.ci/run` sets it and checks these tests ran.
#![cfg(postgres_tests)]

#[path = "api/atomic_reads.rs"]
mod atomic_reads;
#[path = "api/bad_input.rs"]
mod bad_input;
#[path = "api/channels.rs"]
mod channels;
#[path = "api/cli.rs"]
mod cli;
#[path = "api/connection_limits.rs"]
mod connection_limits;
#[path = "api/database_outage.rs"]
mod database_outage;
#[path = "api/delivery.rs"]
mod delivery;
#[path = "api/derived.rs"]
mod derived;
#[path = "api/emails.rs"]
mod emails;
#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/http_client.rs"]
mod http_client;
#[path = "api/loading.rs"]
mod loading;
#[path = "api/mail_feedback.rs"]
mod mail_feedback;
#[path = "api/newsletter.rs"]
mod newsletter;
#[path = "api/pagination.rs"]
mod pagination;
#[path = "api/prometheus.rs"]
mod prometheus;
#[path = "api/python.rs"]
mod python;
#[path = "api/replicas.rs"]
mod replicas;
#[path = "api/secrets.rs"]
mod secrets;
#[path = "api/seed.rs"]
mod seed;
#[path = "api/sending.rs"]
mod sending;
#[path = "api/smtp_server.rs"]
mod smtp_server;
#[path = "api/standard_services.rs"]
mod standard_services;
#[path = "api/status_size.rs"]
mod status_size;
#[path = "api/tcp_proxy.rs"]
mod tcp_proxy;
#[path = "api/watching.rs"]
mod watching;
#[path = "api/webhooks.rs"]
mod webhooks;

pub const BACKEND: helpers::Backend = helpers::Backend::Postgres;
