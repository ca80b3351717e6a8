//! The server's integration tests: one test binary (`cargo test -p
//! latchkey-server --test it`), one module per area. Filter by module path,
//! e.g. `cargo test -p latchkey-server --test it stores::sqlite::`.
//!
//! `support` is the harness: the real `latchkey` binary in a process of its
//! own (`Server`), for the command line, signals, restarts, several
//! instances, outages and connection limits.

mod api;
mod browser;
mod cli;
mod connections;
mod hardening;
mod multi_instance;
mod outage;
mod security;
mod session_rules;
mod stores;
mod support;
mod usernames;
