//! runrate: the quarterly AI-business figures of the cloud hyperscalers, served over gRPC.

pub mod auth;
pub mod cli;
pub mod connections;
pub mod derived;
pub mod domain;
pub mod figures;
pub mod grpc;
pub mod http;
pub mod loader;
pub mod mail;
pub mod newsletter;
pub mod outbox;
pub mod report;
pub mod settings;
pub mod snapshot;
pub mod startup;
pub mod store;
pub mod templates;

/// The generated `runrate.v1` API types and clients.
pub use grpc::pb::runrate::v1 as api;
