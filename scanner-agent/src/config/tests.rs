use std::time::Duration;

use super::*;

const SEED_EXAMPLE: &str = include_str!("../../../configs/openport-exporter-example.yaml");

#[test]
fn the_seed_example_loads_unchanged() {
    let c = Config::parse(SEED_EXAMPLE).unwrap();
    assert_eq!(c.server.port, 9919);
    assert_eq!(c.scanning.min_rate.0, 1500);
    assert_eq!(c.scanning.max_rate.0, 2000);
    assert_eq!(c.scanning.max_retries.0, 4);
    // The example's one target, a /32 of its authors' network: parsed, never scanned.
    assert_eq!(c.targets.len(), 1);
    assert!(matches!(&c.targets[0], TargetEntry::Plain(t) if t.0.ends_with("/32")));
    let t = c.scanning.tuning();
    assert_eq!(
        t.rate,
        Rate::Adaptive {
            min: 1500,
            max: Some(2000)
        }
    );
    assert_eq!(t.min_parallelism, 1200);
    assert_eq!(t.host_timeout, Some(Duration::from_secs(180)));
    assert_eq!(
        (t.initial_rtt_timeout, t.min_rtt_timeout, t.max_rtt_timeout),
        (
            Duration::from_millis(100),
            Duration::from_millis(50),
            Duration::from_millis(1500)
        )
    );
    assert_eq!(
        c.warnings(),
        ["auth.basic.password is a plain password; prefer a bcrypt hash"]
    );
}

#[test]
fn defaults_are_the_seeds() {
    let c = Config::parse("").unwrap();
    let s = &c.scanning;
    assert_eq!(c.server.port, 9919);
    assert_eq!(c.server.max_connections.0, 4096);
    assert_eq!((s.interval.0, s.timeout.0), (86400, 3600));
    assert_eq!(
        (
            s.port_range.spec.as_str(),
            s.max_cidr_size,
            s.max_cidr_size_v6
        ),
        ("1-65535", Prefix(24), Prefix(120))
    );
    assert!(
        s.disable_dns_resolution && s.disable_host_discovery && !s.udp_scan && !s.duration_metrics
    );
    assert_eq!(
        (
            s.min_rate.0,
            s.max_rate.0,
            s.min_parallelism.0,
            s.max_retries.0
        ),
        (1000, 0, 1000, 6)
    );
    assert_eq!(
        (s.host_timeout.0, s.scan_delay.0, s.max_scan_delay.0),
        (300, 0, 0)
    );
    assert_eq!(
        (
            s.initial_rtt_timeout.0,
            s.max_rtt_timeout.0,
            s.min_rtt_timeout.0
        ),
        (0, 0, 0)
    );
    assert_eq!(
        (s.rate_limit.0, s.task_queue_size.0, s.worker_count.0),
        (30, 1000, 10)
    );
    assert!(
        c.targets.is_empty() && c.auth.basic.is_none(),
        "no default target, no default password"
    );
    assert_eq!(
        c.warnings(),
        ["no targets configured: nothing will be scanned"]
    );
    assert_eq!(
        s.tuning().rate,
        Rate::Adaptive {
            min: 1000,
            max: None
        }
    );
}

#[test]
fn short_intervals_are_kept_with_a_warning() {
    let c = Config::parse("scanning:\n  interval: 60\ntargets: [198.18.0.0/24]\n").unwrap();
    assert_eq!(c.scanning.interval.0, 60);
    assert!(
        c.warnings()[0].starts_with("scanning.interval is 60 s"),
        "{:?}",
        c.warnings()
    );
}

/// Every rejection names the key and the line.
#[test]
fn rejections_name_key_and_line() {
    let cases = [
        (
            "scanning:\n  intervall: 60\n",
            "scanning: unknown field `intervall`",
        ),
        (
            "server:\n  port: 70000\n",
            "server.port: 70000 is out of range (expected a port from 1 to 65535) at line 2 column 9",
        ),
        (
            "scanning:\n  udp_scan: maybe\n",
            "scanning.udp_scan: invalid type: string \"maybe\", expected a boolean at line 2 column 13",
        ),
        (
            "scanning:\n  max_cidr_size: 33\n",
            "scanning.max_cidr_size: 33 is out of range (expected a prefix length 0-32) at line 2 column 18",
        ),
        (
            "scanning:\n  worker_count: 0\n",
            "scanning.worker_count: 0 is out of range (expected a whole number from 1 to 1024) at line 2 column 17",
        ),
        (
            "scanning:\n  port_range: \"80-20\"\n",
            "scanning.port_range: invalid port specification \"80-20\": range \"80-20\" ends before it starts",
        ),
        (
            "targets:\n  - 198.18.0.300\n",
            "targets[0]: invalid target \"198.18.0.300\"",
        ),
        (
            "targets:\n  - 198.18.0.0/24\n  - 224.0.0.1\n",
            "targets[1]: target 224.0.0.1 cannot be scanned: it includes multicast addresses",
        ),
        (
            "scanning:\n  exclude: [\"a b\"]\n",
            "scanning.exclude[0]: invalid target \"a b\"",
        ),
        (
            "auth:\n  basic:\n    username: admin\n",
            "auth.basic: missing field `password` at line 3 column 5",
        ),
        (
            "server:\n  max_connections: 0\n",
            "server.max_connections: 0 is out of range (expected a whole number from 1 to 1000000) at line 2",
        ),
        (
            "server:\n  max_connections: many\n",
            "server.max_connections: invalid type: string \"many\"",
        ),
        (
            "scanning:\n  max_link_share: 1.5\n",
            "scanning.max_link_share: 1.5 is out of range (expected a share above 0 and at most 1) at line 2",
        ),
        (
            "scanning:\n  yield_above: 0\n",
            "scanning.yield_above: 0 is out of range (expected a share above 0 and at most 1) at line 2",
        ),
        (
            "scanning:\n  shard: \"5/4\"\n",
            "scanning.shard: invalid shard \"5/4\": expected i/N with 1 <= i <= N, e.g. 2/4 at line 2",
        ),
        (
            "scanning:\n  seed: -1\n",
            "scanning.seed: invalid type: integer `-1`, expected u64 at line 2",
        ),
        (
            "scanning:\n  fixed_retries: sometimes\n",
            "scanning.fixed_retries: invalid type: string \"sometimes\", expected a boolean at line 2",
        ),
        (
            "scanning:\n  xdp_mode: native\n",
            "scanning.xdp_mode: unknown variant `native`, expected one of `auto`, `driver`, `skb` at line 2",
        ),
        ("bogus: 1\n", "unknown field `bogus`"),
    ];
    for (yaml, want) in cases {
        let err = Config::parse(yaml).unwrap_err();
        assert!(
            err.starts_with(want) || err.contains(want),
            "for {yaml:?}\n got: {err}\nwant: {want}"
        );
        assert!(err.contains("line "), "no line in: {err}");
    }
}

/// Every numeric key has a range: its ends load, one past them is an error
/// naming key and line. The values that crashed the agent before ranges
/// existed (an interval near 2^63, a timeout of u64::MAX, a 34 GB window,
/// a queue of 2^63 tasks, a passthrough timeout past the clock's end) are
/// among the rejections.
#[test]
fn every_numeric_key_has_a_range() {
    let keys: [(&str, u64, u64); 21] = [
        ("scanning.interval", 1, 31_536_000),
        ("scanning.timeout", 1, 604_800),
        ("scanning.min_rate", 1, MAX_RATE),
        ("scanning.max_rate", 0, MAX_RATE),
        ("scanning.min_parallelism", 0, 524_288),
        ("scanning.max_retries", 0, 50),
        ("scanning.host_timeout", 0, 604_800),
        ("scanning.scan_delay", 0, 60_000),
        ("scanning.max_scan_delay", 0, 60_000),
        ("scanning.initial_rtt_timeout", 0, 60_000),
        ("scanning.min_rtt_timeout", 0, 60_000),
        ("scanning.max_rtt_timeout", 0, 60_000),
        ("scanning.rate_limit", 1, 1_000_000),
        ("scanning.task_queue_size", 1, 1_000_000),
        ("scanning.worker_count", 1, 1024),
        ("scanning.max_open_port_series", 1, 10_000_000),
        ("scanning.link_speed_mbps", 1, 10_000_000),
        ("passthrough.timeout", 1, 600),
        ("passthrough.max_body_bytes", 1, 1 << 30),
        ("server.port", 1, 65535),
        ("server.max_connections", 1, 1_000_000),
    ];
    for (key, min, max) in keys {
        let (section, name) = key.split_once('.').unwrap();
        let yaml = |v: &dyn std::fmt::Display| format!("{section}:\n  {name}: {v}\n");
        for ok in [min, max] {
            Config::parse(&yaml(&ok)).unwrap_or_else(|e| panic!("{key}: {ok} refused: {e}"));
        }
        let mut bad: Vec<String> = vec![(max + 1).to_string(), u64::MAX.to_string(), "-1".into()];
        if min > 0 {
            bad.push((min - 1).to_string());
        }
        if key == "scanning.interval" {
            bad.push(((1_u64 << 63) - 1).to_string());
        }
        for v in bad {
            let Err(err) = Config::parse(&yaml(&v)) else {
                panic!("{key}: {v} accepted");
            };
            assert!(
                err.starts_with(&format!("{key}: ")) && err.contains("at line 2"),
                "{key}: {v}: {err}"
            );
        }
    }
}

/// A scratch directory with the given files, removed on drop.
struct Files(std::path::PathBuf);

impl Files {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("sa-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Self(dir)
    }

    fn load(&self) -> Result<Config, String> {
        Config::load(&self.0.join("config.yaml")).map_err(|e| e.to_string())
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate and its key, as PEM.
fn certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[test]
fn web_config_users_and_tls_apply() {
    let (cert, key) = certificate();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let files = Files::new(
        "web",
        &[
            ("config.yaml", "server:\n  web_config_file: web.yml\n"),
            (
                "web.yml",
                &format!(
                    "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n\
                     basic_auth_users:\n  alice: {hash}\n"
                ),
            ),
            ("tls.crt", &cert),
            ("tls.key", &key),
        ],
    );
    let c = files.load().unwrap();
    let tls = c.server.tls.as_ref().unwrap();
    assert_eq!(
        tls.cert_file,
        files.0.join("tls.crt"),
        "relative to web.yml"
    );
    assert_eq!(
        c.auth.accounts().map(|a| a.username).collect::<Vec<_>>(),
        ["alice"]
    );
    assert!(c.auth.configured());
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.starts_with("tls cipher_suites is ignored")),
        "{:?}",
        c.warnings()
    );
}

/// Every rejection of the files the configuration names says which key and why.
#[test]
fn web_config_and_tls_rejections_are_named() {
    let (cert, key) = certificate();
    let (other_cert, _) = certificate();
    let tls = "server:\n  tls:\n    cert_file: tls.crt\n    key_file: tls.key\n";
    // (config.yaml, further files, expected error)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let hash = bcrypt::hash("pw", 4).unwrap();
    let basic_bob =
        "server:\n  web_config_file: web.yml\nauth:\n  basic: {username: bob, password: pw}\n";
    let web_bob = format!("basic_auth_users:\n  bob: \"{hash}\"\n");
    let web_nobody = format!("basic_auth_users:\n  \"\": \"{hash}\"\n");
    let web_malformed = format!("basic_auth_users:\n  bob: \"{}\"\n", &hash[..40]);
    let cases: [Case<'_>; 11] = [
        (
            basic_bob,
            &[("web.yml", &web_bob)],
            "auth: the username \"bob\" is configured twice (with basic_auth_users of ",
        ),
        (
            "server:\n  web_config_file: web.yml\n",
            &[("web.yml", &web_nobody)],
            "basic_auth_users: the username is empty at line 2",
        ),
        (
            "server:\n  web_config_file: web.yml\n",
            &[("web.yml", &web_malformed)],
            "basic_auth_users.bob: looks like a bcrypt hash but is not a valid one",
        ),
        (
            "server:\n  web_config_file: web.yml\n",
            &[("web.yml", "basic_auth_users:\n  bob: hunter2\n")],
            "server.web_config_file ",
        ),
        (
            "server:\n  web_config_file: web.yml\n",
            &[("web.yml", "basic_auth_users:\n  bob: hunter2\n")],
            "basic_auth_users.bob: not a bcrypt hash",
        ),
        (
            "server:\n  web_config_file: web.yml\n",
            &[(
                "web.yml",
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n",
            )],
            "tls_server_config: unknown field `client_allowed_sans`",
        ),
        (
            "server:\n  web_config_file: missing.yml\n",
            &[],
            "missing.yml: cannot read it",
        ),
        (
            "server:\n  tls:\n    cert_file: nothere.crt\n    key_file: tls.key\n",
            &[],
            "server.tls: cert_file: cannot read",
        ),
        (
            &format!("{tls}    client_auth_type: RequireAndVerifyClientCert\n"),
            &[],
            "server.tls: client_auth_type RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            &format!("{tls}    min_version: TLS13\n    max_version: TLS12\n"),
            &[],
            "server.tls: min_version TLS13 is above max_version TLS12",
        ),
        (
            "server:\n  tls:\n    cert_file: other.crt\n    key_file: tls.key\n",
            &[("other.crt", &other_cert)],
            "server.tls: the certificate and key do not make a usable server identity",
        ),
    ];
    for (i, (config, extra, want)) in cases.into_iter().enumerate() {
        let mut files = vec![
            ("config.yaml", config),
            ("tls.crt", &cert),
            ("tls.key", &key),
        ];
        files.extend_from_slice(extra);
        let err = Files::new(&format!("reject{i}"), &files)
            .load()
            .unwrap_err();
        assert!(err.contains(want), "case {i}\n got: {err}\nwant: {want}");
    }
    let both = Files::new(
        "both",
        &[
            ("config.yaml", &format!("{tls}  web_config_file: web.yml\n")),
            (
                "web.yml",
                "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n",
            ),
            ("tls.crt", &cert),
            ("tls.key", &key),
        ],
    );
    assert!(
        both.load()
            .unwrap_err()
            .contains("server.tls and tls_server_config in")
    );
}

/// `configs/config.yaml` holds every key the README's table documents, at
/// its default, and nothing the table leaves out.
#[test]
fn the_example_config_is_what_the_readme_documents() {
    const EXAMPLE: &str = include_str!("../../../configs/config.yaml");
    const README: &str = include_str!("../../../README.md");
    assert_eq!(
        Config::parse(EXAMPLE).unwrap(),
        Config::default(),
        "every key of the example is at its default"
    );
    let sections = [
        "server.",
        "scanning.",
        "auth.",
        "firewall.",
        "general.",
        "guard.",
        "passthrough.",
    ];
    let documented: Vec<&str> = README
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split(" |").next())
        .flat_map(|cell| cell.split(", "))
        .map(|key| key.trim_matches('`'))
        .filter(|key| key == &"targets" || sections.iter().any(|s| key.starts_with(s)))
        .collect();
    assert!(documented.len() > 30, "{documented:?}");
    for key in &documented {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        assert!(
            EXAMPLE.contains(&format!("{leaf}:")),
            "{key} is documented but not in configs/config.yaml"
        );
    }
    fn paths(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_yaml::Value::Mapping(map) = value {
            for (k, v) in map {
                let key = format!("{prefix}{}", k.as_str().unwrap_or_default());
                paths(v, &format!("{key}."), out);
                out.push(key);
            }
        }
    }
    let mut active = Vec::new();
    paths(&serde_yaml::from_str(EXAMPLE).unwrap(), "", &mut active);
    for key in active {
        assert!(
            documented.contains(&key.as_str()) || sections.contains(&format!("{key}.").as_str()),
            "{key} is in configs/config.yaml but not documented in the README"
        );
    }
}

#[test]
fn capped_ports_refuse_long_specs_before_parsing() {
    let long = vec!["1-65535"; 200].join(",");
    assert_eq!(
        Ports::parse_capped(&long, Ports::QUERY_MAX_LEN).unwrap_err(),
        format!("{} bytes long, more than the 1024 allowed", long.len())
    );
    let short = Ports::parse_capped("22,80,8000-8100", Ports::QUERY_MAX_LEN).unwrap();
    assert_eq!(short.list.len(), 103);
    assert!(
        Ports::parse_capped("80-20", Ports::QUERY_MAX_LEN)
            .unwrap_err()
            .contains("ends before it starts")
    );
}

/// `scanning.exclude_file` is read with the config, relative to it; its
/// entries join `exclude` in every target specification, and a bad line
/// fails the whole load with file and line.
#[test]
fn the_exclude_file_is_read_with_the_config() {
    let dir = std::env::temp_dir().join(format!("scanner-agent-exclcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "scanning:\n  exclude: [198.18.0.9]\n  exclude_file: blocked.txt\n  shard: \"2/3\"\n  seed: 7\ntargets: [198.18.0.0/28]\n",
    )
    .unwrap();
    std::fs::write(dir.join("blocked.txt"), "# lab\n198.18.0.4/31\n").unwrap();
    let c = Config::load(&config).unwrap();
    assert_eq!(
        c.scanning.target_spec(vec!["198.18.0.0/28".into()]).exclude,
        ["198.18.0.9", "198.18.0.4/31"]
    );
    assert_eq!(
        (
            c.scanning.shard.index,
            c.scanning.shard.count,
            c.scanning.seed
        ),
        (2, 3, Some(7))
    );
    std::fs::write(dir.join("blocked.txt"), "198.18.0.4/31\nhost.example\n").unwrap();
    let e = Config::load(&config).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        e,
        format!(
            "{}: scanning.exclude_file: exclude file {} line 2: \"host.example\" is not an IP address, a CIDR range or a first-last range",
            config.display(),
            dir.join("blocked.txt").display()
        )
    );
}
