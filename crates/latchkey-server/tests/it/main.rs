//! The server's integration tests: one test binary (`cargo test -p
//! latchkey-server --test it`), one module per area. Filter by module path,
//! e.g. `cargo test -p latchkey-server --test it stores::sqlite::`.
//!
//! `support` is the harness. `TestApp` builds the server through the
//! library inside this process (same command line, same serve path, a
//! fresh SQLite database each, a client that keeps cookies); `Server` runs
//! the real `latchkey` binary in a process of its own, for what needs one:
//! the log, signals, restarts, several instances, outages, connection
//! limits and the environment.

mod api;
mod browser;
mod cli;
mod connections;
mod forward_auth;
mod hardening;
mod mail;
mod mfa;
mod multi_instance;
mod outage;
mod passkeys;
mod recovery;
mod recovery_mail;
mod security;
mod session_rules;
mod stores;
mod support;
mod usernames;
