//! Legacy x_tables (`iptables-legacy`) counters, read over getsockopt,
//! checked byte for byte against the real `iptables-legacy-save -c` /
//! `ip6tables-legacy-save -c` in test namespaces carrying real traffic;
//! a table in both backends (exported once, from nftables; the legacy one
//! reported); and a namespace without legacy tables (no legacy series).
//! Every table lives in namespaces the tests create: each namespace has
//! x_tables of its own, so the host's are never touched.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    Lab, Netns, agent,
    daemon::{Daemon, await_body, fetch},
};
use prometheus_client::registry::Registry;
use scanner_agent::{
    firewall::{FirewallCollector, FirewallConfig},
    web::exposition::{classic_text, encode_text},
};
use socket2::{Domain, Protocol, Socket, Type};

const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const TARGET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Runs a bash script inside the namespace, failing the test if it fails.
fn script(ns: &Netns, text: &str) {
    let out = ns.command("bash").args(["-ec", text]).output().unwrap();
    assert!(
        out.status.success(),
        "script failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A collector kept across scrapes, as the daemon keeps its own.
struct Scraper(Arc<Registry>);

impl Scraper {
    fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(FirewallCollector::new(&FirewallConfig::default())));
        Self(Arc::new(registry))
    }

    fn scrape(&self, ns: &Netns) -> String {
        let registry = Arc::clone(&self.0);
        ns.run(move || encode_text(&registry))
    }
}

/// One sample: metric name, labels (unescaped), value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses OpenMetrics sample lines, undoing label value escapes.
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let Some((name, rest)) = head.split_once('{') else {
            out.push((head.to_owned(), BTreeMap::new(), value));
            continue;
        };
        let mut labels = BTreeMap::new();
        let mut chars = rest.strip_suffix('}').unwrap().chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut val = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => val.push('\n'),
                        Some(other) => val.push(other),
                        None => panic!("dangling escape in {line}"),
                    },
                    '"' => break,
                    c => val.push(c),
                }
            }
            labels.insert(key, val);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        out.push((name.to_owned(), labels, value));
    }
    out
}

type Series = BTreeMap<(String, String, String), (u64, u64)>;
type ChainRules = BTreeMap<(String, String), u64>;

/// `(table, chain, rule)` and `(table, chain, policy)` counters and the
/// rules per chain of one family (`iptables` or `ip6tables`).
#[derive(Debug, Default, PartialEq)]
struct Families {
    rules: Series,
    policies: Series,
    chains: ChainRules,
}

fn exported(text: &str, prefix: &str) -> Families {
    let mut f = Families::default();
    for (name, l, v) in samples(text) {
        let v = v as u64;
        let Some(kind) = name.strip_prefix(prefix) else {
            continue;
        };
        if kind == "_chain_rules" {
            f.chains.insert((l["table"].clone(), l["chain"].clone()), v);
            continue;
        }
        let (map, key) = match kind {
            "_rule_packets_total" | "_rule_bytes_total" => (&mut f.rules, &l["rule"]),
            "_default_packets_total" | "_default_bytes_total" => (&mut f.policies, &l["policy"]),
            _ => continue,
        };
        let entry = map
            .entry((l["table"].clone(), l["chain"].clone(), key.clone()))
            .or_default();
        if kind.contains("packets") {
            entry.0 = v;
        } else {
            entry.1 = v;
        }
    }
    f
}

/// The same from `tool -c` (identical rules in a chain summed).
fn saved(ns: &Netns, tool: &str) -> Families {
    let out = ns.command(tool).arg("-c").output().unwrap();
    assert!(out.status.success(), "{tool}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut f = Families::default();
    let mut table = String::new();
    let counters = |c: &str| -> (u64, u64) {
        let (p, b) = c
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split_once(':')
            .unwrap();
        (p.parse().unwrap(), b.parse().unwrap())
    };
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_owned();
        } else if let Some(chain) = line.strip_prefix(':') {
            let mut w = chain.split(' ');
            let (name, policy, c) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
            f.policies
                .insert((table.clone(), name.into(), policy.into()), counters(c));
            f.chains.insert((table.clone(), name.into()), 0);
        } else if line.starts_with('[') {
            let (c, rest) = line.split_once(" -A ").unwrap();
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            let (p, b) = counters(c);
            let e = f
                .rules
                .entry((table.clone(), chain.into(), rule.into()))
                .or_default();
            e.0 += p;
            e.1 += b;
            *f.chains.entry((table.clone(), chain.into())).or_default() += 1;
        }
    }
    f
}

/// Scrapes, runs `tool`, scrapes again until both scrapes agree (no packet
/// counted in between), then compares them byte for byte.
fn assert_matches_save(ns: &Netns, prefix: &str, tool: &str) -> Families {
    for _ in 0..50 {
        let scraper = Scraper::new();
        let before = exported(&scraper.scrape(ns), prefix);
        let save = saved(ns, tool);
        let after = exported(&scraper.scrape(ns), prefix);
        if before != after {
            continue;
        }
        assert_eq!(
            before.rules.keys().collect::<Vec<_>>(),
            save.rules.keys().collect::<Vec<_>>(),
            "{tool}: rule labels differ"
        );
        assert_eq!(before.rules, save.rules, "{tool}: rule counters differ");
        assert_eq!(
            before.policies, save.policies,
            "{tool}: chain policies differ"
        );
        assert_eq!(before.chains, save.chains, "{tool}: rules per chain differ");
        return before;
    }
    panic!("{tool}: counters never held still between two reads");
}

/// Every match and target kind the README lists for the `rule` label,
/// user chains, a goto, a rule without target, comments with spaces,
/// quotes and a backslash, and identical rules in one chain.
const IPV4_RULES: &str = r#"
ipt=iptables-legacy
$ipt -N TCP_IN
$ipt -N LOGDROP
$ipt -P FORWARD DROP
$ipt -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
$ipt -A INPUT -m state --state INVALID -j DROP
$ipt -A INPUT -i lo -j ACCEPT
$ipt -A INPUT -m pkttype --pkt-type broadcast -j DROP
$ipt -A INPUT -m ttl --ttl-lt 2 -j DROP
$ipt -A INPUT -f -m ttl ! --ttl-eq 64 -j DROP
$ipt -A INPUT -s 198.18.0.0/24 -d 198.18.0.2 -i veth-target -p tcp -j TCP_IN
$ipt -A INPUT -p udp --sport 1024:65535 --dport 5353 -m comment --comment 'mdns "probe" \ it' -j ACCEPT
$ipt -A INPUT -p udp -m multiport --dports 53,123,5000:5100 -j REJECT --reject-with icmp-port-unreachable
$ipt -A INPUT -p icmp --icmp-type echo-request -m limit --limit 10/sec --limit-burst 20 -j ACCEPT
$ipt -A INPUT -p icmp --icmp-type 3/4 -j ACCEPT
$ipt -A INPUT -p icmp -m comment --comment "same rule twice" -j ACCEPT
$ipt -A INPUT -p icmp -m comment --comment "same rule twice" -j ACCEPT
$ipt -A INPUT ! -s 198.18.0.0/24 -j LOGDROP
$ipt -A INPUT -s 198.18.0.0/255.255.0.255 ! -p sctp -j ACCEPT
$ipt -A INPUT -m mark ! --mark 0x1/0xff -j RETURN
$ipt -A TCP_IN -p tcp --tcp-flags SYN,RST,ACK,FIN SYN --dport 7000 -j ACCEPT
$ipt -A TCP_IN -p tcp --syn -m multiport --dports 9042,9160 -j ACCEPT
$ipt -A TCP_IN -p tcp ! --dport 22 -j REJECT --reject-with tcp-reset
$ipt -A TCP_IN -p tcp --dport 22 -j REJECT
$ipt -A TCP_IN -j RETURN
$ipt -A LOGDROP -m limit --limit 5/min -j LOG --log-prefix "fw drop: " --log-level 6
$ipt -A LOGDROP -g TCP_IN
$ipt -A OUTPUT ! -o veth+ -p tcp ! --sport 7000:7001 -j ACCEPT
$ipt -A OUTPUT -o veth+ -p tcp --sport 7000 -j ACCEPT
$ipt -A OUTPUT -p tcp -m tcp --sport 9042 -j ACCEPT
$ipt -A OUTPUT -p tcp -m tcp --sport 9042 -j ACCEPT
$ipt -A OUTPUT -p tcp ! --tcp-option 8 -j ACCEPT
$ipt -A OUTPUT -p udp --sport 5353
$ipt -A OUTPUT -d 198.18.0.1/32 -p udp ! --dport 1:1023 -j ACCEPT
$ipt -t mangle -A PREROUTING -p tcp --dport 7000 -j MARK --set-mark 0x7
$ipt -t mangle -A OUTPUT -p udp --sport 5353 -j MARK --set-xmark 0x2/0xff
$ipt -t mangle -A INPUT -m conntrack ! --ctstate NEW --ctproto tcp --ctorigdstport 7000 -j ACCEPT
$ipt -t mangle -A INPUT -m conntrack --ctorigsrc 198.18.0.0/24 --ctstatus ASSURED --ctexpire 1:100000 --ctdir ORIGINAL -j ACCEPT
$ipt -t nat -A POSTROUTING -o veth+ -p tcp -j MASQUERADE --to-ports 1024-2000 --random
$ipt -t nat -A POSTROUTING -o veth+ -j MASQUERADE
"#;

const IPV6_RULES: &str = r#"
ipt=ip6tables-legacy
$ipt -N V6_IN
$ipt -N V6_IN_END
$ipt -A INPUT -s 2001:db8::/64 -d 2001:db8::2 -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT
$ipt -A INPUT -p ipv6-icmp --icmpv6-type 1/3 -j ACCEPT
$ipt -A INPUT -p ipv6-icmp -j ACCEPT
$ipt -A INPUT -p tcp --dport 7000 -m comment --comment "v6 cql" -j V6_IN
$ipt -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
$ipt -A INPUT -p tcp -m multiport --dports 9042,9160 -j ACCEPT
$ipt -A INPUT -p udp --dport 5353 -j ACCEPT
$ipt -A INPUT -m hl --hl-lt 2 -j DROP
$ipt -A INPUT -m pkttype --pkt-type multicast -m limit --limit 3/hour -j LOG --log-prefix "v6 mcast"
$ipt -A INPUT -i lo ! -s ::1/128 -j DROP
$ipt -A INPUT -p udp -j REJECT --reject-with icmp6-port-unreachable
$ipt -A INPUT -p udp -j REJECT --reject-with icmp6-port-unreachable
$ipt -A V6_IN -p tcp -m tcp --dport 7000 -j ACCEPT
$ipt -A V6_IN -g V6_IN_END
$ipt -A OUTPUT -p tcp --sport 7000 -j LOG --log-prefix 'v6 out'
$ipt -A OUTPUT -m mark --mark 0x3 -j DROP
$ipt -t mangle -A PREROUTING -p tcp --dport 7000 -j MARK --set-mark 0x7
$ipt -t nat -A POSTROUTING -o veth+ -j MASQUERADE
$ipt -t nat -A POSTROUTING -o veth+ -p udp -j MASQUERADE --to-ports 2000-3000 --random-fully
"#;

/// TCP, UDP and ICMP (v4 and v6) from the scanner to the target.
fn traffic(lab: &Lab) {
    lab.scanner.run(|| {
        for _ in 0..3 {
            for addr in [IpAddr::V4(TARGET), IpAddr::V6(TARGET6)] {
                for port in [7000, 9042, 22] {
                    if let Ok(mut s) = TcpStream::connect_timeout(
                        &SocketAddr::new(addr, port),
                        Duration::from_secs(2),
                    ) {
                        let _ = s.write_all(b"hello");
                    }
                }
                let any: IpAddr = if addr.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                let udp = UdpSocket::bind(SocketAddr::new(any, 0)).unwrap();
                udp.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let _ = udp.send_to(b"ping", SocketAddr::new(addr, 5353));
                let _ = udp.recv_from(&mut [0u8; 64]);
                let _ = udp.send_to(b"x", SocketAddr::new(addr, 5050));
            }
            let icmp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
            let mut echo = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
            let sum = !echo
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum::<u32>() as u16;
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
            let _ = icmp.send_to(&echo, &SocketAddr::new(TARGET.into(), 0).into());
            let icmp6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
            let _ = icmp6.send_to(
                &[128, 0, 0, 0, 0x12, 0x34, 0, 1],
                &SocketAddr::new(TARGET6.into(), 0).into(),
            );
        }
    });
}

/// promtool's lint of the exposition: nothing about the firewall families.
fn assert_promtool_is_quiet(text: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not on PATH (`cargo xtask test` provides it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(classic_text(text).as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{text}");
    assert_eq!(report.trim(), "", "{text}");
}

fn key(table: &str, chain: &str, rule: &str) -> (String, String, String) {
    (table.to_owned(), chain.to_owned(), rule.to_owned())
}

#[test]
fn legacy_counters_match_iptables_legacy_save_byte_for_byte() {
    testbed::require_root!();
    let started = Instant::now();
    let lab = Lab::new(&[IpAddr::V4(TARGET), IpAddr::V6(TARGET6)], 1500);
    script(&lab.target, IPV4_RULES);
    script(&lab.target, IPV6_RULES);
    let _listeners = lab.target.listen(&[
        (IpAddr::V4(TARGET), 7000),
        (IpAddr::V4(TARGET), 9042),
        (IpAddr::V6(TARGET6), 7000),
        (IpAddr::V6(TARGET6), 9042),
    ]);
    lab.target.udp_echo(SocketAddr::new(TARGET.into(), 5353));
    lab.target.udp_echo(SocketAddr::new(TARGET6.into(), 5353));
    traffic(&lab);

    let v4 = assert_matches_save(&lab.target, "iptables", "iptables-legacy-save");
    let v6 = assert_matches_save(&lab.target, "ip6tables", "ip6tables-legacy-save");

    // Real traffic went through the rules, and identical rules are one series.
    let syn = v4.rules[&key(
        "filter",
        "TCP_IN",
        "-p tcp -m tcp --dport 7000 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
    )];
    assert_eq!(syn.0, 3, "three SYNs to 7000");
    let mdns = "-p udp -m udp --sport 1024:65535 --dport 5353 -m comment --comment \"mdns \\\"probe\\\" \\\\ it\" -j ACCEPT";
    assert_eq!(v4.rules[&key("filter", "INPUT", mdns)].0, 3);
    assert!(v4.rules[&key("filter", "OUTPUT", "-p tcp -m tcp --sport 9042 -j ACCEPT")].0 > 0);
    assert_eq!(v4.chains[&key2("filter", "OUTPUT")], 7);
    assert_eq!(v4.chains[&key2("nat", "PREROUTING")], 0);
    assert!(
        v4.policies[&key("filter", "OUTPUT", "ACCEPT")].0 > 0,
        "{:?}",
        v4.policies
    );
    assert!(v4.policies[&key("mangle", "PREROUTING", "ACCEPT")].0 > 0);
    assert_eq!(v4.policies[&key("filter", "TCP_IN", "-")], (0, 0));
    assert!(v4.rules.contains_key(&key(
        "nat",
        "POSTROUTING",
        "-o veth+ -p tcp -j MASQUERADE --to-ports 1024-2000 --random"
    )));
    assert!(
        v4.rules
            .contains_key(&key("filter", "LOGDROP", "-g TCP_IN"))
    );
    assert!(
        v4.rules
            .contains_key(&key("filter", "OUTPUT", "-p udp -m udp --sport 5353"))
    );
    let echo6 =
        "-s 2001:db8::/64 -d 2001:db8::2/128 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT";
    assert_eq!(v6.rules[&key("filter", "INPUT", echo6)].0, 3);
    assert!(v6.rules[&key("filter", "V6_IN", "-p tcp -m tcp --dport 7000 -j ACCEPT")].0 >= 3);
    assert!(v6.rules.contains_key(&key(
        "nat",
        "POSTROUTING",
        "-o veth+ -p udp -j MASQUERADE --to-ports 2000-3000 --random-fully"
    )));

    let text = Scraper::new().scrape(&lab.target);
    for line in [
        "iptables_scrape_success 1",
        "ip6tables_scrape_success 1",
        "scanner_agent_firewall_legacy_table{family=\"ipv4\",table=\"nat\"} 1",
        "scanner_agent_firewall_legacy_table{family=\"ipv6\",table=\"mangle\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("legacy_shadowed"), "{text}");
    assert_promtool_is_quiet(&text);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

fn key2(table: &str, chain: &str) -> (String, String) {
    (table.to_owned(), chain.to_owned())
}

/// A table in both backends: the iptables-nft one is exported, the legacy
/// one is reported as shadowed; the legacy tables beside it are exported.
/// No two series share a label set.
#[test]
fn a_table_in_both_backends_is_exported_once_from_nftables() {
    testbed::require_root!();
    let ns = Netns::new("fw-shadow");
    script(
        &ns,
        "iptables-nft -A INPUT -p tcp --dport 1 -j ACCEPT\n\
         iptables-legacy -A INPUT -p tcp --dport 2 -j DROP\n\
         iptables-legacy -N LEGACY_ONLY\n\
         iptables-legacy -t mangle -A OUTPUT -p udp --dport 3 -j ACCEPT\n\
         ip6tables-legacy -A INPUT -p tcp --dport 4 -j ACCEPT\n",
    );
    let scraper = Scraper::new();
    let text = scraper.scrape(&ns);
    for line in [
        "scanner_agent_firewall_legacy_shadowed{family=\"ipv4\",table=\"filter\"} 1",
        "scanner_agent_firewall_legacy_table{family=\"ipv4\",table=\"filter\"} 1",
        "scanner_agent_firewall_legacy_table{family=\"ipv4\",table=\"mangle\"} 1",
        "iptables_scrape_success 1",
        "ip6tables_scrape_success 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    let shadowed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("scanner_agent_firewall_legacy_shadowed{"))
        .collect();
    assert_eq!(shadowed.len(), 1, "{text}");
    assert!(!text.contains("--dport 2"), "{text}");
    assert!(!text.contains("LEGACY_ONLY"), "{text}");
    let all = samples(&text);
    let distinct: BTreeSet<(&String, &BTreeMap<String, String>)> =
        all.iter().map(|(n, l, _)| (n, l)).collect();
    assert_eq!(distinct.len(), all.len(), "a label set twice:\n{text}");

    // iptables_*: filter from nftables, mangle from x_tables.
    let mut want = saved(&ns, "iptables-nft-save");
    let legacy = saved(&ns, "iptables-legacy-save");
    let mangle = |m: &Series| -> Series {
        m.iter()
            .filter(|(k, _)| k.0 == "mangle")
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    want.rules.extend(mangle(&legacy.rules));
    want.policies.extend(mangle(&legacy.policies));
    want.chains.extend(
        legacy
            .chains
            .iter()
            .filter(|(k, _)| k.0 == "mangle")
            .map(|(k, v)| (k.clone(), *v)),
    );
    assert_eq!(exported(&text, "iptables"), want, "{text}");
    // ip6tables_*: only x_tables have an ip6 filter table.
    assert_eq!(
        exported(&text, "ip6tables"),
        saved(&ns, "ip6tables-legacy-save"),
        "{text}"
    );
    // Counters only, the structure kept: the same again.
    assert_eq!(exported(&scraper.scrape(&ns), "iptables"), want);
    // A legacy rule replaced in place (same size, same place): the next
    // scrape of the same collector renders it anew, no stale label.
    script(
        &ns,
        "iptables-legacy -t mangle -R OUTPUT 1 -p udp --dport 5 -j ACCEPT",
    );
    let text = scraper.scrape(&ns);
    assert!(text.contains("--dport 5 -j ACCEPT"), "{text}");
    assert!(!text.contains("--dport 3 "), "{text}");
    let legacy = saved(&ns, "iptables-legacy-save");
    assert_eq!(
        exported(&text, "iptables")
            .rules
            .keys()
            .filter(|k| k.0 == "mangle")
            .collect::<Vec<_>>(),
        legacy
            .rules
            .keys()
            .filter(|k| k.0 == "mangle")
            .collect::<Vec<_>>()
    );
}

/// No legacy tables in the namespace (the kernel lists none): no legacy
/// series, no error, and nothing created by reading.
#[test]
fn without_legacy_tables_there_is_no_legacy_series_and_none_is_created() {
    testbed::require_root!();
    let ns = Netns::new("fw-nolegacy");
    script(&ns, "iptables-nft -A INPUT -p tcp --dport 1 -j ACCEPT");
    let names = |ns: &Netns| {
        let out = ns
            .command("cat")
            .args(["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(names(&ns), "", "a fresh namespace has no legacy tables");
    let text = Scraper::new().scrape(&ns);
    assert!(!text.contains("scanner_agent_firewall_legacy"), "{text}");
    for line in [
        "iptables_scrape_success 1",
        "ip6tables_scrape_success 1",
        "iptables_chain_rules{chain=\"INPUT\",table=\"filter\"} 1",
        "iptables_chain_rules{chain=\"FORWARD\",table=\"filter\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert_eq!(names(&ns), "", "reading created no legacy table");
}

/// The daemon with `CAP_NET_ADMIN` as its only capability reads legacy
/// tables (the get-sockopts go through a UDP socket: no `CAP_NET_RAW`).
#[test]
fn cap_net_admin_alone_reads_legacy_tables() {
    testbed::require_root!();
    let ns = Netns::new("fw-legacy-cap");
    script(
        &ns,
        "iptables-legacy -A INPUT -p tcp --dport 7000 -j ACCEPT",
    );
    let _daemon = Daemon::start_wrapped(
        agent(),
        &ns,
        "fw-legacy-cap",
        "server:\n  port: 19460\n",
        &[],
        &[
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all,+net_admin",
            "--",
        ],
    );
    let rule = "iptables_rule_packets_total{chain=\"INPUT\",rule=\"-p tcp -m tcp --dport 7000 -j ACCEPT\",table=\"filter\"} 0";
    let body = await_body(
        || fetch(&ns, 19460, "/metrics", ""),
        |b| b.lines().any(|l| l == rule),
        "port 19460",
    );
    assert!(
        body.lines().any(|l| l == "iptables_scrape_success 1"),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l == "iptables_chain_rules{chain=\"INPUT\",table=\"filter\"} 1"),
        "{body}"
    );
}
