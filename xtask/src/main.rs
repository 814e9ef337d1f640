//! `cargo xtask build | run | test | package | fuzz | bench`: every
//! developer task sets up what it needs first (see `toolchain`), so a fresh
//! machine needs no manual steps. Each task is a module that owns its
//! arguments; this file only dispatches.

mod bench;
mod build;
mod cycles;
mod exec;
mod fuzz;
mod package;
mod run;
mod test;
mod toolchain;

use anyhow::Result;
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
    Build(build::Options),
    /// Build and run the agent. Without arguments: the exporter's loopback demo, until Ctrl-C.
    Run(run::Options),
    /// Run every test, privileged ones included (needs root).
    Test(test::Options),
    /// Build the .deb and .rpm packages into target/package.
    Package(package::Options),
    /// Run the cargo-fuzz targets (parsers of frames, config, /query, specs).
    Fuzz(fuzz::Options),
    /// Compare the agent with masscan and nmap on a namespace testbed (needs root).
    Bench(bench::Options),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Build(o) => build::run_task(o),
        Task::Run(o) => run::run_task(o),
        Task::Test(o) => test::run_task(o),
        Task::Package(o) => package::run_task(o),
        Task::Fuzz(o) => fuzz::run_task(o),
        Task::Bench(o) => bench::run_task(o),
    }
}
