//! Several scans in flight share one XDP program: each gets its own key
//! slot, and replies reach only the scan they answer.
mod common;

use std::{collections::BTreeSet, net::IpAddr, thread, time::Duration};

use common::Lab;
use scanner_agent::scan::{
    self, Attachment, ScanOptions,
    capture::hub::Hub,
    engine::{
        Budget,
        tuning::{Rate, Tuning},
    },
    probes::{Protocol, Shard},
    results::PortState,
    route,
    targets::{PortList, TargetSet, TargetSpec},
};

fn options(target: &str) -> ScanOptions {
    ScanOptions {
        targets: TargetSpec::new(vec![target.into()]),
        ports: PortList::parse("1-3000").unwrap(),
        protocols: vec![Protocol::Tcp],
        tuning: Tuning {
            rate: Rate::Fixed(20_000),
            wait: Some(Duration::from_millis(500)),
            ..Tuning::default()
        },
        interface: None,
        host_discovery: false,
        shard: Shard::WHOLE,
        seed: None,
        states: vec![PortState::Open],
        deadline: None,
        cancel: None,
        budget: None,
        link: Default::default(),
        xdp_mode: Default::default(),
    }
}

/// A testbed whose target answers on 198.18.0.2 and 198.18.0.3.
fn two_targets() -> Lab {
    Lab::new(
        &[
            "198.18.0.2".parse::<IpAddr>().unwrap(),
            "198.18.0.3".parse().unwrap(),
        ],
        1500,
    )
}

/// Runs a scan of each target at once through one hub; returns each scan's
/// open (address, port) pairs and the wall time of the whole.
fn scan_together(
    lab: &Lab,
    targets: [&'static str; 2],
    budget: Option<Budget>,
) -> (Vec<BTreeSet<(String, u16)>>, Duration) {
    lab.scanner.run(move || {
        let set = TargetSet::parse(&targets).unwrap();
        let route = route::lookup(set.range_starts(), None).unwrap();
        let hub = Hub::start(
            &route.interface,
            route::probe_ports().unwrap(),
            Default::default(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let found = thread::scope(|s| {
            let scans: Vec<_> = targets
                .map(|t| {
                    let (hub, route, budget) = (&hub, &route, budget.clone());
                    s.spawn(move || {
                        let opts = ScanOptions {
                            budget,
                            ..options(t)
                        };
                        scan::run(&opts, Attachment::Shared { hub, route }).unwrap()
                    })
                })
                .into_iter()
                .collect();
            scans
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap()
                        .results
                        .results()
                        .iter()
                        .map(|r| (r.ip.to_string(), r.port))
                        .collect()
                })
                .collect()
        });
        (found, started.elapsed())
    })
}

#[test]
fn a_shared_budget_caps_the_rate_of_all_scans_together() {
    testbed::require_root!();
    let lab = two_targets();
    let _l = lab.target.listen(&[
        ("198.18.0.2".parse::<IpAddr>().unwrap(), 1000),
        ("198.18.0.3".parse().unwrap(), 2000),
    ]);
    // 2 x 3000 probes at 20,000 pps each, but 4,000 pps for both together.
    let budget = Budget::new(4000.0);
    let (found, took) = scan_together(&lab, ["198.18.0.2", "198.18.0.3"], Some(budget));
    assert_eq!(
        found[0],
        [("198.18.0.2".to_string(), 1000)].into_iter().collect()
    );
    assert_eq!(
        found[1],
        [("198.18.0.3".to_string(), 2000)].into_iter().collect()
    );
    // 6000 probes at 4000 pps cannot take less than 1.5 s (a short first burst aside).
    assert!(
        took >= Duration::from_millis(1400),
        "the budget was exceeded: {took:?}"
    );
}

#[test]
fn two_scans_share_one_program() {
    testbed::require_root!();
    let lab = two_targets();
    let _l = lab.target.listen(&[
        ("198.18.0.2".parse::<IpAddr>().unwrap(), 22),
        ("198.18.0.2".parse().unwrap(), 2999),
        ("198.18.0.3".parse().unwrap(), 80),
    ]);
    let (found, _) = scan_together(&lab, ["198.18.0.2", "198.18.0.3"], None);
    assert_eq!(
        found[0],
        [
            ("198.18.0.2".to_string(), 22),
            ("198.18.0.2".to_string(), 2999)
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        found[1],
        [("198.18.0.3".to_string(), 80)].into_iter().collect()
    );
}
