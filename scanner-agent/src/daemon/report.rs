//! Turning a finished scan into metric values, with the state between two
//! scans of the same task that `port_state_changes_total` and the closing of
//! ports need (the original reset it before each scan and got both wrong).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::PoisonError,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{Job, Shared};
use crate::{
    metrics::{ChangeLabels, FailureLabels, IpLabels, PortLabels, TargetLabels, TaskLabels},
    probes::Protocol,
    scan::ScanReport,
};

/// An open port, as the metrics key it.
pub(super) type OpenPort = (IpAddr, Protocol, u16);

/// What is remembered of a task between scans.
#[derive(Debug, Default)]
pub(crate) struct TaskState {
    pub(super) open: BTreeSet<OpenPort>,
    /// Ports that closed in the last scan: their series show 0 until the
    /// next completed scan, then are dropped so series do not pile up.
    closed: BTreeSet<OpenPort>,
    pub(super) last_scan: Option<SystemTime>,
}

impl TaskState {
    /// A task as the state file remembers it; its open ports are shown at
    /// once, as they were at the last scan (then count them with
    /// [`count_open_ports`]).
    pub(super) fn restored(
        shared: &Shared,
        open: BTreeSet<OpenPort>,
        last_scan: SystemTime,
    ) -> Self {
        for port in &open {
            shared
                .metrics
                .open_port_status
                .get_or_create(&port_labels(port))
                .set(1);
        }
        Self {
            open,
            closed: BTreeSet::new(),
            last_scan: Some(last_scan),
        }
    }
}

fn port_labels(&(ip, protocol, port): &OpenPort) -> PortLabels {
    PortLabels {
        ip: ip.to_string(),
        port: port.to_string(),
        protocol: protocol.to_string(),
    }
}

pub(super) fn apply(
    shared: &Shared,
    job: &Job,
    labels: &TaskLabels,
    report: &ScanReport,
    took: Duration,
) {
    let m = &shared.metrics;
    let open: BTreeSet<OpenPort> = report
        .results
        .results()
        .iter()
        .map(|r| (r.ip, r.protocol, r.port))
        .collect();
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let cap = shared.live().config.scanning.max_open_port_series.0 as usize;
    let elsewhere: usize = tasks
        .iter()
        .filter(|(j, _)| *j != job)
        .map(|(_, t)| t.open.len().min(cap) + t.closed.len())
        .sum();
    let mut room = cap.saturating_sub(elsewhere);
    let state = tasks.entry(job.clone()).or_default();

    let mut touched: BTreeSet<IpAddr> = state
        .open
        .iter()
        .chain(&state.closed)
        .map(|p| p.0)
        .collect();
    for gone in std::mem::take(&mut state.closed) {
        m.open_port_status.remove(&port_labels(&gone));
    }
    let opened: Vec<&OpenPort> = open.difference(&state.open).collect();
    let closed: BTreeSet<OpenPort> = state.open.difference(&open).copied().collect();
    // The series cap protects Prometheus from a misconfigured huge scan:
    // ports beyond it are still tracked, only not exported.
    for (port, value) in open
        .iter()
        .map(|p| (p, 1))
        .chain(closed.iter().map(|p| (p, 0)))
    {
        if room == 0 {
            shared.agent.open_port_series_dropped.inc();
            m.open_port_status.remove(&port_labels(port));
            continue;
        }
        room -= 1;
        m.open_port_status
            .get_or_create(&port_labels(port))
            .set(value);
    }
    let change = |kind: &str| ChangeLabels {
        target: labels.target.clone(),
        change_type: kind.into(),
    };
    m.port_state_changes
        .get_or_create(&change("closed_to_open"))
        .inc_by(opened.len() as u64);
    m.port_state_changes
        .get_or_create(&change("open_to_closed"))
        .inc_by(closed.len() as u64);

    touched.extend(open.iter().map(|p| p.0));
    state.open = open;
    state.closed = closed;
    state.last_scan = Some(SystemTime::now());
    count_open_ports(shared, &tasks, touched);
    drop(tasks);

    let (up, down) = report
        .hosts
        .values()
        .fold((0, 0), |(u, d), (up, down)| (u + up, d + down));
    let target = TargetLabels {
        target: labels.target.clone(),
    };
    m.nmap_host_up_count.get_or_create(&target).set(up as i64);
    m.nmap_host_down_count
        .get_or_create(&target)
        .set(down as i64);
    m.scans_successful.get_or_create(labels).inc();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    m.last_scan_timestamp_seconds
        .get_or_create(labels)
        .set(now.as_secs() as i64);
    // Exported only when duration_metrics registered them.
    m.scan_duration_seconds
        .get_or_create(labels)
        .set(took.as_secs_f64());
    m.scan_duration_histogram_seconds
        .get_or_create(labels)
        .observe(took.as_secs_f64());
}

/// Sets `open_ports_total` of each address in `ips` from every task's
/// open ports (a TCP and a UDP task cover the same addresses). An address
/// that has none left reads 0 if it had some, and is dropped once no task
/// knows it.
pub(super) fn count_open_ports(
    shared: &Shared,
    tasks: &HashMap<Job, TaskState>,
    ips: BTreeSet<IpAddr>,
) {
    for ip in ips {
        let labels = IpLabels { ip: ip.to_string() };
        let (open, known) = tasks.values().fold((0, false), |(n, known), t| {
            let here = t.open.iter().filter(|p| p.0 == ip).count();
            (
                n + here,
                known || here > 0 || t.closed.iter().any(|p| p.0 == ip),
            )
        });
        if known || open > 0 {
            shared
                .metrics
                .open_ports_total
                .get_or_create(&labels)
                .set(open as i64);
        } else {
            shared.metrics.open_ports_total.remove(&labels);
        }
    }
}

/// Creates a scheduled job's counters at 0, so the first failure, timeout or
/// change is an increase Prometheus can see (a series born at 1 is not).
pub(super) fn declare(shared: &Shared, job: &Job) {
    let m = &shared.metrics;
    let labels = job.labels();
    m.scans_successful.get_or_create(&labels).inc_by(0);
    m.nmap_scan_timeouts.get_or_create(&labels).inc_by(0);
    for error_type in ["timeout", "permission", "other"] {
        m.scans_failed
            .get_or_create(&FailureLabels {
                target: labels.target.clone(),
                port_range: labels.port_range.clone(),
                protocol: labels.protocol.clone(),
                error_type: error_type.into(),
            })
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

/// Drops what is known of a job that is no longer configured, and its
/// gauges, so a removed target leaves no stale series.
pub(super) fn forget(shared: &Shared, job: &Job) {
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(state) = tasks.remove(job) else {
        return;
    };
    let m = &shared.metrics;
    for port in state.open.iter().chain(&state.closed) {
        m.open_port_status.remove(&port_labels(port));
    }
    let ips = state
        .open
        .iter()
        .chain(&state.closed)
        .map(|p| p.0)
        .collect();
    count_open_ports(shared, &tasks, ips);
    drop(tasks);
    let labels = job.labels();
    m.last_scan_timestamp_seconds.remove(&labels);
    m.scan_duration_seconds.remove(&labels);
    let target = TargetLabels {
        target: labels.target,
    };
    m.nmap_host_up_count.remove(&target);
    m.nmap_host_down_count.remove(&target);
}
