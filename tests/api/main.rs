//! Integration tests: the real server on a real socket, driven by generated gRPC clients
//! (and, for the CLI, by the built binary). Every module under `tests/api/` is part of the
//! suite without being listed here: `build.rs` declares them, and `api_postgres` runs the
//! same modules on PostgreSQL but for those whose first line says `//! SQLite only: …`.

include!(concat!(env!("OUT_DIR"), "/suite_modules.rs"));

/// This binary runs the suite on the embedded SQLite database; `api_postgres` runs the
/// same tests on PostgreSQL.
pub const BACKEND: support::helpers::Backend = support::helpers::Backend::Sqlite;
