//! The demo of `cargo xtask run` (`testbed::demo`, the code xtask runs),
//! with this build of the agent, in a namespace of its own: its first scan
//! shows the demo listeners open on /metrics (bearer token required), the
//! passthrough reaches the node_exporter it started, and SIGINT (Ctrl-C)
//! stops it all: the agent exits by the signal, no XDP program stays on
//! `lo`, the listeners and node_exporter are gone, the files removed. Then
//! the same through the xtask binary itself, Ctrl-C sent to its whole
//! process group as a terminal does.
mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

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

/// The xtask binary `cargo xtask` built (and `cargo xtask test` runs from).
fn xtask() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("xtask");
    assert!(
        bin.is_file(),
        "no {bin:?}: `cargo xtask test` builds it (or `cargo build -p xtask`)"
    );
    bin
}

#[test]
fn cargo_xtask_run_prints_the_urls_first_and_stops_on_ctrl_c() {
    testbed::require_root!();
    let ns = Netns::new("xrun");
    let log = std::env::temp_dir().join(format!("sa-xrun-{}.log", std::process::id()));
    let mut xtask = ns
        .command(&xtask().to_string_lossy())
        .args(["run", "--agent", agent()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        // Its own process group, as a shell gives a foreground job.
        .process_group(0)
        .spawn()
        .unwrap();
    // Stdout holds the banner only, and all of it comes first.
    let mut banner = String::new();
    let mut lines = BufReader::new(xtask.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Ctrl-C stops it") {
            break;
        }
    }
    let token = banner
        .split("Bearer ")
        .nth(1)
        .and_then(|t| t.split('\'').next())
        .unwrap_or_else(|| panic!("no token in:\n{banner}"))
        .to_owned();
    let dir = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("files: "))
        .and_then(|l| l.split(' ').next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no files line in:\n{banner}"));
    assert!(banner.contains("http://localhost:9919/metrics"), "{banner}");
    let open = "open_port_status{ip=\"127.0.0.1\",port=\"18080\",protocol=\"tcp\"}";
    await_body(
        || fetch(&ns, 9919, "/metrics", &bearer(&token)),
        |b| metric(b, open) == Some(1.0),
        "the demo's first scan never reached /metrics",
    );
    assert!(ns.xdp_prog("lo").is_some());

    // Ctrl-C: SIGINT to the whole foreground group (xtask, agent, node_exporter).
    let group = format!("-{}", xtask.id());
    common::sh("kill", &["-INT", "--", &group]);
    let mut status = None;
    common::wait_until(Duration::from_secs(10), || {
        status = xtask.try_wait().unwrap();
        status.is_some()
    });
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let status = status.unwrap_or_else(|| {
        let _ = xtask.kill();
        panic!("xtask did not stop on SIGINT:\n{stderr}")
    });
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(stderr.contains("xtask: demo stopped"), "{stderr}");
    let after: Vec<String> = lines
        .map(Result::unwrap)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(after.is_empty(), "stdout after the banner: {after:?}");
    assert_eq!(ns.xdp_prog("lo"), None, "an XDP program stayed on lo");
    assert!(!dir.exists(), "{dir:?} left behind");
}
