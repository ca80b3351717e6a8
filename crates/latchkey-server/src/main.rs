//! `latchkey`: the login server and its user CLI.

use std::process::ExitCode;

use clap::Parser;
use latchkey_server::cli;
use tracing_subscriber::EnvFilter;

/// Prints a clap error and exits. A missing argument or sub-command is
/// named on the first line (clap puts it on the second, or prints only help).
fn usage_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::MissingRequiredArgument => {
            if let Some(ContextValue::Strings(args)) = e.get(ContextKind::InvalidArg) {
                let rendered = e.render().to_string();
                let usage = rendered.find("Usage:").map_or("", |i| &rendered[i..]);
                eprint!(
                    "error: missing required argument {}\n\n{usage}",
                    args.join(", ")
                );
                std::process::exit(2);
            }
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("error: missing sub-command\n");
        }
        _ => {}
    }
    e.exit()
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    let serving = matches!(cli.command, cli::Command::Serve(_));
    let filter = EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if serving { "info" } else { "warn" }));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(latchkey_server::run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}
