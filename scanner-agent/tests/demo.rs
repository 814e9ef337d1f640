//! The demo of `cargo xtask run` (`testbed::demo`, the code xtask runs),
//! with this build of the agent, in a namespace of its own: its first scan
//! shows the demo listeners open on /metrics (bearer token required), the
//! passthrough reaches the node_exporter it started, and SIGINT (Ctrl-C)
//! stops it all: the agent exits by the signal, no XDP program stays on
//! `lo`, the listeners and node_exporter are gone, the files removed.
mod common;

use std::{net::TcpStream, path::Path};

use common::{
    Netns, agent,
    daemon::{await_body, bearer, fetch, fetch_status, metric},
    demo::{Demo, Place, ensure_clean},
};

#[test]
fn the_demo_shows_open_ports_and_stops_cleanly_on_sigint() {
    testbed::require_root!();
    let ns = Netns::new("demo");
    let mut demo = Demo::start(Path::new(agent()), Place::Netns(&ns), true).unwrap();
    let auth = bearer(&demo.token);
    let banner = demo.banner();
    let url = format!("http://localhost:{}", demo.port);
    for path in ["/metrics", "/healthz", "/query?ip=127.0.0.1&ports="] {
        assert!(
            banner.contains(&format!("Bearer {}' {url}{path}", demo.token))
                || banner.contains(&format!("Bearer {}' '{url}{path}", demo.token)),
            "no curl line for {path}:\n{banner}"
        );
    }
    let route = demo
        .passthrough
        .clone()
        .expect("no node_exporter for the passthrough (`cargo xtask test` unpacks Debian's)");
    assert!(banner.contains(&format!("{url}{route}")), "{banner}");

    let series = [
        format!(
            "open_port_status{{ip=\"127.0.0.1\",port=\"{}\",protocol=\"tcp\"}}",
            demo.tcp_v4.port()
        ),
        format!(
            "open_port_status{{ip=\"::1\",port=\"{}\",protocol=\"tcp\"}}",
            demo.tcp_v6.port()
        ),
        format!(
            "open_port_status{{ip=\"127.0.0.1\",port=\"{}\",protocol=\"udp\"}}",
            demo.udp.port()
        ),
    ];
    let port = demo.port;
    let body = await_body(
        || fetch(&ns, port, "/metrics", &auth),
        |b| series.iter().all(|s| metric(b, s) == Some(1.0)),
        "the demo listeners never showed open",
    );
    assert!(body.contains("scanner_agent_xdp_attached{mode="), "{body}");
    assert!(fetch_status(&ns, port, "/metrics", "").starts_with("401 "));
    let ready = fetch_status(&ns, port, "/-/ready", &auth);
    assert!(ready.starts_with("200 "), "{ready}");
    let passthrough = fetch_status(&ns, port, &route, &auth);
    assert!(
        passthrough.starts_with("200 ") && passthrough.contains("node_exporter_build_info"),
        "{}",
        &passthrough[..passthrough.len().min(400)]
    );
    assert!(
        ns.xdp_prog("lo").is_some(),
        "the program is on lo while it runs"
    );

    // Ctrl-C: SIGINT to the agent, as the terminal sends it.
    let pid = demo.agent_pid().unwrap();
    common::sh("kill", &["-INT", &pid.to_string()]);
    common::wait_until(std::time::Duration::from_secs(5), || !demo.running());
    let log = demo.agent_log();
    let (dir, endpoints) = (demo.dir.clone(), [demo.tcp_v4, demo.tcp_v6]);
    let exporter = demo.node_exporter.unwrap();
    let stopped = demo.stop().unwrap();
    ensure_clean(&stopped, &log).unwrap();
    assert_eq!(ns.xdp_prog("lo"), None, "an XDP program stayed on lo");
    assert!(!dir.exists(), "{dir:?} left behind");
    let refused = ns.run(move || {
        endpoints
            .iter()
            .chain([&exporter])
            .all(|a| TcpStream::connect(a).is_err())
    });
    assert!(refused, "a demo listener or node_exporter still answers");
}
