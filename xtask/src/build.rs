//! `cargo xtask build`: the agent with its XDP program embedded.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{
    exec::{cmd, run, workspace_root},
    toolchain,
};

#[derive(Args)]
pub(crate) struct Options {
    /// Build with optimisations.
    #[arg(long)]
    release: bool,
}

pub(crate) fn run_task(o: Options) -> Result<()> {
    build(o.release).map(drop)
}

/// Builds the agent (sets up the toolchain first); returns the binary's path.
pub(crate) fn build(release: bool) -> Result<PathBuf> {
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
