//! `scanner-agent run`: scheduled scans of a namespace testbed, their results
//! served as the OpenPort Exporter's metrics.
mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{
    Lab, agent,
    daemon::{
        Daemon, FastScan, PORT, await_body, await_up, basic, bearer, fetch, get, metric, request,
    },
    wait_until,
};

#[test]
fn scheduled_scans_become_metrics_and_changes_are_counted() {
    testbed::require_root!();
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let mut listeners = lab.target.listen(&[
        (Ipv4Addr::new(198, 18, 0, 2), 22),
        (Ipv4Addr::new(198, 18, 0, 2), 25),
    ]);
    let _daemon = Daemon::start(agent(), &lab, "daemon", &FastScan::new(PORT).to_string());
    let open22 = "open_port_status{ip=\"198.18.0.2\",port=\"22\",protocol=\"tcp\"}";
    let open25 = "open_port_status{ip=\"198.18.0.2\",port=\"25\",protocol=\"tcp\"}";
    let changes = |body: &str, kind: &str| {
        metric(
            body,
            &format!("port_state_changes_total{{target=\"198.18.0.0/30\",change_type=\"{kind}\"}}"),
        )
    };

    let mut body = await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |body| metric(body, open22) == Some(1.0),
        "no scan result in /metrics",
    );
    assert_eq!(metric(&body, open25), Some(1.0));
    assert_eq!(
        metric(&body, "open_ports_total{ip=\"198.18.0.2\"}"),
        Some(2.0)
    );
    assert_eq!(changes(&body, "closed_to_open"), Some(2.0));
    assert_eq!(
        metric(&body, "nmap_host_up_count{target=\"198.18.0.0/30\"}"),
        Some(1.0),
        "{body}"
    );
    assert!(body.contains(
        "scans_successful_total{target=\"198.18.0.0/30\",port_range=\"20-30\",protocol=\"tcp\"}"
    ));
    // Prometheus asks for OpenMetrics and gets it; others get the classic format.
    let (_, head, openmetrics) = request(
        &lab,
        PORT,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n",
    )
    .unwrap();
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(openmetrics.trim_end().ends_with("# EOF"));
    assert!(!body.contains("# EOF") && body.contains("# TYPE scans_successful_total counter"));
    // The agent's own metrics: probes sent (11 ports x 4 addresses at least),
    // XDP mode (SKB mode on a veth by default), no loss.
    assert!(
        metric(&body, "scanner_agent_probes_sent_total").is_some_and(|v| v >= 44.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "scanner_agent_xdp_attached{mode=\"skb\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "scanner_agent_xdp_replies_lost_total"),
        Some(0.0),
        "{body}"
    );
    // Prometheus' build_info convention: the version, the git revision this
    // checkout built (the tests run from one) and the compiler's version.
    let build = body
        .lines()
        .find(|l| l.starts_with("scanner_agent_build_info{"))
        .unwrap_or_else(|| panic!("no scanner_agent_build_info: {body}"));
    let label = |name: &str| {
        let start = build.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        build[start..].split('"').next().unwrap().to_owned()
    };
    assert!(build.ends_with("} 1"), "{build}");
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"), "{build}");
    let revision = label("revision");
    assert!(
        revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit()),
        "{build}"
    );
    assert!(label("rustc_version").starts_with("1."), "{build}");
    // Across a veth pair the scans send through the TX ring.
    assert_eq!(
        metric(&body, "scanner_agent_transmit_path{path=\"packet_ring\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "scanner_agent_transmit_path{path=\"raw_socket\"}"),
        Some(0.0),
        "{body}"
    );
    assert!(
        metric(&body, "scanner_agent_xdp_replies_matched_total").is_some_and(|v| v >= 11.0),
        "{body}"
    );

    // Close 25: the next scan reports it 0 and counts one open_to_closed.
    listeners.retain(|l| l.local_addr().unwrap().port() != 25);
    body = await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |body| metric(body, open25) == Some(0.0),
        "port 25 never went to 0",
    );
    assert_eq!(changes(&body, "open_to_closed"), Some(1.0));
    assert_eq!(
        changes(&body, "closed_to_open"),
        Some(2.0),
        "a port that stays open is no change"
    );
    assert_eq!(
        metric(&body, "open_ports_total{ip=\"198.18.0.2\"}"),
        Some(1.0)
    );
    // One scan later the closed port's series is gone.
    await_body(
        || fetch(&lab, PORT, "/metrics", ""),
        |body| !body.contains(open25) && metric(body, open22) == Some(1.0),
        "the closed port's series was not dropped",
    );

    let (status, body) = get(&lab, "/query?ip=198.18.0.2&ports=22").unwrap();
    assert_eq!(status, 403, "without auth /query is disabled: {body}");
    assert!(body.contains("needs auth.basic"), "{body}");

    let (status, health) = get(&lab, "/healthz").unwrap();
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["xdp"]["attached"], true);
    assert!(
        health["last_scan_timestamp_seconds"].as_u64().is_some(),
        "{health}"
    );
}

#[test]
fn basic_auth_guards_every_endpoint() {
    testbed::require_root!();
    const AUTH_PORT: u16 = 19920;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "auth",
        &format!(
            "server:\n  port: {AUTH_PORT}\nauth:\n  basic:\n    username: prom\n    password: \"{hash}\"\n  bearer_tokens: [tok-abc]\n"
        ),
    );
    await_up(&lab, AUTH_PORT, "");
    // Prometheus' conventions have the same scope as /healthz.
    for path in ["/metrics", "/healthz", "/-/healthy", "/-/ready"] {
        let (status, head, _) = request(&lab, AUTH_PORT, path, "").unwrap();
        assert_eq!(status, 401, "{path} without credentials");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"scanner-agent\""),
            "{head}"
        );
        assert_eq!(
            request(&lab, AUTH_PORT, path, &basic("prom", "wrong"))
                .unwrap()
                .0,
            401,
            "{path}"
        );
        assert_eq!(
            request(&lab, AUTH_PORT, path, &basic("prom", "s3cret"))
                .unwrap()
                .0,
            200,
            "{path}"
        );
        let with_token = |token: &str| request(&lab, AUTH_PORT, path, &bearer(token));
        assert_eq!(with_token("tok-abc").unwrap().0, 200, "{path}");
        assert_eq!(with_token("tok-abd").unwrap().0, 401, "{path}");
    }
    let (_, _, health) = request(&lab, AUTH_PORT, "/healthz", &basic("prom", "s3cret")).unwrap();
    assert!(
        health.contains("\"attached\":false"),
        "no targets, nothing attached: {health}"
    );
    let (status, _, ready) = request(&lab, AUTH_PORT, "/-/ready", &bearer("tok-abc")).unwrap();
    assert_eq!(
        (status, ready.as_str()),
        (200, "scanner-agent is Ready.\n"),
        "no targets: ready without an attached program"
    );
}

#[test]
fn query_scans_only_configured_targets_on_demand() {
    testbed::require_root!();
    const QUERY_PORT: u16 = 19921;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _l = lab.target.listen(&[(Ipv4Addr::new(198, 18, 0, 2), 443)]);
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "query",
        &FastScan::new(QUERY_PORT)
            .interval(3600)
            .ports("1-10")
            .scanning("rate_limit: 7")
            .scanning("query_ranges: [198.18.0.8/30]")
            .with("auth:\n  basic:\n    username: ops\n    password: pw\n")
            .to_string(),
    );
    let auth = basic("ops", "pw");
    let call = |path: &str| request(&lab, QUERY_PORT, path, &auth);
    await_up(&lab, QUERY_PORT, &auth);

    let (status, _, body) = call("/query?ports=22").unwrap();
    assert_eq!(
        (status, body.contains("missing parameter ip")),
        (400, true),
        "{body}"
    );
    let (status, _, body) = call("/query?ip=198.18.0.2&ports=99999").unwrap();
    assert_eq!(
        (status, body.contains("invalid parameter ports")),
        (400, true),
        "{body}"
    );
    let (status, _, body) = call("/query?ip=198.18.0.13&ports=22").unwrap();
    assert_eq!(
        (status, body.contains("not inside the configured targets")),
        (403, true),
        "{body}"
    );
    // Listed explicitly as a query range: allowed, though never scheduled.
    let (status, _, body) = call("/query?ip=198.18.0.9&ports=22").unwrap();
    assert_eq!(status, 200, "{body}");

    let (status, _, body) = call("/query?ip=198.18.0.2&ports=440-450").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["message"].as_str()),
        (Some("success"), Some("Scan enqueued successfully"))
    );
    let id = v["task_id"].as_u64().unwrap();
    let (status, _, body) = call("/query?ip=198.18.0.2&ports=440-450").unwrap();
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["task_id"].as_u64()),
        (Some("skipped"), Some(id))
    );

    let body = await_body(
        || {
            call(&format!("/query/{id}"))
                .map(|r| r.2)
                .unwrap_or_default()
        },
        |body| body.contains("\"state\":\"done\""),
        "the awaited state",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        (
            v["results"][0]["port"].as_u64(),
            v["results"][0]["state"].as_str()
        ),
        (Some(443), Some("open"))
    );

    // Six /query calls so far: the seventh is allowed, the eighth within a minute is refused at once.
    assert_ne!(call("/query?ip=198.18.0.2&ports=1").unwrap().0, 429);
    let (status, head, _) = call("/query?ip=198.18.0.2&ports=2").unwrap();
    assert_eq!(status, 429);
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
}

#[test]
fn a_restart_keeps_open_ports_and_scan_times() {
    testbed::require_root!();
    const STATE_PORT: u16 = 19922;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _l = lab.target.listen(&[(Ipv4Addr::new(198, 18, 0, 2), 22)]);
    let first = Daemon::start(
        agent(),
        &lab,
        "state",
        &FastScan::new(STATE_PORT).interval(3600).to_string(),
    );
    let open22 = "open_port_status{ip=\"198.18.0.2\",port=\"22\",protocol=\"tcp\"}";
    let scans = "scans_successful_total{target=\"198.18.0.0/30\"";
    let metrics = || fetch(&lab, STATE_PORT, "/metrics", "");
    await_body(
        metrics,
        |body| metric(body, scans) == Some(1.0) && metric(body, open22) == Some(1.0),
        "the awaited state",
    );
    let dir = first.kill();
    assert!(dir.join("state.json").is_file());

    // Restarted: the open port is known at once, and the task, scanned a
    // moment ago with an interval of an hour, is not scanned again.
    let _second = Daemon::spawn(agent(), &lab, dir, &[]);
    await_up(&lab, STATE_PORT, "");
    std::thread::sleep(Duration::from_secs(4));
    let body = metrics();
    assert_eq!(metric(&body, open22), Some(1.0), "{body}");
    assert_eq!(
        metric(&body, scans),
        Some(0.0),
        "the restart repeated the scan:\n{body}"
    );
}

#[test]
fn the_series_cap_protects_prometheus() {
    testbed::require_root!();
    const CAP_PORT: u16 = 19923;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _l = lab.target.listen(&[
        (Ipv4Addr::new(198, 18, 0, 2), 21),
        (Ipv4Addr::new(198, 18, 0, 2), 22),
    ]);
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "cap",
        &FastScan::new(CAP_PORT)
            .interval(3600)
            .scanning("max_open_port_series: 1")
            .targets(&["198.18.0.2"])
            .to_string(),
    );
    let body = await_body(
        || fetch(&lab, CAP_PORT, "/metrics", ""),
        |body| metric(body, "scans_successful_total").is_some_and(|n| n >= 1.0),
        "the awaited state",
    );
    let series = body
        .lines()
        .filter(|l| l.starts_with("open_port_status{"))
        .count();
    assert_eq!(series, 1, "{body}");
    assert_eq!(
        metric(&body, "scanner_agent_open_port_series_dropped_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "open_ports_total{ip=\"198.18.0.2\"}"),
        Some(2.0),
        "the total still counts both"
    );
}

#[test]
fn query_results_update_the_scheduled_view_and_stay_bounded() {
    testbed::require_root!();
    const MERGE_PORT: u16 = 19923;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let ssh = lab.target.listen(&[(Ipv4Addr::new(198, 18, 0, 2), 22)]);
    let _web = lab.target.listen(&[(Ipv4Addr::new(198, 18, 0, 2), 8080)]);
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "query-merge",
        &FastScan::new(MERGE_PORT)
            .interval(3600)
            .scanning("rate_limit: 1000")
            .with("auth:\n  bearer_tokens: [merge-token]\n")
            .to_string(),
    );
    let auth = "Authorization: Bearer merge-token\r\n";
    let call = |path: &str| request(&lab, MERGE_PORT, path, auth);
    let metrics = || fetch(&lab, MERGE_PORT, "/metrics", auth);
    let query = |params: &str| {
        let (status, _, body) = call(&format!("/query?{params}")).unwrap();
        assert_eq!(status, 200, "{params}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["task_id"].as_u64().unwrap()
    };
    let done =
        |id: u64| call(&format!("/query/{id}")).is_some_and(|r| r.2.contains("\"state\":\"done\""));
    let open = |port: u16| {
        format!("open_port_status{{ip=\"198.18.0.2\",port=\"{port}\",protocol=\"tcp\"}}")
    };
    let total = "open_ports_total{ip=\"198.18.0.2\"}";
    await_body(
        metrics,
        |b| metric(b, &open(22)) == Some(1.0),
        "the scheduled scan",
    );

    // Confirming an open port does not count it twice.
    let id = query("ip=198.18.0.2&ports=22");
    assert!(wait_until(Duration::from_secs(20), || done(id)));
    let body = metrics();
    assert_eq!(metric(&body, total), Some(1.0), "{body}");

    // A query after a fix: the port it finds closed reads 0 (one change), a
    // port outside port_range it finds open is shown, each counted once.
    drop(ssh);
    let id = query("ip=198.18.0.2&ports=22,8080");
    assert!(wait_until(Duration::from_secs(20), || done(id)));
    let body = metrics();
    assert_eq!(metric(&body, &open(22)), Some(0.0), "{body}");
    assert_eq!(metric(&body, &open(8080)), Some(1.0), "{body}");
    assert_eq!(metric(&body, total), Some(1.0), "{body}");
    assert_eq!(
        metric(
            &body,
            "port_state_changes_total{target=\"198.18.0.0/30\",change_type=\"open_to_closed\"}"
        ),
        Some(1.0),
        "{body}"
    );

    // A range wider than one task is refused, naming the parameter.
    let (status, _, body) = call("/query?ip=198.18.0.0/16&ports=22").unwrap();
    assert_eq!(
        (status, body.contains("invalid parameter ip")),
        (400, true),
        "{body}"
    );

    // Callers choosing label values cannot grow the exposition without bound.
    let ids: Vec<u64> = (0..105)
        .map(|n| query(&format!("ip=198.18.0.1&ports={}", 100 + n)))
        .collect();
    assert!(wait_until(Duration::from_secs(90), || ids
        .iter()
        .all(|&id| done(id))));
    let body = metrics();
    let per_query = body
        .lines()
        .filter(|l| l.starts_with("scans_successful_total{target=\"198.18.0.1/32\""))
        .count();
    assert_eq!(per_query, 100, "{body}");
}
