//! Gentle with transfers, on the namespace testbed: a bulk transfer
//! (iperf3) started during a scan makes the scan drop to `min_rate` while
//! it runs, the time is counted, the scan returns to its rate afterwards,
//! and its results are exact.
mod common;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{
    Lab, agent,
    daemon::{Daemon, PORT, await_body, bearer, fetch, metric},
};

const TOKEN: &str = "gentle-test-token";
const OPEN: [u16; 5] = [1111, 5555, 9999, 15000, 19999];
/// iperf3's port, outside the scanned range.
const IPERF_PORT: &str = "40000";

/// A 20 Mbit/s link as far as the agent knows: 5% of it is about 2,150
/// probes per second, and other traffic above 14 Mbit/s makes it yield to
/// `min_rate` (200). 20,000 ports take about 10 s without a transfer and
/// about 12.5 s with the 3 s one: the 11 s task timeout only holds because
/// time yielded does not count against it.
fn config() -> String {
    format!(
        "server:
  port: {PORT}
scanning:
  interval: 3600
  timeout: 11
  port_range: \"1-20000\"
  min_rate: 200
  max_link_share: 0.05
  yield_above: 0.7
  link_speed_mbps: 20
  initial_rtt_timeout: 100
  max_rtt_timeout: 200
auth:
  bearer_tokens: [{TOKEN}]
targets:
  - 198.18.0.2/32
"
    )
}

fn probe_rate(body: &str) -> f64 {
    metric(
        body,
        "scanner_agent_link_probe_rate_pps{interface=\"veth-scan\"}",
    )
    .unwrap_or(0.0)
}

fn utilisation(body: &str, direction: &str) -> f64 {
    metric(
        body,
        &format!(
            "scanner_agent_link_utilisation{{interface=\"veth-scan\",direction=\"{direction}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn yielded(body: &str) -> f64 {
    metric(body, "scanner_agent_scan_yielded_seconds_total").unwrap_or(0.0)
}

/// Kills a child process on drop (a failed assertion leaves no iperf3).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_transfer_during_a_scan_makes_it_yield_and_the_results_stay_exact() {
    testbed::require_root!();
    let target = Ipv4Addr::new(198, 18, 0, 2);
    let lab = Lab::new(&[target], 1500);
    let endpoints: Vec<(Ipv4Addr, u16)> = OPEN.iter().map(|&p| (target, p)).collect();
    let _listeners = lab.target.listen(&endpoints);
    let _server = Reaped(
        lab.target
            .command("iperf3")
            .args(["-s", "-1", "-B", "198.18.0.2", "-p", IPERF_PORT])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 (`cargo xtask test` installs it)"),
    );
    let daemon = Daemon::start(agent(), &lab, "gentle", &config());
    let metrics = || fetch(&lab, PORT, "/metrics", &bearer(TOKEN));
    // The scan runs at its share of the link (it starts at min_rate and
    // climbs to the cap).
    await_body(
        metrics,
        |b| probe_rate(b) > 1500.0,
        "the scan never reached its share of the link",
    );
    let before = yielded(&metrics());
    let started = Instant::now();
    let client = lab
        .scanner
        .command("iperf3")
        .args(["-c", "198.18.0.2", "-p", IPERF_PORT, "-b", "50M", "-t", "3"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut client = Reaped(client);
    // While the transfer runs: its share seen, and the scan at min_rate.
    let (mut busiest, mut slowest_while_busy) = (0.0_f64, f64::MAX);
    while client.0.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(10) {
        let body = metrics();
        let share = utilisation(&body, "tx");
        busiest = busiest.max(share);
        if share > 0.7 && started.elapsed() > Duration::from_secs(1) {
            slowest_while_busy = slowest_while_busy.min(probe_rate(&body));
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(client.0.wait().unwrap().success(), "iperf3 failed");
    assert!(busiest > 0.7, "the transfer was not seen: {busiest}");
    assert!(
        slowest_while_busy <= 400.0,
        "the scan did not drop to min_rate (200) during the transfer: {slowest_while_busy} probes/s\n{}",
        metrics()
    );
    // After it, the scan returns to its rate.
    await_body(
        metrics,
        |b| probe_rate(b) > 1500.0,
        "the scan did not return to its rate after the transfer",
    );
    let body = await_body(
        metrics,
        |b| {
            metric(
                b,
                "scans_successful_total{target=\"198.18.0.2/32\",port_range=\"1-20000\",protocol=\"tcp\"}",
            ) == Some(1.0)
        },
        "the scan did not finish",
    );
    let spent = yielded(&body) - before;
    assert!(
        (2.0..=5.0).contains(&spent),
        "about the transfer's 3 s were counted as yielded: {spent}"
    );
    let found: BTreeSet<u16> = body
        .lines()
        .filter(|l| l.starts_with("open_port_status{") && l.ends_with(" 1"))
        .map(|l| {
            let port = l.split("port=\"").nth(1).unwrap();
            port[..port.find('"').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(found, BTreeSet::from(OPEN), "{body}");
    let healthz = fetch(&lab, PORT, "/healthz", &bearer(TOKEN));
    assert!(healthz.contains("\"yielding\":false"), "{healthz}");
    drop(daemon);
}
