//! The host view on the namespace testbed: what an agent exports about its
//! own host equals what `ss -Hltnu` and `ip addr` say there (IPv4, IPv6,
//! wildcard, dual-stack, V6ONLY and v4-mapped sockets, UDP), read as an
//! unprivileged user with no capability; and a real Prometheus that
//! scrapes a scanning agent and the agent of the scanned host evaluates the
//! shipped joins: *open but nothing listens* names the port a container
//! answers through DNAT and not the host's real listeners, *listening,
//! reachable and not allowed* names the real listener the policy forbids.
mod common;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use common::{
    Lab, Netns, Prometheus, agent,
    daemon::{Daemon, await_body, bearer, fetch, metric, request},
    sh,
};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

const TOKEN: &str = "host-view-token";
const SS_PORT: u16 = 19960;
const SCANNER_PORT: u16 = 19961;
const HOST_PORT: u16 = 19962;
const PROMETHEUS_PORT: u16 = 19963;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

/// A daemon config that scans nothing (only the host view and the rest of
/// `/metrics`), behind a bearer token.
fn quiet_config(port: u16) -> String {
    format!("server:\n  port: {port}\nauth:\n  bearer_tokens: [{TOKEN}]\n")
}

type Series = BTreeSet<(IpAddr, u16, String)>;

/// The `host_listening_port_info` series of an exposition.
fn listening(body: &str) -> Series {
    body.lines()
        .filter_map(|l| l.strip_prefix("host_listening_port_info{"))
        .map(|l| {
            let value = |key: &str| {
                let from = l.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
                l[from..].split('"').next().unwrap().to_owned()
            };
            (
                value("ip").parse().unwrap(),
                value("port").parse().unwrap(),
                value("protocol"),
            )
        })
        .collect()
}

/// (interface, ip) of every `host_address_info` series.
fn address_series(body: &str) -> BTreeSet<(String, IpAddr)> {
    body.lines()
        .filter_map(|l| l.strip_prefix("host_address_info{interface=\""))
        .map(|l| {
            let (interface, rest) = l.split_once("\",ip=\"").unwrap();
            (
                interface.to_owned(),
                rest.split('"').next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// What a peer can reach and the agent shows: not loopback, link-local or
/// multicast.
fn shown(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_link_local() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_loopback() || a.is_unicast_link_local() || a.is_multicast()),
    }
}

/// (interface, ip) of every address `ip -o addr show` lists in `ns`.
fn ip_addr(ns: &Netns) -> BTreeSet<(String, IpAddr)> {
    let out = ns.ip(&["-o", "addr", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ip: IpAddr = words[3].split('/').next()?.parse().ok()?;
            Some((words[1].to_owned(), ip))
        })
        .filter(|(_, ip)| shown(*ip))
        .collect()
}

/// `ss -Hltnu` in `ns`, each wildcard expanded the way the kernel takes
/// connections: `0.0.0.0` on every IPv4 address, `[::]` (V6ONLY) on every
/// IPv6 one, `*` (dual-stack) on both; v4-mapped addresses as IPv4.
fn ss(ns: &Netns, addresses: &BTreeSet<(String, IpAddr)>) -> Series {
    let out = ns.command("ss").arg("-Hltnu").output().expect("ss");
    assert!(out.status.success(), "ss failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut series = Series::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (protocol, local) = (words[0].to_owned(), words[4]);
        let (host, port) = local.rsplit_once(':').unwrap();
        let port: u16 = port.parse().unwrap();
        // `%dev` of a socket bound to an interface (none here).
        let host = host.split('%').next().unwrap();
        let ips: Vec<IpAddr> = match host {
            "0.0.0.0" => addresses
                .iter()
                .map(|a| a.1)
                .filter(IpAddr::is_ipv4)
                .collect(),
            "[::]" => addresses
                .iter()
                .map(|a| a.1)
                .filter(IpAddr::is_ipv6)
                .collect(),
            "*" => addresses.iter().map(|a| a.1).collect(),
            _ => {
                let ip: IpAddr = host.trim_matches(['[', ']']).parse().unwrap();
                vec![ip.to_canonical()]
            }
        };
        series.extend(
            ips.into_iter()
                .filter(|ip| shown(*ip))
                .map(|ip| (ip, port, protocol.clone())),
        );
    }
    series
}

/// A socket of `kind` bound to `addr`: listening for TCP; `v6only` set on
/// IPv6 ones.
fn bound(kind: Type, addr: SocketAddr, v6only: bool) -> Socket {
    let domain = Domain::for_address(addr);
    let protocol = if kind == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let socket = Socket::new(domain, kind, Some(protocol)).unwrap();
    if addr.is_ipv6() {
        socket.set_only_v6(v6only).unwrap();
    }
    socket
        .bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    if kind == Type::STREAM {
        socket.listen(16).unwrap();
    }
    socket
}

#[test]
fn host_listening_port_info_equals_ss_and_needs_no_capability() {
    testbed::require_root!();
    let lab = Lab::new(&[v4(2), v4(3), v6(2), v6(3)], 1500);
    let sockets = lab.target.run(|| {
        let at = |ip: IpAddr, port| SocketAddr::new(ip, port);
        let (any4, any6) = (Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into());
        let mapped: IpAddr = "::ffff:198.18.0.3".parse().unwrap();
        let (tcp, udp) = (Type::STREAM, Type::DGRAM);
        let mut s = vec![
            bound(tcp, at(v4(2), 1001), false),
            bound(tcp, at(any4, 1002), false),
            bound(tcp, at(v6(2), 1003), true),
            // Dual-stack: IPv4 too.
            bound(tcp, at(any6, 1004), false),
            bound(tcp, at(any6, 1005), true),
            // An IPv6 socket bound to a v4-mapped address takes IPv4.
            bound(tcp, at(mapped, 1006), false),
            // Loopback: not shown.
            bound(tcp, at(Ipv4Addr::LOCALHOST.into(), 1007), false),
            bound(tcp, at(Ipv6Addr::LOCALHOST.into(), 1008), true),
            bound(udp, at(v4(3), 1011), false),
            bound(udp, at(any4, 1012), false),
            bound(udp, at(any6, 1013), false),
            bound(udp, at(any6, 1014), true),
            bound(udp, at(v6(3), 1015), true),
        ];
        // Connected UDP and bound-but-not-listening TCP accept nothing
        // from outside: neither ss -l nor the agent lists them.
        let connected = bound(udp, at(v4(2), 1016), false);
        connected.connect(&at(v4(3), 1011).into()).unwrap();
        s.push(connected);
        let idle = Socket::new(Domain::IPV4, tcp, None).unwrap();
        idle.bind(&at(v4(2), 1017).into()).unwrap();
        s.push(idle);
        // An established connection (both ends) to the listener on 1001.
        let client = Socket::new(Domain::IPV4, tcp, None).unwrap();
        client.connect(&at(v4(2), 1001).into()).unwrap();
        s.push(client);
        s
    });
    // The agent as nobody with no capability at all: sock_diag and
    // rtnetlink dumps need none.
    let daemon = Daemon::start_wrapped(
        agent(),
        &lab.target,
        "host-view-ss",
        &quiet_config(SS_PORT),
        &[],
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ],
    );
    let auth = bearer(TOKEN);
    let body = await_body(
        || fetch(&lab.target, SS_PORT, "/metrics", &auth),
        |b| b.contains("host_listening_scrape_success"),
        "the agent never served /metrics",
    );
    assert_eq!(
        metric(&body, "host_listening_scrape_success"),
        Some(1.0),
        "{body}\n{}",
        std::fs::read_to_string(daemon.dir().join("stderr.log")).unwrap_or_default()
    );
    assert_eq!(metric(&body, "host_listening_series_dropped"), Some(0.0));

    let addresses = ip_addr(&lab.target);
    assert_eq!(
        address_series(&body),
        addresses,
        "host_address_info vs ip addr"
    );
    let truth = ss(&lab.target, &addresses);
    let exported = listening(&body);
    assert_eq!(exported, truth, "host_listening_port_info vs ss -Hltnu");

    // And the cases by name, so an ss that lists differently fails too.
    let has =
        |ip: IpAddr, port: u16, protocol: &str| exported.contains(&(ip, port, protocol.to_owned()));
    for (ip, port, protocol) in [
        (v4(2), 1001, "tcp"),
        (v4(3), 1002, "tcp"),
        (v6(2), 1003, "tcp"),
        (v4(3), 1004, "tcp"),
        (v6(3), 1004, "tcp"),
        (v6(2), 1005, "tcp"),
        (v4(3), 1006, "tcp"),
        (v4(3), 1011, "udp"),
        (v4(2), 1012, "udp"),
        (v4(2), 1013, "udp"),
        (v6(2), 1013, "udp"),
        (v6(3), 1014, "udp"),
        (v6(3), 1015, "udp"),
        (v4(2), SS_PORT, "tcp"),
    ] {
        assert!(
            has(ip, port, protocol),
            "no {ip}:{port}/{protocol} in {exported:?}"
        );
    }
    for (ip, port, protocol) in [
        (v4(2), 1005, "tcp"),
        (v4(2), 1014, "udp"),
        (v4(2), 1016, "udp"),
        (v4(2), 1017, "tcp"),
        (v4(3), 1001, "tcp"),
    ] {
        assert!(
            !has(ip, port, protocol),
            "{ip}:{port}/{protocol} shown: {exported:?}"
        );
    }
    assert!(
        !exported
            .iter()
            .any(|(_, port, _)| [1007, 1008].contains(port))
    );

    // A socket closed is gone once the cache's age (5 s) has passed: that
    // scrape reads afresh, the next one within 5 s is served from memory.
    drop(sockets);
    std::thread::sleep(Duration::from_millis(5100));
    let timed = || {
        let started = Instant::now();
        let body = fetch(&lab.target, SS_PORT, "/metrics", &auth);
        (body, started.elapsed())
    };
    let (fresh, cold) = timed();
    let (_, warm) = timed();
    eprintln!("/metrics with the host view: {cold:?} reading it, {warm:?} from the cache");
    assert!(
        !listening(&fresh).iter().any(|(_, port, _)| *port == 1001),
        "{fresh}"
    );
    assert!(listening(&fresh).contains(&(v4(2), SS_PORT, "tcp".to_owned())));
}

/// A Prometheus server in the scanner namespace that scrapes both agents
/// every second and evaluates the shipped host-view rules (their `for:`
/// shortened to seconds).
fn prometheus(lab: &Lab, dir: &Path) -> Prometheus {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prometheus/host-view.yml"),
    )
    .unwrap();
    assert!(rules.contains("for: 15m"));
    std::fs::write(
        dir.join("host-view.yml"),
        rules.replace("for: 15m", "for: 2s"),
    )
    .unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [host-view.yml]\n\
         scrape_configs:\n  - job_name: scanner-agent\n    authorization:\n      credentials: {TOKEN}\n    \
         static_configs:\n      - targets: ['localhost:{SCANNER_PORT}', '198.18.0.2:{HOST_PORT}']\n"
    );
    Prometheus::start(&lab.scanner, dir, &config, PROMETHEUS_PORT)
}

/// An instant query: each series' labels (without `__name__` and `job`)
/// as `key=value` text, sorted.
fn query(lab: &Lab, promql: &str) -> Vec<String> {
    let path = format!(
        "/api/v1/query?query={}",
        promql
            .replace('%', "%25")
            .replace('"', "%22")
            .replace(' ', "%20")
            .replace('{', "%7B")
            .replace('}', "%7D")
    );
    let Some((200, _, body)) = request(lab, PROMETHEUS_PORT, &path, "") else {
        return Vec::new();
    };
    let answer: Value = serde_json::from_str(&body).unwrap_or_default();
    let mut out: Vec<String> = answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let labels = series["metric"].as_object().cloned().unwrap_or_default();
            labels
                .iter()
                .filter(|(k, _)| !["__name__", "job"].contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    out.sort();
    out
}

#[test]
fn prometheus_joins_the_scans_with_the_host_view() {
    testbed::require_root!();
    let lab = Lab::new(&[v4(2)], 1500);
    // A container behind the target: its own namespace, reached through
    // the target, which DNATs 198.18.0.2:8080 to it (as Docker does).
    let container = Netns::new("container");
    sh(
        "ip",
        &[
            "link",
            "add",
            "ctr-host",
            "netns",
            &lab.target.name,
            "type",
            "veth",
            "peer",
            "name",
            "ctr-eth",
            "netns",
            &container.name,
        ],
    );
    lab.target
        .ip_batch("addr add 198.18.1.1/24 dev ctr-host\nlink set ctr-host up\n")
        .unwrap();
    container
        .ip_batch(
            "addr add 198.18.1.2/24 dev ctr-eth\nlink set ctr-eth up\nroute add 198.18.0.0/24 via 198.18.1.1\n",
        )
        .unwrap();
    container.check_no_default_route().unwrap();
    lab.target.sysctl(&["net.ipv4.ip_forward=1"]);
    lab.target.nft(
        "table ip container {
           chain pre {
             type nat hook prerouting priority -100;
             ip daddr 198.18.0.2 tcp dport 8080 dnat to 198.18.1.2:80
           }
         }",
    );
    let _in_container = container.listen(&[(Ipv4Addr::new(198, 18, 1, 2), 80)]);
    // The host's own listeners: 22 allowed, 25 not.
    let _on_host = lab.target.listen(&[
        (Ipv4Addr::new(198, 18, 0, 2), 22),
        (Ipv4Addr::new(198, 18, 0, 2), 25),
    ]);

    let scanner = Daemon::start(
        agent(),
        &lab,
        "host-view-scanner",
        &format!(
            "server:\n  port: {SCANNER_PORT}\nscanning:\n  interval: 2\n  min_rate: 5000\n  \
             initial_rtt_timeout: 100\n  max_rtt_timeout: 200\nauth:\n  bearer_tokens: [{TOKEN}]\n\
             targets:\n  - name: data\n    ranges: [198.18.0.2/32]\n    port_range: \"20-30,8080\"\n    \
             allow: {{tcp: \"22\"}}\n"
        ),
    );
    let _host = Daemon::start(
        agent(),
        &lab.target,
        "host-view-host",
        &quiet_config(HOST_PORT),
    );
    let _prometheus = prometheus(&lab, scanner.dir());

    // The scan sees all three ports open, the host's agent its two
    // listeners (and its own port), both through Prometheus.
    let open = |port: u16| {
        format!("instance=localhost:{SCANNER_PORT},ip=198.18.0.2,port={port},protocol=tcp")
    };
    await_body(
        || query(&lab, "open_port_status == 1").join("\n"),
        |b| b == [22, 25, 8080].map(open).join("\n"),
        "Prometheus never saw 22, 25 and 8080 open",
    );
    let host = format!("198.18.0.2:{HOST_PORT}");
    await_body(
        || query(&lab, "host_listening_port_info{ip=\"198.18.0.2\"}").join("\n"),
        |b| {
            let mut expected = [22, 25, HOST_PORT]
                .map(|p| format!("instance={host},ip=198.18.0.2,port={p},protocol=tcp"));
            expected.sort();
            b == expected.join("\n")
        },
        "Prometheus never saw the host's listeners",
    );

    // Open but nothing listens: exactly the DNAT port, and its alert fires.
    await_body(
        || {
            query(
                &lab,
                "ALERTS{alertname=\"ScannerAgentOpenWithoutListener\",alertstate=\"firing\"}",
            )
            .join("\n")
        },
        |b| !b.is_empty(),
        "ScannerAgentOpenWithoutListener never fired",
    );
    assert_eq!(
        query(&lab, "scanner_agent:open_port_without_listener"),
        [open(8080)]
    );
    assert_eq!(
        query(
            &lab,
            "ALERTS{alertname=\"ScannerAgentOpenWithoutListener\"}"
        ),
        [format!(
            "alertname=ScannerAgentOpenWithoutListener,alertstate=firing,instance=localhost:{SCANNER_PORT},ip=198.18.0.2,port=8080,protocol=tcp,severity=warning"
        )]
    );
    // Listening, reachable and not allowed: the real listener on 25, named
    // by the host's agent, not the DNAT port (unexpected, but nothing
    // listens) nor 22 (allowed).
    await_body(
        || query(&lab, "scanner_agent:unexpected_open_listener").join("\n"),
        |b| b == format!("instance={host},ip=198.18.0.2,name=data,port=25,protocol=tcp"),
        "the unexpected listener on 25 was never named",
    );
}
