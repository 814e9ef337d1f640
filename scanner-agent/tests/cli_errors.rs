//! Bad input and missing privileges: exit status 2 and one line naming the problem.
mod common;

use std::net::Ipv4Addr;

use common::{Lab, agent};

fn scan_fails(args: &[&str]) -> String {
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let out = lab
        .scanner
        .command(agent())
        .arg("scan")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    stderr
}

#[test]
fn invalid_address_is_named() {
    testbed::require_root!();
    let e = scan_fails(&["198.18.0.300"]);
    assert_eq!(
        e,
        "error: invalid target \"198.18.0.300\": expected an IP address, a CIDR range such as 198.18.0.0/24, a range such as 198.18.0.1-198.18.0.9, or a hostname\n"
    );
}

#[test]
fn invalid_ports_are_named() {
    testbed::require_root!();
    let e = scan_fails(&["-p", "80,90-70", "198.18.0.2"]);
    assert_eq!(
        e,
        "error: invalid port specification \"80,90-70\": range \"90-70\" ends before it starts\n"
    );
}

#[test]
fn never_targets_are_refused() {
    testbed::require_root!();
    let e = scan_fails(&["224.0.0.0/24"]);
    assert!(
        e.contains("cannot be scanned: it includes multicast addresses"),
        "{e}"
    );
}

#[test]
fn oversized_ipv6_range_is_refused() {
    testbed::require_root!();
    let e = scan_fails(&["2001:db8::/64"]);
    assert_eq!(
        e,
        "error: IPv6 target 2001:db8::/64 is larger than the maximum of a /112; split it or raise the limit\n"
    );
}

#[test]
fn bad_shard_is_named() {
    testbed::require_root!();
    let e = scan_fails(&["--shard", "4/3", "198.18.0.2"]);
    assert!(
        e.contains("invalid shard \"4/3\": expected i/N with 1 <= i <= N"),
        "{e}"
    );
}

#[test]
fn hostname_without_dns_is_named() {
    testbed::require_root!();
    let e = scan_fails(&["--disable-dns-resolution", "localhost"]);
    assert_eq!(
        e,
        "error: target \"localhost\" is not an IP address or CIDR range, and DNS resolution is disabled\n"
    );
}

#[test]
fn unknown_interface_is_named() {
    testbed::require_root!();
    let e = scan_fails(&["--interface", "nope0", "198.18.0.2"]);
    assert_eq!(e, "error: interface nope0 does not exist\n");
}

#[test]
fn missing_capability_is_named() {
    testbed::require_root!();
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    for (cap, name) in [
        ("-net_raw", "CAP_NET_RAW"),
        ("-net_admin", "CAP_NET_ADMIN"),
        ("-bpf,-sys_admin", "CAP_BPF"),
        ("-perfmon,-sys_admin", "CAP_PERFMON"),
    ] {
        let out = lab
            .scanner
            .command("setpriv")
            .args([
                "--bounding-set",
                cap,
                "--inh-caps",
                "-all",
                "--",
                agent(),
                "scan",
                "-p",
                "22",
                "198.18.0.2",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cap}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: missing capability {name} (")),
            "{cap}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn check_config_accepts_the_seed_example_and_names_bad_keys() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/openport-exporter-example.yaml"
    );
    let out = std::process::Command::new(agent())
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("openport-exporter-example.yaml: OK\n"));

    let dir = std::env::temp_dir().join(format!("scanner-agent-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "scanning:\n  interval: 600\n  max_cidr_size: 40\n").unwrap();
    let out = std::process::Command::new(agent())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "scanning.max_cidr_size: 40 is out of range (expected a prefix length 0-32) at line 3"
        ),
        "{stderr}"
    );
}

/// `check-config` refuses what `run` would refuse before binding or
/// attaching anything, with the same message, and changes nothing.
#[test]
fn check_config_runs_every_check_run_runs() {
    let dir = std::env::temp_dir().join(format!("scanner-agent-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "targets: [198.18.0.0/30]\nscanning:\n  exclude: [198.18.0.0/30]\n",
            "targets: every target address is excluded",
        ),
        ("targets: [\"2001:db8::/64\"]\n", "targets: "),
        ("targets: [scanner.example]\n", "targets: "),
        ("guard:\n  enabled: true\n  port: 22\n", "guard: "),
    ];
    for (n, (yaml, named)) in cases.iter().enumerate() {
        let file = dir.join(format!("parity-{n}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let check = std::process::Command::new(agent())
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr).into_owned();
        assert_eq!(check.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(stderr.contains(named), "{yaml}: {stderr}");
        // `run` stops at the same check, with the same line, before binding.
        let run = std::process::Command::new(agent())
            .args(["run", "--state-file", "/nonexistent/state.json", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2), "{yaml}");
        assert_eq!(String::from_utf8_lossy(&run.stderr), stderr, "{yaml}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nmap_output_flags_are_checked_together() {
    testbed::require_root!();
    let e = scan_fails(&["-oG", "out.gnmap", "198.18.0.2"]);
    assert_eq!(
        e,
        "error: -oG (nmap's grepable output) is not supported: use -oX (XML), -oN (text), -oJ (NDJSON) or -oA\n"
    );
    let e = scan_fails(&["-oA", "/tmp/base", "-oX", "/tmp/x.xml", "198.18.0.2"]);
    assert_eq!(
        e,
        "error: -oA /tmp/base already writes XML to /tmp/base.xml; give -oA or -oX, not both\n"
    );
    let e = scan_fails(&["-oN", "-", "198.18.0.2"]);
    assert!(e.contains("use --format text instead"), "{e}");
}

#[test]
fn unknown_service_names_are_named() {
    testbed::require_root!();
    let e = scan_fails(&["-p", "ssh,nosuchservice", "198.18.0.2"]);
    assert_eq!(
        e,
        "error: -p: unknown service name \"nosuchservice\": /etc/services has no tcp service of that name\n"
    );
    // ntp is a UDP service: not a name for a TCP scan.
    let e = scan_fails(&["-p", "ntp", "198.18.0.2"]);
    assert!(e.contains("unknown service name \"ntp\""), "{e}");
}

#[test]
fn a_bad_exclude_file_line_is_named() {
    testbed::require_root!();
    let file =
        std::env::temp_dir().join(format!("scanner-agent-bad-exclude-{}", std::process::id()));
    std::fs::write(&file, "# ok\n198.18.0.9\n198.18.0.0/40\n").unwrap();
    let e = scan_fails(&["--exclude-file", file.to_str().unwrap(), "198.18.0.2"]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        e,
        format!(
            "error: --exclude-file: exclude file {} line 3: \"198.18.0.0/40\" is not an IP address, a CIDR range or a first-last range\n",
            file.display()
        )
    );
}
