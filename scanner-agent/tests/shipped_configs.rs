//! The files under configs/ that ship with the packages: Prometheus accepts
//! the scrape example and the alert rules, the rules' unit tests pass, every
//! metric the rules and the dashboard name is one the agent exports, the
//! systemd unit is valid and grants exactly the capabilities the agent
//! needs, and the packaged config.yaml is one the agent accepts.
mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::agent;
use prometheus_client::registry::Registry;
use scanner_agent::{
    daemon::metrics::{
        AgentMetrics, ChangeLabels, ExporterMetrics, ExposureMetrics, FailureLabels, HostView,
        InterfaceLabels, IpLabels, LinkLabels, ModeLabels, PathLabels, PortLabels, TargetLabels,
        TaskLabels,
    },
    firewall::FirewallCollector,
    web::exposition::encode_text,
};

fn configs(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(rel)
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); `cargo xtask test` provides promtool, systemd-analyze and rpm")
        })
}

fn assert_ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The rule files prometheus.yml loads, with how many rules each holds.
const RULE_FILES: [(&str, usize); 2] = [("alerts.yml", 14), ("host-view.yml", 4)];

#[test]
fn promtool_accepts_the_rules_their_tests_and_the_scrape_config() {
    let dir = configs("prometheus");
    for (file, count) in RULE_FILES {
        let rules = assert_ok(
            &run_in(&dir, "promtool", &["check", "rules", file]),
            "promtool check rules",
        );
        assert!(
            rules.contains(&format!("SUCCESS: {count} rules found")),
            "{file}: {rules}"
        );
        let test_file = file.replace(".yml", ".test.yml");
        let tests = assert_ok(
            &run_in(&dir, "promtool", &["test", "rules", &test_file]),
            "promtool test rules",
        );
        assert!(tests.contains("SUCCESS"), "{test_file}: {tests}");
    }
    let config = assert_ok(
        &run_in(&dir, "promtool", &["check", "config", "prometheus.yml"]),
        "promtool check config",
    );
    assert!(
        config.contains(&format!("SUCCESS: {} rule files found", RULE_FILES.len())),
        "the scrape example must load every rule file:\n{config}"
    );
}

/// Every series name the agent can export, from its own registry: counters
/// gain `_total`, histograms `_bucket`, `_sum` and `_count`. A labelled
/// family is only encoded once it has a series, so each gets one.
fn exported_series() -> BTreeSet<String> {
    let mut registry = Registry::default();
    let m = ExporterMetrics::register(&mut registry, true);
    let a = AgentMetrics::register(&mut registry);
    // Families without samples are not encoded: the exposure families
    // (gauges set only where a policy judges) are named by the agent.
    ExposureMetrics::register(&mut registry);
    // The host view is read at scrape time (of this host, here): its
    // families are named by the agent too, as a failed read shows only one.
    HostView::register(&mut registry);
    let task = TaskLabels {
        target: "198.18.0.0/24".into(),
        port_range: "1-65535".into(),
        protocol: "tcp".into(),
    };
    let target = TargetLabels {
        target: task.target.clone(),
    };
    m.open_port_status
        .get_or_create(&PortLabels {
            ip: "198.18.0.2".into(),
            port: "22".into(),
            protocol: "tcp".into(),
        })
        .set(1);
    m.open_ports_total
        .get_or_create(&IpLabels {
            ip: "198.18.0.2".into(),
        })
        .set(1);
    m.scan_duration_seconds.get_or_create(&task).set(1.0);
    m.scan_duration_histogram_seconds
        .get_or_create(&task)
        .observe(1.0);
    m.nmap_scan_timeouts.get_or_create(&task).inc();
    m.nmap_host_up_count.get_or_create(&target).set(1);
    m.nmap_host_down_count.get_or_create(&target).set(1);
    m.scans_successful.get_or_create(&task).inc();
    m.scans_failed
        .get_or_create(&FailureLabels {
            target: task.target.clone(),
            port_range: task.port_range.clone(),
            protocol: task.protocol.clone(),
            error_type: "timeout".into(),
        })
        .inc();
    m.last_scan_timestamp_seconds.get_or_create(&task).set(1);
    m.port_state_changes
        .get_or_create(&ChangeLabels {
            target: task.target.clone(),
            change_type: "closed_to_open".into(),
        })
        .inc();
    a.xdp_attached
        .get_or_create(&ModeLabels {
            mode: "driver".into(),
        })
        .set(1);
    a.transmit_path
        .get_or_create(&PathLabels {
            path: "packet_ring".into(),
        })
        .set(1);
    let link = LinkLabels {
        interface: "eth0".into(),
        direction: "rx".into(),
    };
    a.link_utilisation.get_or_create(&link).set(0.1);
    a.link_probe_rate
        .get_or_create(&InterfaceLabels {
            interface: link.interface.clone(),
        })
        .set(1000.0);
    let mut names = BTreeSet::new();
    for line in encode_text(&registry).lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names.extend(ExposureMetrics::FAMILIES.map(str::to_owned));
    names.extend(HostView::FAMILIES.map(str::to_owned));
    // Every field of the metric structs, so none was left unencoded.
    assert_eq!(names.len(), 12 + 2 + 15 + 6 + 4, "{names:?}");
    names
}

/// Identifiers in a PromQL expression that are metric names: what matches
/// a prefix of the agent's families (typos included), or `up`.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    const PREFIXES: &[&str] = &[
        "open_port",
        "scan",
        "nmap_",
        "task_queue",
        "last_scan",
        "port_state",
        "exposure_",
        "host_answers",
        "host_listening",
        "host_address",
        "nftables_",
        "iptables_",
        "ip6tables_",
    ];
    // Quoted label values are not names.
    let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| *t == "up" || PREFIXES.iter().any(|p| t.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// The rules of every shipped rule file.
fn rules() -> Vec<serde_yaml::Value> {
    RULE_FILES
        .iter()
        .flat_map(|(file, _)| {
            let text = std::fs::read_to_string(configs(&format!("prometheus/{file}"))).unwrap();
            let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            doc["groups"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The series the shipped recording rules make (the joins of the host
/// view with the scans), which alerts and panels may name too.
fn recorded_series() -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect()
}

/// Checks every expression names only exported or recorded series (or
/// `up`) and at least one metric; returns all the names seen.
fn check_exprs(file: &str, exprs: &[String]) -> BTreeSet<String> {
    let exported = exported_series();
    let recorded = recorded_series();
    assert!(exprs.len() >= 9, "{file}: only {} expressions", exprs.len());
    let mut seen = BTreeSet::new();
    for expr in exprs {
        let names = metrics_in(expr);
        assert!(!names.is_empty(), "{file}: no metric in {expr:?}");
        for name in names {
            assert!(
                name == "up"
                    || exported.contains(&name)
                    || recorded.contains(&name)
                    || FirewallCollector::FAMILIES.contains(&name.as_str()),
                "{file}: {name} in {expr:?} is not exported by the agent (it exports {exported:?})"
            );
            seen.insert(name);
        }
    }
    seen
}

fn family(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| series.strip_suffix(s))
        .unwrap_or(series)
}

#[test]
fn alert_rules_name_only_exported_metrics() {
    let exprs: Vec<String> = rules()
        .iter()
        .map(|r| {
            r["expr"]
                .as_str()
                .expect("every rule has an expr")
                .to_owned()
        })
        .collect();
    let seen = check_exprs("the rule files", &exprs);
    for needed in [
        "up",
        "open_ports_total",
        "port_state_changes_total",
        "scans_failed_total",
        "nmap_scan_timeouts_total",
        "last_scan_timestamp_seconds",
        "scanner_agent_xdp_replies_lost_total",
        "exposure_unexpected_open",
        "exposure_required_missing",
        "host_answers_every_port",
        "host_address_info",
        "host_listening_port_info",
        "scanner_agent:open_port_without_listener",
        "scanner_agent:unexpected_open_listener",
        "nftables_ruleset_last_change_timestamp_seconds",
        "scanner_agent_firewall_reads_total",
    ] {
        assert!(seen.contains(needed), "no rule on {needed}");
    }
}

/// Every `expr` of every panel and every query variable, at any depth.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains("label_values") => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| dashboard_queries(i, out)),
        _ => {}
    }
}

#[test]
fn dashboard_shows_every_exported_metric_and_nothing_else() {
    let text = std::fs::read_to_string(configs("grafana/scanner-agent.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    dashboard_queries(&dashboard, &mut exprs);
    let seen = check_exprs("scanner-agent.json", &exprs);
    let shown: BTreeSet<&str> = seen.iter().map(|s| family(s)).collect();
    // Every family, and every join the shipped rules record.
    for series in exported_series().into_iter().chain(recorded_series()) {
        assert!(
            shown.contains(family(&series)),
            "the dashboard has no panel for {series}"
        );
    }

    // Panels have distinct ids and do not overlap on the grid.
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "duplicate panel ids");
    let boxes: Vec<[u64; 4]> = panels
        .iter()
        .map(|p| ["x", "y", "w", "h"].map(|k| p["gridPos"][k].as_u64().unwrap()))
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        assert!(a[0] + a[2] <= 24, "panel {i} is wider than the grid");
        for b in &boxes[i + 1..] {
            let apart = a[0] + a[2] <= b[0]
                || b[0] + b[2] <= a[0]
                || a[1] + a[3] <= b[1]
                || b[1] + b[3] <= a[1];
            assert!(apart, "panels at {a:?} and {b:?} overlap");
        }
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "instance"]);
}

const CAPABILITIES: [&str; 4] = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON"];

fn unit() -> String {
    std::fs::read_to_string(configs("systemd/scanner-agent.service")).unwrap()
}

/// Values of `key=` lines in the unit (a key may repeat, and then adds up).
fn settings(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_unit_grants_exactly_the_needed_capabilities_to_an_unprivileged_user() {
    let unit = unit();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let values = settings(&unit, key);
        assert_eq!(
            values.len(),
            1,
            "{key} must be set exactly once: {values:?}"
        );
        let caps: BTreeSet<&str> = values[0].split_whitespace().collect();
        assert_eq!(caps, BTreeSet::from(CAPABILITIES), "{key}");
    }
    for (key, value) in [
        ("User", "scanner-agent"),
        ("Group", "scanner-agent"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "scanner-agent"),
        ("ConfigurationDirectory", "scanner-agent"),
        ("ProtectSystem", "strict"),
        ("LimitMEMLOCK", "infinity"),
        ("LimitNOFILE", "65536"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        (
            "ExecStart",
            "/usr/bin/scanner-agent run --config /etc/scanner-agent/config.yaml --state-file /var/lib/scanner-agent/state.json",
        ),
    ] {
        assert_eq!(settings(&unit, key), [value], "{key}");
    }
    // Each of these would break XDP, raw sockets or the capabilities.
    for key in [
        "PrivateNetwork",
        "PrivateUsers",
        "ProtectKernelTunables",
        "ProcSubset",
        "DynamicUser",
    ] {
        assert!(settings(&unit, key).is_empty(), "{key} must not be set");
    }
    // The daemon takes the options ExecStart gives it.
    let help = assert_ok(
        &Command::new(agent())
            .args(["run", "--help"])
            .output()
            .unwrap(),
        "scanner-agent run --help",
    );
    assert!(
        help.contains("--config") && help.contains("--state-file"),
        "{help}"
    );
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn systemd_accepts_the_unit() {
    // verify insists the ExecStart binary exists: point it at this build.
    let dir = TempDir(std::env::temp_dir().join(format!("unit-verify-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("scanner-agent.service");
    std::fs::write(&path, unit().replace("/usr/bin/scanner-agent", agent())).unwrap();
    let path = path.to_str().unwrap();
    let out = run_in(&dir.0, "systemd-analyze", &["verify", path]);
    assert_ok(&out, "systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("scanner-agent.service"),
        "systemd-analyze warns:\n{stderr}"
    );
    // The hardening score, so a weakened unit shows up here.
    let out = run_in(
        &dir.0,
        "systemd-analyze",
        &["security", "--offline=yes", "--no-pager", path],
    );
    let report = assert_ok(&out, "systemd-analyze security");
    let level: f64 = report
        .split("Overall exposure level for scanner-agent.service: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(level <= 3.0, "exposure {level} (was 2.4):\n{report}");
}

#[test]
fn the_packaged_config_is_accepted_and_scans_nothing() {
    let out = Command::new(agent())
        .arg("check-config")
        .arg(configs("config.yaml"))
        .output()
        .unwrap();
    assert_ok(&out, "check-config configs/config.yaml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no targets configured: nothing will be scanned"),
        "{stderr}"
    );
}
