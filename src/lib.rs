//! runrate: the quarterly AI-business figures of the cloud hyperscalers, served over gRPC.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod connections;
pub mod cors;
pub mod domain;
pub mod figures_file;
pub mod grpc;
pub mod http;
pub mod loading;
pub mod mail;
pub mod newsletter;
pub mod outbox;
pub mod sealing;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod text_table;
pub mod webhooks;

/// The generated `runrate.v1` API types and clients.
pub use grpc::pb::runrate::v1 as api;
