//! Hostile clients against `scanner-agent run` while it scans: floods of
//! scrapes and wrong passwords, idle and slow connections and an oversized
//! `/query` never keep a scrape with the right credential from succeeding
//! within Prometheus's default scrape timeout; at the connection cap, idle
//! sockets make room; and scoped credentials get exactly the routes and
//! networks they are given.
mod common;

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    Lab, agent,
    daemon::{
        Daemon, FastScan, PORT, await_body, await_up, basic, bearer, curl, fetch, metric, request,
        request_to,
    },
    wait_until,
};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Prometheus's default scrape timeout.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.0 GET on a new connection, from the calling thread (which
/// must be in the scanner namespace): status and body, or None when the
/// connection failed or gave no HTTP answer.
fn get(addr: SocketAddr, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out);
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Reads one response (with a Content-Length) from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    s.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the agent has closed `s` (end of stream, or reset).
fn closed_by_peer(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match (&*s).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// This process's soft open files limit raised to its hard limit (for
/// the clients' own sockets); returns the hard limit.
fn raise_own_open_files_limit() -> u64 {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

/// The soft and hard open files limits of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let mut fields = line.split_whitespace().skip(3);
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// Counts of what a group of clients got.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    unauthorized: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
}

impl Tally {
    fn count(&self, answer: Option<u16>) {
        let counter = match answer {
            Some(200) => &self.ok,
            Some(401) => &self.unauthorized,
            Some(503) => &self.busy,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> [u64; 4] {
        [&self.ok, &self.unauthorized, &self.busy, &self.other].map(|c| c.load(Ordering::Relaxed))
    }
}

#[test]
fn a_scrape_succeeds_throughout_a_flood_of_hostile_clients() {
    testbed::require_root!();
    const SCRAPERS: usize = 200;
    const GUESSERS: usize = 100;
    const IDLE: usize = 1000;
    const FLOOD: Duration = Duration::from_secs(15);
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _listener = lab.target.listen(&[(Ipv4Addr::new(198, 18, 0, 2), 22)]);
    // Cost 10, as `htpasswd -nBC 10` makes.
    let hash = bcrypt::hash("scrape-pw", 10).unwrap();
    let config = FastScan::new(PORT)
        .interval(5)
        .with(&format!(
            "auth:\n  users:\n    - {{username: prometheus, password: \"{hash}\", scopes: [metrics]}}\n  \
             bearer_tokens:\n    - {{token: query-token, scopes: [query]}}\n"
        ))
        .to_string();
    // Started with the usual soft limit of 1024 open files, which the
    // idle sockets alone would nearly exhaust: the agent raises it itself.
    let hard = raise_own_open_files_limit();
    assert!(
        hard >= 4096,
        "the hard open files limit ({hard}) is too low for this test"
    );
    let nofile = format!("--nofile=1024:{hard}");
    let mut daemon = Daemon::start_wrapped(
        agent(),
        &lab,
        "hostile",
        &config,
        &[],
        &["prlimit", &nofile, "--"],
    );
    let scrape = basic("prometheus", "scrape-pw");
    let open22 = "open_port_status{ip=\"198.18.0.2\",port=\"22\",protocol=\"tcp\"}";
    await_body(
        || fetch(&lab, PORT, "/metrics", &scrape),
        |body| metric(body, open22) == Some(1.0),
        "no scan result in /metrics",
    );
    assert_eq!(
        open_files_limits(daemon.child.id()),
        (hard.to_string(), hard.to_string()),
        "the agent raised its soft open files limit to the hard one"
    );

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    let idle: Vec<TcpStream> = lab.scanner.run(move || {
        (0..IDLE)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
            })
            .collect()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let scrapers = Arc::new(Tally::default());
    let guessers = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for _ in 0..SCRAPERS {
        let (stop, tally, scrape) = (Arc::clone(&stop), Arc::clone(&scrapers), scrape.clone());
        clients.push(lab.scanner.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tally.count(get(addr, "/metrics", &scrape).map(|(status, _)| status));
            }
        }));
    }
    for n in 0..GUESSERS {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&guessers));
        clients.push(lab.scanner.spawn(move || {
            // Half guess passwords of the real user, half user names.
            let user = if n % 2 == 0 { "prometheus" } else { "root" };
            for attempt in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let guess = basic(user, &format!("guess-{n}-{attempt}"));
                tally.count(get(addr, "/metrics", &guess).map(|(status, _)| status));
            }
        }));
    }
    // A client that sends its headers a byte a second.
    let slow = lab.scanner.spawn(move || {
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
            basic("prometheus", "scrape-pw")
        );
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 256];
        for (sent, byte) in request.bytes().enumerate() {
            if s.write_all(&[byte]).is_err() {
                return (start.elapsed(), sent, 0);
            }
            match s.read(&mut buf) {
                Ok(0) => return (start.elapsed(), sent + 1, 0),
                Ok(n) => return (start.elapsed(), sent + 1, n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (start.elapsed(), sent + 1, 0),
            }
        }
        (start.elapsed(), request.len(), 0)
    });

    // Prometheus, every half second throughout.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    let mut checked_query = false;
    while started.elapsed() < FLOOD {
        let t = Instant::now();
        let s = scrape.clone();
        let answer = lab.scanner.run(move || get(addr, "/metrics", &s));
        let took = t.elapsed();
        slowest = slowest.max(took);
        scrapes += 1;
        let (status, body) = answer.expect("the scrape got an HTTP answer");
        assert_eq!(status, 200, "scrape {scrapes}: {body}");
        assert_eq!(metric(&body, open22), Some(1.0), "scrape {scrapes}");
        assert!(
            took < SCRAPE_TIMEOUT,
            "scrape {scrapes} took {took:?}, beyond Prometheus's scrape timeout"
        );
        if !checked_query && started.elapsed() > Duration::from_secs(3) {
            checked_query = true;
            // 64 KB of ports (hyper itself refuses URIs of 64 KiB): refused at
            // once, naming the parameter.
            let ports = vec!["1-65535"; 8000].join(",");
            let t = Instant::now();
            let (status, _, body) = request(
                &lab,
                PORT,
                &format!("/query?ip=198.18.0.2&ports={ports}"),
                &bearer("query-token"),
            )
            .unwrap();
            let took = t.elapsed();
            assert_eq!(status, 400, "{body}");
            assert!(
                body.contains(&format!(
                    "invalid parameter ports: {} bytes long, more than the 1024 allowed",
                    ports.len()
                )),
                "{body}"
            );
            assert!(took < SCRAPE_TIMEOUT, "the oversized /query took {took:?}");
            println!("64 KB ports= query: 400 in {took:?}");
            let (status, _, health) = request(&lab, PORT, "/healthz", &scrape).unwrap();
            assert_eq!(status, 200, "{health}");
        }
        thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(checked_query);

    let (took, sent, answered) = slow.join().unwrap();
    println!("slow client: cut off after {took:?}, {sent} bytes sent");
    assert_eq!(answered, 0, "the slow client got an answer");
    assert!(
        sent < 60 && took < Duration::from_secs(15),
        "the slow client was not cut off by the header timeout: {sent} bytes in {took:?}"
    );
    let cut = idle.iter().filter(|s| closed_by_peer(s)).count();
    assert_eq!(
        cut, IDLE,
        "connections that never sent a request are closed by the header timeout"
    );
    let [ok, unauthorized, busy, other] = scrapers.get();
    println!(
        "{scrapes} scrapes, slowest {slowest:?}; {SCRAPERS} scrapers: {ok} answered 200, {unauthorized} 401, {busy} 503, {other} other"
    );
    assert!(ok > 0);
    assert_eq!(
        [unauthorized, busy, other],
        [0, 0, 0],
        "every concurrent scrape with a verified credential succeeds"
    );
    let [ok, unauthorized, busy, other] = guessers.get();
    println!(
        "{GUESSERS} password guessers: {unauthorized} answered 401, {busy} 503 (verification queue full), {ok} 200, {other} other"
    );
    assert_eq!([ok, other], [0, 0], "a guess is refused, never an error");
    assert!(unauthorized > 0, "guesses were checked");
    assert!(daemon.running());
}

#[test]
fn at_the_connection_cap_idle_sockets_make_room_and_kept_alive_connections_stay() {
    testbed::require_root!();
    const CAP: usize = 50;
    const IDLE: usize = 200;
    let lab = Lab::new::<Ipv4Addr>(&[], 1500);
    let hash = bcrypt::hash("pw", 4).unwrap();
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "cap",
        &format!(
            "server:\n  port: {PORT}\n  max_connections: {CAP}\nauth:\n  users:\n    \
             - {{username: prometheus, password: \"{hash}\", scopes: [metrics]}}\n"
        ),
    );
    let scrape = basic("prometheus", "pw");
    await_up(&lab, PORT, &scrape);
    raise_own_open_files_limit();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    let (kept, answer, idle) = lab.scanner.run(move || {
        // Prometheus keeps its connection alive between scrapes.
        let mut kept = TcpStream::connect(addr).unwrap();
        kept.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let scrape = basic("prometheus", "pw");
        write!(
            kept,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{scrape}\r\n"
        )
        .unwrap();
        let answer = read_response(&mut kept);
        let idle: Vec<TcpStream> = (0..IDLE)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        (kept, answer, idle)
    });
    let kept_since = Instant::now();
    assert_eq!(answer.map(|a| a.0), Some(200));
    // Each idle socket past the cap closed the oldest one that never sent a request.
    let evicted = IDLE - (CAP - 1);
    let mut cut = 0;
    assert!(
        wait_until(Duration::from_secs(5), || {
            cut = idle.iter().filter(|s| closed_by_peer(s)).count();
            cut >= evicted
        }),
        "{cut} of {IDLE} idle sockets closed, expected {evicted}"
    );
    assert_eq!(cut, evicted, "only as many as the cap needs");
    // A new scrape gets in, at the cap.
    let (status, _, body) = request(&lab, PORT, "/metrics", &scrape).unwrap();
    assert_eq!(status, 200, "{body}");
    // Idle longer than the header timeout, the kept-alive connection still
    // serves: the header timeout runs from a request's first byte.
    thread::sleep((kept_since + Duration::from_secs(11)).saturating_duration_since(Instant::now()));
    let answer = lab.scanner.run(move || {
        let mut kept = kept;
        let scrape = basic("prometheus", "pw");
        write!(
            kept,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{scrape}\r\n"
        )
        .ok()?;
        read_response(&mut kept)
    });
    assert_eq!(answer.map(|a| a.0), Some(200));
    // Meanwhile the remaining idle sockets met the header timeout.
    assert_eq!(idle.iter().filter(|s| closed_by_peer(s)).count(), IDLE);
}

#[test]
fn each_credential_kind_gets_its_scopes_from_its_networks_only() {
    testbed::require_root!();
    const FIREWALL_PORT: u16 = 19455;
    let lab = Lab::new::<Ipv4Addr>(&[], 1500);
    let hash = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    // node_exporter's port on loopback, closed: an admitted passthrough
    // request is answered 502.
    let config = |admin_password: &str| {
        format!(
            "server:\n  port: {PORT}\n  web_config_file: web.yml\nfirewall:\n  listen: \"127.0.0.1:{FIREWALL_PORT}\"\n\
             general:\n  sitename: SITE\n  hostname: dtn\n  node_exporter: \"127.0.0.1:9\"\n  node_exporter_passthrough: true\n\
             auth:\n  basic: {{username: admin, password: \"{}\"}}\n  users:\n    \
             - {{username: prom, password: \"{}\", scopes: [metrics], networks: [127.0.0.0/8, \"::1\"]}}\n    \
             - {{username: far, password: \"{}\", scopes: [metrics, query, passthrough], networks: [198.19.0.0/16]}}\n  \
             bearer_tokens:\n    - tok-all\n    - {{token: tok-query, scopes: [query]}}\n    \
             - {{token: tok-pass, scopes: [passthrough], networks: [127.0.0.1]}}\n    \
             - {{token: tok-far, scopes: [metrics], networks: [\"2001:db8::/32\"]}}\n",
            hash(admin_password),
            hash("prom-pw"),
            hash("far-pw"),
        )
    };
    let web = format!("basic_auth_users:\n  web: \"{}\"\n", hash("web-pw"));
    let daemon = Daemon::start_with(
        agent(),
        &lab,
        "scopes",
        &config("admin-pw"),
        &[("web.yml", &web)],
    );
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    let firewall = SocketAddr::from((Ipv4Addr::LOCALHOST, FIREWALL_PORT));
    assert!(wait_until(Duration::from_secs(10), || {
        request_to(&lab, v4, "/healthz", "").is_some()
            && request_to(&lab, firewall, "/metrics", "").is_some()
    }));

    // (route, listener, scope, status when admitted)
    let routes = [
        ("/metrics", PORT, "metrics", 200),
        ("/healthz", PORT, "metrics", 200),
        ("/query?ip=bad&ports=22", PORT, "query", 400),
        ("/query/7", PORT, "query", 404),
        (
            "/api/SITE/monitoring/prometheus/passthrough/dtn",
            PORT,
            "passthrough",
            502,
        ),
        ("/metrics", FIREWALL_PORT, "metrics", 200),
    ];
    let every = ["metrics", "query", "passthrough"];
    // (what, header, scopes, networks it may call from: "v4", "v6")
    let credentials: [(&str, String, &[&str], &[&str]); 10] = [
        (
            "auth.basic",
            basic("admin", "admin-pw"),
            &every,
            &["v4", "v6"],
        ),
        (
            "web config user",
            basic("web", "web-pw"),
            &every,
            &["v4", "v6"],
        ),
        (
            "user inside its networks",
            basic("prom", "prom-pw"),
            &["metrics"],
            &["v4", "v6"],
        ),
        (
            "user outside its networks",
            basic("far", "far-pw"),
            &every,
            &[],
        ),
        ("plain token", bearer("tok-all"), &every, &["v4", "v6"]),
        (
            "query token",
            bearer("tok-query"),
            &["query"],
            &["v4", "v6"],
        ),
        (
            "token for 127.0.0.1",
            bearer("tok-pass"),
            &["passthrough"],
            &["v4"],
        ),
        (
            "token outside its networks",
            bearer("tok-far"),
            &["metrics"],
            &[],
        ),
        ("wrong password", basic("prom", "wrong"), &[], &[]),
        ("no credentials", String::new(), &[], &[]),
    ];
    for (what, header, scopes, networks) in &credentials {
        let known = !scopes.is_empty();
        for (path, port, scope, admitted) in routes {
            for (peer, host) in [
                ("v4", Ipv4Addr::LOCALHOST.into()),
                ("v6", Ipv6Addr::LOCALHOST.into()),
            ] {
                // The firewall listener is on 127.0.0.1 only.
                if port == FIREWALL_PORT && peer == "v6" {
                    continue;
                }
                let addr = SocketAddr::new(host, port);
                let (status, _, body) = request_to(&lab, addr, path, header).unwrap();
                let want = if !known {
                    401
                } else if scopes.contains(&scope) && networks.contains(&peer) {
                    admitted
                } else {
                    403
                };
                assert_eq!(
                    status, want,
                    "{what} on {path} (port {port}) from {peer}: {body}"
                );
                if want == 403 {
                    let why = if scopes.contains(&scope) {
                        "may not be used from"
                    } else {
                        "lacks the"
                    };
                    assert!(body.contains(why), "{what} on {path}: {body}");
                }
            }
        }
    }

    // A changed password stops working as soon as the reload is done,
    // though the old one was verified (and remembered) a moment ago.
    let old = basic("admin", "admin-pw");
    assert_eq!(request_to(&lab, v4, "/metrics", &old).unwrap().0, 200);
    daemon.reload(&config("new-admin-pw"));
    let new = basic("admin", "new-admin-pw");
    assert!(wait_until(Duration::from_secs(10), || {
        request_to(&lab, v4, "/metrics", &new).is_some_and(|r| r.0 == 200)
    }));
    assert_eq!(request_to(&lab, v4, "/metrics", &old).unwrap().0, 401);
}

#[test]
fn the_tls_listener_has_the_same_bounds() {
    testbed::require_root!();
    const CAP: usize = 10;
    const IDLE: usize = 30;
    let lab = Lab::new::<Ipv4Addr>(&[], 1500);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let daemon = Daemon::start_with(
        agent(),
        &lab,
        "tls-bounds",
        &format!(
            "server:\n  port: {PORT}\n  max_connections: {CAP}\n  tls:\n    cert_file: tls.crt\n    key_file: tls.key\n\
             auth:\n  bearer_tokens: [tok]\n"
        ),
        &[
            ("tls.crt", &cert.cert.pem()),
            ("tls.key", &cert.signing_key.serialize_pem()),
        ],
    );
    let url = format!("https://localhost:{PORT}/metrics");
    let args = [
        "--cacert",
        "tls.crt",
        "-H",
        "Authorization: Bearer tok",
        &url,
    ];
    let curl = || {
        curl(&lab, &daemon.dir, &args)
            .map(|code| code.to_string())
            .unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(10), || curl() == "200"));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    let idle: Vec<TcpStream> = lab.scanner.run(move || {
        (0..IDLE)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect()
    });
    let mut cut = 0;
    assert!(
        wait_until(Duration::from_secs(5), || {
            cut = idle.iter().filter(|s| closed_by_peer(s)).count();
            cut >= IDLE - CAP
        }),
        "{cut} of {IDLE} idle sockets closed at the cap of {CAP}"
    );
    // A handshake sent a byte a second.
    let slow = lab.scanner.spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let start = Instant::now();
        let hello = [
            0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        let mut buf = [0u8; 64];
        for byte in hello.iter().cycle().take(60) {
            if s.write_all(&[*byte]).is_err() {
                return start.elapsed();
            }
            match s.read(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                _ => return start.elapsed(),
            }
        }
        start.elapsed()
    });
    thread::sleep(Duration::from_secs(1));
    assert_eq!(curl(), "200", "a scrape gets in at the cap");
    let took = slow.join().unwrap();
    assert!(
        took < Duration::from_secs(15),
        "the slow handshake was not cut off: {took:?}"
    );
    println!("slow TLS handshake cut off after {took:?}");
    // Sockets that never began a handshake met the header timeout too.
    assert_eq!(idle.iter().filter(|s| closed_by_peer(s)).count(), IDLE);
    assert_eq!(curl(), "200");
}
