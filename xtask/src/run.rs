//! `cargo xtask run`: builds and runs the agent; without arguments, a demo
//! scan of loopback.

use std::{net::TcpListener, process::Command};

use anyhow::Result;
use clap::Args;

use crate::{build::build, exec::run};

#[derive(Args)]
pub(crate) struct Options {
    /// Arguments for scanner-agent, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub(crate) fn run_task(o: Options) -> Result<()> {
    let agent = build(true)?;
    if !o.args.is_empty() {
        return run(Command::new(agent).args(o.args));
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
