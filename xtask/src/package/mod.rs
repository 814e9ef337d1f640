//! `cargo xtask package`: the agent as a `.deb` (Debian/Ubuntu) and an
//! `.rpm` (RHEL/Rocky), both from one list of files and one set of
//! maintainer scripts, so the two packages cannot drift apart.
//!
//! The `.deb` is built by `dpkg-deb --build --root-owner-group` (Debian's
//! own tool); the `.rpm` by the pure-Rust `rpm` crate, so no `rpmbuild`
//! and no spec file are needed on a Debian build host.

mod deb;
mod rpm;
mod scripts;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use clap::Args;

use crate::{build::build, exec::workspace_root};

pub(crate) const NAME: &str = "scanner-agent";
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
pub(crate) const SUMMARY: &str =
    "XDP-assisted port scanner and Prometheus exporter for data-transfer nodes";
pub(crate) const DESCRIPTION: &str = "scanner-agent scans the configured networks on a schedule with its own \
raw-socket sender and an XDP reply filter, and exports the results with the OpenPort Exporter's \
metric names. It runs as the unprivileged scanner-agent user with CAP_BPF, CAP_NET_ADMIN, \
CAP_NET_RAW and CAP_PERFMON granted by its systemd unit.";
pub(crate) const LICENSE: &str = "Apache-2.0";
pub(crate) const MAINTAINER: &str = "scanner-agent developers <scanner-agent@localhost>";
pub(crate) const CONFIG_PATH: &str = "/etc/scanner-agent/config.yaml";

/// How a packaged file is treated by the package manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Program,
    /// Kept when changed by the admin (dpkg conffile, rpm %config(noreplace));
    /// readable by the service's group only (it may hold passwords).
    Config,
    Doc,
    Data,
}

pub(crate) struct File {
    /// Where it is installed, `{unitdir}` and `{zshdir}` standing for the
    /// distribution's systemd unit and zsh completion directories.
    pub path: &'static str,
    pub contents: Vec<u8>,
    pub kind: Kind,
}

impl File {
    pub(crate) fn mode(&self) -> u32 {
        match self.kind {
            Kind::Program => 0o755,
            Kind::Config => 0o640,
            Kind::Doc | Kind::Data => 0o644,
        }
    }

    /// The installed path for a distribution whose unit directory is
    /// `unitdir` and whose zsh completions live in `zshdir`.
    pub(crate) fn installed(&self, unitdir: &str, zshdir: &str) -> String {
        self.path
            .replace("{unitdir}", unitdir)
            .replace("{zshdir}", zshdir)
    }
}

/// Everything both packages install, read from the tree (and `binary`).
pub(crate) fn payload(binary: &Path) -> Result<Vec<File>> {
    let root = workspace_root();
    let read = |rel: &str| fs::read(root.join(rel)).with_context(|| format!("cannot read {rel}"));
    let file = |path, rel: &str, kind| -> Result<File> {
        Ok(File {
            path,
            contents: read(rel)?,
            kind,
        })
    };
    let program =
        fs::read(binary).with_context(|| format!("cannot read the agent {}", binary.display()))?;
    let mut files = vec![
        File {
            path: "/usr/bin/scanner-agent",
            contents: program,
            kind: Kind::Program,
        },
        file(
            "{unitdir}/scanner-agent.service",
            "configs/systemd/scanner-agent.service",
            Kind::Data,
        )?,
        file(CONFIG_PATH, "configs/config.yaml", Kind::Config)?,
        file(
            "/usr/share/doc/scanner-agent/README.md",
            "configs/README.md",
            Kind::Doc,
        )?,
        File {
            path: "/usr/share/doc/scanner-agent/copyright",
            contents: format!("scanner-agent\nLicense: {LICENSE}\n").into_bytes(),
            kind: Kind::Doc,
        },
        file(
            "/usr/share/scanner-agent/prometheus/prometheus.yml",
            "configs/prometheus/prometheus.yml",
            Kind::Data,
        )?,
        file(
            "/usr/share/scanner-agent/prometheus/alerts.yml",
            "configs/prometheus/alerts.yml",
            Kind::Data,
        )?,
        file(
            "/usr/share/scanner-agent/prometheus/alerts.test.yml",
            "configs/prometheus/alerts.test.yml",
            Kind::Data,
        )?,
        file(
            "/usr/share/scanner-agent/prometheus/host-view.yml",
            "configs/prometheus/host-view.yml",
            Kind::Data,
        )?,
        file(
            "/usr/share/scanner-agent/prometheus/host-view.test.yml",
            "configs/prometheus/host-view.test.yml",
            Kind::Data,
        )?,
        file(
            "/usr/share/scanner-agent/grafana/scanner-agent.json",
            "configs/grafana/scanner-agent.json",
            Kind::Data,
        )?,
    ];
    for (path, args, kind) in GENERATED {
        files.push(File {
            path,
            contents: generated(binary, args)?,
            kind: *kind,
        });
    }
    Ok(files)
}

/// The man page and shell completions, as the packaged agent prints them
/// from its own clap definitions: installed path, arguments, kind.
const GENERATED: &[(&str, &[&str], Kind)] = &[
    (
        "/usr/share/man/man1/scanner-agent.1",
        &["manpage"],
        Kind::Doc,
    ),
    (
        "/usr/share/bash-completion/completions/scanner-agent",
        &["completions", "bash"],
        Kind::Data,
    ),
    (
        "{zshdir}/_scanner-agent",
        &["completions", "zsh"],
        Kind::Data,
    ),
    (
        "/usr/share/fish/vendor_completions.d/scanner-agent.fish",
        &["completions", "fish"],
        Kind::Data,
    ),
];

/// What `binary args` prints; it must succeed and print something.
fn generated(binary: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let what = format!("{} {}", binary.display(), args.join(" "));
    let out = std::process::Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "{what} printed nothing ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The newest glibc symbol version the binary links against, e.g. `2.34`:
/// the oldest C library it runs on, which the packages then require.
pub(crate) fn glibc_requirement(binary: &[u8]) -> Option<String> {
    // The version names live in the dynamic string table as plain
    // `GLIBC_2.34` strings; the largest one is what the loader demands.
    const TAG: &[u8] = b"GLIBC_";
    binary
        .windows(TAG.len())
        .enumerate()
        .filter(|(_, w)| *w == TAG)
        .filter_map(|(at, _)| {
            let rest = &binary[at + TAG.len()..];
            let end = rest
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                .unwrap_or(rest.len());
            let text = std::str::from_utf8(&rest[..end]).ok()?;
            let parts: Vec<u32> = text
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (parts.len() >= 2).then(|| (parts, text.to_owned()))
        })
        .max()
        .map(|(_, text)| text)
}

/// Seconds since the epoch of the last commit, so rebuilding the same tree
/// gives the same timestamps inside the packages.
fn source_date() -> u32 {
    let commit = crate::exec::cmd("git")
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok());
    commit.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32)
    })
}

#[derive(Args)]
pub(crate) struct Options {
    /// Package this scanner-agent binary instead of a fresh release build.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where to write the packages (default: target/package).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

pub(crate) fn run_task(o: Options) -> Result<()> {
    run(o.binary, o.out_dir).map(drop)
}

pub(crate) struct Built {
    pub deb: PathBuf,
    pub rpm: PathBuf,
}

/// Packages `binary` (or a fresh release build with the XDP program) into
/// `out_dir` (default `target/package`).
pub(crate) fn run(binary: Option<PathBuf>, out_dir: Option<PathBuf>) -> Result<Built> {
    let binary = match binary {
        Some(b) => b,
        None => build(true)?,
    };
    if !binary.is_file() {
        bail!("--binary {}: no such file", binary.display());
    }
    let out_dir = out_dir.unwrap_or_else(|| workspace_root().join("target/package"));
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let files = payload(&binary)?;
    let glibc = glibc_requirement(&files[0].contents)
        .context("the agent binary names no GLIBC_ version: is it a dynamically linked ELF?")?;
    let date = source_date();
    let built = Built {
        deb: deb::build(&files, &glibc, date, &out_dir)?,
        rpm: rpm::build(&files, &glibc, date, &out_dir)?,
    };
    for p in [&built.deb, &built.rpm] {
        let size = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        eprintln!("xtask: built {} ({} KiB)", p.display(), size / 1024);
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_requirement_is_the_newest_version_named() {
        let elf = b"\0libc.so.6\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.9\0GLIBC_PRIVATE\0";
        assert_eq!(glibc_requirement(elf).as_deref(), Some("2.34"));
        assert_eq!(glibc_requirement(b"static"), None);
    }
}
