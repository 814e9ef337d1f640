//! `cargo xtask build | run | test | package | bench`: every developer task sets up what it
//! needs first (see `toolchain`), so a fresh machine needs no manual steps.

mod bench;
mod cycles;
mod fuzz;
mod package;
mod toolchain;

use std::{net::TcpListener, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "scanner-agent developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the agent with its XDP program embedded.
    Build {
        /// Build with optimisations.
        #[arg(long)]
        release: bool,
    },
    /// Build and run the agent. Without arguments: a demo scan of loopback.
    Run {
        /// Arguments for scanner-agent, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test, privileged ones included (needs root).
    Test {
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the .deb and .rpm packages into target/package.
    Package {
        /// Package this scanner-agent binary instead of a fresh release build.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Where to write the packages (default: target/package).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the cargo-fuzz targets (parsers of frames, config, /query, specs).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (frame_reply, config, query, specs).
        #[arg(long)]
        target: Option<String>,
    },
    /// Compare the agent with masscan and nmap on a namespace testbed (needs root).
    Bench {
        /// Only the one-host workload, one rate per tool: a smoke check.
        #[arg(long)]
        quick: bool,
        /// Benchmark this scanner-agent binary instead of building one.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Only the firewall counters' scrape latency against iptables-save.
        #[arg(long, conflicts_with = "passthrough_only")]
        firewall: bool,
        /// Only the node_exporter passthrough comparison.
        #[arg(long)]
        passthrough_only: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Build { release } => build(release).map(drop),
        Task::Run { args } => run_agent(args),
        Task::Test { args } => test(args),
        Task::Fuzz { seconds, target } => fuzz::run_all(seconds, target.as_deref()),
        Task::Package { binary, out_dir } => package::run(binary, out_dir).map(drop),
        Task::Bench {
            quick,
            agent,
            firewall,
            passthrough_only,
        } => {
            let only = match (firewall, passthrough_only) {
                (true, _) => bench::Only::Firewall,
                (_, true) => bench::Only::Passthrough,
                _ => bench::Only::Everything,
            };
            bench::run(quick, agent, only)
        }
    }
}

pub(crate) fn cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    c.current_dir(workspace_root());
    c
}

pub(crate) fn run(c: &mut Command) -> Result<()> {
    let status = c.status().with_context(|| format!("cannot start {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn build(release: bool) -> Result<PathBuf> {
    toolchain::ensure_packages(toolchain::BUILD_PACKAGES)?;
    let tools = toolchain::ensure()?;
    let mut c = cmd("cargo");
    c.args(["build", "--package", "scanner-agent"]);
    if release {
        c.arg("--release");
    }
    tools.apply(&mut c);
    run(&mut c)?;
    Ok(workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("scanner-agent"))
}

fn run_agent(args: Vec<String>) -> Result<()> {
    let agent = build(true)?;
    if !args.is_empty() {
        return run(Command::new(agent).args(args));
    }
    // The built-in demo never sends a packet off the machine: it scans
    // loopback, where two listeners opened here show what "open" looks like.
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let ports: Vec<String> = listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port().to_string()))
        .collect::<Result<_>>()?;
    eprintln!(
        "xtask: demo scan of 127.0.0.1, all TCP ports; demo listeners on {}",
        ports.join(", ")
    );
    run(Command::new(agent).args(["scan", "--ports", "1-65535", "--rate", "50000", "127.0.0.1"]))
}

fn test(args: Vec<String>) -> Result<()> {
    if !toolchain::is_root() {
        bail!("the tests attach XDP programs and create network namespaces: run them as root");
    }
    toolchain::ensure_packages(toolchain::BUILD_PACKAGES)?;
    toolchain::ensure_packages(toolchain::TEST_PACKAGES)?;
    let unpacked = toolchain::ensure_unpacked()?;
    let tools = toolchain::ensure()?;
    run(cmd("cargo").args(["fmt", "--all", "--check"]))?;
    cycles::check(&workspace_root())?;
    let mut lint = cmd("cargo");
    lint.args(["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"]);
    tools.apply(&mut lint);
    run(&mut lint)?;
    let mut c = cmd("cargo");
    c.arg("test").args(&args);
    tools.apply(&mut c);
    toolchain::prepend_path(&mut c, &unpacked);
    run(&mut c)?;
    // A filtered run (`-- <args>`) is a developer's quick check: no fuzzing.
    if args.is_empty() {
        fuzz::run_all(FUZZ_SECONDS_IN_TESTS, None)?;
    }
    Ok(())
}

/// Each fuzz target's share of `cargo xtask test`: 4 targets, 2 minutes in all.
const FUZZ_SECONDS_IN_TESTS: u64 = 30;
