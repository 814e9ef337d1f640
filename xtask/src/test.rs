//! `cargo xtask test`: formatting, the module graph, clippy, every test
//! (privileged ones included) and, unfiltered, the fuzzers.

use anyhow::{Result, bail};
use clap::Args;

use crate::{
    cycles,
    exec::{cmd, run, workspace_root},
    fuzz, toolchain,
};

#[derive(Args)]
pub(crate) struct Options {
    /// Extra arguments for `cargo test`, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

/// Each fuzz target's share of `cargo xtask test`: 4 targets, 2 minutes in all.
const FUZZ_SECONDS_IN_TESTS: u64 = 30;

pub(crate) fn run_task(o: Options) -> Result<()> {
    let args = o.args;
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
    // Run as root here: a privileged test that skips itself is a failure.
    c.env(testbed::REQUIRE_PRIVILEGED, "1");
    tools.apply(&mut c);
    toolchain::prepend_path(&mut c, &unpacked);
    run(&mut c)?;
    // A filtered run (`-- <args>`) is a developer's quick check: no fuzzing.
    if args.is_empty() {
        fuzz::run_all(FUZZ_SECONDS_IN_TESTS, None)?;
    }
    Ok(())
}
