//! Builds the XDP program with the pinned nightly and embeds it, and
//! records what `scanner_agent_build_info` reports: the git revision and the
//! compiler's version.
//!
//! Without `bpf-linker` on PATH (plain `cargo check` on a machine that never
//! ran `cargo xtask`), an empty object is embedded instead and the agent
//! refuses to scan with a message saying how to build it properly.
use std::{env, fs, path::PathBuf, process::Command};

fn main() -> aya_build::Result<()> {
    build_info();
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=SCANNER_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-changed=../scanner-common/src");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("scanner-ebpf");
    let has_linker = env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()));
    if !has_linker {
        println!(
            "cargo:warning=bpf-linker not on PATH: embedding no XDP program (use `cargo xtask build`)"
        );
        fs::write(out, [])?;
        return Ok(());
    }
    let toolchain = env::var("SCANNER_EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".into());
    let package = aya_build::Package {
        name: "scanner-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../scanner-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}

/// `SCANNER_AGENT_REVISION` (set by whoever builds from a tarball) wins over
/// `git rev-parse`; without either the revision is "unknown", never a guess.
fn build_info() {
    println!("cargo:rerun-if-env-changed=SCANNER_AGENT_REVISION");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let revision = env::var("SCANNER_AGENT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // A new commit changes HEAD or the branch it names: rebuild to say so.
    let mut watched = vec!["HEAD".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(&path)
                .is_file()
        {
            println!(
                "cargo:rerun-if-changed={}",
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join(path)
                    .display()
            );
        }
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SCANNER_AGENT_REVISION={revision}");
    println!("cargo:rustc-env=SCANNER_AGENT_RUSTC_VERSION={rustc_version}");
}
