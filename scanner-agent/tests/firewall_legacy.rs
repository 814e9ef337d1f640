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
    time::{Duration, Instant},
};

use common::{
    Netns, agent,
    daemon::{Daemon, await_body, fetch},
    firewall::{
        Scraper, Series, assert_matches_save, exported, lab_with_traffic, samples, saved, script,
    },
};
use scanner_agent::{firewall::FirewallConfig, web::exposition::classic_text};

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

/// promtool's lint of the exposition: nothing about the firewall families.
fn assert_promtool_is_quiet(text: &str) {
    let (passed, report) = common::promtool_lint(&classic_text(text));
    assert!(passed, "{report:?}\n{text}");
    assert!(report.is_empty(), "{report:?}\n{text}");
}

fn key(table: &str, chain: &str, rule: &str) -> (String, String, String) {
    (table.to_owned(), chain.to_owned(), rule.to_owned())
}

#[test]
fn legacy_counters_match_iptables_legacy_save_byte_for_byte() {
    testbed::require_root!();
    let started = Instant::now();
    let (lab, _listeners) = lab_with_traffic(&[IPV4_RULES, IPV6_RULES]);

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

    let text = Scraper::new(FirewallConfig::default()).scrape(&lab.target);
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
    let scraper = Scraper::new(FirewallConfig::default());
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
    let text = Scraper::new(FirewallConfig::default()).scrape(&ns);
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
