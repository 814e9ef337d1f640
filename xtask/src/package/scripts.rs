//! Maintainer scripts. Both package formats share the pieces, so the user
//! and the systemd handling are the same on Debian and on RHEL. Every
//! systemctl call is guarded by `/run/systemd/system`, so installing into a
//! container or chroot without systemd works. The service is never enabled
//! or started by installing: it scans nothing until an admin lists targets.

/// Creates the `scanner-agent` system user and group if missing
/// (`useradd`/`groupadd` exist on both Debian and RHEL).
const CREATE_USER: &str = r#"if ! getent group scanner-agent >/dev/null; then
    groupadd --system scanner-agent
fi
if ! getent passwd scanner-agent >/dev/null; then
    useradd --system --gid scanner-agent --home-dir /var/lib/scanner-agent \
        --no-create-home --shell /usr/sbin/nologin \
        --comment "scanner-agent exporter" scanner-agent
fi
"#;

const DAEMON_RELOAD: &str = r#"if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
"#;

const RESTART_IF_RUNNING: &str = r#"if [ -d /run/systemd/system ]; then
    systemctl try-restart scanner-agent.service >/dev/null 2>&1 || true
fi
"#;

const STOP_AND_DISABLE: &str = r#"if [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now scanner-agent.service >/dev/null 2>&1 || true
fi
"#;

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn sh(body: &str) -> String {
    format!("#!/bin/sh\nset -e\n{body}exit 0\n")
}

/// Debian `postinst`: runs after the files are unpacked, so the config's
/// group is set here (dpkg lays every file down as root:root).
pub(super) fn deb_postinst() -> String {
    let configure = format!(
        "{CREATE_USER}# The config may hold passwords: readable by the service's group only,
# unless the admin chose otherwise with dpkg-statoverride.
if ! dpkg-statoverride --list /etc/scanner-agent/config.yaml >/dev/null 2>&1; then
    chown root:scanner-agent /etc/scanner-agent/config.yaml
    chmod 0640 /etc/scanner-agent/config.yaml
fi
install -d -o scanner-agent -g scanner-agent -m 0750 /var/lib/scanner-agent
{DAEMON_RELOAD}# An upgrade (the old version is given) restarts a running agent.
if [ -n \"$2\" ]; then
{}fi
",
        indent(RESTART_IF_RUNNING)
    );
    sh(&format!(
        "if [ \"$1\" = configure ]; then\n{}fi\n",
        indent(&configure)
    ))
}

pub(super) fn deb_prerm() -> String {
    sh(&format!(
        "if [ \"$1\" = remove ]; then\n{}fi\n",
        indent(STOP_AND_DISABLE)
    ))
}

/// The service user stays on purge: files it owned elsewhere must not pass
/// to a later user that reuses its uid.
pub(super) fn deb_postrm() -> String {
    sh(&format!(
        "{DAEMON_RELOAD}if [ \"$1\" = purge ]; then\n    rm -rf /var/lib/scanner-agent\nfi\n"
    ))
}

/// RPM `%pre`: before the files land, since they name the group.
pub(super) fn rpm_pre() -> String {
    sh(CREATE_USER)
}

pub(super) fn rpm_post() -> String {
    sh(DAEMON_RELOAD)
}

/// RPM `%preun`: `$1` is 0 on removal, 1 on upgrade.
pub(super) fn rpm_preun() -> String {
    sh(&format!(
        "if [ \"$1\" -eq 0 ]; then\n{}fi\n",
        indent(STOP_AND_DISABLE)
    ))
}

/// RPM `%postun`: `$1` is 1 or more after an upgrade.
pub(super) fn rpm_postun() -> String {
    sh(&format!(
        "{DAEMON_RELOAD}if [ \"$1\" -ge 1 ]; then\n{}fi\n",
        indent(RESTART_IF_RUNNING)
    ))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn every_script_is_valid_sh() {
        for script in [
            deb_postinst(),
            deb_prerm(),
            deb_postrm(),
            rpm_pre(),
            rpm_post(),
            rpm_preun(),
            rpm_postun(),
        ] {
            let out = Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "{}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
