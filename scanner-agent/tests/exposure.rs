//! The exposure policy on the namespace testbed: target groups with
//! `allow` and `require` lists, verdicts that follow the listeners, a
//! reload that changes the policy without a rescan, verdicts that survive a
//! restart, and a host that answers on every port.
mod common;

use std::{net::Ipv4Addr, thread, time::Duration};

use scanner_agent::daemon::metrics::HostView;

use common::{
    Lab, agent,
    daemon::{Daemon, PORT, await_body, bearer, fetch, metric},
    wait_until,
};

const DATA: &str = "198.18.0.0/29";
const WEB: &str = "198.18.0.8/29";
const TOKEN: &str = "exposure-test-token";
/// The plain target's open port: shown, never judged.
const PLAIN_OPEN: &str = "open_port_status{ip=\"198.18.0.25\",port=\"22\",protocol=\"tcp\"} 1";

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

/// Two groups with a policy, one without (a host answering on every port),
/// and a plain target; `data_interval` and `data_allow` vary by phase.
fn config(data_interval: u64, data_allow: &str) -> String {
    format!(
        "server:
  port: {PORT}
scanning:
  interval: 2
  port_range: \"20-30\"
  min_rate: 5000
  initial_rtt_timeout: 100
  max_rtt_timeout: 200
auth:
  bearer_tokens: [{TOKEN}]
targets:
  - 198.18.0.24/30
  - name: data
    ranges: [{DATA}]
    port_range: \"20-30,443\"
    interval: {data_interval}
    allow: {{tcp: \"{data_allow}\"}}
    require: {{tcp: \"443\"}}
  - name: web
    target: {WEB}
    ports: \"20-30,80\"
    allow: {{tcp: \"20-30\"}}
    require: {{tcp: \"80\"}}
  - name: tarpit
    ranges: [198.18.0.20/32]
    port_range: \"1000-1199\"
"
    )
}

fn verdict(family: &str, name: &str, ip: u8, port: u16) -> String {
    format!("{family}{{name=\"{name}\",ip=\"198.18.0.{ip}\",port=\"{port}\",protocol=\"tcp\"}}")
}

/// The (group, ip, port) of every sample of `family` that reads 1.
fn samples(body: &str, family: &str) -> Vec<String> {
    let mut found: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.ends_with(" 1"))
        .map(|l| l.trim_end_matches(" 1").to_owned())
        .collect();
    found.sort();
    found
}

fn data_scans(body: &str) -> Option<f64> {
    metric(
        body,
        &format!(
            "scans_successful_total{{target=\"{DATA}\",port_range=\"20-30,443\",protocol=\"tcp\"}}"
        ),
    )
}

#[test]
fn verdicts_follow_listeners_policy_reloads_and_restarts() {
    testbed::require_root!();
    let lab = Lab::new(&[v4(2), v4(3), v4(9), v4(10), v4(20), v4(25)], 1500);
    let mut listeners = lab.target.listen(&[
        // data: 22 allowed, 443 required, 25 and 23 unexpected.
        (v4(2), 22),
        (v4(2), 25),
        (v4(2), 443),
        (v4(3), 23),
        (v4(3), 443),
        // web: 21 allowed, 80 required on both hosts, nothing unexpected.
        (v4(9), 21),
        (v4(9), 80),
        (v4(10), 80),
        // A plain target: no group, no verdicts.
        (v4(25), 22),
    ]);
    // The tarpit's one real listener, every other port redirected to it.
    let _tarpit = lab.target.listen_deep(&[5000]).unwrap();
    lab.target.nft(
        "table ip tarpit {
           chain pre {
             type nat hook prerouting priority -100;
             ip daddr 198.18.0.20 tcp dport != 5000 redirect to :5000
           }
         }",
    );
    let daemon = Daemon::start(agent(), &lab, "exposure", &config(2, "22"));
    let unexpected = vec![
        verdict("exposure_unexpected_open", "data", 2, 25),
        verdict("exposure_unexpected_open", "data", 3, 23),
    ];
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", &bearer(TOKEN)),
        |b| {
            samples(b, "exposure_unexpected_open") == unexpected
                && metric(b, "exposure_hosts_up{name=\"web\"}") == Some(2.0)
                && metric(b, "host_answers_every_port{ip=\"198.18.0.20\"}") == Some(1.0)
                && b.contains(PLAIN_OPEN)
        },
        "the verdicts never equalled the truth",
    );
    assert!(
        samples(&body, "exposure_required_missing").is_empty(),
        "{body}"
    );
    for (family, name, value) in [
        ("exposure_unexpected_open_ports", "data", 2.0),
        ("exposure_unexpected_open_ports", "web", 0.0),
        ("exposure_required_missing_ports", "data", 0.0),
        ("exposure_required_missing_ports", "web", 0.0),
        ("exposure_hosts_up", "data", 2.0),
    ] {
        assert_eq!(
            metric(&body, &format!("{family}{{name=\"{name}\"}}")),
            Some(value),
            "{family} {name}: {body}"
        );
    }
    // A group without a policy, and plain targets, get no verdicts.
    assert!(!body.contains("name=\"tarpit\""), "{body}");
    // The every-port host: flagged, counted, and no per-port flood.
    assert!(
        !body.contains("open_port_status{ip=\"198.18.0.20\""),
        "{body}"
    );
    assert_eq!(
        metric(&body, "open_ports_total{ip=\"198.18.0.20\"}"),
        Some(200.0),
        "{body}"
    );

    // /query answers say what the policy makes of each open port.
    let enqueued = fetch(
        &lab,
        PORT,
        "/query?ip=198.18.0.2&ports=20-30,443",
        &bearer(TOKEN),
    );
    let id = enqueued
        .split("\"task_id\":")
        .nth(1)
        .and_then(|r| r.trim_end_matches('}').parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{enqueued}"));
    let answer = await_body(
        || fetch(&lab, PORT, &format!("/query/{id}"), &bearer(TOKEN)),
        |b| b.contains("\"state\":\"done\""),
        "the query never finished",
    );
    for (port, verdict) in [(22, "allowed"), (25, "unexpected"), (443, "required")] {
        let result = format!(
            "{{\"exposure\":\"{verdict}\",\"group\":\"data\",\"ip\":\"198.18.0.2\",\"port\":{port},"
        );
        assert!(answer.contains(&result), "{result} in {answer}");
    }

    // A required service goes down, then comes back.
    let down = verdict("exposure_required_missing", "data", 3, 443);
    let index = 4;
    let closed = listeners.remove(index);
    assert_eq!(closed.local_addr().unwrap().to_string(), "198.18.0.3:443");
    drop(closed);
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", &bearer(TOKEN)),
        |b| samples(b, "exposure_required_missing") == [down.clone()],
        "a closed required port was not reported missing",
    );
    assert_eq!(
        metric(&body, "exposure_required_missing_ports{name=\"data\"}"),
        Some(1.0)
    );
    listeners.extend(lab.target.listen(&[(v4(3), 443)]));
    await_body(
        || fetch(&lab, PORT, "/metrics", &bearer(TOKEN)),
        |b| samples(b, "exposure_required_missing").is_empty(),
        "a reopened required port stayed missing",
    );

    // Slow the data group down (the scans already due still run: wait until
    // its count stands still), then allow port 25: its verdict clears with
    // no scan in between.
    daemon.reload(&config(3600, "22"));
    let mut scans = None;
    let settled = wait_until(Duration::from_secs(60), || {
        let before = scans;
        thread::sleep(Duration::from_secs(5));
        scans = data_scans(&fetch(&lab, PORT, "/metrics", &bearer(TOKEN)));
        scans.is_some() && scans == before
    });
    assert!(settled, "the data group kept being scanned: {scans:?}");
    daemon.reload(&config(3600, "22,25"));
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", &bearer(TOKEN)),
        |b| samples(b, "exposure_unexpected_open") == [unexpected[1].clone()],
        "allowing port 25 did not clear its verdict",
    );
    assert_eq!(data_scans(&body), scans, "cleared without a rescan");

    // kill -9 and start again on the same state file: the same verdicts,
    // before the data group is scanned again.
    let dir = daemon.kill();
    let _daemon = Daemon::spawn(agent(), &lab, dir, &[]);
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", &bearer(TOKEN)),
        |b| samples(b, "exposure_unexpected_open") == [unexpected[1].clone()],
        "the verdicts did not survive a restart",
    );
    assert_eq!(
        data_scans(&body),
        Some(0.0),
        "restored, not rescanned: {body}"
    );
    assert_eq!(
        metric(&body, "exposure_hosts_up{name=\"data\"}"),
        Some(2.0),
        "{body}"
    );
    assert!(samples(&body, "exposure_required_missing").is_empty());

    // The tarpit goes: the next scan of its 200 ports clears the flag and
    // its count (nothing listens there any more).
    lab.target.nft("delete table ip tarpit");
    await_body(
        || fetch(&lab, PORT, "/metrics", &bearer(TOKEN)),
        |b| {
            !b.contains("host_answers_every_port{")
                && !b.contains("open_ports_total{ip=\"198.18.0.20\"}")
        },
        "a host that no longer answers everywhere stayed flagged",
    );
}

/// The seed's form of `targets` exports the seed's families with the seed's
/// label names, and no verdicts (the agent's own `scanner_agent_*` and the
/// firewall counters aside).
#[test]
fn plain_targets_export_the_seeds_families_and_no_verdicts() {
    testbed::require_root!();
    const PORT: u16 = 19943;
    let lab = Lab::new(&[v4(2)], 1500);
    let _listeners = lab.target.listen(&[(v4(2), 22)]);
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "exposure-seed",
        &common::daemon::FastScan::new(PORT).to_string(),
    );
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |b| b.contains("open_port_status{ip=\"198.18.0.2\",port=\"22\",protocol=\"tcp\"} 1"),
        "no scan result",
    );
    let task = ["target", "port_range", "protocol"].as_slice();
    let seed: [(&str, &[&str]); 10] = [
        ("open_port_status", &["ip", "port", "protocol"]),
        ("open_ports_total", &["ip"]),
        ("task_queue_size", &[]),
        ("nmap_scan_timeouts_total", task),
        ("nmap_host_up_count", &["target"]),
        ("nmap_host_down_count", &["target"]),
        ("scans_successful_total", task),
        (
            "scans_failed_total",
            &["target", "port_range", "protocol", "error_type"],
        ),
        ("last_scan_timestamp_seconds", task),
        ("port_state_changes_total", &["target", "change_type"]),
    ];
    let mut exported = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (family, rest) = line.split_once(['{', ' ']).unwrap();
        // The agent's own families, the firewall counters and the host
        // view (every agent's view of its own host) are not the scanner's.
        let ours = ["scanner_agent_", "iptables_", "ip6tables_", "nftables_"];
        if ours.iter().any(|p| family.starts_with(p))
            || HostView::FAMILIES.iter().any(|f| family.starts_with(f))
        {
            continue;
        }
        let labels: Vec<&str> = if line.contains('{') {
            rest.split('}')
                .next()
                .unwrap()
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .collect()
        } else {
            Vec::new()
        };
        exported.insert(family.to_owned(), labels);
    }
    let want: std::collections::BTreeMap<String, Vec<&str>> = seed
        .iter()
        .map(|(f, l)| ((*f).to_owned(), l.to_vec()))
        .collect();
    assert_eq!(exported, want, "{body}");
}
