//! Firewall counters read over nftables netlink, checked against the real
//! `iptables-save -c` / `ip6tables-save -c` in test namespaces carrying real
//! traffic, plus native nft tables, the seed's Cassandra ruleset, and the
//! failure paths (no permission, no tables, a ruleset changing under scrapes).
mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use common::{
    Netns, agent,
    daemon::{Daemon, await_body, fetch},
    firewall::{
        Families, Sample, Scraper, assert_matches_save, exported, lab_with_traffic, samples, saved,
        script,
    },
};
use prometheus_client::registry::Registry;
use scanner_agent::{
    firewall::{FirewallCollector, FirewallConfig},
    web::exposition::encode_text,
};

/// The firewall families the collector exports in `ns`, as OpenMetrics text.
fn scrape(ns: &Netns, config: FirewallConfig) -> String {
    ns.run(move || {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(FirewallCollector::new(&config)));
        encode_text(&registry)
    })
}

/// Every rule kind the issue lists, user chains, comments with spaces,
/// quotes and a backslash, and identical rules in one chain. The built-in
/// chains come from `iptables-restore -c`, which (unlike `iptables -A`)
/// creates them with policy counters.
const IPV4_RULES: &str = r#"
printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' | iptables-restore -c
iptables -N TCP_IN
iptables -N LOGDROP
iptables -P FORWARD DROP
iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A INPUT -m state --state INVALID -j DROP
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -s 198.18.0.0/24 -d 198.18.0.2 -i veth-target -p tcp -j TCP_IN
iptables -A INPUT -p udp --sport 1024:65535 --dport 5353 -m comment --comment 'mdns "probe" \ it' -j ACCEPT
iptables -A INPUT -p udp -m multiport --dports 53,123,5000:5100 -j REJECT --reject-with icmp-port-unreachable
iptables -A INPUT -p icmp --icmp-type echo-request -m limit --limit 10/sec --limit-burst 20 -j ACCEPT
iptables -A INPUT -p icmp -m comment --comment "same rule twice" -j ACCEPT
iptables -A INPUT -p icmp -m comment --comment "same rule twice" -j ACCEPT
iptables -A INPUT ! -s 198.18.0.0/24 -j LOGDROP
iptables -A INPUT -m mark --mark 0x1/0xff -j DROP
iptables -A TCP_IN -p tcp --tcp-flags SYN,RST,ACK,FIN SYN --dport 7000 -j ACCEPT
iptables -A TCP_IN -p tcp --syn -m multiport --dports 9042,9160 -j ACCEPT
iptables -A TCP_IN -p tcp ! --dport 22 -j REJECT --reject-with tcp-reset
iptables -A TCP_IN -p tcp --dport 22 -j REJECT
iptables -A TCP_IN -j RETURN
iptables -A LOGDROP -m limit --limit 5/min -j LOG --log-prefix "fw drop: " --log-level 6
iptables -A LOGDROP -g TCP_IN
iptables -A OUTPUT -o veth+ -p tcp --sport 7000 -j ACCEPT
iptables -A OUTPUT -p tcp -m tcp --sport 9042 -j ACCEPT
iptables -A OUTPUT -p tcp -m tcp --sport 9042 -j ACCEPT
iptables -A OUTPUT -p udp --sport 5353
iptables -t mangle -A PREROUTING -p tcp --dport 7000 -j MARK --set-mark 0x7
iptables -t mangle -A OUTPUT -p udp --sport 5353 -j MARK --set-xmark 0x2/0xff
iptables -t mangle -A INPUT -m conntrack ! --ctstate NEW --ctproto tcp --ctorigdstport 7000 -j ACCEPT
"#;

const IPV6_RULES: &str = r#"
printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' | ip6tables-restore -c
ip6tables -N V6_IN
ip6tables -A INPUT -s 2001:db8::/64 -d 2001:db8::2 -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT
ip6tables -A INPUT -p ipv6-icmp -j ACCEPT
ip6tables -A INPUT -p tcp --dport 7000 -m comment --comment "v6 cql" -j V6_IN
ip6tables -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
ip6tables -A INPUT -p tcp -m multiport --dports 9042,9160 -j ACCEPT
ip6tables -A INPUT -p udp --dport 5353 -j ACCEPT
ip6tables -A INPUT -p udp -j REJECT --reject-with icmp6-port-unreachable
ip6tables -A INPUT -p udp -j REJECT --reject-with icmp6-port-unreachable
ip6tables -A V6_IN -p tcp -m tcp --dport 7000 -j ACCEPT
ip6tables -A OUTPUT -p tcp --sport 7000 -j LOG --log-prefix 'v6 out'
"#;

#[test]
fn every_label_and_counter_matches_iptables_save() {
    testbed::require_root!();
    let (lab, _listeners) = lab_with_traffic(&[IPV4_RULES, IPV6_RULES]);

    let Families {
        rules, policies, ..
    } = assert_matches_save(&lab.target, "iptables", "iptables-save");
    let rules6 = assert_matches_save(&lab.target, "ip6tables", "ip6tables-save").rules;

    let key = |table: &str, chain: &str, rule: &str| {
        (table.to_owned(), chain.to_owned(), rule.to_owned())
    };
    // Real traffic went through, and identical rules are one summed series.
    let dport7000 = rules[&key(
        "filter",
        "TCP_IN",
        "-p tcp -m tcp --dport 7000 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT",
    )];
    assert_eq!(dport7000.0, 3, "three SYNs to 7000");
    assert!(
        rules[&key(
            "filter",
            "INPUT",
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        )]
            .0
            > 0
    );
    assert!(
        rules[&key("filter", "INPUT", "-p udp -m udp --sport 1024:65535 --dport 5353 -m comment --comment \"mdns \\\"probe\\\" \\\\ it\" -j ACCEPT")].0 == 3
    );
    assert!(rules[&key("filter", "OUTPUT", "-p tcp -m tcp --sport 9042 -j ACCEPT")].0 > 0);
    assert_eq!(policies[&key("filter", "TCP_IN", "-")], (0, 0));
    assert_eq!(policies[&key("filter", "FORWARD", "DROP")], (0, 0));
    assert!(
        policies[&key("filter", "OUTPUT", "ACCEPT")].0 > 0,
        "{policies:?}"
    );
    assert!(
        policies[&key("mangle", "PREROUTING", "ACCEPT")].0 > 0,
        "{policies:?}"
    );
    assert!(rules6[&key("filter", "V6_IN", "-p tcp -m tcp --dport 7000 -j ACCEPT")].0 >= 3);
    assert!(
        rules6[&key(
            "filter",
            "INPUT",
            "-s 2001:db8::/64 -d 2001:db8::2/128 -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"
        )]
            .0
            == 3
    );
}

/// Rule texts are kept between scrapes while the ruleset is unchanged; any
/// change, even one that keeps the number of rules and a rule's handle,
/// must show in the next scrape without a stale label.
#[test]
fn a_changed_ruleset_never_shows_stale_labels() {
    testbed::require_root!();
    let ns = Netns::new("fw-change");
    script(
        &ns,
        "iptables -A INPUT -p tcp --dport 1 -j ACCEPT\niptables -A INPUT -p tcp --dport 2 -j ACCEPT\niptables -A INPUT -p tcp --dport 3 -j ACCEPT\n",
    );
    ns.nft(
        "table inet edge {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 22 counter comment \"old\"\n }\n}\n",
    );
    let scraper = Scraper::new(FirewallConfig::default());
    let rules = |text: &str| exported(text, "iptables").rules;
    let comments = |text: &str| -> Vec<(String, String)> {
        samples(text)
            .into_iter()
            .filter(|(n, _, _)| n == "nftables_rule_packets_total")
            .map(|(_, l, _)| (l["handle"].clone(), l["comment"].clone()))
            .collect()
    };
    let first = scraper.scrape(&ns);
    assert_eq!(rules(&first), saved(&ns, "iptables-save").rules);
    assert_eq!(rules(&scraper.scrape(&ns)), rules(&first), "unchanged");
    let [(handle, comment)] = &comments(&first)[..] else {
        panic!("{first}")
    };
    assert_eq!(comment, "old");

    // Same number of rules; the first one's text changes in place (iptables
    // -R and nft replace keep the rule's handle).
    script(&ns, "iptables -R INPUT 1 -p udp --dport 1 -j DROP");
    ns.nft(&format!(
        "replace rule inet edge input handle {handle} tcp dport 22 counter comment \"new\"\n"
    ));
    let text = scraper.scrape(&ns);
    let after_replace = rules(&text);
    assert_eq!(after_replace, saved(&ns, "iptables-save").rules);
    assert!(
        after_replace.contains_key(&(
            "filter".into(),
            "INPUT".into(),
            "-p udp -m udp --dport 1 -j DROP".into()
        )),
        "{text}"
    );
    assert_eq!(after_replace.len(), 3, "{text}");
    assert_eq!(
        comments(&text),
        [(handle.clone(), "new".to_owned())],
        "{text}"
    );
    assert!(!text.contains("\"old\""), "{text}");

    // One rule deleted, another added: again three rules.
    script(
        &ns,
        "iptables -D INPUT 2\niptables -A INPUT -p tcp --dport 4 -j REJECT",
    );
    let text = scraper.scrape(&ns);
    let after_swap = rules(&text);
    assert_eq!(after_swap, saved(&ns, "iptables-save").rules);
    assert_eq!(after_swap.len(), 3, "{text}");
    assert!(!text.contains("--dport 2 "), "{text}");
    assert!(text.contains("--dport 4 -j REJECT"), "{text}");
    assert_eq!(rules(&scraper.scrape(&ns)), after_swap, "unchanged again");
}

/// Large rulesets are dumped chain by chain on several threads, and a read
/// after a change takes every unchanged rule over from the last one (found
/// in its old place, the next one, or by key within its chain). Forced onto
/// three threads at 240 rules, every label, counter and rule count still
/// equals `iptables-save -c`'s after each kind of change.
#[test]
fn rules_dumped_on_several_threads_and_taken_over_match_iptables_save() {
    testbed::require_root!();
    let ns = Netns::new("fw-threads");
    let mut restore =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for chain in 0..6 {
        restore.push_str(&format!(":C{chain} - [0:0]\n-A INPUT -i lo -j C{chain}\n"));
    }
    for chain in 0..6 {
        for rule in 0..40 {
            let port = 20_000 + chain * 100 + rule;
            restore.push_str(&format!(
                "-A C{chain} -p udp -m udp --dport {port} -j ACCEPT\n"
            ));
        }
    }
    restore.push_str("COMMIT\n");
    testbed::run_with_input(&mut ns.command("iptables-restore"), &restore).unwrap();
    // Traffic over loopback: one datagram to a rule of each chain, three
    // to one rule, so that values must land on the right series.
    ns.run(|| {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for chain in 0..6u16 {
            udp.send_to(b"x", (Ipv4Addr::LOCALHOST, 20_003 + chain * 100))
                .unwrap();
        }
        for _ in 0..2 {
            udp.send_to(b"x", (Ipv4Addr::LOCALHOST, 20_003)).unwrap();
        }
    });
    let scraper = Scraper::of(
        FirewallCollector::new(&FirewallConfig::default()).with_dump_threads_for_tests(3),
    );
    let check = |what: &str| {
        let text = scraper.scrape(&ns);
        let (got, want) = (exported(&text, "iptables"), saved(&ns, "iptables-save"));
        assert_eq!(got.rules, want.rules, "{what}");
        assert_eq!(got.chains, want.chains, "{what}");
        got
    };
    let first = check("first read");
    let key = |chain: &str, port: u32| {
        (
            "filter".to_owned(),
            chain.to_owned(),
            format!("-p udp -m udp --dport {port} -j ACCEPT"),
        )
    };
    assert_eq!(first.rules[&key("C0", 20_003)].0, 3, "{:?}", first.rules);
    assert_eq!(first.rules[&key("C5", 20_503)].0, 1);
    check("unchanged");
    for (what, change) in [
        (
            "inserted at a chain's head",
            "iptables -I C2 1 -p tcp --dport 9 -j DROP",
        ),
        (
            "replaced in place",
            "iptables -R C3 5 -p tcp --dport 10 -j REJECT",
        ),
        ("deleted in the middle", "iptables -D C4 10"),
        (
            "two deleted at the head",
            "iptables -D C5 1; iptables -D C5 1",
        ),
        (
            "a chain refilled",
            "iptables -F C1; iptables -A C1 -p tcp --dport 11 -j ACCEPT",
        ),
        (
            "a chain added",
            "iptables -N C6; iptables -A C6 -p tcp --dport 12 -j DROP; iptables -A INPUT -j C6",
        ),
        (
            "a chain removed",
            "iptables -D INPUT -i lo -j C0; iptables -F C0; iptables -X C0",
        ),
    ] {
        script(&ns, change);
        check(what);
        check(&format!("{what}, then unchanged"));
    }
}

#[test]
fn identical_rules_can_be_split_by_position() {
    testbed::require_root!();
    let ns = Netns::new("fw-pos");
    script(
        &ns,
        "iptables -A INPUT -p tcp --dport 22 -j ACCEPT\niptables -A INPUT -p tcp --dport 22 -j ACCEPT\n",
    );
    let text = scrape(&ns, FirewallConfig::default());
    let rule = "iptables_rule_packets_total{chain=\"INPUT\",rule=\"-p tcp -m tcp --dport 22 -j ACCEPT\",table=\"filter\"} 0";
    assert_eq!(text.lines().filter(|l| *l == rule).count(), 1, "{text}");
    let text = scrape(
        &ns,
        FirewallConfig {
            rule_position_label: true,
            ..FirewallConfig::default()
        },
    );
    for position in [1, 2] {
        let line = format!(
            "iptables_rule_packets_total{{chain=\"INPUT\",position=\"{position}\",rule=\"-p tcp -m tcp --dport 22 -j ACCEPT\",table=\"filter\"}} 0"
        );
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}

/// The seed's example: its rules give exactly the seed's label sets.
#[test]
fn the_seeds_cassandra_ruleset_gives_the_seeds_label_sets() {
    testbed::require_root!();
    let ns = Netns::new("fw-seed");
    let rules = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n\
                 *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A INPUT -p tcp -m tcp --dport 7000 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 9160 -j ACCEPT\n\
                 -A INPUT -p tcp -m tcp --dport 7199 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 9042 -j ACCEPT\n\
                 -A OUTPUT -p tcp -m tcp --sport 7000 -j ACCEPT\n-A OUTPUT -p tcp -m tcp --sport 9160 -j ACCEPT\n\
                 -A OUTPUT -p tcp -m tcp --sport 7199 -j ACCEPT\n-A OUTPUT -p tcp -m tcp --sport 9042 -j ACCEPT\nCOMMIT\n";
    testbed::run_with_input(&mut ns.command("iptables-restore"), rules).unwrap();

    let text = scrape(
        &ns,
        FirewallConfig {
            legacy_metric_names: true,
            ..FirewallConfig::default()
        },
    );
    // The seed's sample lines, labels as the seed prints them.
    let mut want = Vec::new();
    for name in [
        "iptables_default_bytes_total",
        "iptables_default_packets_toal",
        "iptables_default_packets_total",
    ] {
        for (chain, table) in [
            ("FORWARD", "filter"),
            ("FORWARD", "mangle"),
            ("INPUT", "filter"),
            ("INPUT", "mangle"),
            ("OUTPUT", "filter"),
            ("OUTPUT", "mangle"),
            ("POSTROUTING", "mangle"),
            ("PREROUTING", "mangle"),
        ] {
            want.push(format!(
                "{name}{{chain=\"{chain}\",policy=\"ACCEPT\",table=\"{table}\"}} 0"
            ));
        }
    }
    for name in ["iptables_rule_bytes_total", "iptables_rule_packets_total"] {
        for (chain, dir) in [("INPUT", "dport"), ("OUTPUT", "sport")] {
            for port in [7000, 7199, 9042, 9160] {
                want.push(format!(
                    "{name}{{chain=\"{chain}\",rule=\"-p tcp -m tcp --{dir} {port} -j ACCEPT\",table=\"filter\"}} 0"
                ));
            }
        }
    }
    want.push("iptables_scrape_success 1".into());
    // Not the seed's: rules per chain (issue #19), every chain listed.
    for (chain, table, rules) in [
        ("FORWARD", "filter", 0),
        ("FORWARD", "mangle", 0),
        ("INPUT", "filter", 4),
        ("INPUT", "mangle", 0),
        ("OUTPUT", "filter", 4),
        ("OUTPUT", "mangle", 0),
        ("POSTROUTING", "mangle", 0),
        ("PREROUTING", "mangle", 0),
    ] {
        want.push(format!(
            "iptables_chain_rules{{chain=\"{chain}\",table=\"{table}\"}} {rules}"
        ));
    }
    want.sort();
    let mut got: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("iptables_") && !l.starts_with("iptables_scrape_duration"))
        .map(str::to_owned)
        .collect();
    got.sort();
    assert_eq!(got, want, "\n{text}");
    for help in [
        "# HELP iptables_default_bytes iptables_exporter: Total bytes matching a chain's default policy.",
        "# TYPE iptables_default_packets_toal unknown",
        "# HELP iptables_rule_packets iptables_exporter: Total packets matching a rule.",
        "# HELP iptables_scrape_duration_seconds iptables_exporter: Duration of scraping iptables.",
        "# HELP iptables_scrape_success iptables_exporter: Whether scraping iptables succeeded.",
        "# TYPE iptables_rule_bytes counter",
    ] {
        assert!(text.lines().any(|l| l == help), "{help} missing in\n{text}");
    }
}

#[test]
fn native_nft_tables_are_exported_by_handle_and_comment() {
    testbed::require_root!();
    let ns = Netns::new("fw-nft");
    ns.nft(
        "table inet edge {\n counter ssh_seen { }\n chain input {\n  type filter hook input priority 0; policy accept;\n  \
         tcp dport 22 counter name ssh_seen\n  tcp dport 22 counter accept comment \"ssh in\"\n  \
         udp dport 53 counter\n  icmp type echo-request accept\n }\n}\n",
    );
    script(&ns, "iptables -A INPUT -p tcp --dport 80 -j ACCEPT");
    let lo_listener = ns.listen(&[(Ipv4Addr::LOCALHOST, 22)]);
    ns.run(|| {
        TcpStream::connect((Ipv4Addr::LOCALHOST, 22))
            .map(drop)
            .unwrap()
    });
    drop(lo_listener);
    let text = scrape(&ns, FirewallConfig::default());
    let handles: Vec<(BTreeMap<String, String>, f64)> = samples(&text)
        .into_iter()
        .filter(|(n, _, _)| n == "nftables_rule_packets_total")
        .map(|(_, l, v)| (l, v))
        .collect();
    assert_eq!(handles.len(), 2, "only rules with counters:\n{text}");
    let ssh = &handles[0];
    assert_eq!(ssh.0["comment"], "ssh in");
    assert_eq!(
        (
            ssh.0["family"].as_str(),
            ssh.0["table"].as_str(),
            ssh.0["chain"].as_str()
        ),
        ("inet", "edge", "input")
    );
    assert!(ssh.1 >= 1.0, "{text}");
    assert_eq!(handles[1].0["comment"], "");
    assert_ne!(ssh.0["handle"], handles[1].0["handle"]);
    // The named counter is an object of its own, counted like the rule.
    let named: Vec<Sample> = samples(&text)
        .into_iter()
        .filter(|(n, _, _)| n == "nftables_counter_packets_total")
        .collect();
    assert_eq!(named.len(), 1, "{text}");
    assert_eq!(
        (
            named[0].1["family"].as_str(),
            named[0].1["table"].as_str(),
            named[0].1["counter"].as_str()
        ),
        ("inet", "edge", "ssh_seen")
    );
    assert_eq!(named[0].2, ssh.1, "{text}");
    // The iptables-nft table next to it is still an iptables family.
    assert!(text.contains("iptables_rule_packets_total{chain=\"INPUT\",rule=\"-p tcp -m tcp --dport 80 -j ACCEPT\",table=\"filter\"}"), "{text}");
}

#[test]
fn no_tables_at_all_is_a_successful_empty_scrape() {
    testbed::require_root!();
    let ns = Netns::new("fw-empty");
    let text = scrape(&ns, FirewallConfig::default());
    assert!(
        text.lines().any(|l| l == "iptables_scrape_success 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "ip6tables_scrape_success 1"),
        "{text}"
    );
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split([' ', '{']).next().unwrap())
        .collect();
    assert_eq!(
        series,
        [
            "iptables_scrape_duration_seconds",
            "iptables_scrape_success",
            "ip6tables_scrape_duration_seconds",
            "ip6tables_scrape_success",
            "nftables_ruleset_generation",
            "nftables_ruleset_last_change_timestamp_seconds",
            "scanner_agent_firewall_reads_total",
        ],
        "only the scrape gauges and the ruleset's generation: {text}"
    );
}

#[test]
fn rules_changing_during_scrapes_never_break_one() {
    testbed::require_root!();
    let ns = Netns::new("fw-churn");
    script(
        &ns,
        "iptables -A INPUT -p tcp --dport 1 -j ACCEPT\niptables -N CHURN",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, name) = (Arc::clone(&stop), ns.name.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "exec", &name, "bash", "-c"])
                    .arg("for i in 1 2 3 4 5; do iptables -A CHURN -p udp --dport $i -j DROP; done; iptables -F CHURN")
                    .status();
                n += 1;
            }
            n
        })
    };
    // One collector throughout: each scrape either finds the generation it
    // knows or reads the structure anew, never a mix.
    let scraper = Scraper::new(FirewallConfig::default());
    for _ in 0..40 {
        let text = scraper.scrape(&ns);
        assert!(
            text.lines().any(|l| l == "iptables_scrape_success 1"),
            "{text}"
        );
        assert!(
            text.contains("iptables_rule_packets_total{chain=\"INPUT\",rule=\"-p tcp -m tcp --dport 1 -j ACCEPT\",table=\"filter\"} 0"),
            "{text}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
}

#[test]
fn legacy_x_tables_are_reported() {
    testbed::require_root!();
    let ns = Netns::new("fw-legacy");
    script(&ns, "iptables-legacy -A INPUT -p tcp --dport 22 -j ACCEPT");
    let text = scrape(&ns, FirewallConfig::default());
    assert!(
        text.lines().any(|l| l == "scanner_agent_firewall_legacy_table{family=\"ipv4\",table=\"filter\"} 1"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "iptables_scrape_success 1"),
        "{text}"
    );
}

/// A namespace `name` with one iptables rule (accept TCP port 7000), and
/// `scanner-agent run` without targets in it, optionally without any
/// capability.
fn daemon_beside_a_rule(name: &str, config: &str, drop_caps: bool) -> (Netns, Daemon) {
    let ns = Netns::new(name);
    script(&ns, "iptables -A INPUT -p tcp --dport 7000 -j ACCEPT");
    let wrapper: &[&str] = if drop_caps {
        &["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    } else {
        &[]
    };
    let daemon = Daemon::start_wrapped(agent(), &ns, name, config, &[], wrapper);
    (ns, daemon)
}

/// `/metrics` on loopback `port` (GET with extra header lines) once `cond`
/// holds for it.
fn await_metrics(ns: &Netns, port: u16, headers: &str, cond: impl Fn(&str) -> bool) -> String {
    await_body(
        || fetch(ns, port, "/metrics", headers),
        cond,
        &format!("port {port}"),
    )
}

#[test]
fn the_daemon_serves_the_counters_on_metrics_and_on_its_drop_in_listener() {
    testbed::require_root!();
    let (ns, _daemon) = daemon_beside_a_rule(
        "fw-daemon",
        "server:\n  port: 19455\nfirewall:\n  listen: \"127.0.0.1:19456\"\n",
        false,
    );
    let rule = "iptables_rule_packets_total{chain=\"INPUT\",rule=\"-p tcp -m tcp --dport 7000 -j ACCEPT\",table=\"filter\"} 0";
    let main = await_metrics(&ns, 19455, "", |b| b.lines().any(|l| l == rule));
    assert!(main.lines().any(|l| l == "task_queue_size 0"), "{main}");
    let drop_in = await_metrics(&ns, 19456, "", |b| b.lines().any(|l| l == rule));
    assert!(
        !drop_in.contains("task_queue_size"),
        "only the firewall families:\n{drop_in}"
    );
}

/// The drop-in port is protected like every other endpoint.
#[test]
fn the_drop_in_listener_requires_the_agents_authentication() {
    testbed::require_root!();
    let (ns, _daemon) = daemon_beside_a_rule(
        "fw-auth",
        "server:\n  port: 19458\nfirewall:\n  listen: \"127.0.0.1:19459\"\nauth:\n  bearer_tokens: [tok]\n",
        false,
    );
    await_metrics(&ns, 19459, "Authorization: Bearer tok\r\n", |b| {
        b.contains("iptables_rule_packets_total{")
    });
    let anonymous = fetch(&ns, 19459, "/metrics", "");
    assert_eq!(anonymous, "authentication required\n");
}

#[test]
fn without_cap_net_admin_the_scrape_fails_and_the_rest_of_metrics_works() {
    testbed::require_root!();
    let (ns, daemon) = daemon_beside_a_rule("fw-nocap", "server:\n  port: 19457\n", true);
    let body = await_metrics(&ns, 19457, "", |b| b.contains("iptables_scrape_success"));
    assert!(
        body.lines().any(|l| l == "iptables_scrape_success 0"),
        "{body}"
    );
    assert!(
        body.lines().any(|l| l == "ip6tables_scrape_success 0"),
        "{body}"
    );
    assert!(!body.contains("iptables_rule_"), "{body}");
    assert!(body.lines().any(|l| l == "task_queue_size 0"), "{body}");
    let log = daemon.stderr();
    assert!(log.contains("CAP_NET_ADMIN"), "{log}");
}
