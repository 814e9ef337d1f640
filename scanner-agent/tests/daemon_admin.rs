//! The daemon's operations side: TLS (with client certificates and
//! exporter-toolkit web configs), SIGHUP reload, and /healthz when the queue
//! is full or the capture path is gone.
mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{
    Lab, SCANNER_IF, agent,
    daemon::{Daemon, FastScan, await_body, bearer, curl, fetch, fetch_status, metric, request},
    wait_until,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A test CA and two certificates it signed: the server's (localhost) and a client's.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "scanner-agent test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, usage| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_pem,
        server: leaf(
            vec!["localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        client: leaf(
            vec!["prometheus".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    }
}

#[test]
fn tls_with_client_certificates() {
    testbed::require_root!();
    const PORT: u16 = 19930;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let pki = pki();
    let daemon = Daemon::start_with(
        agent(),
        &lab,
        "tls",
        &format!(
            "server:\n  port: {PORT}\n  tls:\n    cert_file: server.crt\n    key_file: server.key\n    \
             client_ca_file: ca.crt\n    min_version: TLS13\nauth:\n  bearer_tokens: [tok]\n"
        ),
        &[
            ("ca.crt", &pki.ca),
            ("server.crt", &pki.server.0),
            ("server.key", &pki.server.1),
            ("client.crt", &pki.client.0),
            ("client.key", &pki.client.1),
        ],
    );
    let url = format!("https://localhost:{PORT}/metrics");
    let with_cert = [
        "--cacert",
        "ca.crt",
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ];
    let bearer = ["-H", "Authorization: Bearer tok"];
    let call = |extra: &[&str]| {
        let args: Vec<&str> = extra.iter().copied().chain([url.as_str()]).collect();
        curl(&lab, &daemon.dir, &args)
    };
    assert!(wait_until(Duration::from_secs(10), || call(
        &[&with_cert[..], &bearer[..]].concat()
    ) == Some(200)));
    assert_eq!(
        call(&with_cert),
        Some(401),
        "TLS does not replace authentication"
    );
    assert_eq!(
        call(&[&["--cacert", "ca.crt"][..], &bearer[..]].concat()),
        None,
        "no client certificate: the handshake fails"
    );
    assert_eq!(
        call(&[&with_cert[..], &bearer[..], &["--tls-max", "1.2"][..]].concat()),
        None,
        "min_version TLS13 refuses TLS 1.2"
    );
    let plain = format!("http://localhost:{PORT}/metrics");
    assert_eq!(
        curl(&lab, &daemon.dir, &[&plain]),
        None,
        "no plain HTTP on a TLS port"
    );
}

#[test]
fn exporter_toolkit_web_config_is_honoured() {
    testbed::require_root!();
    const PORT: u16 = 19931;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let pki = pki();
    let hash = bcrypt::hash("alice-pw", 4).unwrap();
    let daemon = Daemon::start_with(
        agent(),
        &lab,
        "webconfig",
        &format!("server:\n  port: {PORT}\n  web_config_file: web-config.yml\n"),
        &[
            (
                "web-config.yml",
                &format!(
                    "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {hash}\n"
                ),
            ),
            ("ca.crt", &pki.ca),
            ("server.crt", &pki.server.0),
            ("server.key", &pki.server.1),
        ],
    );
    let url = format!("https://localhost:{PORT}/healthz");
    let call = |user: &str| curl(&lab, &daemon.dir, &["--cacert", "ca.crt", "-u", user, &url]);
    assert!(wait_until(Duration::from_secs(10), || call(
        "alice:alice-pw"
    ) == Some(200)));
    assert_eq!(call("alice:wrong"), Some(401));
    assert_eq!(call("bob:alice-pw"), Some(401));
}

fn config(port: u16, ports: &str, token: &str) -> String {
    FastScan::new(port)
        .ports(ports)
        .with(&format!("auth:\n  bearer_tokens: [{token}]\n"))
        .to_string()
}

#[test]
fn sighup_reloads_the_config_and_a_bad_one_changes_nothing() {
    testbed::require_root!();
    const PORT: u16 = 19932;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _listeners = lab.target.listen(&[
        (Ipv4Addr::new(198, 18, 0, 2), 22),
        (Ipv4Addr::new(198, 18, 0, 2), 25),
    ]);
    let mut daemon = Daemon::start(agent(), &lab, "reload", &config(PORT, "20-23", "one"));
    let get = |token: &str| {
        request(&lab, PORT, "/metrics", &bearer(token))
            .map(|(status, _, body)| (status, body))
            .unwrap_or_default()
    };
    let open = |port: u16| {
        format!("open_port_status{{ip=\"198.18.0.2\",port=\"{port}\",protocol=\"tcp\"}}")
    };
    let old_task = "last_scan_timestamp_seconds{target=\"198.18.0.0/30\",port_range=\"20-23\",protocol=\"tcp\"}";
    let body = await_body(
        || get("one").1,
        |b| metric(b, &open(22)) == Some(1.0),
        "no first scan",
    );
    assert_eq!(metric(&body, &open(25)), None, "25 is outside 20-23");
    assert!(metric(&body, old_task).is_some());

    daemon.reload(&config(PORT, "20-30", "two"));
    let body = await_body(
        || get("two").1,
        |b| metric(b, &open(25)) == Some(1.0),
        "the reloaded port range was not scanned",
    );
    assert_eq!(get("one").0, 401, "the old token is gone");
    assert_eq!(metric(&body, &open(22)), Some(1.0));
    assert_eq!(
        metric(&body, old_task),
        None,
        "the removed task's series are dropped"
    );
    assert_eq!(
        metric(&body, "scanner_agent_config_last_reload_successful"),
        Some(1.0)
    );

    daemon.reload("scanning:\n  port_rnage: \"1-10\"\n");
    let body = await_body(
        || get("two").1,
        |b| metric(b, "scanner_agent_config_last_reload_successful") == Some(0.0),
        "a bad config was not reported",
    );
    let task = "last_scan_timestamp_seconds{target=\"198.18.0.0/30\",port_range=\"20-30\",protocol=\"tcp\"}";
    let before = metric(&body, task).unwrap();
    await_body(
        || get("two").1,
        |b| metric(b, task).is_some_and(|t| t > before),
        "scans stopped after a bad reload",
    );
    assert!(daemon.running());
}

#[test]
fn healthz_fails_when_the_capture_path_is_gone() {
    testbed::require_root!();
    const PORT: u16 = 19933;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _daemon = Daemon::start(agent(), &lab, "capture", &config(PORT, "20-23", "tok"));
    let health = || fetch_status(&lab, PORT, "/healthz", "Authorization: Bearer tok\r\n");
    let call = |path: &str| fetch_status(&lab, PORT, path, "Authorization: Bearer tok\r\n");
    let ok = await_body(health, |b| b.starts_with("200 "), "never healthy");
    assert!(ok.contains("\"healthy\":true"), "{ok}");
    // Targets configured and the program attached: ready.
    let ready = call("/-/ready");
    assert!(
        ready.starts_with("200 ") && ready.contains("Ready"),
        "{ready}"
    );
    lab.scanner.ip(&["link", "del", SCANNER_IF]);
    let down = await_body(
        health,
        |b| b.starts_with("503 "),
        "a lost interface went unnoticed",
    );
    assert!(down.contains("capture path is down"), "{down}");
    // The program is gone with its interface: not ready, though still alive.
    let ready = call("/-/ready");
    assert!(
        ready.starts_with("503 ") && ready.contains("not attached"),
        "{ready}"
    );
    let healthy = call("/-/healthy");
    assert!(healthy.starts_with("200 "), "{healthy}");
}

#[test]
fn a_full_queue_answers_503_at_once() {
    testbed::require_root!();
    const PORT: u16 = 19934;
    // Four hosts that exist (a missing one fails fast on neighbour
    // resolution and would free the worker), one worker busy for minutes
    // (65535 ports at 500 probes/s) and a queue of one: the tasks that
    // come due after the first (start times are jittered) fill it.
    let hosts = [4, 5, 6, 7].map(|h| Ipv4Addr::new(198, 18, 0, h));
    let lab = Lab::new(&hosts, 1500);
    let _daemon = Daemon::start(
        agent(),
        &lab,
        "full",
        &format!(
            "server:\n  port: {PORT}\nscanning:\n  max_cidr_size: 32\n  worker_count: 1\n  task_queue_size: 1\n  \
             min_rate: 500\n  max_rate: 500\nauth:\n  bearer_tokens: [tok]\ntargets:\n  - 198.18.0.4/30\n"
        ),
    );
    let call = |path: &str| fetch_status(&lab, PORT, path, "Authorization: Bearer tok\r\n");
    let full = await_body(
        || call("/healthz"),
        |b| b.starts_with("503 "),
        "the queue never filled",
    );
    assert!(full.contains("task queue is full"), "{full}");
    let query = call("/query?ip=198.18.0.5&ports=22");
    assert!(query.starts_with("503 "), "{query}");
    assert!(query.to_lowercase().contains("queue"), "{query}");
}

/// The daemon as an unprivileged user holding exactly CAP_BPF, CAP_NET_ADMIN,
/// CAP_NET_RAW and CAP_PERFMON (what the systemd unit grants) scans as root would.
#[test]
fn runs_unprivileged_with_exactly_four_capabilities() {
    testbed::require_root!();
    const PORT: u16 = 19935;
    const NOBODY: u32 = 65534;
    let lab = Lab::new(&[Ipv4Addr::new(198, 18, 0, 2)], 1500);
    let _listeners = lab.target.listen(&[(Ipv4Addr::new(198, 18, 0, 2), 22)]);
    let dir =
        std::env::temp_dir().join(format!("scanner-agent-unprivileged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Driver mode, which a veth would not get by default: the capabilities
    // must suffice for it.
    let yaml = FastScan::new(PORT)
        .ports("20-23")
        .scanning("xdp_mode: driver")
        .with("auth:\n  bearer_tokens: [tok]\n")
        .to_string();
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    // The state file is the daemon's to write, as StateDirectory= arranges.
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let caps = "+bpf,+net_admin,+net_raw,+perfmon";
    let uid = NOBODY.to_string();
    let daemon = Daemon::spawn(
        agent(),
        &lab,
        dir,
        &[
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            "--",
        ],
    );
    let body = await_body(
        || fetch(&lab, PORT, "/metrics", "Authorization: Bearer tok\r\n"),
        |b| {
            metric(
                b,
                "open_port_status{ip=\"198.18.0.2\",port=\"22\",protocol=\"tcp\"}",
            ) == Some(1.0)
        },
        "no scan result from the unprivileged daemon",
    );
    assert!(
        metric(&body, "scanner_agent_xdp_attached{mode=\"driver\"}") == Some(1.0),
        "{body}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert!(field("Uid:").starts_with(&uid), "{status}");
    // CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_PERFMON (38), CAP_BPF (39).
    assert_eq!(field("CapEff:"), "000000c000003000");
    assert!(
        wait_until(Duration::from_secs(10), || daemon
            .dir
            .join("state.json")
            .exists()),
        "the state file was not written"
    );
}
