//! Running programs from the workspace root, and finding that root.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

/// `program`, to be run in the workspace root.
pub(crate) fn cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    c.current_dir(workspace_root());
    c
}

/// Runs `c`; its failure is an error naming it.
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
