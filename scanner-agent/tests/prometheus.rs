//! A real Prometheus server (the Debian package) scrapes the daemon from
//! inside the scanner namespace; its query API must show the truth of the
//! testbed. `promtool check metrics` lints the exposition.
mod common;

use std::net::Ipv4Addr;

use common::{
    Lab, Prometheus, agent,
    daemon::{Daemon, FastScan, await_body, fetch, request},
};
use serde_json::Value;

const AGENT_PORT: u16 = 19940;
const PROMETHEUS_PORT: u16 = 19941;

/// A Prometheus server in the scanner namespace that scrapes the daemon
/// every second with its bearer token.
fn prometheus(lab: &Lab, dir: &std::path::Path) -> Prometheus {
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: scanner-agent\n    \
         authorization:\n      credentials: tok\n    static_configs:\n      - targets: ['localhost:{AGENT_PORT}']\n"
    );
    Prometheus::start(&lab.scanner, dir, &config, PROMETHEUS_PORT)
}

/// An instant query through Prometheus's HTTP API: each series' labels
/// (without job and instance) and value.
fn query(lab: &Lab, promql: &str) -> Vec<(Value, f64)> {
    let path = format!(
        "/api/v1/query?query={}",
        promql.replace('"', "%22").replace(' ', "%20")
    );
    let Some((200, _, body)) = request(lab, PROMETHEUS_PORT, &path, "") else {
        return Vec::new();
    };
    let answer: Value = serde_json::from_str(&body).unwrap_or_default();
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let mut labels = series["metric"].clone();
            for internal in ["job", "instance"] {
                labels.as_object_mut().map(|l| l.remove(internal));
            }
            let value = series["value"][1].as_str().and_then(|v| v.parse().ok());
            (labels, value.unwrap_or(f64::NAN))
        })
        .collect()
}

/// The value of the one series `promql` selects, as a string, for polling.
fn one(lab: &Lab, promql: &str) -> String {
    match query(lab, promql).as_slice() {
        [(_, v)] => v.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn prometheus_sees_the_truth_and_the_changes() {
    testbed::require_root!();
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let mut listeners = lab.target.listen(&[
        (Ipv4Addr::new(198, 18, 0, 2), 22),
        (Ipv4Addr::new(198, 18, 0, 2), 25),
    ]);
    let daemon = Daemon::start(
        agent(),
        &lab,
        "prometheus",
        &FastScan::new(AGENT_PORT)
            .with("auth:\n  bearer_tokens: [tok]\n")
            .to_string(),
    );
    let _prometheus = prometheus(&lab, &daemon.dir);

    await_body(
        || one(&lab, "open_ports_total{ip=\"198.18.0.2\"}"),
        |v| v == "2",
        "Prometheus never saw both open ports",
    );
    let mut open = query(&lab, "open_port_status");
    open.sort_by_key(|(labels, _)| labels["port"].as_str().map(str::to_owned));
    assert_eq!(
        open,
        [22, 25].map(|port| (
            serde_json::json!({"__name__": "open_port_status", "ip": "198.18.0.2", "port": port.to_string(), "protocol": "tcp"}),
            1.0
        ))
    );
    assert_eq!(one(&lab, "up"), "1");

    // Port 25 closes: Prometheus sees it at 0, then one open_to_closed change.
    listeners.pop();
    await_body(
        || one(&lab, "open_port_status{port=\"25\"}"),
        |v| v == "0",
        "the closed port never read 0",
    );
    let changes = |kind: &str| {
        one(
            &lab,
            &format!("port_state_changes_total{{target=\"198.18.0.0/30\",change_type=\"{kind}\"}}"),
        )
    };
    assert_eq!(changes("open_to_closed"), "1");
    assert_eq!(
        changes("closed_to_open"),
        "2",
        "the first scan found both ports"
    );
    await_body(
        || one(&lab, "open_ports_total{ip=\"198.18.0.2\"}"),
        |v| v == "1",
        "open_ports_total did not drop to 1",
    );
}

/// promtool's lint of the exposition (classic text, as promtool reads it):
/// the only complaints are those the original's metric names force (listed
/// in the README).
#[test]
fn promtool_finds_only_the_seeds_forced_warnings() {
    testbed::require_root!();
    const PORT: u16 = 19942;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _listeners = lab.target.listen(&[(Ipv4Addr::new(198, 18, 0, 2), 22)]);
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "promtool",
        &FastScan::new(PORT)
            .scanning("duration_metrics: true")
            .to_string(),
    );
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |b| b.contains("scan_duration_histogram_seconds_bucket") && b.contains("open_ports_total{"),
        "no scan in /metrics",
    );
    let (_, warnings) = common::promtool_lint(&body);
    assert_eq!(
        warnings,
        [
            "nmap_host_down_count non-histogram and non-summary metrics should not have \"_count\" suffix",
            "nmap_host_up_count non-histogram and non-summary metrics should not have \"_count\" suffix",
            "open_ports_total non-counter metrics should not have \"_total\" suffix",
            "scan_duration_histogram_seconds metric name should not include type 'histogram'",
        ],
        "{body}"
    );
}
