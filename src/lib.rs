//! runrate: the quarterly AI-business figures of the cloud hyperscalers, served over gRPC.
//!
//! The modules by layer, each using only those below it (`docs/architecture.md` draws
//! them and says which rule lives where).

// Wiring: building the parts from the settings, running them; the commands.
pub mod app;
pub mod cli;

// Edges: the gRPC and web doors, who may call them from a browser, connection bounds,
// who a request is from, TLS, and what an operator sees.
pub mod client_address;
pub mod connections;
pub mod cors;
pub mod grpc;
pub mod http;
pub mod telemetry;
pub mod tls;

// Delivery: email and webhooks as the outbox's channels, and what they render.
pub mod mail;
pub mod templates;
pub mod text_table;
pub mod webhooks;

// Use cases: transactions that apply the domain's decisions.
pub mod loading;
pub mod newsletter;
pub mod outbox;

// Read side: the in-memory snapshot every read is answered from.
pub mod catalog;

// Persistence: SQL for both databases, the figures file format, and the filings
// figures are drafted from.
pub mod figures_file;
pub mod sources;
pub mod store;

// Core: types and every business rule, configuration, the admin token, sealed tokens.
pub mod auth;
pub mod domain;
pub mod sealing;
pub mod settings;

/// The generated `runrate.v1` API types and clients.
pub use grpc::pb::runrate::v1 as api;
