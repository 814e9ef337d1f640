//! `scanner-agent guard` inside test namespaces only: the target guards
//! port 9100 for the scanner; a third namespace ("outsider") is dropped.
//! The host's own nftables table in the same namespace is never touched.
mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    process::Output,
    thread,
    time::Duration,
};

use common::{Lab, Netns, SCANNER_ADDR, SCANNER_ADDR6, agent, daemon::Daemon, sh, wait_until};

const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const TARGET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const TARGET_FOR_OUTSIDER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

/// A namespace joined to the lab's target by its own veth pair.
fn outsider(lab: &Lab) -> Netns {
    let name = format!("sa-out-{}", std::process::id());
    sh("ip", &["netns", "add", &name]);
    let ns = Netns { name };
    ns.ip(&["link", "set", "lo", "up"]);
    sh(
        "ip",
        &[
            "link",
            "add",
            "veth-out",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "veth-in",
            "netns",
            &lab.target.name,
        ],
    );
    ns.ip(&["addr", "add", &format!("{OUTSIDER}/24"), "dev", "veth-out"]);
    lab.target.ip(&[
        "addr",
        "add",
        &format!("{TARGET_FOR_OUTSIDER}/24"),
        "dev",
        "veth-in",
    ]);
    ns.ip(&["link", "set", "veth-out", "up"]);
    lab.target.ip(&["link", "set", "veth-in", "up"]);
    ns
}

/// Whether a TCP connection from `ns` to `to` is accepted (a dropped SYN
/// gets no answer: a second is far more than a veth round trip).
fn reaches(ns: &Netns, to: impl Into<IpAddr>, port: u16) -> bool {
    let to = SocketAddr::new(to.into(), port);
    ns.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok())
}

fn guard(ns: &Netns, args: &[&str]) -> Output {
    ns.command(common::agent())
        .arg("guard")
        .args(args)
        // No agent config here: its port is the default.
        .args(if args.first() == Some(&"apply") {
            &["--config", "/nonexistent"][..]
        } else {
            &[][..]
        })
        .output()
        .expect("scanner-agent guard")
}

fn ruleset(ns: &Netns) -> String {
    let out = ns
        .command("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A table's listing without counter values, which change with traffic.
fn table(ns: &Netns, name: &str) -> String {
    let out = ns
        .command("nft")
        .args(["list", "table", "inet", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| match l.find(" counter packets ") {
            Some(i) => {
                let rest = &l[i + " counter packets ".len()..];
                let verdict = rest.splitn(4, ' ').nth(3).unwrap_or_default();
                format!("{} counter {verdict}", &l[..i])
            }
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn guard_allows_the_listed_sources_only() {
    testbed::require_root!();
    let lab = Lab::new(&[IpAddr::V4(TARGET), IpAddr::V6(TARGET6)], 1500);
    let outsider = outsider(&lab);
    let _listeners = lab.target.listen(&[
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9100),
        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 9101),
    ]);
    // The host's own ruleset, which the guard must leave alone.
    lab.target.firewall(&["tcp dport 8080 drop"]);
    let host_table = table(&lab.target, "test");
    assert!(host_table.contains("tcp dport 8080 drop"), "{host_table}");
    assert!(reaches(&outsider, TARGET_FOR_OUTSIDER, 9100));
    assert!(reaches(&lab.scanner, TARGET, 9100));

    let allow = [
        "apply",
        "--port",
        "9100",
        "--allow",
        &SCANNER_ADDR.to_string(),
        "--allow",
        &format!("{SCANNER_ADDR6}/64"),
    ];
    // --dry-run prints the ruleset and changes nothing.
    let before = ruleset(&lab.target);
    let dry = guard(&lab.target, &[&allow[..], &["--dry-run"]].concat());
    assert!(dry.status.success());
    let printed = String::from_utf8(dry.stdout).unwrap();
    assert_eq!(ruleset(&lab.target), before);

    let out = guard(&lab.target, &allow);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What was applied is what --dry-run printed.
    assert_eq!(table(&lab.target, "scanner_agent_guard"), printed);
    assert!(reaches(&lab.scanner, TARGET, 9100), "allowed IPv4 source");
    assert!(!reaches(&outsider, TARGET_FOR_OUTSIDER, 9100), "outsider");
    assert!(reaches(&lab.target, Ipv4Addr::LOCALHOST, 9100), "loopback");
    assert!(
        reaches(&lab.target, TARGET_FOR_OUTSIDER, 9100),
        "own address via lo"
    );
    // Other ports stay open to everyone.
    let _other = lab.target.listen(&[(TARGET_FOR_OUTSIDER, 9200)]);
    assert!(reaches(&outsider, TARGET_FOR_OUTSIDER, 9200));
    assert_eq!(
        table(&lab.target, "test"),
        host_table,
        "host table untouched"
    );

    // Applying again replaces the table: one table, the same rules.
    let first = ruleset(&lab.target);
    assert!(guard(&lab.target, &allow).status.success());
    assert_eq!(
        table(&lab.target, "scanner_agent_guard"),
        printed,
        "second apply"
    );
    assert_eq!(first.matches("table inet scanner_agent_guard").count(), 1);
    assert_eq!(
        ruleset(&lab.target)
            .matches("table inet scanner_agent_guard")
            .count(),
        1
    );
    assert!(!reaches(&outsider, TARGET_FOR_OUTSIDER, 9100));

    // Re-applying with another list takes effect at once.
    let outsider_too = [&allow[..], &["--allow", "198.18.1.0/24"]].concat();
    assert!(guard(&lab.target, &outsider_too).status.success());
    assert!(reaches(&outsider, TARGET_FOR_OUTSIDER, 9100));
    assert!(guard(&lab.target, &allow).status.success());
    assert!(!reaches(&outsider, TARGET_FOR_OUTSIDER, 9100));

    // Bad input changes nothing.
    let applied = table(&lab.target, "scanner_agent_guard");
    for (args, says) in [
        (
            &["apply", "--port", "22", "--allow", "198.18.0.1"][..],
            "--force",
        ),
        (
            &["apply", "--port", "9919", "--allow", "198.18.0.1"][..],
            "the agent's own listening port",
        ),
        (
            &["apply", "--port", "9100", "--allow", "198.18.0.300"][..],
            "not an address or CIDR range",
        ),
    ] {
        let out = guard(&lab.target, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(table(&lab.target, "scanner_agent_guard"), applied);
    }
    // With --force, port 22 can be guarded.
    let forced = guard(
        &lab.target,
        &["apply", "--port", "22", "--allow", "198.18.0.1", "--force"],
    );
    assert!(forced.status.success());
    assert!(table(&lab.target, "scanner_agent_guard").contains("tcp dport 22 counter drop"));
    assert!(
        reaches(&outsider, TARGET_FOR_OUTSIDER, 9100),
        "9100 no longer guarded"
    );

    let status = guard(&lab.target, &["status"]);
    assert_eq!(status.status.code(), Some(0));
    // remove restores access and leaves the host's table.
    assert!(guard(&lab.target, &allow).status.success());
    assert!(!reaches(&outsider, TARGET_FOR_OUTSIDER, 9100));
    assert!(guard(&lab.target, &["remove"]).status.success());
    assert!(reaches(&outsider, TARGET_FOR_OUTSIDER, 9100));
    assert!(!ruleset(&lab.target).contains("scanner_agent_guard"));
    assert_eq!(table(&lab.target, "test"), host_table);
    assert_eq!(guard(&lab.target, &["status"]).status.code(), Some(3));
    // Removing twice is fine.
    assert!(guard(&lab.target, &["remove"]).status.success());
}

#[test]
fn ipv6_sources() {
    testbed::require_root!();
    let lab = Lab::new(&[IpAddr::V4(TARGET), IpAddr::V6(TARGET6)], 1500);
    let _listener = lab
        .target
        .listen(&[(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 9100)]);
    assert!(
        wait_until(Duration::from_secs(10), || reaches(
            &lab.scanner,
            TARGET6,
            9100
        )),
        "before the guard"
    );
    let out = guard(
        &lab.target,
        &[
            "apply",
            "--port",
            "9100",
            "--allow",
            &SCANNER_ADDR6.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reaches(&lab.scanner, TARGET6, 9100), "allowed IPv6 source");
    // The scanner's IPv4 address is not listed: dropped.
    assert!(!reaches(&lab.scanner, TARGET, 9100));
    assert!(guard(&lab.target, &["remove"]).status.success());
    assert!(reaches(&lab.scanner, TARGET, 9100));
}

#[test]
fn the_daemon_applies_guard_at_start_and_leaves_it_when_it_stops() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 1500);
    let daemon = Daemon::start(
        agent(),
        &lab,
        "guard",
        "server:\n  port: 19940\nguard:\n  enabled: true\n  port: 9100\n  allow: [198.18.0.2]\n",
    );
    let installed = || guard(&lab.scanner, &["status"]).status.code() == Some(0);
    assert!(
        wait_until(Duration::from_secs(10), installed),
        "the daemon did not install the guard"
    );
    assert!(
        table(&lab.scanner, "scanner_agent_guard").contains("ip saddr 198.18.0.2 tcp dport 9100")
    );
    let _ = daemon.kill();
    assert!(installed(), "the table must stay when the agent stops");
}

#[test]
fn a_reload_replaces_the_guard_and_turning_it_off_removes_it() {
    testbed::require_root!();
    let lab = Lab::new(&[TARGET], 1500);
    let config = |guard: &str| format!("server:\n  port: 19941\nguard:\n{guard}");
    let daemon = Daemon::start(
        agent(),
        &lab,
        "guard-reload",
        &config("  enabled: true\n  port: 9100\n  allow: [198.18.0.2]\n"),
    );
    let listing = || table(&lab.scanner, "scanner_agent_guard");
    assert!(
        wait_until(Duration::from_secs(10), || listing()
            .contains("ip saddr 198.18.0.2 tcp dport 9100")),
        "the daemon did not install the guard"
    );
    daemon.reload(&config(
        "  enabled: true\n  port: 9200\n  allow: [198.18.0.3]\n",
    ));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = listing();
            now.contains("ip saddr 198.18.0.3 tcp dport 9200") && !now.contains("9100")
        }),
        "the reload did not replace the guard:\n{}",
        listing()
    );
    // A guard that could lock the operator out is refused; the table stays.
    daemon.reload(&config("  enabled: true\n  port: 22\n"));
    thread::sleep(Duration::from_secs(1));
    assert!(listing().contains("tcp dport 9200"), "{}", listing());
    daemon.reload(&config("  enabled: false\n"));
    let installed = || guard(&lab.scanner, &["status"]).status.code() == Some(0);
    assert!(
        wait_until(Duration::from_secs(10), || !installed()),
        "enabled: false did not remove the guard"
    );
}
