//! Helpers the firewall tests share: a scraper kept across scrapes, the
//! OpenMetrics sample parser, the `iptables_*` families of a scrape and of
//! `iptables-save -c`, and traffic through a [`Lab`].

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    sync::Arc,
    time::Duration,
};

use prometheus_client::registry::Registry;
use scanner_agent::{
    firewall::{FirewallCollector, FirewallConfig},
    web::exposition::encode_text,
};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Lab, Netns};

/// The target of a [`Lab`], IPv4 and IPv6.
pub(crate) const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub(crate) const TARGET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Runs a bash script inside the namespace, failing the test if it fails.
pub(crate) fn script(ns: &Netns, text: &str) {
    let out = ns.command("bash").args(["-ec", text]).output().unwrap();
    assert!(
        out.status.success(),
        "script failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A collector kept across scrapes, as the daemon keeps its own: scrapes
/// after the first read the structure again only when the ruleset
/// generation moved, and otherwise counters only.
pub(crate) struct Scraper(Arc<Registry>);

impl Scraper {
    pub(crate) fn new(config: FirewallConfig) -> Self {
        Self::of(FirewallCollector::new(&config))
    }

    pub(crate) fn of(collector: FirewallCollector) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        Self(Arc::new(registry))
    }

    pub(crate) fn scrape(&self, ns: &Netns) -> String {
        let registry = Arc::clone(&self.0);
        ns.run(move || encode_text(&registry))
    }
}

/// One sample: metric name, labels (unescaped), value.
pub(crate) type Sample = (String, BTreeMap<String, String>, f64);

/// Parses OpenMetrics sample lines, undoing label value escapes.
pub(crate) fn samples(text: &str) -> Vec<Sample> {
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

pub(crate) type Series = BTreeMap<(String, String, String), (u64, u64)>;
pub(crate) type ChainRules = BTreeMap<(String, String), u64>;

/// `(table, chain, rule)` and `(table, chain, policy)` counters and the
/// rules per chain of one family (`iptables` or `ip6tables`).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Families {
    pub rules: Series,
    pub policies: Series,
    pub chains: ChainRules,
}

pub(crate) fn exported(text: &str, prefix: &str) -> Families {
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

/// The same from `tool -c` (`iptables-save`, `iptables-legacy-save`, ...;
/// identical rules in a chain summed).
pub(crate) fn saved(ns: &Netns, tool: &str) -> Families {
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

/// A lab whose target runs the iptables `scripts`, listens on TCP 7000 and
/// 9042 and echoes UDP 5353 (both families), after [`traffic`] went
/// through it; the listeners live as long as the returned value.
pub(crate) fn lab_with_traffic(scripts: &[&str]) -> (Lab, Vec<std::net::TcpListener>) {
    let lab = Lab::new(&[IpAddr::V4(TARGET), IpAddr::V6(TARGET6)], 1500);
    for text in scripts {
        script(&lab.target, text);
    }
    let listeners = lab.target.listen(&[
        (IpAddr::V4(TARGET), 7000),
        (IpAddr::V4(TARGET), 9042),
        (IpAddr::V6(TARGET6), 7000),
        (IpAddr::V6(TARGET6), 9042),
    ]);
    lab.target
        .udp_echo(std::net::SocketAddr::new(TARGET.into(), 5353));
    lab.target
        .udp_echo(std::net::SocketAddr::new(TARGET6.into(), 5353));
    traffic(&lab);
    (lab, listeners)
}

/// TCP, UDP and ICMP (v4 and v6) from the scanner to the target.
pub(crate) fn traffic(lab: &Lab) {
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
                let udp = UdpSocket::bind(SocketAddr::new(
                    if addr.is_ipv4() {
                        Ipv4Addr::UNSPECIFIED.into()
                    } else {
                        Ipv6Addr::UNSPECIFIED.into()
                    },
                    0,
                ))
                .unwrap();
                udp.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let _ = udp.send_to(b"ping", SocketAddr::new(addr, 5353));
                let _ = udp.recv_from(&mut [0u8; 64]);
                let _ = udp.send_to(b"x", SocketAddr::new(addr, 5050));
            }
            // ICMP echo requests (the kernel fills in the ICMPv6 checksum).
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

/// Scrapes `ns` with a new collector, runs `tool` (`iptables-save`,
/// `iptables-legacy-save`, ...), scrapes again until both scrapes agree (no
/// packet counted in between), then compares them byte for byte: rule
/// labels and counters, policies and rules per chain. The first scrape of
/// a collector parses everything, the second only reads counters (the
/// ruleset is unchanged): both must agree with `tool`.
pub(crate) fn assert_matches_save(ns: &Netns, prefix: &str, tool: &str) -> Families {
    for _ in 0..50 {
        let scraper = Scraper::new(FirewallConfig::default());
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
