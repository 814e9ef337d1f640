//! Builds the XDP program with the pinned nightly and embeds it.
//!
//! Without `bpf-linker` on PATH (plain `cargo check` on a machine that never
//! ran `cargo xtask`), an empty object is embedded instead and the agent
//! refuses to scan with a message saying how to build it properly.
use std::{env, fs, path::PathBuf};

fn main() -> aya_build::Result<()> {
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
