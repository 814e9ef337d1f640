//! Real scans across a veth pair between two namespaces, compared with the
//! truth the test sets up: listeners, firewall rules, absent hosts.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use common::{Lab, agent};

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
        // Exactly these fields, in this order.
        assert_eq!(v.as_object().unwrap().len(), 5, "{line}");
        let at: Vec<usize> = ["ip", "port", "protocol", "state", "reason"]
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
    assert!(
        stderr.contains("retries=2"),
        "81 was retried twice: {stderr}"
    );
}

#[test]
fn udp_open_closed_filtered_and_silent() {
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
        entry(t(2), "udp", 53, "open", "udp-response"),
        entry(t(2), "udp", 54, "closed", "icmp-port-unreach"),
        entry(t(2), "udp", 55, "open|filtered", "no-response"),
        entry(t(2), "udp", 56, "filtered", "icmp-admin-prohibited"),
        entry(t(2), "udp", 7000, "open", "udp-response"),
    ]
    .into_iter()
    .collect();
    assert_eq!(udp, want, "{stderr}");
}

#[test]
fn ipv6_and_ipv4_targets_in_one_scan() {
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
        entry(t(2), "udp", 53, "open", "udp-response"),
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
