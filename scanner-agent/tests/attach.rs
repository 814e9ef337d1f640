//! Attaching to real interfaces: jumbo frames, someone else's program, and
//! cleanup when the agent is killed.
mod common;

use std::{fs, net::Ipv4Addr, process::Stdio, time::Duration};

use common::{Lab, SCANNER_IF, agent, sh, wait_until};
use scanner_common::maps::Settings;

const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

#[test]
fn driver_mode_on_a_jumbo_frame_veth() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 9000);
    let _l = lab.target.listen(&[(TARGET, 5201)]);
    let out = lab
        .scanner
        .command(agent())
        .args([
            "scan",
            "-p",
            "5000-5500",
            "198.18.0.2",
            "--xdp-mode",
            "driver",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("xdp_mode=driver"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "198.18.0.2       5201/tcp open          syn-ack\n"
    );
    assert_eq!(
        lab.scanner.xdp_prog(SCANNER_IF),
        None,
        "program left attached after the scan"
    );
}

/// By default a veth gets SKB mode (its driver mode costs more), `skb`
/// forces SKB mode, and `driver` where the driver has none (loopback) is an
/// error that names the setting and leaves nothing attached.
#[test]
fn the_xdp_mode_setting_chooses_the_attach_mode() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 1500);
    let _l = lab.target.listen(&[(TARGET, 5201)]);
    let scan = |extra: &[&str], target: &str| {
        let out = lab
            .scanner
            .command(agent())
            .args(["scan", "-p", "5200-5202", target])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for extra in [&[][..], &["--xdp-mode", "auto"], &["--xdp-mode", "skb"]] {
        let (ok, stdout, stderr) = scan(extra, "198.18.0.2");
        assert!(ok, "{extra:?}: {stderr}");
        assert!(stderr.contains("xdp_mode=skb"), "{extra:?}: {stderr}");
        assert_eq!(stdout, "198.18.0.2       5201/tcp open          syn-ack\n");
    }
    let (ok, _, stderr) = scan(&["--xdp-mode", "driver"], "127.0.0.1");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("interface lo cannot take the XDP program (xdp_mode driver: driver mode:"),
        "{stderr}"
    );
    assert_eq!(lab.scanner.xdp_prog("lo"), None);
    let (ok, _, stderr) = scan(&["--xdp-mode", "native"], "198.18.0.2");
    assert!(
        !ok && stderr.contains("unknown XDP mode \"native\" (auto, driver or skb)"),
        "{stderr}"
    );
}

/// A private bpffs mount (`ip -n` remounts /sys, hiding /sys/fs/bpf).
struct Bpffs(String);

impl Bpffs {
    fn mount() -> Self {
        let dir = format!("/run/scanner-agent-test-bpffs-{}", std::process::id());
        fs::create_dir_all(&dir).unwrap();
        sh("mount", &["-t", "bpf", "bpf", &dir]);
        Self(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn never_replaces_someone_elses_program() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 1500);
    let bpffs = Bpffs::mount();
    // Someone else's program, attached the classic way (netlink, `ip link`).
    let pin = format!("{}/foreign", bpffs.0);
    let mut ebpf = scanner_agent::scan::capture::load(Settings::default()).unwrap();
    let prog = scanner_agent::scan::capture::loaded_program(&mut ebpf).unwrap();
    prog.pin(&pin).unwrap();
    lab.scanner.ip(&[
        "link",
        "set",
        "dev",
        SCANNER_IF,
        "xdpgeneric",
        "pinned",
        &pin,
    ]);
    let _ = fs::remove_file(&pin);
    let before = lab
        .scanner
        .xdp_prog(SCANNER_IF)
        .expect("foreign program attached");

    let out = lab
        .scanner
        .command(agent())
        .args(["scan", "-p", "22", "198.18.0.2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("veth-scan already carries an XDP program"),
        "{stderr}"
    );
    assert_eq!(
        lab.scanner.xdp_prog(SCANNER_IF),
        Some(before),
        "the other program was touched"
    );
}

#[test]
fn sigkill_leaves_no_program_attached() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 1500);
    // Slow enough to still be running when killed.
    let mut child = lab
        .scanner
        .command(agent())
        .args(["scan", "-p", "1-65535", "--rate", "100", "198.18.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let attached = wait_until(Duration::from_secs(10), || {
        lab.scanner.xdp_prog(SCANNER_IF).is_some()
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(attached, "the scan never attached its program");
    assert!(
        wait_until(Duration::from_secs(5), || lab
            .scanner
            .xdp_prog(SCANNER_IF)
            .is_none()),
        "XDP program still attached after SIGKILL"
    );
}
