//! The `.rpm`, written by the `rpm` crate (no rpmbuild, no spec file).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rpm::{BuildConfig, CompressionType, Dependency, FileOptions, PackageBuilder, Scriptlet};

use super::{DESCRIPTION, File, Kind, LICENSE, NAME, SUMMARY, VERSION, scripts};

/// RHEL/Rocky keep packaged units here.
const UNIT_DIR: &str = "/usr/lib/systemd/system";
/// Where RHEL's zsh looks for completion functions.
const ZSH_DIR: &str = "/usr/share/zsh/site-functions";

/// Builds `scanner-agent-<version>-1.x86_64.rpm` in `out_dir`.
pub(super) fn build(
    files: &[File],
    glibc: &str,
    source_date: u32,
    out_dir: &Path,
) -> Result<PathBuf> {
    // gzip: every rpm since RHEL 5 reads it, and it needs no C library here.
    let config = BuildConfig::default()
        .compression(CompressionType::Gzip)
        .source_date(source_date);
    let mut builder = PackageBuilder::new(NAME, VERSION, LICENSE, "x86_64", SUMMARY);
    builder
        .using_config(config)
        .release("1")
        .description(DESCRIPTION)
        .requires(Dependency::greater_eq("glibc", glibc))
        .requires(Dependency::script_pre("shadow-utils"))
        .pre_install_script(Scriptlet::new(scripts::rpm_pre()))
        .post_install_script(Scriptlet::new(scripts::rpm_post()))
        .pre_uninstall_script(Scriptlet::new(scripts::rpm_preun()))
        .post_uninstall_script(Scriptlet::new(scripts::rpm_postun()));
    for f in files {
        let mut options =
            FileOptions::new(f.installed(UNIT_DIR, ZSH_DIR)).permissions(f.mode() as u16);
        options = match f.kind {
            // The group exists by then: %pre creates it.
            Kind::Config => options.config().noreplace().group("scanner-agent"),
            Kind::Doc => options.doc(),
            Kind::Program | Kind::Data => options,
        };
        builder
            .with_file_contents(f.contents.clone(), options)
            .with_context(|| format!("cannot add {} to the rpm", f.path))?;
    }
    for dir in [
        FileOptions::dir("/etc/scanner-agent").permissions(0o755),
        FileOptions::dir("/usr/share/scanner-agent").permissions(0o755),
        FileOptions::dir("/usr/share/scanner-agent/prometheus").permissions(0o755),
        FileOptions::dir("/usr/share/scanner-agent/grafana").permissions(0o755),
        FileOptions::dir("/usr/share/doc/scanner-agent").permissions(0o755),
        FileOptions::dir("/var/lib/scanner-agent")
            .permissions(0o750)
            .user("scanner-agent")
            .group("scanner-agent"),
    ] {
        builder
            .with_dir_entry(dir)
            .context("cannot add a directory to the rpm")?;
    }
    let package = builder.build().context("cannot build the rpm")?;
    let path = out_dir.join(format!("{NAME}-{VERSION}-1.x86_64.rpm"));
    package
        .write_file(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
