//! The capabilities the systemd unit grants are enough for an unprivileged
//! user to scan, and each of them is needed: the agent runs as `nobody`
//! with exactly the unit's AmbientCapabilities (through setpriv, as systemd
//! would), in a test namespace.
mod common;

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
};

use common::{Lab, agent};

const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OPEN_PORT: u16 = 2222;

/// The unit's `AmbientCapabilities=` as setpriv's `bpf,net_admin,...`.
fn unit_capabilities() -> Vec<String> {
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/systemd/scanner-agent.service"
    ))
    .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// A copy of the agent that `nobody` can run wherever the build tree lives.
struct AgentCopy(PathBuf);

impl AgentCopy {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("unprivileged-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("scanner-agent");
        fs::copy(agent(), &path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("scanner-agent")
    }
}

impl Drop for AgentCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Scans the target as `nobody` holding only `caps`, as systemd's ambient
/// capabilities would give them (and no way to gain more).
fn scan_as_nobody(lab: &Lab, agent: &Path, caps: &[String]) -> Output {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    lab.scanner
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            format!("--inh-caps={set}"),
            format!("--ambient-caps={set}"),
            format!("--bounding-set={set}"),
        ])
        .args(["--no-new-privs", "--"])
        .arg(agent)
        .args(["scan", "--format", "ndjson", "-p", "2220-2225"])
        .arg(TARGET.to_string())
        .output()
        .unwrap()
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    testbed::require_root!();
    let caps = unit_capabilities();
    assert_eq!(caps, ["bpf", "net_admin", "net_raw", "perfmon"]);
    let lab = Lab::new(&[TARGET], 1500);
    let _listener = lab.target.listen(&[(TARGET, OPEN_PORT)]);
    let copy = AgentCopy::new();

    let out = scan_as_nobody(&lab, &copy.path(), &caps);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "unprivileged scan failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{{\"ip\":\"{TARGET}\",\"port\":{OPEN_PORT},\"protocol\":\"tcp\",\"state\":\"open\",\"reason\":\"syn-ack\",\"ttl\":64}}\n"
        ),
        "{stderr}"
    );

    for dropped in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != dropped).cloned().collect();
        let out = scan_as_nobody(&lab, &copy.path(), &fewer);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "without {dropped}: {stderr}");
        let name = format!("CAP_{}", dropped.to_uppercase());
        assert!(
            stderr.starts_with(&format!("error: missing capability {name} (")),
            "without {dropped}: {stderr}"
        );
    }
}
