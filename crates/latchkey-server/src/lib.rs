//! The latchkey login server as a library: the `latchkey` binary
//! (`src/main.rs`) parses its command line and runs it through [`run`], and
//! the integration tests start the same server in-process: `serve`
//! arguments parsed into [`cli::ServeArgs`], [`Serving::start`] on port 0,
//! then [`Serving::serve`] until the test ends.

mod app;
pub mod cli;
mod config;
mod error;
mod factors;
mod flash;
mod frame;
mod http;
mod mail;
mod metrics;
mod pages;
mod routes;
mod serve;
mod user_cmd;
mod users;

pub use serve::Serving;

/// A failure that ends the process: a one-line message and an exit code
/// (2 for usage errors, 1 for everything else).
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
    /// The process's exit code.
    pub fn code(&self) -> u8 {
        self.code
    }
    /// The one-line message, without the `error: ` prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Runs a parsed command: `serve` until SIGTERM or Ctrl-C, or one
/// `user ...` command.
pub async fn run(command: cli::Command) -> Result<(), Failure> {
    match command {
        cli::Command::Serve(args) => serve::run(args).await,
        cli::Command::User(cmd) => user_cmd::run(cmd).await,
    }
}
