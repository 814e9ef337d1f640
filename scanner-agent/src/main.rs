mod guard_command;
mod scan_args;

use std::{
    io::{self, IsTerminal as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use scan_args::ScanArgs;
use scanner_agent::{
    daemon::{self, DaemonError},
    scan::{
        self, Attachment, ScanOptions, ScanReport,
        engine::tuning::Rate,
        results::{PortState, write_results},
    },
};
use tracing_subscriber::EnvFilter;

/// Port scanner and exporter for data-transfer nodes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log more (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan targets once and print what answers (like masscan or nmap -sS).
    Scan(Box<ScanArgs>),
    /// Run the exporter: scan the configured targets on schedule and serve
    /// /metrics and /healthz.
    Run {
        /// The configuration file (OpenPort Exporter's config.yaml format).
        #[arg(long, default_value = "/etc/scanner-agent/config.yaml")]
        config: PathBuf,
        /// Where open ports and last-scan times are kept across restarts.
        #[arg(long, default_value = "/var/lib/scanner-agent/state.json")]
        state_file: PathBuf,
    },
    /// Close a port to everyone but loopback and the allowed sources, with
    /// an nftables table of the agent's own (inet scanner_agent_guard).
    Guard {
        #[command(subcommand)]
        action: GuardAction,
    },
    /// Validate a configuration file without starting anything.
    CheckConfig {
        /// The configuration file (OpenPort Exporter's config.yaml format).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum GuardAction {
    /// Install the table, or replace it atomically.
    Apply {
        /// The port to guard (TCP).
        #[arg(long)]
        port: u16,
        /// An address or CIDR range allowed to reach the port (repeat for more).
        #[arg(long)]
        allow: Vec<String>,
        /// Print the ruleset (nft syntax) without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Allow guarding port 22 or the agent's own listening port.
        #[arg(long)]
        force: bool,
        /// The agent's configuration, for its listening port (server.port).
        #[arg(long, default_value = "/etc/scanner-agent/config.yaml")]
        config: PathBuf,
    },
    /// Delete the table (nothing happens if there is none).
    Remove,
    /// Whether the table is installed.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // -v shows the agent's and the XDP program's (aya-log) debug lines, not aya's internals.
    let level = [
        "info",
        "info,scanner_agent=debug,scanner_ebpf=debug",
        "trace",
    ][usize::from(cli.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Scan(args) => run_scan(*args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Guard { action } => guard_command::run(action),
        Command::Run { config, state_file } => match daemon::run(&config, Some(&state_file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(
                e @ (DaemonError::Config(_)
                | DaemonError::Listen { .. }
                | DaemonError::Targets { .. }
                | DaemonError::Guard(_)),
            ) => usage_error(e),
            Err(DaemonError::Scan(e)) if e.is_usage() => usage_error(e),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Bad input exits with 2 and one line naming the problem.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn check_config(file: &Path) -> ExitCode {
    match daemon::check(file) {
        Ok(config) => {
            for w in config.warnings() {
                eprintln!("warning: {w}");
            }
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(e),
    }
}

fn run_scan(args: ScanArgs) -> ExitCode {
    let format = args.format;
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    let report = match scan::run(&opts, Attachment::Own) {
        Ok(r) => r,
        Err(e) if e.is_usage() => return usage_error(e),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    summarize(&report, &opts);
    match write_results(&mut io::stdout().lock(), format, &report.results.results()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing results: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The closing summary on stderr, so a lossy or slow scan never looks clean.
fn summarize(r: &ScanReport, opts: &ScanOptions) {
    for (target, (up, down)) in &r.hosts {
        tracing::info!(target = target.as_str(), up, down, "hosts");
    }
    let p = &r.ports;
    let count = |s| r.results.count(s);
    tracing::info!(
        probes = p.sent,
        retries = p.retries,
        seconds = format_args!("{:.2}", r.total_time.as_secs_f64()),
        rate = format_args!("{:.0}", p.achieved_rate()),
        final_rate = format_args!("{:.0}", p.final_rate),
        open = count(PortState::Open),
        closed = count(PortState::Closed),
        filtered = count(PortState::Filtered),
        open_filtered = count(PortState::OpenFiltered),
        hosts_timed_out = p.hosts_timed_out,
        xdp_mode = %r.mode,
        xdp_frames = r.xdp.frames,
        xdp_matched = r.xdp.matched,
        xdp_lost = r.xdp.ringbuf_full,
        "scan finished"
    );
    if let Rate::Fixed(asked) = opts.tuning.rate
        && p.sent > 10_000
        && p.achieved_rate() < asked as f64 * 0.9
    {
        tracing::warn!(
            asked,
            achieved = format_args!("{:.0}", p.achieved_rate()),
            "the requested rate was not reached"
        );
    }
    if r.xdp.ringbuf_full > 0 {
        tracing::warn!(
            lost = r.xdp.ringbuf_full,
            "replies were lost because the ring buffer was full: results are incomplete; lower the rate"
        );
    }
    if p.hosts_timed_out > 0 {
        tracing::warn!(
            hosts = p.hosts_timed_out,
            "hosts timed out (host_timeout) and were not fully scanned"
        );
    }
}
