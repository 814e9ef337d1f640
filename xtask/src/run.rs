//! `cargo xtask run`: builds and runs the agent. Without arguments, the
//! loopback demo ([`testbed::demo`]): `scanner-agent run` with its metrics,
//! firewall counters and passthrough, until Ctrl-C. `-- <args>` runs any
//! subcommand instead.

use std::{path::PathBuf, process::Command, thread, time::Duration};

use anyhow::{Result, bail};
use clap::Args;
use testbed::demo::{Demo, Place, ensure_clean};

use crate::{
    build::build,
    exec::{catch_interrupts, interrupted, run},
    toolchain,
};

#[derive(Args)]
pub(crate) struct Options {
    /// Run this scanner-agent binary instead of a fresh build.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Arguments for scanner-agent, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub(crate) fn run_task(o: Options) -> Result<()> {
    let agent = match o.agent {
        Some(a) => a,
        None => build(true)?,
    };
    if !o.args.is_empty() {
        return run(Command::new(agent).args(o.args));
    }
    if !toolchain::is_root() {
        bail!("the demo attaches an XDP program to loopback: run it as root");
    }
    demo(&agent)
}

fn demo(agent: &std::path::Path) -> Result<()> {
    // Caught before anything starts, so Ctrl-C always reaches the clean-up
    // below (the agent gets its own SIGINT from the terminal, or from us).
    catch_interrupts()?;
    let mut demo = Demo::prepare(agent, Place::Host, false)?;
    print!("{}", demo.banner());
    // Printed before the agent's first log line.
    std::io::Write::flush(&mut std::io::stdout())?;
    demo.launch()?;
    while !interrupted() && demo.running() {
        thread::sleep(Duration::from_millis(100));
    }
    let dir = demo.dir.clone();
    let stopped = demo.stop()?;
    ensure_clean(&stopped, "see its log above")?;
    eprintln!(
        "xtask: demo stopped ({}); {} removed",
        stopped.agent,
        dir.display()
    );
    Ok(())
}
