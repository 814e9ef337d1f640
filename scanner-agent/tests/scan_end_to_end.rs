//! Real scans across a veth pair between two namespaces, compared with the
//! truth the test sets up: listeners, firewall rules, absent hosts.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{Lab, SCANNER_ADDR, SCANNER_ADDR6, SCANNER_IF, agent, wait_until};
use socket2::{Domain, Protocol, Socket, Type};

fn t(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

/// (ip, protocol, port) -> (state, reason)
type Found = BTreeMap<(IpAddr, String, u16), (String, String)>;

/// Runs a scan in the scanner namespace; returns its NDJSON results and log.
fn scan(lab: &Lab, args: &[&str]) -> (Found, String) {
    let out = lab
        .scanner
        .command(agent())
        .args(["scan", "--format", "ndjson"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "scan failed: {stderr}");
    let mut found = Found::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        // Exactly these fields, in this order; `ttl` when a reply decided
        // the state (the target's own TTL: no router in between).
        let silent = v["reason"] == "no-response";
        let fields: &[&str] = if silent {
            &["ip", "port", "protocol", "state", "reason"]
        } else {
            assert_eq!(v["ttl"], 64, "{line}");
            &["ip", "port", "protocol", "state", "reason", "ttl"]
        };
        assert_eq!(v.as_object().unwrap().len(), fields.len(), "{line}");
        let at: Vec<usize> = fields
            .iter()
            .map(|k| {
                line.find(&format!("\"{k}\":"))
                    .unwrap_or_else(|| panic!("{k} missing: {line}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "field order: {line}");
        let key = (
            v["ip"].as_str().unwrap().parse().unwrap(),
            v["protocol"].as_str().unwrap().into(),
            v["port"].as_u64().unwrap() as u16,
        );
        let value = (
            v["state"].as_str().unwrap().into(),
            v["reason"].as_str().unwrap().into(),
        );
        assert!(found.insert(key, value).is_none(), "duplicate line {line}");
    }
    assert!(stderr.contains("scan finished"), "{stderr}");
    assert!(stderr.contains("xdp_lost=0"), "{stderr}");
    // Every scan here crosses a veth pair: frames go through the TX ring.
    assert!(
        stderr.contains("transmit_path=packet_ring"),
        "not the ring path: {stderr}"
    );
    assert!(summary_value(&stderr, "ring_frames") > 0, "{stderr}");
    (found, stderr)
}

/// A number from the closing summary line, e.g. `probes=4000`.
fn summary_value(stderr: &str, key: &str) -> u64 {
    let at = stderr
        .split(&format!(" {key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key}= in {stderr}"));
    at.split_whitespace().next().unwrap().parse().unwrap()
}

fn open_set(found: &Found) -> BTreeSet<(IpAddr, u16)> {
    found
        .iter()
        .filter(|(_, (s, _))| s == "open")
        .map(|((ip, _, port), _)| (*ip, *port))
        .collect()
}

fn entry(
    ip: impl Into<IpAddr>,
    proto: &str,
    port: u16,
    state: &str,
    reason: &str,
) -> ((IpAddr, String, u16), (String, String)) {
    (
        (ip.into(), proto.into(), port),
        (state.into(), reason.into()),
    )
}

/// Fast retry timing for namespaces, where round trips take microseconds.
const QUICK: [&str; 4] = ["--initial-rtt-timeout", "100", "--max-rtt-timeout", "200"];

#[test]
fn finds_exactly_the_open_ports_on_every_address() {
    testbed::require_root!();
    let targets = [t(2), t(3), t(4)];
    let lab = Lab::new(&targets, 1500);
    let truth: BTreeSet<(IpAddr, u16)> = [
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
    .map(|(a, p)| (IpAddr::V4(a), p))
    .collect();
    let endpoints: Vec<(IpAddr, u16)> = truth.iter().copied().collect();
    let _listeners = lab.target.listen(&endpoints);

    let (found, stderr) = scan(
        &lab,
        &[
            "-p",
            "1-65535",
            "--rate",
            "100000",
            "198.18.0.2",
            "198.18.0.3",
            "198.18.0.4",
        ],
    );
    assert_eq!(open_set(&found), truth, "scan log: {stderr}");
    assert!(found.values().all(|(_, reason)| reason == "syn-ack"));

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
    testbed::require_root!();
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
        "198.18.0.2       2222/tcp open          syn-ack\n"
    );
}

#[test]
fn tcp_open_closed_and_filtered_follow_nmaps_rules() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2)], 1500);
    let _l = lab.target.listen(&[(t(2), 22), (t(2), 80)]);
    lab.target.firewall(&[
        "tcp dport 81 drop",
        "tcp dport 82 reject with icmp type admin-prohibited",
        "tcp dport 83 reject with icmp type host-unreachable",
    ]);
    let mut args = vec![
        "-p",
        "20-90",
        "--states",
        "open,closed,filtered",
        "--max-retries",
        "2",
        "198.18.0.2",
    ];
    args.extend(QUICK);
    let (found, stderr) = scan(&lab, &args);
    let mut want: Found = (20..=90)
        .map(|p| entry(t(2), "tcp", p, "closed", "rst"))
        .collect();
    want.extend([
        entry(t(2), "tcp", 22, "open", "syn-ack"),
        entry(t(2), "tcp", 80, "open", "syn-ack"),
        entry(t(2), "tcp", 81, "filtered", "no-response"),
        entry(t(2), "tcp", 82, "filtered", "icmp-admin-prohibited"),
        entry(t(2), "tcp", 83, "filtered", "icmp-host-unreach"),
    ]);
    assert_eq!(found, want, "{stderr}");
    // Every other probe was answered at its first attempt, so (as in nmap)
    // 81 gets 2 attempts; with --fixed-retries, all 3.
    assert!(
        stderr.contains("retries=1 given_up_early=1"),
        "81 was retried once: {stderr}"
    );
    args.push("--fixed-retries");
    let (fixed, stderr) = scan(&lab, &args);
    assert_eq!(fixed, want, "{stderr}");
    assert!(
        stderr.contains("retries=2 given_up_early=0"),
        "81 was retried twice: {stderr}"
    );
}

/// As in nmap, an unanswered probe gets one attempt more than the most any
/// answer of the scan needed (at least 2), however many `--max-retries`
/// allows: on a lossless path a dropped port costs 2 SYNs, not 7. Where
/// every first SYN is lost (the target drops the first SYN to each port),
/// answers need 2 attempts, so the dropped port gets 3, and every other
/// port is still found.
#[test]
fn unanswered_probes_get_the_attempts_the_answers_needed() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2)], 1500);
    let _l = lab.target.listen(&[(t(2), 22), (t(2), 80)]);
    let syns_to_81 = |first_syns_lost: bool| {
        let lossy = if first_syns_lost {
            " tcp flags syn ip daddr . tcp dport != @seen add @seen { ip daddr . tcp dport } drop\n"
        } else {
            ""
        };
        lab.target.nft(&format!(
            "table inet retries {{\n counter to81 {{ }}\n set seen {{ type ipv4_addr . inet_service; flags dynamic; }}\n chain input {{\n  type filter hook input priority 0;\n  tcp dport 81 counter name to81 drop\n{lossy} }}\n}}\n"
        ));
        let mut args = vec!["-p", "20-90", "--max-retries", "6", "198.18.0.2"];
        args.extend(QUICK);
        let (found, stderr) = scan(&lab, &args);
        let sent = lab.target.nft_counter("retries", "to81");
        lab.target.nft("delete table inet retries\n");
        (found, stderr, sent)
    };
    let want: Found = [
        entry(t(2), "tcp", 22, "open", "syn-ack"),
        entry(t(2), "tcp", 80, "open", "syn-ack"),
    ]
    .into();
    let (found, stderr, sent) = syns_to_81(false);
    assert_eq!(found, want, "{stderr}");
    assert_eq!(sent, 2, "a lossless path: 2 attempts at 81: {stderr}");
    assert!(stderr.contains("given_up_early=1"), "{stderr}");
    let (found, stderr, sent) = syns_to_81(true);
    assert_eq!(found, want, "every port answers its second SYN: {stderr}");
    assert_eq!(sent, 3, "answers needed 2 attempts: 3 at 81: {stderr}");
}

/// The end follows the measured round trip, not a fixed second, and still
/// never cuts off an answer within the timeout a probe went out with: both
/// probes leave in the first burst (with the 1 s initial timeout), 7001
/// answers at once (the retry timeout falls to `min_rtt_timeout`, 100 ms,
/// so 7000 is given up after 100 ms: no retries), and 7000's answer, 400 ms
/// late, still turns its silence into `open`.
#[test]
fn a_late_answer_within_the_retry_timeout_is_caught() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2)], 1500);
    lab.target.udp_echo(SocketAddr::new(t(2).into(), 7001));
    let late = SocketAddr::new(t(2).into(), 7000);
    let socket = lab
        .target
        .run(move || std::net::UdpSocket::bind(late).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            std::thread::sleep(std::time::Duration::from_millis(400));
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    let (found, stderr) = scan(
        &lab,
        &[
            "--udp",
            "-p",
            "7000,7001",
            "--max-retries",
            "0",
            "--initial-rtt-timeout",
            "1000",
            "--max-rtt-timeout",
            "2000",
            "198.18.0.2",
        ],
    );
    let want: Found = [
        entry(t(2), "udp", 7000, "open", "udp-response"),
        entry(t(2), "udp", 7001, "open", "udp-response"),
    ]
    .into_iter()
    .collect();
    assert_eq!(found, want, "{stderr}");
}

#[test]
fn udp_open_closed_filtered_and_silent() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2)], 1500);
    lab.target.udp_echo(SocketAddr::new(t(2).into(), 53));
    lab.target.udp_echo(SocketAddr::new(t(2).into(), 7000));
    lab.target.firewall(&[
        "udp dport 55 drop",
        "udp dport 56 reject with icmp type admin-prohibited",
    ]);
    let mut args = vec![
        "--udp",
        "-p",
        "53-56,7000",
        "--states",
        "open,closed,filtered,open|filtered",
        "--max-retries",
        "1",
        "198.18.0.2",
    ];
    args.extend(QUICK);
    let (found, stderr) = scan(&lab, &args);
    let udp: Found = found
        .into_iter()
        .filter(|((_, proto, _), _)| proto == "udp")
        .collect();
    let want: Found = [
        // The echo service sends our DNS query back: id and question echoed.
        entry(t(2), "udp", 53, "open", "udp-response-verified"),
        entry(t(2), "udp", 54, "closed", "icmp-port-unreach"),
        entry(t(2), "udp", 55, "open|filtered", "no-response"),
        entry(t(2), "udp", 56, "filtered", "icmp-admin-prohibited"),
        // No request id on this port: its ports alone vouch for the answer.
        entry(t(2), "udp", 7000, "open", "udp-response"),
    ]
    .into_iter()
    .collect();
    assert_eq!(udp, want, "{stderr}");
}

/// The first local port after the kernel's ephemeral range in a fresh
/// namespace (32768-60999): where slot 0's probe ports start.
const PROBE_BASE: u16 = 61000;
/// Ports per slot there: (65535 - 60999) / 8.
const PORTS_PER_SLOT: u16 = 567;

/// An answer of the service on `port` that looks right but carries
/// request ids that are not ours (none for 7000, which has none).
fn forged_answer(port: u16) -> Vec<u8> {
    match port {
        53 => {
            let mut a = b"\x13\x37\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03".to_vec();
            a.extend_from_slice(b"\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\x04\x039.1");
            a
        }
        123 => {
            let mut a = vec![0u8; 48];
            a[0] = 0x24;
            a
        }
        137 => b"\x80\xf0\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00\x20CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00\x00\x21\x00\x01".to_vec(),
        161 => vec![
            0x30, 0x29, 0x02, 0x01, 0x00, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa2,
            0x1c, 0x02, 0x04, 0x12, 0x34, 0x56, 0x78, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30,
            0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05,
            0x00,
        ],
        11211 => b"\x00\x01\x00\x00\x00\x01\x00\x00STAT pid 1\r\nEND\r\n".to_vec(),
        _ => b"hello".to_vec(),
    }
}

/// An ICMP error (IPv4: port unreachable for UDP, admin prohibited for
/// TCP; ICMPv6: port unreachable, admin prohibited) quoting a datagram or
/// segment of `protocol` from `us:local` to `target:port` with an IP ID /
/// flow label, checksum and sequence number of its own: right ports,
/// nothing else ours.
fn forged_icmp_error(
    (us, target): (IpAddr, IpAddr),
    protocol: u8,
    (local, port): (u16, u16),
    n: u32,
) -> Vec<u8> {
    let mut l4 = [0u8; 8];
    l4[0..2].copy_from_slice(&local.to_be_bytes());
    l4[2..4].copy_from_slice(&port.to_be_bytes());
    // UDP length and checksum, or a TCP sequence number.
    l4[4..8].copy_from_slice(&(0x000c_0000 | (n ^ 0x5a5a)).to_be_bytes());
    let tcp = protocol == 6;
    let mut m = Vec::new();
    match (us, target) {
        (IpAddr::V4(u), IpAddr::V4(t)) => {
            m.extend_from_slice(&[3, if tcp { 13 } else { 3 }, 0, 0, 0, 0, 0, 0]);
            let mut ip = [0x45, 0, 0, 32, 0, 0, 0, 0, 63, protocol, 0, 0];
            ip[4..6].copy_from_slice(&(n as u16).wrapping_mul(7919).to_be_bytes());
            m.extend_from_slice(&ip);
            m.extend_from_slice(&u.octets());
            m.extend_from_slice(&t.octets());
            m.extend_from_slice(&l4);
            let sum = checksum(0, &m);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        (IpAddr::V6(u), IpAddr::V6(t)) => {
            // The kernel computes ICMPv6 checksums of raw sockets.
            m.extend_from_slice(&[1, if tcp { 1 } else { 4 }, 0, 0, 0, 0, 0, 0]);
            let label = n.wrapping_mul(2_654_435_761) & 0xf_ffff;
            m.extend_from_slice(&(0x6000_0000 | label).to_be_bytes());
            m.extend_from_slice(&[0, 12, protocol, 63]);
            m.extend_from_slice(&u.octets());
            m.extend_from_slice(&t.octets());
            m.extend_from_slice(&l4);
        }
        _ => unreachable!(),
    }
    m
}

/// A RST+ACK from `target:port` to `us:local` acknowledging some other
/// sequence number (a raw TCP socket's payload: the kernel adds the IP header).
fn forged_rst((target, us): (IpAddr, IpAddr), (port, local): (u16, u16), n: u32) -> Vec<u8> {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&port.to_be_bytes());
    t[2..4].copy_from_slice(&local.to_be_bytes());
    t[4..8].copy_from_slice(&n.wrapping_mul(40_503).to_be_bytes());
    t[8..12].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x14;
    let mut pseudo = match (target, us) {
        (IpAddr::V4(a), IpAddr::V4(b)) => [a.octets().to_vec(), b.octets().to_vec()].concat(),
        (IpAddr::V6(a), IpAddr::V6(b)) => [a.octets().to_vec(), b.octets().to_vec()].concat(),
        _ => unreachable!(),
    };
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let sum = checksum(sum16(&pseudo), &t);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t.to_vec()
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|p| u32::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)])))
        .sum()
}

fn checksum(start: u32, data: &[u8]) -> u16 {
    let mut sum = start + sum16(data);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn spoofed_answers_neither_open_nor_close_silent_ports() {
    testbed::require_root!();
    let v6: IpAddr = "2001:db8::2".parse().unwrap();
    let lab = Lab::new(&[IpAddr::V4(t(2)), v6], 1500);
    // Every probed port is silent: the target drops the probes.
    lab.target
        .firewall(&["meta l4proto { tcp, udp } th dport { 53, 123, 137, 161, 11211, 7000 } drop"]);
    let ports = [53u16, 123, 137, 161, 11211, 7000];
    // An off-path sender with the target's addresses sprays every local
    // port of slot 0, from each probed port, with UDP answers, RSTs, and
    // ICMP errors quoting a datagram or segment between the right ports,
    // until the scan ends.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let spray = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let ns = format!("/run/netns/{}", lab.target.name);
        thread::spawn(move || {
            let f = std::fs::File::open(&ns).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let pairs = [
                (IpAddr::V4(t(2)), IpAddr::V4(SCANNER_ADDR)),
                (v6, IpAddr::V6(SCANNER_ADDR6)),
            ];
            let udp: Vec<Vec<(UdpSocket, Vec<u8>)>> = pairs
                .iter()
                .map(|&(from, _)| {
                    ports
                        .iter()
                        .map(|&p| (UdpSocket::bind((from, p)).unwrap(), forged_answer(p)))
                        .collect()
                })
                .collect();
            let icmp = [
                Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap(),
                Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap(),
            ];
            let tcp = [
                Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).unwrap(),
                Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::TCP)).unwrap(),
            ];
            let mut n = 0u32;
            let started = Instant::now();
            // Bounded: the scan takes a few seconds.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                for (i, &(target, us)) in pairs.iter().enumerate() {
                    for local in PROBE_BASE..PROBE_BASE + PORTS_PER_SLOT {
                        for (socket, answer) in &udp[i] {
                            let _ = socket.send_to(answer, (us, local));
                        }
                        let to = SocketAddr::new(us, 0).into();
                        for &port in &ports {
                            n = n.wrapping_add(1);
                            let rst = forged_rst((target, us), (port, local), n);
                            let _ = tcp[i].send_to(&rst, &to);
                            for protocol in [6, 17] {
                                let m = forged_icmp_error((us, target), protocol, (local, port), n);
                                let _ = icmp[i].send_to(&m, &to);
                            }
                        }
                        sent.fetch_add(4 * ports.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), || sent.load(Ordering::Relaxed) > 0),
        "the spoofer sends nothing"
    );
    let mut args = vec![
        "--udp",
        "-p",
        "53,123,137,161,11211,7000",
        "--states",
        "open,closed,filtered,open|filtered",
        "--max-retries",
        "3",
        "--disable-host-discovery",
        "198.18.0.2",
        "2001:db8::2",
    ];
    args.extend(QUICK);
    let result = std::panic::catch_unwind(|| scan(&lab, &args));
    stop.store(true, Ordering::Relaxed);
    spray.join().unwrap();
    let (found, stderr) = result.unwrap();
    let rounds = sent.load(Ordering::Relaxed) / (2 * 4 * 6 * u64::from(PORTS_PER_SLOT));
    assert!(
        rounds >= 2,
        "the spray covered slot 0 {rounds} times: {stderr}"
    );
    let mut want = Found::new();
    for ip in [IpAddr::V4(t(2)), v6] {
        for port in ports {
            want.extend([entry(ip, "tcp", port, "filtered", "no-response")]);
        }
        for port in [53, 123, 137, 161, 11211] {
            want.extend([entry(ip, "udp", port, "open|filtered", "no-response")]);
        }
        // A port whose service echoes no id: a forged answer on the right
        // ports is taken, and labelled for what it is.
        want.extend([entry(ip, "udp", 7000, "open", "udp-response")]);
    }
    assert_eq!(found, want, "{stderr}");
}

#[test]
fn a_local_udp_service_in_the_probe_range_loses_nothing_during_a_tcp_scan() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2)], 1500);
    let _l = lab.target.listen(&[(t(2), 22)]);
    // A UDP service of the scanning host on a port of slot 0.
    let service = PROBE_BASE + 100;
    let socket = lab
        .scanner
        .run(move || UdpSocket::bind((SCANNER_ADDR, service)).unwrap());
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, done) = (Arc::clone(&received), Arc::clone(&done));
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !done.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let child = lab
        .scanner
        .command(agent())
        .args([
            "scan",
            "-p",
            "1-65535",
            "--rate",
            "15000",
            "--disable-host-discovery",
            "198.18.0.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = scopeguard(child);
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .scanner
            .xdp_prog(SCANNER_IF)
            .is_some()),
        "the scan never attached its program"
    );
    // Its key is set right after attaching.
    thread::sleep(Duration::from_millis(300));
    // 5,000 datagrams from 5,000 source ports of the target.
    let sent = lab.target.run(move || {
        let mut sent = 0u64;
        for (i, port) in (20000u16..25000).enumerate() {
            let s = UdpSocket::bind((t(2), port)).unwrap();
            s.send_to(b"datagram", (SCANNER_ADDR, service)).unwrap();
            sent += 1;
            // Paced, so the service's receive buffer never overflows.
            if i % 50 == 49 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        sent
    });
    assert_eq!(sent, 5000);
    assert!(
        child.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the scan ended before all datagrams were sent: the test proves nothing"
    );
    let all = wait_until(Duration::from_secs(5), || {
        received.load(Ordering::Relaxed) == 5000
    });
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    done.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        all,
        "{} of 5000 datagrams arrived: {stderr}",
        received.load(Ordering::Relaxed)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "198.18.0.2         22/tcp open          syn-ack\n",
        "{stderr}"
    );
}

/// Kills the child on drop (a failing test leaves no scan running).
struct ChildGuard(Option<std::process::Child>);

fn scopeguard(child: std::process::Child) -> ChildGuard {
    ChildGuard(Some(child))
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn ipv6_and_ipv4_targets_in_one_scan() {
    testbed::require_root!();
    let v6: IpAddr = "2001:db8::2".parse().unwrap();
    let lab = Lab::new(&[IpAddr::V4(t(2)), v6], 1500);
    let _l = lab.target.listen(&[(v6, 8443), (IpAddr::V4(t(2)), 8443)]);
    lab.target.firewall(&[
        "ip6 nexthdr tcp tcp dport 8444 reject with icmpv6 type admin-prohibited",
        "udp dport 8445 reject with icmpv6 type port-unreachable",
    ]);
    let mut args = vec![
        "--udp",
        "-p",
        "8443-8445",
        "--states",
        "open,closed,filtered",
        "--max-retries",
        "1",
        "2001:db8::2",
        "198.18.0.2",
    ];
    args.extend(QUICK);
    let (found, stderr) = scan(&lab, &args);
    let v6_found: Found = found
        .clone()
        .into_iter()
        .filter(|((ip, _, _), _)| ip.is_ipv6())
        .collect();
    let want: Found = [
        entry(v6, "tcp", 8443, "open", "syn-ack"),
        entry(v6, "tcp", 8444, "filtered", "icmp6-admin-prohibited"),
        entry(v6, "tcp", 8445, "closed", "rst"),
        entry(v6, "udp", 8443, "closed", "icmp6-port-unreach"),
        entry(v6, "udp", 8444, "closed", "icmp6-port-unreach"),
        entry(v6, "udp", 8445, "closed", "icmp6-port-unreach"),
    ]
    .into_iter()
    .collect();
    assert_eq!(v6_found, want, "{stderr}");
    assert_eq!(
        found
            .get(&(t(2).into(), "tcp".into(), 8443))
            .map(|v| v.0.as_str()),
        Some("open")
    );
}

#[test]
fn host_discovery_skips_hosts_that_do_not_answer() {
    testbed::require_root!();
    // .4 answers everything; .5 drops pings but answers TCP; .6 and .7 do not exist.
    let lab = Lab::new(&[t(4), t(5)], 1500);
    let _l = lab.target.listen(&[(t(4), 22), (t(5), 22)]);
    lab.target
        .firewall(&["ip daddr 198.18.0.5 icmp type echo-request drop"]);
    let mut args = vec!["-p", "22", "--max-retries", "1", "198.18.0.4/30"];
    args.extend(QUICK);
    let (found, stderr) = scan(&lab, &args);
    assert_eq!(
        open_set(&found),
        [(t(4).into(), 22), (t(5).into(), 22)].into_iter().collect()
    );
    assert!(
        stderr.contains("target=\"198.18.0.4/30\" up=2 down=2"),
        "{stderr}"
    );
    // The port scan probed only the two hosts that are up.
    assert_eq!(
        summary_value(&stderr, "probes") - summary_value(&stderr, "retries"),
        2,
        "{stderr}"
    );
}

#[test]
fn exclusions_always_win() {
    testbed::require_root!();
    let lab = Lab::new(&[t(4), t(5)], 1500);
    let _l = lab.target.listen(&[(t(4), 22), (t(5), 22)]);
    let (found, stderr) = scan(
        &lab,
        &[
            "-p",
            "22",
            "--exclude",
            "198.18.0.5,198.18.0.6/31",
            "--disable-host-discovery",
            "198.18.0.4/30",
        ],
    );
    assert_eq!(
        open_set(&found),
        [(t(4).into(), 22)].into_iter().collect(),
        "{stderr}"
    );
    assert_eq!(
        summary_value(&stderr, "probes") - summary_value(&stderr, "retries"),
        1,
        "{stderr}"
    );
}

#[test]
fn shards_split_the_scan_without_overlap() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2), t(3)], 1500);
    let _l = lab
        .target
        .listen(&[(t(2), 100), (t(2), 1500), (t(3), 700), (t(3), 1999)]);
    let base = [
        "-p",
        "1-2000",
        "--states",
        "open,closed",
        "--disable-host-discovery",
        "--seed",
        "7",
        "198.18.0.2",
        "198.18.0.3",
    ];
    let (whole, _) = scan(&lab, &base);
    assert_eq!(whole.len(), 4000);
    let mut union = Found::new();
    let mut probes = 0;
    for shard in ["1/3", "2/3", "3/3"] {
        let mut args = base.to_vec();
        args.extend(["--shard", shard]);
        let (part, stderr) = scan(&lab, &args);
        // First attempts: packets sent minus retransmissions.
        probes += summary_value(&stderr, "probes") - summary_value(&stderr, "retries");
        for (k, v) in part {
            assert!(
                union.insert(k.clone(), v).is_none(),
                "{k:?} scanned by two shards"
            );
        }
    }
    assert_eq!(union, whole);
    assert_eq!(probes, 4000, "each probe sent by exactly one shard");
}

#[test]
fn retries_recover_deliberately_dropped_probes() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2)], 1500);
    let open = [
        (t(2), 21),
        (t(2), 22),
        (t(2), 23),
        (t(2), 400),
        (t(2), 401),
        (t(2), 999),
    ];
    let _l = lab.target.listen(&open);
    // Half of the SYNs that reach the target are dropped, at random.
    lab.target
        .firewall(&["tcp flags syn numgen random mod 2 == 0 drop"]);
    // Each attempt is dropped with probability 1/2, so a port stays silent
    // after 16 attempts with probability 2^-16: the test cannot flake.
    let mut args = vec![
        "-p",
        "1-1000",
        "198.18.0.2",
        "--disable-host-discovery",
        "--max-retries",
        "15",
        // All 16 attempts for every port, whatever the answers needed.
        "--fixed-retries",
    ];
    args.extend(QUICK);
    let (found, stderr) = scan(&lab, &args);
    assert_eq!(
        open_set(&found),
        open.iter().map(|&(a, p)| (a.into(), p)).collect(),
        "{stderr}"
    );
    let retries = summary_value(&stderr, "retries");
    assert!(
        retries >= 400,
        "half the first attempts were dropped, so about 500 retries: {stderr}"
    );
}

#[test]
fn scan_settings_come_from_a_config_file() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2)], 1500);
    let _l = lab.target.listen(&[(t(2), 22), (t(2), 80)]);
    lab.target.udp_echo(SocketAddr::new(t(2).into(), 53));
    let dir =
        std::env::temp_dir().join(format!("scanner-agent-scan-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "scanning:\n  port_range: \"20-60\"\n  udp_scan: true\n  min_rate: 5000\n  exclude: [198.18.0.3]\n\
         targets:\n  - 198.18.0.2\n  - 198.18.0.3\n",
    )
    .unwrap();
    let (found, stderr) = scan(&lab, &["--config", config.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let want: Found = [
        entry(t(2), "tcp", 22, "open", "syn-ack"),
        entry(t(2), "udp", 53, "open", "udp-response-verified"),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        found, want,
        "80 is outside port_range, .3 is excluded: {stderr}"
    );
    // The config's min_rate with no max_rate: nmap's adaptive rate, no host discovery.
    // First attempts only: a retry may follow a reply slower than the first
    // retry timeout, which says nothing about the config.
    let first_attempts = summary_value(&stderr, "probes") - summary_value(&stderr, "retries");
    assert_eq!(
        first_attempts, 82,
        "41 TCP + 41 UDP probes to one host: {stderr}"
    );
}
