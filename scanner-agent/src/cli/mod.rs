//! The command line: [`Cli`] names the commands, and each command's module
//! owns its arguments and runs it ([`scan`], [`run`], [`guard`],
//! [`check_config`], [`docs`]; [`progress`] draws `scan`'s progress line).

pub(crate) mod check_config;
pub(crate) mod docs;
pub(crate) mod guard;
pub(crate) mod progress;
pub(crate) mod run;
pub(crate) mod scan;

use std::{
    io::{self, IsTerminal as _},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Port scanner and exporter for data-transfer nodes.
#[derive(Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// Log more (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Scan targets once and print what answers (like masscan or nmap -sS).
    Scan(Box<scan::ScanArgs>),
    /// Run the exporter: scan the configured targets on schedule and serve
    /// /metrics and /healthz.
    Run(run::RunArgs),
    /// Close a port to everyone but loopback and the allowed sources, with
    /// an nftables table of the agent's own (inet scanner_agent_guard).
    Guard(guard::GuardArgs),
    /// Validate a configuration file without starting anything.
    CheckConfig(check_config::CheckConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff), as the packages install it.
    #[command(hide = true)]
    Manpage,
}

/// Logs go to standard error; `-v` shows the agent's and the XDP
/// program's (aya-log) debug lines, not aya's internals.
pub(crate) fn init_logging(verbose: u8) {
    let level = [
        "info",
        "info,scanner_agent=debug,scanner_ebpf=debug",
        "trace",
    ][usize::from(verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(|| progress::LogWriter)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

/// Bad input exits with 2 and one line naming the problem.
pub(crate) fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// A failure that is not the caller's input: exit status 1.
pub(crate) fn failure(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
