//! Installs what building the XDP program needs, idempotently: the pinned
//! nightly with `rust-src`, and `bpf-linker` linked against that nightly's
//! own LLVM (see shared/reference/toolchain.md for why it must match).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::exec::{cmd, run};

/// The nightly the eBPF crate is built with: the one these machines ship.
/// A different nightly is installed under its dated name on first use.
pub(crate) const NIGHTLY_DATE: &str = "2026-05-19";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What the agent's build script needs to build the eBPF crate.
pub(crate) struct Toolchain {
    /// rustup toolchain name of the pinned nightly.
    pub nightly: String,
    /// Directory holding `bpf-linker`, to put first on PATH.
    pub linker_bin: PathBuf,
}

impl Toolchain {
    /// Sets up a `cargo` invocation to build the agent with its XDP program.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        prepend_path(cmd, &self.linker_bin);
        cmd.env("SCANNER_EBPF_TOOLCHAIN", &self.nightly);
    }
}

/// Puts `dir` first in the PATH `cmd` will run with.
pub(crate) fn prepend_path(cmd: &mut Command, dir: &Path) {
    let current = cmd
        .get_envs()
        .find(|(key, _)| *key == "PATH")
        .and_then(|(_, value)| value.map(|v| v.to_os_string()))
        .or_else(|| env::var_os("PATH"))
        .unwrap_or_default();
    let paths = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&current));
    cmd.env(
        "PATH",
        env::join_paths(paths).expect("PATH entries are valid"),
    );
}

struct RustcInfo {
    commit_hash: String,
    commit_date: String,
    llvm_version: String,
    sysroot: PathBuf,
}

fn rustc(toolchain: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc"])
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

fn rustc_info(toolchain: &str) -> Option<RustcInfo> {
    let text = rustc(toolchain, &["-vV"])?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    Some(RustcInfo {
        commit_hash: field("commit-hash:")?,
        commit_date: field("commit-date:")?,
        llvm_version: field("LLVM version:")?,
        sysroot: PathBuf::from(rustc(toolchain, &["--print", "sysroot"])?.trim()),
    })
}

fn pick_nightly() -> Result<(String, RustcInfo)> {
    let dated = format!("nightly-{NIGHTLY_DATE}");
    if let Some(info) = rustc_info(&dated) {
        return Ok((dated, info));
    }
    if let Some(info) = rustc_info("nightly").filter(|i| i.commit_date == NIGHTLY_DATE) {
        return Ok(("nightly".into(), info));
    }
    eprintln!("xtask: installing the pinned toolchain {dated}");
    run(cmd("rustup").args([
        "toolchain",
        "install",
        &dated,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))?;
    let info = rustc_info(&dated).context("the freshly installed nightly does not run")?;
    Ok((dated, info))
}

fn ensure_rust_src(nightly: &str, info: &RustcInfo) -> Result<()> {
    if info
        .sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
    {
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to {nightly}");
    run(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", nightly]))
}

fn data_dir() -> PathBuf {
    let base = env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".local/share")
        });
    base.join("scanner-agent")
}

/// bpf-linker built against `info`'s libLLVM, in a directory named after
/// the nightly's commit so a different nightly gets its own build.
fn ensure_bpf_linker(info: &RustcInfo) -> Result<PathBuf> {
    let prefix = data_dir().join("bpf-linker").join(&info.commit_hash[..12]);
    let bin = prefix.join("bin");
    let stamp = prefix.join("built-for");
    let want = format!("bpf-linker {BPF_LINKER_VERSION} llvm {}", info.llvm_version);
    let runs = Command::new(bin.join("bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want) {
        return Ok(bin);
    }
    eprintln!("xtask: building {want} (about a minute, once)");
    let libllvm = std::fs::read_dir(info.sysroot.join("lib"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .context("the nightly ships no libLLVM.so.*")?;
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let soname = libllvm.file_name().context("libLLVM has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)?;
    }
    let major = info.llvm_version.split('.').next().unwrap_or_default();
    run(cmd("cargo")
        .args([
            "install",
            "--force",
            "--locked",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .arg("--root")
        .arg(&prefix)
        .env("LLVM_PREFIX", &prefix))?;
    std::fs::write(&stamp, &want)?;
    Ok(bin)
}

pub(crate) fn ensure() -> Result<Toolchain> {
    let (nightly, info) = pick_nightly()?;
    ensure_rust_src(&nightly, &info)?;
    let linker_bin = ensure_bpf_linker(&info)?;
    Ok(Toolchain {
        nightly,
        linker_bin,
    })
}

/// Debian packages building the agent needs: the firewall reader links
/// libnftnl and libmnl, found through pkg-config.
pub(crate) const BUILD_PACKAGES: &[&str] = &["pkg-config", "libnftnl-dev", "libmnl-dev"];

/// Debian packages the tests and benchmarks drive: `systemd` for
/// `systemd-analyze verify`, `rpm` to inspect the built `.rpm`, `util-linux`
/// for `setpriv`, iptables (the firewall counters are checked against
/// `iptables-save`). prometheus and promtool come from `ensure_prometheus`.
/// `nmap-common` for nmap's XML DTD (`/usr/share/nmap/nmap.dtd`) and
/// `libxml2-utils` for `xmllint`, which validate `-oX` output; `ndiff`
/// compares two such files; `netbase` for `/etc/services` (`-p ssh`).
pub(crate) const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "procps",
    "nftables",
    "iptables",
    "curl",
    "systemd",
    "rpm",
    // The bulk transfer a scan must yield to (tests/gentle.rs).
    "iperf3",
    // The progress line's test runs `scanner-agent scan` in a real terminal.
    "tmux",
    // `nroff` renders the generated man page in the docs test.
    "groff-base",
    "nmap-common",
    "libxml2-utils",
    "ndiff",
    "netbase",
];

/// Programs the tests and benches run from Debian packages that must not be
/// installed: their postinst enables and starts the service (a Prometheus
/// server, a node_exporter on :9100) wherever policy-rc.d allows.
const UNPACKED: &[(&str, &[&str])] = &[
    ("prometheus", &["prometheus", "promtool"]),
    ("prometheus-node-exporter", &["prometheus-node-exporter"]),
];

/// The directory holding the [`UNPACKED`] programs, taken out of their
/// packages with `apt-get download` and `dpkg-deb -x`; put it on PATH.
pub(crate) fn ensure_unpacked() -> Result<PathBuf> {
    let dir = data_dir().join("unpacked");
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for (package, programs) in UNPACKED {
        if programs.iter().all(|p| runs(&dir.join(p))) {
            continue;
        }
        let download = data_dir().join("download");
        let _ = std::fs::remove_dir_all(&download);
        std::fs::create_dir_all(&download)?;
        eprintln!(
            "xtask: unpacking {} from Debian's {package} (not installing it)",
            programs.join(", ")
        );
        let mut fetch = cmd("apt-get");
        fetch
            .args(["download", "-qq", package])
            .current_dir(&download);
        if run(&mut fetch).is_err() && is_root() {
            // Package lists may be missing on a fresh machine.
            run(cmd("apt-get").args(["update", "-qq"]))?;
            run(&mut fetch)?;
        }
        let deb = std::fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        let tree = download.join("tree");
        run(cmd("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        std::fs::create_dir_all(&dir)?;
        for program in *programs {
            let to = dir.join(program);
            std::fs::rename(tree.join("usr/bin").join(program), &to)
                .with_context(|| format!("{package} holds no usr/bin/{program}"))?;
            if !runs(&to) {
                bail!("{} does not run", to.display());
            }
        }
        std::fs::remove_dir_all(&download)?;
    }
    Ok(dir)
}

/// Debian packages `cargo xtask bench` drives: the scanners compared with,
/// the target's firewall, `iptables-save` for the firewall reader's bench,
/// and `wrk` for the passthrough's (node_exporter comes from `ensure_unpacked`).
pub(crate) const BENCH_PACKAGES: &[&str] =
    &["masscan", "nmap", "nftables", "iproute2", "iptables", "wrk"];

pub(crate) fn ensure_packages(packages: &[&str]) -> Result<()> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
        .args(packages)
        .output();
    let installed = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !installed
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [*p, "ii"])
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}; install them with apt-get (as root)");
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(cmd("apt-get").args(["update", "-qq"]))?;
    run(cmd("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
