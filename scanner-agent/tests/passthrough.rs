//! The node_exporter passthrough against a real node_exporter (Debian's
//! `prometheus-node-exporter`) in the target namespace, with the agent in
//! the scanner namespace: the body arrives intact (gzip too), every error
//! status comes from a real condition, and no request reaches any address
//! but the registered one.
mod common;

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    Lab, Netns, NodeExporter, agent,
    daemon::{Daemon, await_body, get, metric},
};

const PORT: u16 = common::daemon::PORT;
const EXPORTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Hosts the silent upstream and the decoy nobody may reach.
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const ROUTE: &str = "/api/T2_TEST/monitoring/prometheus/passthrough";
const TOKEN: &str = "Authorization: Bearer tok\r\n";

/// One raw HTTP exchange from the scanner namespace: status, head, body bytes.
fn exchange(lab: &Lab, to: SocketAddr, raw: String) -> Option<(u16, String, Vec<u8>)> {
    lab.scanner.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        s.write_all(raw.as_bytes()).ok()?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, head, out[split + 4..].to_vec()))
    })
}

fn agent_addr() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, PORT).into()
}

/// GET `path` from the agent with extra header lines.
fn try_call(lab: &Lab, path: &str, headers: &str) -> Option<(u16, String, Vec<u8>)> {
    exchange(
        lab,
        agent_addr(),
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n"),
    )
}

fn call(lab: &Lab, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    try_call(lab, path, headers).unwrap_or_else(|| panic!("no HTTP answer to {path}"))
}

/// The status of a GET, or 0 when nothing answered (yet).
fn status_of(lab: &Lab, path: &str, headers: &str) -> String {
    try_call(lab, path, headers)
        .map_or(0, |(s, _, _)| s)
        .to_string()
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The metric families of an exposition (HELP and TYPE lines), which stay
/// the same between scrapes while the values change.
fn families(body: &str) -> Vec<String> {
    body.lines()
        .filter(|l| l.starts_with("# HELP ") || l.starts_with("# TYPE "))
        .map(str::to_owned)
        .collect()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn gunzip(bytes: &[u8]) -> String {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not gzip data");
    String::from_utf8(out.stdout).unwrap()
}

/// A one-shot HTTP server in `ns` answering every request with `reply`.
fn canned(ns: &Netns, addr: SocketAddr, reply: &'static str) {
    let listener = ns.listen(&[(addr.ip(), addr.port())]).remove(0);
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply.as_bytes());
        }
    });
}

fn config(auth: bool, extra: &str) -> String {
    let auth = if auth {
        "auth:\n  bearer_tokens: [tok]\n"
    } else {
        ""
    };
    format!(
        "server:\n  port: {PORT}\n{auth}general:\n  sitename: T2_TEST\n  hostname: agent-host\n  \
         node_exporter: \"{EXPORTER}:9100\"\n  node_exporter_passthrough: true\n\
         passthrough:\n  timeout: 2\n{extra}  hosts:\n\
         \x20   - {{hostname: dtn-off, node_exporter: \"{EXPORTER}:9100\"}}\n\
         \x20   - {{hostname: dtn-silent, node_exporter: \"{OTHER}:9200\", node_exporter_passthrough: true}}\n\
         \x20   - {{hostname: dtn-closed, node_exporter: \"{OTHER}:9101\", node_exporter_passthrough: true}}\n\
         \x20   - {{hostname: dtn-503, node_exporter: \"{OTHER}:9201\", node_exporter_passthrough: true}}\n\
         \x20   - {{hostname: dtn-redirect, node_exporter: \"{OTHER}:9202\", node_exporter_passthrough: true}}\n"
    )
}

/// The agent's /metrics (with the token).
fn agent_metrics(lab: &Lab) -> String {
    text(&call(lab, "/metrics", TOKEN).2)
}

fn outcome(lab: &Lab, outcome: &str) -> f64 {
    let body = agent_metrics(lab);
    let line = format!("scanner_agent_passthrough_requests_total{{outcome=\"{outcome}\"}}");
    metric(&body, &line).unwrap_or(0.0)
}

#[test]
fn passthrough_to_a_real_node_exporter() {
    testbed::require_root!();
    let lab = Lab::new(&[EXPORTER, OTHER], 1500);
    let mut exporter = NodeExporter::start(&lab.target, (EXPORTER, 9100).into());
    // Connected but never answering: the slow upstream.
    let _silent = lab.target.listen(&[(OTHER, 9200)]);
    canned(
        &lab.target,
        (OTHER, 9201).into(),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
    );
    canned(
        &lab.target,
        (OTHER, 9202).into(),
        "HTTP/1.1 302 Found\r\nLocation: http://198.18.0.3:9300/metrics\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    // The decoy: an address that no request may make the agent contact.
    let decoy = lab.target.listen(&[(OTHER, 9300)]).remove(0);
    decoy.set_nonblocking(true).unwrap();

    let daemon = Daemon::start(agent(), &lab, "passthrough", &config(true, ""));
    let route = format!("{ROUTE}/agent-host");
    let direct = || {
        exchange(
            &lab,
            (EXPORTER, 9100).into(),
            format!("GET /metrics HTTP/1.0\r\nHost: {EXPORTER}:9100\r\n\r\n"),
        )
        .map(|(_, _, b)| text(&b))
        .unwrap_or_default()
    };
    let direct_body = await_body(
        direct,
        |b| b.contains("node_cpu_seconds_total"),
        "node_exporter did not start",
    );
    let body = await_body(
        || {
            try_call(&lab, &route, TOKEN)
                .map(|(_, _, b)| text(&b))
                .unwrap_or_default()
        },
        |b| b.contains("node_cpu_seconds_total"),
        "the passthrough never served node_exporter's metrics",
    );

    // The body is node_exporter's: the same families, in the same order.
    assert_eq!(families(&body), families(&direct_body));
    assert!(families(&body).len() > 20, "{body}");
    let (status, head, _) = call(&lab, &route, TOKEN);
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type").is_some_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{head}"
    );

    // gzip passes through untouched when the caller accepts it.
    let (status, head, gz) = call(&lab, &route, &format!("{TOKEN}Accept-Encoding: gzip\r\n"));
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert_eq!(&gz[..2], [0x1f, 0x8b]);
    assert_eq!(families(&gunzip(&gz)), families(&direct_body));
    // ...and not when it does not.
    let (_, head, _) = call(&lab, &route, TOKEN);
    assert_eq!(header(&head, "content-encoding"), None, "{head}");

    // Authentication: never optional.
    assert_eq!(call(&lab, &route, "").0, 401);
    assert_eq!(call(&lab, &route, "Authorization: Bearer to\r\n").0, 401);
    assert_eq!(call(&lab, &route, "Authorization: Bearer tok2\r\n").0, 401);

    // 404s that say which.
    let (status, _, body) = call(
        &lab,
        "/api/T2_OTHER/monitoring/prometheus/passthrough/agent-host",
        TOKEN,
    );
    assert_eq!(
        (status, text(&body).trim()),
        (404, "Site \"T2_OTHER\" not found")
    );
    let (status, _, body) = call(&lab, &format!("{ROUTE}/dtn-unknown"), TOKEN);
    assert_eq!(
        (status, text(&body).trim()),
        (404, "Host \"dtn-unknown\" not found")
    );
    let (status, _, body) = call(&lab, &format!("{ROUTE}/dtn-off"), TOKEN);
    assert_eq!(
        (status, text(&body).trim()),
        (
            404,
            "Host \"dtn-off\" does not have node_exporter passthrough enabled"
        )
    );
    // Query parameters are refused, whatever they say.
    for query in ["?collect[]=cpu", "?target=198.18.0.3:9300", "?"] {
        assert_eq!(
            call(&lab, &format!("{route}{query}"), TOKEN).0,
            422,
            "{query}"
        );
    }

    // Upstream conditions.
    let (status, _, body) = call(&lab, &format!("{ROUTE}/dtn-silent"), TOKEN);
    assert_eq!(status, 504, "{}", text(&body));
    assert!(
        text(&body).contains("did not answer within 2 s"),
        "{}",
        text(&body)
    );
    let (status, _, body) = call(&lab, &format!("{ROUTE}/dtn-closed"), TOKEN);
    assert_eq!(status, 502, "{}", text(&body));
    assert!(
        text(&body).contains("Error connecting to node_exporter at http://198.18.0.3:9101/metrics"),
        "{}",
        text(&body)
    );
    assert_eq!(call(&lab, &format!("{ROUTE}/dtn-503"), TOKEN).0, 503);
    // A redirect is passed on as a status only: not followed, no Location.
    let (status, head, _) = call(&lab, &format!("{ROUTE}/dtn-redirect"), TOKEN);
    assert_eq!(status, 302);
    assert_eq!(header(&head, "location"), None, "{head}");

    // Attempts to reach another address through the route.
    for path in [
        format!("{ROUTE}/198.18.0.3:9300"),
        format!("{ROUTE}/198.18.0.3%3A9300"),
        format!("{ROUTE}/..%2F..%2F..%2Fmetrics"),
        format!("{ROUTE}/%2e%2e"),
        format!("{ROUTE}/http:%2F%2F198.18.0.3:9300%2Fmetrics"),
        format!("{ROUTE}/agent-host%2F..%2F..%2F198.18.0.3:9300"),
        format!("{ROUTE}/agent-host/../../../../198.18.0.3:9300/metrics"),
        format!("{ROUTE}/%61gent-host%3Ftarget=198.18.0.3:9300"),
        format!("{ROUTE}//198.18.0.3:9300/metrics"),
    ] {
        let (status, _, body) = call(&lab, &path, TOKEN);
        assert!(
            status == 404 || status == 400,
            "{path}: {status} {}",
            text(&body)
        );
    }
    // An absolute URL in the request line and a foreign Host header still
    // fetch only the registered node_exporter.
    for raw in [
        format!(
            "GET http://{OTHER}:9300{route} HTTP/1.1\r\nHost: {OTHER}:9300\r\nConnection: close\r\n{TOKEN}\r\n"
        ),
        format!("GET {route} HTTP/1.1\r\nHost: {OTHER}:9300\r\nConnection: close\r\n{TOKEN}\r\n"),
        format!(
            "GET {route} HTTP/1.1\r\nHost: {OTHER}:9300\r\nX-Forwarded-Host: {OTHER}:9300\r\nForwarded: host={OTHER}:9300\r\nConnection: close\r\n{TOKEN}\r\n"
        ),
    ] {
        let (status, _, body) = exchange(&lab, agent_addr(), raw.clone()).expect("an answer");
        assert_eq!(status, 200, "{raw}");
        assert!(text(&body).contains("node_cpu_seconds_total"), "{raw}");
    }
    // The body cap: with 1000 bytes allowed, no more than that arrives (the
    // body is cut off, so a client sees a broken transfer, never a short
    // exposition that looks complete).
    daemon.reload(&config(true, "  max_body_bytes: 1000\n"));
    let capped = await_body(
        || {
            try_call(&lab, &route, TOKEN).map_or("cut off".into(), |(status, _, body)| {
                format!("{status} {}", body.len())
            })
        },
        |s| {
            s == "cut off"
                || s.starts_with("502")
                || s.split(' ')
                    .nth(1)
                    .is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n <= 1000))
        },
        "max_body_bytes was not enforced",
    );
    assert!(
        outcome(&lab, "too_large") + outcome(&lab, "aborted") >= 1.0,
        "{capped}"
    );

    // Without credentials configured, the route answers 401 to everyone.
    daemon.reload(&config(false, ""));
    await_body(
        || status_of(&lab, &route, TOKEN),
        |s| s == "401",
        "the passthrough stayed open without credentials",
    );
    assert_eq!(call(&lab, &route, "").0, 401);
    assert_eq!(get(&lab, "/metrics").map(|(s, _)| s), Some(200));

    // A stopped node_exporter: 502.
    daemon.reload(&config(true, ""));
    await_body(
        || status_of(&lab, &route, TOKEN),
        |s| s == "200",
        "the reload with credentials did not apply",
    );
    exporter.stop();
    let (status, _, body) = call(&lab, &route, TOKEN);
    assert_eq!(status, 502, "{}", text(&body));

    // The metrics counted all of it.
    let metrics = agent_metrics(&lab);
    for (name, at_least) in [
        ("ok", 6.0),
        ("unauthorized", 2.0),
        ("unknown_site", 1.0),
        ("unknown_host", 6.0),
        ("disabled", 1.0),
        ("query_rejected", 3.0),
        ("timeout", 1.0),
        ("unreachable", 2.0),
        ("upstream_error", 2.0),
    ] {
        let line = format!("scanner_agent_passthrough_requests_total{{outcome=\"{name}\"}}");
        let n = metric(&metrics, &line).unwrap_or(0.0);
        assert!(n >= at_least, "{name}: {n} < {at_least}\n{metrics}");
    }
    let latency = metric(
        &metrics,
        "scanner_agent_passthrough_upstream_duration_seconds_count",
    )
    .unwrap_or(0.0);
    assert!(latency >= 6.0, "{metrics}");

    // Nothing ever connected to the decoy.
    match decoy.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the decoy was contacted: {other:?}"),
    }
}
