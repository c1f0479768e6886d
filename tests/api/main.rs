//! Integration tests: the real server on a real socket, driven by generated gRPC clients
//! (and, for the CLI, by the built binary).

mod atomic_reads;
mod bad_input;
mod cli;
mod derived;
mod helpers;
mod loading;
mod pagination;
mod seed;
mod standard_services;
mod watching;
