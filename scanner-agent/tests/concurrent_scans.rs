//! Several scans in flight share one XDP program: each gets its own key
//! slot, and replies reach only the scan they answer.
mod common;

use std::{collections::BTreeSet, net::IpAddr, thread, time::Duration};

use common::Lab;
use scanner_agent::{
    capture::hub::Hub,
    engine::tuning::{Rate, Tuning},
    probes::{Protocol, Shard},
    results::PortState,
    route,
    scan::{self, ScanOptions},
    targets::{PortList, TargetSet, TargetSpec},
};

fn options(target: &str) -> ScanOptions {
    ScanOptions {
        targets: TargetSpec::new(vec![target.into()]),
        ports: PortList::parse("1-3000").unwrap(),
        protocols: vec![Protocol::Tcp],
        tuning: Tuning {
            rate: Rate::Fixed(20_000),
            wait: Duration::from_millis(500),
            ..Tuning::default()
        },
        interface: None,
        host_discovery: false,
        shard: Shard::WHOLE,
        seed: None,
        states: vec![PortState::Open],
        deadline: None,
    }
}

#[test]
fn two_scans_share_one_program() {
    let lab = Lab::new(
        &[
            "198.18.0.2".parse::<IpAddr>().unwrap(),
            "198.18.0.3".parse().unwrap(),
        ],
        1500,
    );
    let _l = lab.target.listen(&[
        ("198.18.0.2".parse::<IpAddr>().unwrap(), 22),
        ("198.18.0.2".parse().unwrap(), 2999),
        ("198.18.0.3".parse().unwrap(), 80),
    ]);
    let found = lab.scanner.run(|| {
        let targets = TargetSet::parse(&["198.18.0.2", "198.18.0.3"]).unwrap();
        let route = route::lookup(targets.range_starts(), None).unwrap();
        let hub = Hub::start(&route.interface, route::probe_ports().unwrap()).unwrap();
        thread::scope(|s| {
            let scans: Vec<_> = ["198.18.0.2", "198.18.0.3"]
                .map(|t| {
                    let (hub, route) = (&hub, &route);
                    s.spawn(move || {
                        let opts = options(t);
                        let targets = TargetSet::build(&opts.targets).unwrap();
                        scan::run_with(hub, route, targets, &opts).unwrap()
                    })
                })
                .into_iter()
                .collect();
            scans
                .into_iter()
                .map(|h| {
                    let report = h.join().unwrap();
                    report
                        .results
                        .results()
                        .iter()
                        .map(|r| (r.ip.to_string(), r.port))
                        .collect::<BTreeSet<_>>()
                })
                .collect::<Vec<_>>()
        })
    });
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
