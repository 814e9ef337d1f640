//! `cargo xtask fuzz [--seconds N] [--target NAME]`: the cargo-fuzz targets
//! of `scanner-common/fuzz` (the frame parser and reply check) and
//! `scanner-agent/fuzz` (config and web config, `/query` parameters, port
//! and target specs), each for a bounded time, starting from the committed
//! seed corpora. New inputs go to a scratch corpus, so a run changes nothing
//! in the tree; a crash stops the run and leaves its input under the
//! crate's `fuzz/artifacts/`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{
    exec::{cmd, run, workspace_root},
    toolchain,
};

#[derive(Args)]
pub(crate) struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only this target (frame_reply, config, query, specs).
    #[arg(long)]
    target: Option<String>,
}

pub(crate) fn run_task(o: Options) -> Result<()> {
    run_all(o.seconds, o.target.as_deref())
}

/// (fuzz crate, target)
pub(crate) const TARGETS: &[(&str, &str)] = &[
    ("scanner-common/fuzz", "frame_reply"),
    ("scanner-agent/fuzz", "config"),
    ("scanner-agent/fuzz", "query"),
    ("scanner-agent/fuzz", "specs"),
];

/// The cargo-fuzz release the project is tested with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Fuzzes every target (or only `only`) for `seconds` each.
pub(crate) fn run_all(seconds: u64, only: Option<&str>) -> Result<()> {
    let chosen: Vec<_> = TARGETS
        .iter()
        .filter(|(_, t)| only.is_none_or(|o| o == *t))
        .collect();
    if chosen.is_empty() {
        bail!(
            "no fuzz target {:?}; there are {}",
            only.unwrap_or_default(),
            TARGETS.iter().map(|t| t.1).collect::<Vec<_>>().join(", ")
        );
    }
    let nightly = toolchain::ensure()?.nightly;
    ensure_cargo_fuzz()?;
    for (dir, target) in chosen {
        fuzz(&nightly, dir, target, seconds)?;
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = std::process::Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (once)");
    run(cmd("cargo").args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn fuzz(nightly: &str, dir: &str, target: &str, seconds: u64) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!(
        "scanner-agent-fuzz-{target}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch).context("scratch corpus")?;
    let seeds = Path::new("corpus").join(target);
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let mut c = cmd("rustup");
    c.current_dir(workspace_root().join(dir))
        .args([
            "run",
            nightly,
            "cargo",
            "fuzz",
            "run",
            "--sanitizer",
            "none",
            target,
        ])
        .arg(&scratch)
        .arg(&seeds)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]);
    let outcome = run(&mut c);
    let _ = std::fs::remove_dir_all(&scratch);
    outcome.with_context(|| {
        format!("fuzz target {target} found a crash (see {dir}/artifacts/{target}/)")
    })
}
