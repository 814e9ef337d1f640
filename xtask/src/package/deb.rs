//! The `.deb`: a staged tree plus `DEBIAN/`, built by `dpkg-deb
//! --root-owner-group`, so every file belongs to root:root without fakeroot.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::{DESCRIPTION, File, Kind, MAINTAINER, NAME, SUMMARY, VERSION, scripts};

/// Debian (bookworm and older) keeps packaged units here; `/usr/lib` also
/// works on merged-/usr systems, but this works everywhere.
const UNIT_DIR: &str = "/lib/systemd/system";
/// Where Debian's zsh looks for completion functions of packages.
const ZSH_DIR: &str = "/usr/share/zsh/vendor-completions";

fn write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

fn control(files: &[File], glibc: &str) -> String {
    let bytes: usize = files.iter().map(|f| f.contents.len()).sum();
    let description = DESCRIPTION
        .split(". ")
        .map(|s| format!(" {}", s.trim_end_matches('.')))
        .collect::<Vec<_>>()
        .join(".\n");
    format!(
        "Package: {NAME}\n\
         Version: {VERSION}\n\
         Architecture: amd64\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {}\n\
         Depends: libc6 (>= {glibc}), passwd\n\
         Section: net\n\
         Priority: optional\n\
         Description: {SUMMARY}\n{description}.\n",
        bytes.div_ceil(1024)
    )
}

/// Builds `scanner-agent_<version>_amd64.deb` in `out_dir`.
pub(super) fn build(
    files: &[File],
    glibc: &str,
    source_date: u32,
    out_dir: &Path,
) -> Result<PathBuf> {
    let stage = out_dir.join("deb-root");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    for f in files {
        let installed = f.installed(UNIT_DIR, ZSH_DIR);
        write(
            &stage.join(installed.trim_start_matches('/')),
            &f.contents,
            f.mode(),
        )?;
    }
    let debian = stage.join("DEBIAN");
    write(
        &debian.join("control"),
        control(files, glibc).as_bytes(),
        0o644,
    )?;
    let conffiles: String = files
        .iter()
        .filter(|f| f.kind == Kind::Config)
        .map(|f| f.installed(UNIT_DIR, ZSH_DIR) + "\n")
        .collect();
    write(&debian.join("conffiles"), conffiles.as_bytes(), 0o644)?;
    for (name, script) in [
        ("postinst", scripts::deb_postinst()),
        ("prerm", scripts::deb_prerm()),
        ("postrm", scripts::deb_postrm()),
    ] {
        write(&debian.join(name), script.as_bytes(), 0o755)?;
    }
    // Staged directories get the usual 0755 whatever the umask.
    for entry in walk(&stage)? {
        if entry.is_dir() {
            fs::set_permissions(&entry, fs::Permissions::from_mode(0o755))?;
        }
    }
    let deb = out_dir.join(format!("{NAME}_{VERSION}_amd64.deb"));
    crate::exec::run(
        crate::exec::cmd("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&stage)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", source_date.to_string()),
    )?;
    fs::remove_dir_all(&stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    Ok(deb)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if all[i].is_dir() {
            for e in fs::read_dir(&all[i])? {
                all.push(e?.path());
            }
        }
        i += 1;
    }
    Ok(all)
}
