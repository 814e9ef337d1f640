//! A fleet splits the work in config (`scanning.shard`): three daemons, each
//! in its own scanner namespace with its own veth (and XDP program) into
//! one target namespace, share one target list with no coordination. The
//! union of what they find is the truth, with no overlap, and together
//! they send each first probe exactly once.
mod common;

use std::{collections::BTreeSet, net::Ipv4Addr};

use common::{
    Fleet, agent,
    daemon::{Daemon, FastScan, PORT, await_body, fetch, metric, metric_sum},
};

const AGENTS: u8 = 3;
/// Hosts 198.18.0.2-9, ports 20-299: 2240 probes to split.
const HOSTS: u8 = 8;
const PORTS: (u16, u16) = (20, 299);

fn host(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 2 + i)
}

/// The `open_port_status` series of an exposition, as (ip, port).
fn open_series(body: &str) -> BTreeSet<(String, u16)> {
    body.lines()
        .filter_map(|l| l.strip_prefix("open_port_status{ip=\""))
        .filter(|l| l.ends_with(" 1"))
        .map(|l| {
            let (ip, rest) = l.split_once('"').unwrap();
            let port = rest
                .strip_prefix(",port=\"")
                .and_then(|r| r.split('"').next())
                .unwrap()
                .parse()
                .unwrap();
            // The seed's labels and nothing else, so `sum by` recombines shards.
            assert!(rest.ends_with("\",protocol=\"tcp\"} 1"), "{l}");
            (ip.to_owned(), port)
        })
        .collect()
}

#[test]
fn three_agents_split_one_target_list_with_no_overlap() {
    testbed::require_root!();
    let hosts: Vec<Ipv4Addr> = (0..HOSTS).map(host).collect();
    let fleet = Fleet::new(AGENTS, &hosts);
    let truth: BTreeSet<(Ipv4Addr, u16)> = (0..HOSTS)
        .flat_map(|i| {
            [
                (host(i), 22 + u16::from(i)),
                (host(i), 200 + 7 * u16::from(i)),
            ]
        })
        .chain([(host(0), 80), (host(3), 299), (host(7), 20)])
        .collect();
    let _listeners = fleet
        .target
        .listen(&truth.iter().copied().collect::<Vec<_>>());

    let daemons: Vec<Daemon> = (0..AGENTS)
        .map(|i| {
            // Configs differ (the port each serves on is the same, but one
            // agent has a rate of its own): the shards still agree.
            let mut config = FastScan::new(PORT)
                .interval(3600)
                .ports(&format!("{}-{}", PORTS.0, PORTS.1))
                .targets(&["198.18.0.2-198.18.0.9"])
                .scanning(&format!("shard: \"{}/{AGENTS}\"", i + 1));
            if i == 1 {
                config = config.scanning("max_rate: 20000");
            }
            Daemon::start(
                agent(),
                &fleet.scanners[usize::from(i)],
                &format!("fleet-{i}"),
                &config.to_string(),
            )
        })
        .collect();

    let tasks = |body: &str| metric_sum(body, "scans_successful_total{");
    let mut found: Vec<BTreeSet<(String, u16)>> = Vec::new();
    let mut first_probes = 0.0;
    for (i, ns) in fleet.scanners.iter().enumerate() {
        // 198.18.0.2-9 is three tasks: .2/31, .4/30 and .8/31.
        let body = await_body(
            || fetch(ns, PORT, "/metrics", ""),
            |b| tasks(b) >= 3.0,
            &format!("agent {i} did not finish its scans"),
        );
        assert_eq!(tasks(&body), 3.0, "agent {i} scanned a task twice: {body}");
        first_probes += metric(&body, "scanner_agent_probes_sent_total").unwrap()
            - metric(&body, "scanner_agent_probe_retries_total").unwrap_or(0.0);
        found.push(open_series(&body));
    }
    drop(daemons);

    let union: BTreeSet<(String, u16)> = found.iter().flatten().cloned().collect();
    let expected: BTreeSet<(String, u16)> =
        truth.iter().map(|(a, p)| (a.to_string(), *p)).collect();
    assert_eq!(union, expected, "the union of the shards is not the truth");
    assert_eq!(
        found.iter().map(BTreeSet::len).sum::<usize>(),
        expected.len(),
        "shards overlap: {found:?}"
    );
    assert!(
        found.iter().filter(|f| !f.is_empty()).count() >= 2,
        "the work was not split: {found:?}"
    );
    let all = f64::from(HOSTS) * f64::from(PORTS.1 - PORTS.0 + 1);
    assert_eq!(first_probes, all, "first probes sent by the fleet");
}
