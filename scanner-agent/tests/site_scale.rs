//! The daemon as a site runs it: the seed's defaults for workers, queue and
//! rate, more tasks than the XDP program has key slots, a reload that
//! removes half of them mid-run, `kill -9`, and a restart.
mod common;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use common::{
    Lab, agent,
    daemon::{Daemon, PORT, fetch, metric, metric_sum},
    wait_until,
};

const HOSTS: u8 = 24;

fn addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i)
}

/// The truth: each host listens on one port of 20-28, every other one on 30 too.
fn open_ports(i: u8) -> Vec<u16> {
    let mut ports = vec![20 + u16::from(i % 9)];
    if i.is_multiple_of(2) {
        ports.push(30);
    }
    ports
}

fn truth(hosts: impl Iterator<Item = u8>) -> BTreeSet<String> {
    hosts
        .flat_map(|i| {
            open_ports(i).into_iter().map(move |p| {
                format!(
                    "open_port_status{{ip=\"{}\",port=\"{p}\",protocol=\"tcp\"}}",
                    addr(i)
                )
            })
        })
        .collect()
}

/// The `open_port_status` series reading 1.
fn shown_open(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| l.starts_with("open_port_status{") && l.ends_with(" 1"))
        .map(|l| l.trim_end_matches(" 1").to_owned())
        .collect()
}

/// The seed's defaults (worker_count 10, task_queue_size 1000, min_rate
/// 1000, no max_rate), one task per host, ten-odd ports.
fn config(hosts: impl Iterator<Item = u8>, interval: u32, extra: &str) -> String {
    let targets: String = hosts.map(|i| format!("  - {}\n", addr(i))).collect();
    format!(
        "server:\n  port: {PORT}\nscanning:\n  interval: {interval}\n  max_cidr_size: 32\n  \
         port_range: \"20-30\"\n{extra}targets:\n{targets}"
    )
}

/// SYN probes (not the RSTs that end half-open connections) that reached
/// the removed hosts.
fn probes_to_removed(lab: &Lab) -> u64 {
    lab.target.nft_counter("site", "removed")
}

#[test]
fn seed_defaults_scan_a_site_and_a_reload_stops_probing_removed_targets() {
    testbed::require_root!();
    let addrs: Vec<Ipv4Addr> = (0..HOSTS).map(addr).collect();
    let lab = Lab::new(&addrs, 1500);
    let endpoints: Vec<(Ipv4Addr, u16)> = (0..HOSTS)
        .flat_map(|i| open_ports(i).into_iter().map(move |p| (addr(i), p)))
        .collect();
    let _listeners = lab.target.listen(&endpoints);
    let (kept, removed) = (0..HOSTS / 2, HOSTS / 2..HOSTS);
    let removed_set = removed
        .clone()
        .map(|i| addr(i).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // Probes to port 29 of the removed hosts go unanswered, so their scans
    // retry and are still running when the reload comes.
    lab.target.nft(&format!(
        "table inet site {{\n counter removed {{}}\n chain input {{\n  type filter hook input priority 0;\n  \
         ip daddr {{ {removed_set} }} tcp flags & (syn | ack) == syn counter name \"removed\"\n  \
         ip daddr {{ {removed_set} }} tcp dport 29 drop\n }}\n}}\n"
    ));
    let daemon = Daemon::start(agent(), &lab, "site-scale", &config(0..HOSTS, 5, ""));
    let state_path = daemon.dir.join("state.json");

    // Whoever reads the state file at any moment finds a whole one.
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (stop, path) = (Arc::clone(&stop), state_path.clone());
        thread::spawn(move || {
            let (mut reads, mut damaged) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    reads += 1;
                    if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                        damaged.push(text);
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            (reads, damaged)
        })
    };

    // Every one of the 24 tasks succeeds, although only 8 can scan at once.
    let scanned = |body: &str, i: u8| {
        metric(
            body,
            &format!(
                "scans_successful_total{{target=\"{}/32\",port_range=\"20-30\",protocol=\"tcp\"}}",
                addr(i)
            ),
        )
        .is_some_and(|n| n >= 1.0)
    };
    let mut body = String::new();
    let all_done = wait_until(Duration::from_secs(90), || {
        body = fetch(&lab, PORT, "/metrics", "");
        (0..HOSTS).all(|i| scanned(&body, i))
    });
    assert!(all_done, "not every task succeeded:\n{body}");
    assert_eq!(metric_sum(&body, "scans_failed_total"), 0.0, "{body}");
    assert_eq!(shown_open(&body), truth(0..HOSTS), "{body}");
    assert!(metric(&body, "task_queue_size").is_some_and(|n| n >= 0.0));

    // Reload without the second half while its scans are queued and running.
    let loaded_at = metric(
        &body,
        "scanner_agent_config_last_reload_success_timestamp_seconds",
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1100));
    daemon.reload(&config(kept.clone(), 5, ""));
    let reloaded = wait_until(Duration::from_secs(40), || {
        body = fetch(&lab, PORT, "/metrics", "");
        metric(
            &body,
            "scanner_agent_config_last_reload_success_timestamp_seconds",
        )
        .is_some_and(|t| t > loaded_at)
    });
    assert!(reloaded, "the reload was not reported:\n{body}");
    let at_reload = probes_to_removed(&lab);
    assert!(at_reload > 0, "the removed hosts were scanned before");
    thread::sleep(Duration::from_secs(3));
    body = fetch(&lab, PORT, "/metrics", "");
    assert_eq!(
        probes_to_removed(&lab),
        at_reload,
        "probes reached removed targets after the reload was reported"
    );
    assert_eq!(metric_sum(&body, "scans_failed_total"), 0.0, "{body}");
    assert_eq!(shown_open(&body), truth(kept.clone()), "{body}");
    assert_eq!(
        metric(&body, "scanner_agent_config_last_reload_successful"),
        Some(1.0)
    );

    // kill -9 while scans of the kept half go on (every 5 s).
    let dir = daemon.kill();
    stop.store(true, Ordering::Relaxed);
    let (reads, damaged) = checker.join().unwrap();
    assert!(reads > 100, "the state file was read {reads} times");
    assert!(
        damaged.is_empty(),
        "a reader found a partial state file: {damaged:?}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let targets: BTreeSet<&str> = saved["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = kept.clone().map(|i| format!("{}/32", addr(i))).collect();
    assert_eq!(
        targets,
        expected.iter().map(String::as_str).collect(),
        "the state holds exactly the kept tasks"
    );

    // A restart shows what was there before, within the series cap.
    std::fs::write(
        dir.join("config.yaml"),
        config(kept.clone(), 3600, "  max_open_port_series: 5\n"),
    )
    .unwrap();
    let _restarted = Daemon::spawn(agent(), &lab, dir, &[]);
    let up = wait_until(Duration::from_secs(20), || {
        body = fetch(&lab, PORT, "/metrics", "");
        body.contains("open_ports_total{")
    });
    assert!(up, "the restarted daemon did not answer:\n{body}");
    let series = body
        .lines()
        .filter(|l| l.starts_with("open_port_status{"))
        .count();
    assert_eq!(
        series, 5,
        "max_open_port_series holds after a restart:\n{body}"
    );
    assert_eq!(
        metric(
            &body,
            &format!("nmap_host_up_count{{target=\"{}/32\"}}", addr(0))
        ),
        Some(1.0),
        "hosts up are restored:\n{body}"
    );
    assert!(
        metric(
            &body,
            &format!(
                "last_scan_timestamp_seconds{{target=\"{}/32\",port_range=\"20-30\",protocol=\"tcp\"}}",
                addr(0)
            )
        )
        .is_some_and(|t| t > 1.0e9),
        "the last scan time is restored:\n{body}"
    );
    assert_eq!(
        metric(&body, &format!("open_ports_total{{ip=\"{}\"}}", addr(0))),
        Some(2.0),
        "{body}"
    );
}
