//! The two send paths chosen for real: raw sockets on loopback (no
//! neighbours to address frames to), the AF_PACKET TX ring across a veth
//! pair, and the ring following the next hop's MAC when it changes mid-scan.
mod common;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, TcpListener, UdpSocket},
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use common::{Lab, Netns, TARGET_IF, agent};

fn summary(stderr: &str, key: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("scan finished"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let at = line
        .split(&format!(" {key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key}= in {line}"));
    at.split_whitespace().next().unwrap().to_owned()
}

/// `scanner-agent scan` in `ns`, NDJSON out, without host discovery.
fn scan(ns: &Netns) -> Command {
    let mut c = ns.command(agent());
    c.args(["scan", "--format", "ndjson", "--disable-host-discovery"]);
    c
}

fn open_ports(out: &Output) -> BTreeSet<u16> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["state"], "open", "{l}");
            v["port"].as_u64().unwrap() as u16
        })
        .collect()
}

#[test]
fn loopback_falls_back_to_raw_sockets() {
    testbed::require_root!();
    // A namespace of its own: only its loopback is scanned.
    let ns = Netns::new("txlo");
    let listeners: Vec<TcpListener> = ns.run(|| {
        (0..3)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
            .collect()
    });
    let ports: BTreeSet<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = scan(&ns)
        .arg("-p")
        .arg(&list)
        .arg("127.0.0.1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(open_ports(&out), ports, "{stderr}");
    assert_eq!(summary(&stderr, "transmit_path"), "raw_socket", "{stderr}");
    assert_eq!(summary(&stderr, "ring_frames"), "0", "{stderr}");
    assert!(
        stderr.contains("probes left through raw sockets") && stderr.contains("lo: loopback"),
        "the reason is named: {stderr}"
    );
}

#[test]
fn a_next_hop_mac_changed_mid_scan_is_followed() {
    testbed::require_root!();
    let target = Ipv4Addr::new(198, 18, 0, 2);
    let lab = Lab::new(&[target], 1500);
    let open: BTreeSet<u16> = (1..=12).map(|i| i * 1000 + 7).collect();
    let endpoints: Vec<(Ipv4Addr, u16)> = open.iter().map(|&p| (target, p)).collect();
    let _listeners = lab.target.listen(&endpoints);
    // 14,000 probes at 2,000 per second: about 7 s, so the change below
    // lands in the middle and most open ports are probed after it.
    let scan = scan(&lab.scanner)
        .args(["--rate", "2000", "-p", "1-14000", "198.18.0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(2));
    lab.target.ip(&[
        "link",
        "set",
        "dev",
        TARGET_IF,
        "address",
        "02:5a:00:00:be:ef",
    ]);
    // The target announces itself, as a failed-over router does (its
    // gratuitous ARP); here its own ARP request, which the scanner's
    // kernel takes the new address from.
    // Any datagram does: its ARP request carries the new address.
    lab.target.run(|| {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        socket.send_to(b"hello", ("198.18.0.1", 9)).unwrap();
    });
    let out = scan.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(open_ports(&out), open, "{stderr}");
    assert_eq!(summary(&stderr, "transmit_path"), "packet_ring", "{stderr}");
    assert!(
        stderr.contains("a next hop's MAC changed") && stderr.contains("02:5a:00:00:be:ef"),
        "the change was followed: {stderr}"
    );
    // Nearly everything went through the ring, before and after the change.
    let ring: u64 = summary(&stderr, "ring_frames").parse().unwrap();
    let raw: u64 = summary(&stderr, "raw_packets").parse().unwrap();
    assert!(ring >= 13_000 && raw < 1_000, "{stderr}");
    assert_eq!(summary(&stderr, "xdp_lost"), "0", "{stderr}");
}

/// A link shaped to about 13 kpps (a token bucket on the scanner's veth,
/// which the ring path goes through: it keeps the qdisc) asked for 1 Mpps:
/// the senders make the scan wait, the rate is held just below what the
/// link carries, the summary says so, and nothing is missed.
#[test]
fn a_rate_above_what_the_path_carries_is_held_below_it() {
    testbed::require_root!();
    let target = Ipv4Addr::new(198, 18, 0, 2);
    let lab = Lab::new(&[target], 1500);
    let open: BTreeSet<u16> = (1..=10).map(|i| i * 2000 - 1).collect();
    let endpoints: Vec<(Ipv4Addr, u16)> = open.iter().map(|&p| (target, p)).collect();
    let _listeners = lab.target.listen(&endpoints);
    let tc = lab
        .scanner
        .command("tc")
        .args(["qdisc", "add", "dev", common::SCANNER_IF, "root"])
        .args(["tbf", "rate", "8mbit", "burst", "16kb", "limit", "64kb"])
        .output()
        .unwrap();
    assert!(tc.status.success(), "{tc:?}");
    let out = scan(&lab.scanner)
        .args(["--rate", "1000000", "-p", "1-20000", "198.18.0.2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(open_ports(&out), open, "{stderr}");
    assert_eq!(summary(&stderr, "transmit_path"), "packet_ring", "{stderr}");
    assert!(
        stderr.contains("held just below what it carried"),
        "the summary says the rate was held: {stderr}"
    );
    assert!(
        !stderr.contains("requested rate was not reached"),
        "no warning for a rate the path cannot carry: {stderr}"
    );
    let final_rate: f64 = summary(&stderr, "final_rate").parse().unwrap();
    assert!(
        final_rate < 50_000.0,
        "held near what the link carries: {stderr}"
    );
}
