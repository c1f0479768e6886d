//! The integration suite of `tests/api/`, run on PostgreSQL, with the two-replica test
//! that only PostgreSQL can host: each test gets a new database on the server
//! `RUNRATE_TEST_DATABASE_URL` names, dropped afterwards. Built only when that variable is
//! set at build time (see `build.rs`), so `cargo test` passes on a machine without
//! PostgreSQL; `.ci/run` sets it and checks these tests ran. The modules are every one
//! under `tests/api/` whose first line does not say `//! SQLite only: …` (`build.rs`).
#![cfg(postgres_tests)]

include!(concat!(env!("OUT_DIR"), "/postgres_modules.rs"));

pub const BACKEND: support::helpers::Backend = support::helpers::Backend::Postgres;
