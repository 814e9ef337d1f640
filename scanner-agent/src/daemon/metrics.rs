//! The OpenPort Exporter's metric families, with the same names, label names,
//! types and help texts, so existing dashboards and alerts keep working,
//! and the agent's own. [`Metrics`] holds them with the registries they are
//! served from, and is the one place the daemon updates them
//! ([`crate::web::exposition`] encodes them).

use std::{
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

pub use super::exposure::ExposureMetrics;
use super::{exposure::Verdicts, task_state::OpenPort};
pub use crate::host::HostView;
use crate::{
    firewall::FirewallConfig,
    passthrough,
    scan::{
        ScanReport,
        capture::XdpCounters,
        transmit::{Link, Path},
    },
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub ip: String,
    pub port: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabels {
    pub ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub target: String,
    pub port_range: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub target: String,
    pub port_range: String,
    pub protocol: String,
    /// `timeout`, `permission` or `other`.
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub target: String,
    /// `closed_to_open` or `open_to_closed`.
    pub change_type: String,
}

fn duration_histogram() -> Histogram {
    // 1 s to about 9 hours: one port of one host up to a /16 x 65535 task.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// The exporter's families. Counters are registered without their `_total`
/// suffix, which the encoder adds.
pub struct ExporterMetrics {
    pub open_port_status: Family<PortLabels, Gauge>,
    pub open_ports_total: Family<IpLabels, Gauge>,
    pub scan_duration_seconds: Family<TaskLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub scan_duration_histogram_seconds: Family<TaskLabels, Histogram, fn() -> Histogram>,
    pub task_queue_size: Gauge,
    pub nmap_scan_timeouts: Family<TaskLabels, Counter>,
    pub nmap_host_up_count: Family<TargetLabels, Gauge>,
    pub nmap_host_down_count: Family<TargetLabels, Gauge>,
    pub scans_successful: Family<TaskLabels, Counter>,
    pub scans_failed: Family<FailureLabels, Counter>,
    pub last_scan_timestamp_seconds: Family<TaskLabels, Gauge>,
    pub port_state_changes: Family<ChangeLabels, Counter>,
}

impl ExporterMetrics {
    /// Registers every family; the two duration families only when
    /// `duration_metrics` is on, as in the original.
    pub fn register(registry: &mut Registry, duration_metrics: bool) -> Self {
        let m = Self {
            open_port_status: Family::default(),
            open_ports_total: Family::default(),
            scan_duration_seconds: Family::default(),
            scan_duration_histogram_seconds: Family::new_with_constructor(duration_histogram),
            task_queue_size: Gauge::default(),
            nmap_scan_timeouts: Family::default(),
            nmap_host_up_count: Family::default(),
            nmap_host_down_count: Family::default(),
            scans_successful: Family::default(),
            scans_failed: Family::default(),
            last_scan_timestamp_seconds: Family::default(),
            port_state_changes: Family::default(),
        };
        let r = registry;
        r.register(
            "open_port_status",
            "Indicates that a specific port is open for a given IP address and protocol",
            m.open_port_status.clone(),
        );
        r.register(
            "open_ports_total",
            "Total number of open ports for a given IP address",
            m.open_ports_total.clone(),
        );
        if duration_metrics {
            r.register(
                "scan_duration_seconds",
                "Duration of the last scan in seconds for the specified target, port range, and protocol",
                m.scan_duration_seconds.clone(),
            );
            r.register(
                "scan_duration_histogram_seconds",
                "Histogram of scan durations in seconds",
                m.scan_duration_histogram_seconds.clone(),
            );
        }
        r.register(
            "task_queue_size",
            "The current number of tasks waiting in the scan queue",
            m.task_queue_size.clone(),
        );
        r.register(
            "nmap_scan_timeouts",
            "Total number of scans that resulted in a timeout for a specific target, port range, and protocol",
            m.nmap_scan_timeouts.clone(),
        );
        r.register(
            "nmap_host_up_count",
            "Number of hosts found up during the last scan for a given target",
            m.nmap_host_up_count.clone(),
        );
        r.register(
            "nmap_host_down_count",
            "Number of hosts found down (unreachable) during the last scan for a given target",
            m.nmap_host_down_count.clone(),
        );
        r.register(
            "scans_successful",
            "Total number of scans completed without error for a given target, port range, and protocol",
            m.scans_successful.clone(),
        );
        r.register(
            "scans_failed",
            "Total number of scans that encountered an error for a given target, port range, and protocol, by error type",
            m.scans_failed.clone(),
        );
        r.register(
            "last_scan_timestamp_seconds",
            "Unix timestamp of the last completed scan for a given target, port range, and protocol",
            m.last_scan_timestamp_seconds.clone(),
        );
        r.register(
            "port_state_changes",
            "Total number of port state changes (open->closed or closed->open) detected between scans for a given target",
            m.port_state_changes.clone(),
        );
        m
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// `driver` or `skb`.
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `packet_ring` or `raw_socket`.
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub interface: String,
    /// `rx` or `tx`.
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    pub interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    /// The git revision built, or `unknown`.
    pub revision: String,
    pub rustc_version: String,
}

impl BuildLabels {
    /// This binary's, as its build script recorded them.
    pub fn this_build() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: env!("SCANNER_AGENT_REVISION").to_owned(),
            rustc_version: env!("SCANNER_AGENT_RUSTC_VERSION").to_owned(),
        }
    }
}

/// The agent's own operational metrics, under one prefix.
#[derive(Default)]
pub struct AgentMetrics {
    /// Always 1: Prometheus' `*_build_info` convention, for joins on version.
    pub build_info: Family<BuildLabels, Gauge>,
    pub probes_sent: Counter,
    pub probe_retries: Counter,
    pub xdp_frames: Counter,
    pub xdp_replies_matched: Counter,
    pub xdp_replies_lost: Counter,
    pub last_scan_rate: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub open_port_series_dropped: Counter,
    pub xdp_attached: Family<ModeLabels, Gauge>,
    pub transmit_path: Family<PathLabels, Gauge>,
    pub config_reload_ok: Gauge,
    pub config_reload_time: Gauge,
    pub scan_yielded_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub link_utilisation: Family<LinkLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub link_probe_rate: Family<InterfaceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        m.build_info
            .get_or_create(&BuildLabels::this_build())
            .set(1);
        let r = registry.sub_registry_with_prefix("scanner_agent");
        r.register(
            "build_info",
            "A metric with a constant 1 labelled by the version, git revision and compiler the agent was built from",
            m.build_info.clone(),
        );
        r.register(
            "probes_sent",
            "Probes sent, retransmissions included",
            m.probes_sent.clone(),
        );
        r.register(
            "probe_retries",
            "Retransmissions of unanswered probes",
            m.probe_retries.clone(),
        );
        r.register(
            "xdp_frames",
            "Frames the XDP program looked at",
            m.xdp_frames.clone(),
        );
        r.register(
            "xdp_replies_matched",
            "Replies the XDP program matched to a probe",
            m.xdp_replies_matched.clone(),
        );
        r.register(
            "xdp_replies_lost",
            "Matched replies lost because the ring buffer was full (a lossy scan)",
            m.xdp_replies_lost.clone(),
        );
        r.register(
            "open_port_series_dropped",
            "open_port_status and exposure verdict series not exported because max_open_port_series was reached",
            m.open_port_series_dropped.clone(),
        );
        r.register(
            "last_scan_rate_pps",
            "Achieved send rate of the last completed scan",
            m.last_scan_rate.clone(),
        );
        r.register(
            "xdp_attached",
            "1 while the XDP program is attached, in the mode labelled",
            m.xdp_attached.clone(),
        );
        r.register(
            "transmit_path",
            "1 for the send path the last scan used (packet_ring or raw_socket), 0 for the other",
            m.transmit_path.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "Whether the last configuration (re)load succeeded",
            m.config_reload_ok.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "Time of the last successful configuration (re)load",
            m.config_reload_time.clone(),
        );
        r.register(
            "scan_yielded_seconds",
            "Time scans ran at min_rate because the scan interface's other traffic was above yield_above",
            m.scan_yielded_seconds.clone(),
        );
        r.register(
            "link_utilisation",
            "Share of the scan interface's speed used by traffic other than the agent's scans, in the last 100 ms",
            m.link_utilisation.clone(),
        );
        r.register(
            "link_probe_rate_pps",
            "Probes per second the agent's scans sent on the interface in the last 100 ms",
            m.link_probe_rate.clone(),
        );
        m
    }
}

fn port_labels(&(ip, protocol, port): &OpenPort) -> PortLabels {
    PortLabels {
        ip: ip.to_string(),
        port: port.to_string(),
        protocol: protocol.to_string(),
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// The `error_type` values of `scans_failed_total`.
pub(crate) const ERROR_TYPES: [&str; 3] = ["timeout", "permission", "other"];

/// Every family the daemon exports, the registries that serve them, and
/// every update the daemon makes to them.
pub(crate) struct Metrics {
    /// What the main `/metrics` serves.
    pub(crate) registry: Registry,
    /// The firewall counters alone, for their drop-in listener.
    pub(crate) firewall_registry: Option<Registry>,
    exporter: ExporterMetrics,
    agent: AgentMetrics,
    exposure: ExposureMetrics,
    /// The XDP counters at the last update, to add only what is new.
    xdp_seen: Mutex<XdpCounters>,
    /// The link's yielded time at the last update.
    yielded_seen: Mutex<Duration>,
}

impl Metrics {
    /// Registers the exporter's and the agent's families (the durations
    /// only with `duration_metrics`), the firewall counters as `firewall`
    /// says, the host view, and the passthrough's, whose proxy is returned.
    pub(crate) fn register(
        duration_metrics: bool,
        firewall: &FirewallConfig,
    ) -> (Self, passthrough::Proxy) {
        let mut registry = Registry::default();
        let exporter = ExporterMetrics::register(&mut registry, duration_metrics);
        let agent = AgentMetrics::register(&mut registry);
        let exposure = ExposureMetrics::register(&mut registry);
        let firewall_registry = crate::firewall::start(firewall, &mut registry);
        // Read at scrape time, like the firewall counters: nothing to update.
        HostView::register(&mut registry);
        let proxy = passthrough::Proxy::new(&mut registry);
        let metrics = Self {
            registry,
            firewall_registry,
            exporter,
            agent,
            exposure,
            xdp_seen: Mutex::new(XdpCounters::default()),
            yielded_seen: Mutex::new(Duration::ZERO),
        };
        (metrics, proxy)
    }

    /// The scan interface's families, read from its watch at a scrape.
    pub(crate) fn link(&self, link: &Link) {
        let a = &self.agent;
        let u = link.utilisation();
        for (direction, share) in [("rx", u.rx), ("tx", u.tx)] {
            a.link_utilisation
                .get_or_create(&LinkLabels {
                    interface: link.interface().to_owned(),
                    direction: direction.to_owned(),
                })
                .set(share);
        }
        a.link_probe_rate
            .get_or_create(&InterfaceLabels {
                interface: link.interface().to_owned(),
            })
            .set(link.probe_rate());
        let mut seen = self
            .yielded_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = link.yielded();
        // A new watch (the program moved to another interface) starts at 0.
        a.scan_yielded_seconds
            .inc_by(now.saturating_sub(*seen).as_secs_f64());
        *seen = now;
    }

    /// `task_queue_size`.
    pub(crate) fn queued(&self, len: usize) {
        self.exporter.task_queue_size.set(len as i64);
    }

    /// The agent's own metrics after a scan: probes, retries, achieved rate,
    /// and what the (shared) XDP program counted since the last update.
    pub(crate) fn scanned(&self, report: &ScanReport) {
        let a = &self.agent;
        a.probes_sent.inc_by(report.ports.sent);
        a.probe_retries.inc_by(report.ports.retries);
        a.last_scan_rate.set(report.ports.achieved_rate());
        for path in Path::ALL {
            a.transmit_path
                .get_or_create(&PathLabels {
                    path: path.as_str().to_owned(),
                })
                .set(i64::from(path == report.transmit.path));
        }
        let mut seen = self.xdp_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = report.xdp;
        a.xdp_frames.inc_by(now.frames.saturating_sub(seen.frames));
        a.xdp_replies_matched
            .inc_by(now.matched.saturating_sub(seen.matched));
        a.xdp_replies_lost
            .inc_by(now.ringbuf_full.saturating_sub(seen.ringbuf_full));
        *seen = (*seen).max_each(now);
    }

    /// The XDP program is attached in `mode`, instead of `old` if it was
    /// elsewhere (the new program counts from zero).
    pub(crate) fn attached(&self, mode: String, old: Option<String>) {
        if let Some(old) = old {
            self.agent
                .xdp_attached
                .get_or_create(&ModeLabels { mode: old })
                .set(0);
            *self.xdp_seen.lock().unwrap_or_else(PoisonError::into_inner) = XdpCounters::default();
        }
        self.agent
            .xdp_attached
            .get_or_create(&ModeLabels { mode })
            .set(1);
    }

    /// The outcome of a (re)load, as Prometheus reports its own.
    pub(crate) fn reloaded(&self, ok: bool) {
        self.agent.config_reload_ok.set(i64::from(ok));
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.agent.config_reload_time.set(now.as_secs() as i64);
        }
    }

    /// A scan of `labels` failed for `error_type` (one of [`ERROR_TYPES`]).
    pub(crate) fn failed(&self, labels: &TaskLabels, error_type: &str) {
        if error_type == "timeout" {
            self.exporter.nmap_scan_timeouts.get_or_create(labels).inc();
        }
        self.exporter
            .scans_failed
            .get_or_create(&failure_labels(labels, error_type))
            .inc();
    }

    /// A scan of `labels` succeeded after `took`; a `/query` scan (`query`)
    /// also shows its time and duration, which a scheduled one shows with
    /// its task's state ([`Metrics::last_scan`]).
    pub(crate) fn succeeded(&self, labels: &TaskLabels, took: Duration, query: bool) {
        let m = &self.exporter;
        m.scans_successful.get_or_create(labels).inc();
        if query {
            m.last_scan_timestamp_seconds
                .get_or_create(labels)
                .set(unix_seconds(SystemTime::now()));
            m.scan_duration_seconds
                .get_or_create(labels)
                .set(took.as_secs_f64());
        }
        // Exported only when duration_metrics registered it.
        m.scan_duration_histogram_seconds
            .get_or_create(labels)
            .observe(took.as_secs_f64());
    }

    /// The gauges of a scheduled task's last scan: when, how long, hosts up
    /// and down.
    pub(crate) fn last_scan(
        &self,
        labels: TaskLabels,
        last: Option<SystemTime>,
        took: Option<Duration>,
        hosts: Option<(u64, u64)>,
    ) {
        let m = &self.exporter;
        if let Some(last) = last {
            m.last_scan_timestamp_seconds
                .get_or_create(&labels)
                .set(unix_seconds(last));
        }
        if let Some(took) = took {
            // Exported only when duration_metrics registered it.
            m.scan_duration_seconds
                .get_or_create(&labels)
                .set(took.as_secs_f64());
        }
        if let Some((up, down)) = hosts {
            let target = TargetLabels {
                target: labels.target,
            };
            m.nmap_host_up_count.get_or_create(&target).set(up as i64);
            m.nmap_host_down_count
                .get_or_create(&target)
                .set(down as i64);
        }
    }

    /// `port_state_changes_total` of a scan of `target`.
    pub(crate) fn changes(&self, target: String, opened: u64, closed: u64) {
        let change = |kind: &str| ChangeLabels {
            target: target.clone(),
            change_type: kind.into(),
        };
        let m = &self.exporter;
        m.port_state_changes
            .get_or_create(&change("closed_to_open"))
            .inc_by(opened);
        m.port_state_changes
            .get_or_create(&change("open_to_closed"))
            .inc_by(closed);
    }

    /// `open_port_status` of `port`: 1 open, 0 closed since the last scan.
    pub(crate) fn port(&self, port: &OpenPort, value: i64) {
        self.exporter
            .open_port_status
            .get_or_create(&port_labels(port))
            .set(value);
    }

    /// Drops `port`'s `open_port_status`.
    pub(crate) fn drop_port(&self, port: &OpenPort) {
        self.exporter.open_port_status.remove(&port_labels(port));
    }

    /// A series left out by `max_open_port_series` (and dropped if it was there).
    pub(crate) fn port_left_out(&self, port: &OpenPort) {
        self.agent.open_port_series_dropped.inc();
        self.drop_port(port);
    }

    /// The exposure verdicts, at most `room` per-port series of them.
    pub(crate) fn exposure(&self, verdicts: Verdicts, room: usize) {
        self.exposure
            .show(verdicts, room, &self.agent.open_port_series_dropped);
    }

    /// `open_ports_total` of `ip`: a count, or no series.
    pub(crate) fn open_ports(&self, ip: IpAddr, count: Option<usize>) {
        let labels = IpLabels { ip: ip.to_string() };
        match count {
            Some(n) => {
                self.exporter
                    .open_ports_total
                    .get_or_create(&labels)
                    .set(n as i64);
            }
            None => {
                self.exporter.open_ports_total.remove(&labels);
            }
        }
    }

    /// Creates a scheduled job's counters at 0, so the first failure,
    /// timeout or change is an increase Prometheus can see (a series born
    /// at 1 is not).
    pub(crate) fn declare(&self, labels: &TaskLabels) {
        let m = &self.exporter;
        m.scans_successful.get_or_create(labels).inc_by(0);
        m.nmap_scan_timeouts.get_or_create(labels).inc_by(0);
        for error_type in ERROR_TYPES {
            m.scans_failed
                .get_or_create(&failure_labels(labels, error_type))
                .inc_by(0);
        }
        for change_type in ["closed_to_open", "open_to_closed"] {
            m.port_state_changes
                .get_or_create(&ChangeLabels {
                    target: labels.target.clone(),
                    change_type: change_type.into(),
                })
                .inc_by(0);
        }
    }

    /// Drops the gauges of a task that is no longer configured.
    pub(crate) fn forget_task(&self, labels: TaskLabels) {
        let m = &self.exporter;
        m.last_scan_timestamp_seconds.remove(&labels);
        m.scan_duration_seconds.remove(&labels);
        let target = TargetLabels {
            target: labels.target,
        };
        m.nmap_host_up_count.remove(&target);
        m.nmap_host_down_count.remove(&target);
    }

    /// Drops every series of a `/query` scan's label set.
    pub(crate) fn forget_query(&self, old: &TaskLabels) {
        let m = &self.exporter;
        m.scans_successful.remove(old);
        m.nmap_scan_timeouts.remove(old);
        m.last_scan_timestamp_seconds.remove(old);
        m.scan_duration_seconds.remove(old);
        m.scan_duration_histogram_seconds.remove(old);
        for error_type in ERROR_TYPES {
            m.scans_failed.remove(&failure_labels(old, error_type));
        }
    }
}

fn failure_labels(labels: &TaskLabels, error_type: &str) -> FailureLabels {
    FailureLabels {
        target: labels.target.clone(),
        port_range: labels.port_range.clone(),
        protocol: labels.protocol.clone(),
        error_type: error_type.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::exposition::encode_text;

    fn task(target: &str) -> TaskLabels {
        TaskLabels {
            target: target.into(),
            port_range: "1-65535".into(),
            protocol: "tcp".into(),
        }
    }

    #[test]
    fn names_labels_and_types_are_the_originals() {
        let mut registry = Registry::default();
        let m = ExporterMetrics::register(&mut registry, true);
        let port = PortLabels {
            ip: "198.18.0.2".into(),
            port: "22".into(),
            protocol: "tcp".into(),
        };
        m.open_port_status.get_or_create(&port).set(1);
        m.open_ports_total
            .get_or_create(&IpLabels {
                ip: "198.18.0.2".into(),
            })
            .set(1);
        m.scan_duration_seconds
            .get_or_create(&task("198.18.0.0/24"))
            .set(13.79);
        m.scan_duration_histogram_seconds
            .get_or_create(&task("198.18.0.0/24"))
            .observe(13.79);
        m.task_queue_size.set(5);
        m.nmap_scan_timeouts
            .get_or_create(&task("198.18.0.0/24"))
            .inc();
        m.nmap_host_up_count
            .get_or_create(&TargetLabels {
                target: "198.18.0.0/24".into(),
            })
            .set(10);
        m.scans_successful
            .get_or_create(&task("198.18.0.0/24"))
            .inc();
        let failed = FailureLabels {
            target: "198.18.0.0/24".into(),
            port_range: "1-65535".into(),
            protocol: "tcp".into(),
            error_type: "timeout".into(),
        };
        m.scans_failed.get_or_create(&failed).inc();
        m.last_scan_timestamp_seconds
            .get_or_create(&task("198.18.0.0/24"))
            .set(1_695_051_127);
        let change = ChangeLabels {
            target: "198.18.0.0/24".into(),
            change_type: "closed_to_open".into(),
        };
        m.port_state_changes.get_or_create(&change).inc_by(2);
        let text = encode_text(&registry);
        for line in [
            "# HELP open_port_status Indicates that a specific port is open for a given IP address and protocol.",
            "# TYPE open_port_status gauge",
            "open_port_status{ip=\"198.18.0.2\",port=\"22\",protocol=\"tcp\"} 1",
            "open_ports_total{ip=\"198.18.0.2\"} 1",
            "scan_duration_seconds{target=\"198.18.0.0/24\",port_range=\"1-65535\",protocol=\"tcp\"} 13.79",
            "# TYPE scan_duration_histogram_seconds histogram",
            "scan_duration_histogram_seconds_bucket{le=\"16.0\",target=\"198.18.0.0/24\",port_range=\"1-65535\",protocol=\"tcp\"} 1",
            "task_queue_size 5",
            "# TYPE nmap_scan_timeouts counter",
            "nmap_scan_timeouts_total{target=\"198.18.0.0/24\",port_range=\"1-65535\",protocol=\"tcp\"} 1",
            "nmap_host_up_count{target=\"198.18.0.0/24\"} 10",
            "scans_successful_total{target=\"198.18.0.0/24\",port_range=\"1-65535\",protocol=\"tcp\"} 1",
            "scans_failed_total{target=\"198.18.0.0/24\",port_range=\"1-65535\",protocol=\"tcp\",error_type=\"timeout\"} 1",
            "last_scan_timestamp_seconds{target=\"198.18.0.0/24\",port_range=\"1-65535\",protocol=\"tcp\"} 1695051127",
            "port_state_changes_total{target=\"198.18.0.0/24\",change_type=\"closed_to_open\"} 2",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn duration_families_only_when_asked() {
        let mut registry = Registry::default();
        ExporterMetrics::register(&mut registry, false);
        let text = encode_text(&registry);
        assert!(!text.contains("scan_duration"), "{text}");
        assert!(text.lines().any(|l| l == "task_queue_size 0"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut registry = Registry::default();
        let m = ExporterMetrics::register(&mut registry, false);
        let nasty = "a\"b\\c\nd";
        m.nmap_host_down_count
            .get_or_create(&TargetLabels {
                target: nasty.into(),
            })
            .set(1);
        let text = encode_text(&registry);
        assert!(
            text.lines()
                .any(|l| l == r#"nmap_host_down_count{target="a\"b\\c\nd"} 1"#),
            "{text}"
        );
    }
}
