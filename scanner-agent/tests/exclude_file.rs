//! Exclude files (zmap's blocklist format): `scan --exclude-file` and the
//! daemon's `scanning.exclude_file`, reread on SIGHUP. No probe reaches an
//! excluded address: an nftables counter in the target namespace says so.
mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{
    Lab, agent,
    daemon::{Daemon, FastScan, PORT, await_body, fetch, metric},
};

fn t(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

/// Counters of every packet to each of 198.18.0.2-5, in the target.
fn count_packets(lab: &Lab) {
    let mut rules = String::new();
    let mut counters = String::new();
    for i in 2..=5 {
        counters.push_str(&format!(" counter to{i} {{}}\n"));
        rules.push_str(&format!("  ip daddr 198.18.0.{i} counter name to{i}\n"));
    }
    lab.target.nft(&format!(
        "table inet excl {{\n{counters} chain input {{\n  type filter hook input priority -10;\n{rules} }}\n}}\n"
    ));
}

fn packets_to(lab: &Lab, last: u8) -> u64 {
    lab.target.nft_counter("excl", &format!("to{last}"))
}

#[test]
fn scan_sends_nothing_to_the_excluded_addresses() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2), t(3), t(4), t(5)], 1500);
    let _listeners = lab
        .target
        .listen(&[(t(2), 22), (t(3), 22), (t(4), 22), (t(5), 22)]);
    count_packets(&lab);
    let file =
        std::env::temp_dir().join(format!("scanner-agent-exclude-{}.txt", std::process::id()));
    std::fs::write(
        &file,
        "# zmap-style blocklist\n198.18.0.3    # one address\n\n198.18.0.4-198.18.0.4\n",
    )
    .unwrap();
    let out = lab
        .scanner
        .command(agent())
        .args(["scan", "--format", "ndjson", "-p", "20-30"])
        .args([
            "--initial-rtt-timeout",
            "100",
            "--max-rtt-timeout",
            "200",
            "--wait",
            "0.3",
        ])
        .arg("--exclude-file")
        .arg(&file)
        .arg("198.18.0.2-198.18.0.5")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ips: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ip"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ips, ["198.18.0.2", "198.18.0.5"], "{stderr}");
    assert!(packets_to(&lab, 2) > 0 && packets_to(&lab, 5) > 0);
    assert_eq!(
        (packets_to(&lab, 3), packets_to(&lab, 4)),
        (0, 0),
        "probes reached excluded hosts"
    );
}

#[test]
fn the_daemon_rereads_its_exclude_file_on_sighup_and_keeps_it_when_bad() {
    testbed::require_root!();
    let lab = Lab::new(&[t(2), t(3)], 1500);
    let _listeners = lab.target.listen(&[(t(2), 22), (t(3), 22)]);
    count_packets(&lab);
    let config = FastScan::new(PORT)
        .targets(&["198.18.0.2-198.18.0.3"])
        .scanning("exclude_file: exclude.txt")
        .scanning("max_cidr_size: 32")
        .to_string();
    let daemon = Daemon::start_with(
        agent(),
        &lab,
        "exclude-file",
        &config,
        &[("exclude.txt", "# never scan .3\n198.18.0.3\n")],
    );
    let open = |last: u8| {
        format!("open_port_status{{ip=\"198.18.0.{last}\",port=\"22\",protocol=\"tcp\"}}")
    };
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |b| metric(b, &open(2)) == Some(1.0),
        "198.18.0.2 was not scanned",
    );
    assert_eq!(metric(&body, &open(3)), None, "{body}");
    assert_eq!(packets_to(&lab, 3), 0, "a probe reached the excluded host");

    // The file changes: .2 is excluded now, .3 is not.
    std::fs::write(daemon.dir().join("exclude.txt"), "198.18.0.2\n").unwrap();
    daemon.reload(&config);
    await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |b| metric(b, &open(3)) == Some(1.0) && metric(b, &open(2)).is_none(),
        "the reload did not apply the changed exclude file",
    );
    let before = packets_to(&lab, 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        packets_to(&lab, 2),
        before,
        "198.18.0.2 is still probed after the reload"
    );

    // A bad line is rejected whole: the running configuration stays.
    std::fs::write(
        daemon.dir().join("exclude.txt"),
        "198.18.0.2\nnot-an-address\n",
    )
    .unwrap();
    daemon.reload(&config);
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |b| metric(b, "scanner_agent_config_last_reload_successful") == Some(0.0),
        "the bad exclude file was accepted",
    );
    assert_eq!(metric(&body, &open(3)), Some(1.0));
    assert_eq!(
        packets_to(&lab, 2),
        before,
        "the bad file changed what is scanned"
    );
    let log = daemon.stderr();
    assert!(
        log.contains("exclude.txt line 2: \\\"not-an-address\\\"")
            || log.contains("exclude.txt line 2: \"not-an-address\""),
        "{log}"
    );
}
