//! What changed in the firewall and when, set sizes, and scrapes that
//! cannot pile up: `nftables_ruleset_last_change_timestamp_seconds` against
//! real rule and set element changes, `nftables_set_elements` for static,
//! interval and dynamic sets and maps, and concurrent scrapes during a read
//! made slow on purpose. Every ruleset lives in a namespace the test made.
mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use common::{Netns, wait_until};
use prometheus_client::registry::Registry;
use scanner_agent::{
    firewall::{FirewallCollector, FirewallConfig},
    web::exposition::encode_text,
};

/// Runs a bash script inside the namespace, failing the test if it fails.
fn script(ns: &Netns, text: &str) {
    let out = ns.command("bash").args(["-ec", text]).output().unwrap();
    assert!(
        out.status.success(),
        "script failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A registry holding one collector, kept across scrapes as the daemon
/// keeps its own.
fn registry(collector: FirewallCollector) -> Arc<Registry> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    Arc::new(registry)
}

fn scrape(ns: &Netns, registry: &Arc<Registry>) -> String {
    let registry = Arc::clone(registry);
    ns.run(move || encode_text(&registry))
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Every family of a scrape is one the agent lists (and the README documents).
fn assert_listed(text: &str) {
    for rest in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = rest.split_once(' ').unwrap();
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        assert!(
            FirewallCollector::FAMILIES.contains(&sample.as_str()),
            "{sample} is not in FirewallCollector::FAMILIES"
        );
    }
}

const GENERATION: &str = "nftables_ruleset_generation";
const CHANGED: &str = "nftables_ruleset_last_change_timestamp_seconds";

#[test]
fn the_last_change_moves_with_rules_and_not_with_set_elements() {
    testbed::require_root!();
    let ns = Netns::new("fw-change");
    ns.nft(
        "table inet guard {\n set banned { type ipv4_addr; }\n chain input {\n  \
         type filter hook input priority 0; policy accept;\n  ip saddr @banned counter drop\n }\n}\n",
    );
    // Reloaded once, so that the built-in chains iptables-nft creates only
    // when first needed all exist (a chain created is a change).
    script(
        &ns,
        "iptables -A INPUT -p tcp --dport 22 -j ACCEPT\niptables-save | iptables-restore",
    );
    let registry = registry(FirewallCollector::new(&FirewallConfig::default()));
    let first = scrape(&ns, &registry);
    let (generation, changed) = (must(&first, GENERATION), must(&first, CHANGED));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - changed).abs() < 60.0, "{changed} vs now {now}");

    // Set elements, as fail2ban adds and removes them: new generations,
    // the same rules.
    for element in ["198.18.7.1", "198.18.7.2"] {
        std::thread::sleep(Duration::from_millis(20));
        ns.nft(&format!("add element inet guard banned {{ {element} }}\n"));
        let text = scrape(&ns, &registry);
        assert!(must(&text, GENERATION) > generation, "{text}");
        assert_eq!(must(&text, CHANGED), changed, "{text}");
    }
    ns.nft("delete element inet guard banned { 198.18.7.1 }\n");
    let text = scrape(&ns, &registry);
    assert_eq!(must(&text, CHANGED), changed, "{text}");
    // Reloading the same iptables rules replaces them (new handles), but
    // renders the same: no change either.
    script(&ns, "iptables-save | iptables-restore");
    let text = scrape(&ns, &registry);
    assert_eq!(must(&text, CHANGED), changed, "{text}");

    // A rule added: a change, seen by the next scrape.
    std::thread::sleep(Duration::from_millis(20));
    script(&ns, "iptables -A INPUT -p udp --dport 53 -j ACCEPT");
    let text = scrape(&ns, &registry);
    let moved = must(&text, CHANGED);
    assert!(moved > changed, "{changed} -> {moved}\n{text}");
    assert!(
        text.contains("rule=\"-p udp -m udp --dport 53 -j ACCEPT\""),
        "{text}"
    );
    // A native rule changed in place (same chain, other port): a change.
    std::thread::sleep(Duration::from_millis(20));
    ns.nft(
        "flush chain inet guard input\nadd rule inet guard input ip saddr @banned counter reject\n",
    );
    let text = scrape(&ns, &registry);
    assert!(must(&text, CHANGED) > moved, "{text}");
    // A named counter added (no chain or rule changed): a change, and the
    // counter is exported at once.
    let replaced = must(&text, CHANGED);
    std::thread::sleep(Duration::from_millis(20));
    ns.nft("add counter inet guard hits\n");
    let text = scrape(&ns, &registry);
    assert!(must(&text, CHANGED) > replaced, "{text}");
    must(
        &text,
        "nftables_counter_packets_total{family=\"inet\",table=\"guard\",counter=\"hits\"}",
    );
    // Only counters moved: no change.
    let settled = must(&text, CHANGED);
    let text = scrape(&ns, &registry);
    assert_eq!(must(&text, CHANGED), settled, "{text}");
}

/// Counts once the next refresh has run (they are counted apart from the
/// scrapes, at most every 5 s).
fn await_sets(ns: &Netns, registry: &Arc<Registry>, cond: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(15), || {
        last = scrape(ns, registry);
        cond(&last)
    });
    assert!(ok, "set counts never got there:\n{last}");
    last
}

fn set(table: &str, name: &str) -> String {
    format!("nftables_set_elements{{family=\"inet\",table=\"{table}\",set=\"{name}\"}}")
}

#[test]
fn set_elements_are_counted_for_static_and_dynamic_sets() {
    testbed::require_root!();
    let ns = Netns::new("fw-sets");
    ns.nft(
        "table inet sets {\n \
         set plain { type ipv4_addr; elements = { 198.18.1.1, 198.18.1.2, 198.18.1.3 } }\n \
         set ranges { type ipv4_addr; flags interval; elements = { 198.18.2.0/24, 198.18.3.0-198.18.3.9, 198.18.4.1 } }\n \
         map ports { type inet_service : verdict; elements = { 22 : accept, 80 : drop } }\n \
         set seen { type ipv4_addr; size 1024; flags dynamic,timeout; timeout 1h; }\n \
         chain output {\n  type filter hook output priority 0; policy accept;\n  \
         udp dport 9 add @seen { ip daddr }\n  tcp dport { 1, 2, 3, 4 } counter accept\n }\n}\n",
    );
    let registry = registry(FirewallCollector::new(&FirewallConfig::default()));
    let text = await_sets(&ns, &registry, |t| t.contains("nftables_set_elements{"));
    assert_eq!(must(&text, &set("sets", "plain")), 3.0, "{text}");
    assert_eq!(
        must(&text, &set("sets", "ranges")),
        3.0,
        "an interval counts once:\n{text}"
    );
    assert_eq!(must(&text, &set("sets", "ports")), 2.0, "{text}");
    assert_eq!(must(&text, &set("sets", "seen")), 0.0, "{text}");
    assert_eq!(
        text.matches("nftables_set_elements{").count(),
        4,
        "anonymous sets are not listed:\n{text}"
    );
    assert_eq!(must(&text, "nftables_set_elements_read_success"), 1.0);
    assert!(must(&text, "nftables_set_elements_read_duration_seconds") >= 0.0);

    // The packet path fills the dynamic set: datagrams to four loopback
    // addresses, port 9 (nothing listens; the output hook sees them first).
    ns.run(|| {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for last in 1..=4 {
            let _ = socket.send_to(b"x", (Ipv4Addr::new(127, 0, 0, last), 9));
        }
    });
    ns.nft("add element inet sets plain { 198.18.1.4, 198.18.1.5 }\n");
    let text = await_sets(&ns, &registry, |t| {
        value(t, &set("sets", "seen")) == Some(4.0) && value(t, &set("sets", "plain")) == Some(5.0)
    });
    assert_eq!(must(&text, &set("sets", "ranges")), 3.0, "{text}");
    assert_listed(&text);
}

const READS: &str = "scanner_agent_firewall_reads_total";

#[test]
fn concurrent_scrapes_during_a_slow_read_share_it() {
    testbed::require_root!();
    let ns = Netns::new("fw-flight");
    script(&ns, "iptables -A INPUT -p tcp --dport 22 -j ACCEPT");
    // Every read sleeps 2 s first: all 20 scrapes below arrive during one.
    let registry = registry(
        FirewallCollector::new(&FirewallConfig::default())
            .with_slow_reads_for_tests(Duration::from_secs(2), Duration::from_secs(30)),
    );
    let first = scrape(&ns, &registry);
    assert_eq!(must(&first, READS), 1.0, "{first}");
    let barrier = Arc::new(Barrier::new(20));
    let scrapes: Vec<_> = (0..20)
        .map(|_| {
            let (registry, barrier) = (Arc::clone(&registry), Arc::clone(&barrier));
            ns.spawn(move || {
                barrier.wait();
                encode_text(&registry)
            })
        })
        .collect();
    for scrape in scrapes {
        let text = scrape.join().unwrap();
        assert_eq!(must(&text, READS), 2.0, "one read for all 20:\n{text}");
        assert_eq!(must(&text, "iptables_scrape_success"), 1.0, "{text}");
        assert!(
            text.contains("rule=\"-p tcp -m tcp --dport 22 -j ACCEPT\""),
            "{text}"
        );
    }
    let after = scrape(&ns, &registry);
    assert_eq!(must(&after, READS), 3.0, "{after}");
}

#[test]
fn a_read_past_its_deadline_fails_the_scrape_instead_of_hanging() {
    testbed::require_root!();
    let ns = Netns::new("fw-deadline");
    script(&ns, "iptables -A INPUT -p tcp --dport 22 -j ACCEPT");
    let registry = registry(
        FirewallCollector::new(&FirewallConfig::default())
            .with_slow_reads_for_tests(Duration::from_secs(20), Duration::from_millis(500)),
    );
    let started = Instant::now();
    let waiter = {
        let registry = Arc::clone(&registry);
        ns.spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            encode_text(&registry)
        })
    };
    let text = scrape(&ns, &registry);
    let waited = waiter.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for text in [&text, &waited] {
        assert_eq!(must(text, "iptables_scrape_success"), 0.0, "{text}");
        assert_eq!(must(text, "ip6tables_scrape_success"), 0.0, "{text}");
        assert!(!text.contains("iptables_rule_"), "{text}");
    }
    assert_eq!(
        must(&text, READS),
        1.0,
        "the waiter started no read:\n{text}"
    );
}
