use std::{
    io::{self, IsTerminal as _},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use scanner_agent::{
    results::{OutputFormat, PortState, write_results},
    scan::{self, ScanOptions},
    targets::{PortList, TargetSet},
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
    Scan(ScanArgs),
}

#[derive(Args)]
struct ScanArgs {
    /// IPv4 addresses or CIDR ranges.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Ports: lists and ranges, e.g. 22,80,8000-8100.
    #[arg(short, long, default_value = "1-65535")]
    ports: String,
    /// Probes per second.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Seconds to wait for late replies after the last probe.
    #[arg(long, default_value_t = 1.0)]
    wait: f64,
    /// Interface to send on and capture from (default: by route lookup).
    #[arg(short, long)]
    interface: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
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
        Command::Scan(args) => run_scan(args),
    }
}

/// Bad input exits with 2 and one line naming the problem.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn run_scan(args: ScanArgs) -> ExitCode {
    let targets = match TargetSet::parse(&args.targets) {
        Ok(t) => t,
        Err(e) => return usage_error(e),
    };
    let ports = match PortList::parse(&args.ports) {
        Ok(p) => p,
        Err(e) => return usage_error(e),
    };
    let Ok(wait) = Duration::try_from_secs_f64(args.wait) else {
        return usage_error(format!(
            "invalid --wait {}: expected seconds, e.g. 1 or 0.5",
            args.wait
        ));
    };
    let opts = ScanOptions {
        targets,
        ports,
        rate: args.rate,
        wait,
        interface: args.interface,
    };
    let report = match scan::run(&opts) {
        Ok(r) => r,
        Err(e) if e.is_usage() => return usage_error(e),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let s = &report.stats;
    tracing::info!(
        probes = s.probes,
        seconds = format_args!("{:.2}", s.total_time.as_secs_f64()),
        rate = format_args!("{:.0}", s.achieved_rate()),
        open = report.results.count(PortState::Open),
        closed = report.results.count(PortState::Closed),
        xdp_mode = %s.mode,
        xdp_frames = s.xdp.frames,
        xdp_matched = s.xdp.matched,
        xdp_lost = s.xdp.ringbuf_full,
        "scan finished"
    );
    if s.xdp.ringbuf_full > 0 {
        tracing::warn!(
            lost = s.xdp.ringbuf_full,
            "replies were lost because the ring buffer was full: results are incomplete; lower --rate"
        );
    }
    let results = report.results.filtered(&[PortState::Open]);
    match write_results(&mut io::stdout().lock(), args.format, &results) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing results: {e}");
            ExitCode::FAILURE
        }
    }
}
