//! A real scan across a veth pair between two namespaces: every open port
//! found, nothing extra, no half-open connection left behind.
mod common;

use std::{collections::BTreeSet, net::Ipv4Addr};

use common::{Lab, agent};

fn t(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

#[test]
fn finds_exactly_the_open_ports_on_every_address() {
    let targets = [t(2), t(3), t(4)];
    let lab = Lab::new(&targets, 1500);
    let truth: BTreeSet<(Ipv4Addr, u16)> = [
        (t(2), 1),
        (t(2), 22),
        (t(2), 443),
        (t(2), 8080),
        (t(2), 65535),
        (t(3), 80),
        (t(3), 9100),
        (t(3), 33000),
    ]
    .into_iter()
    .collect();
    let endpoints: Vec<_> = truth.iter().copied().collect();
    let _listeners = lab.target.listen(&endpoints);

    let out = lab
        .scanner
        .command(agent())
        .args([
            "scan", "-p", "1-65535", "--rate", "100000", "--format", "ndjson",
        ])
        .args(targets.map(|a| a.to_string()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scan failed: {stderr}");

    let mut found = BTreeSet::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(v.as_object().unwrap().len(), 4, "{line}");
        assert_eq!(v["protocol"], "tcp");
        assert_eq!(v["state"], "open");
        let ip: Ipv4Addr = v["ip"].as_str().unwrap().parse().unwrap();
        assert!(
            found.insert((ip, v["port"].as_u64().unwrap() as u16)),
            "duplicate line {line}"
        );
    }
    assert_eq!(found, truth, "scan log: {stderr}");
    assert!(stderr.contains("scan finished"), "{stderr}");
    assert!(stderr.contains("xdp_lost=0"), "{stderr}");

    // Every SYN-ACK was answered with our RST: nothing is left half-open.
    let left = lab
        .target
        .command("ss")
        .args(["-Htn", "state", "syn-recv"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "half-open connections left on the target"
    );
}

#[test]
fn text_output_lists_open_ports_for_people() {
    let lab = Lab::new(&[t(2)], 1500);
    let _l = lab.target.listen(&[(t(2), 2222)]);
    let out = lab
        .scanner
        .command(agent())
        .args(["scan", "-p", "2000-2500", "198.18.0.2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "198.18.0.2       2222/tcp open\n"
    );
}
