//! Turning a finished scan into metric values, with the state between two
//! scans of the same task that `port_state_changes_total` and the closing of
//! ports need (the original reset it before each scan and got both wrong).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::PoisonError,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    Job, Live, Shared,
    metrics::{ChangeLabels, FailureLabels, IpLabels, PortLabels, TargetLabels, TaskLabels},
};
use crate::scan::{ScanReport, probes::Protocol};

/// An open port, as the metrics key it.
pub(super) type OpenPort = (IpAddr, Protocol, u16);

/// What is remembered of a task between scans.
#[derive(Debug, Default)]
pub(crate) struct TaskState {
    pub(super) open: BTreeSet<OpenPort>,
    /// Ports that closed in the last scan: their series show 0 until the
    /// next completed scan, then are dropped so series do not pile up.
    pub(super) closed: BTreeSet<OpenPort>,
    pub(super) last_scan: Option<SystemTime>,
    /// Hosts up and down in the last scheduled scan.
    pub(super) hosts: Option<(u64, u64)>,
    /// How long the last scheduled scan took.
    pub(super) took: Option<Duration>,
    /// `open_port_status` series this task exports (the cap may leave some
    /// of its ports out).
    pub(super) exported: usize,
}

fn port_labels(&(ip, protocol, port): &OpenPort) -> PortLabels {
    PortLabels {
        ip: ip.to_string(),
        port: port.to_string(),
        protocol: protocol.to_string(),
    }
}

/// Puts a finished scan's results into the state of the task they belong
/// to (see `Live::owner_of`) and its metrics. A `/query` scan changes
/// exactly the (ip, port, protocol) it covered, as a scheduled scan of them
/// would. Returns false, changing nothing, when no configured task holds
/// the job any more (a reload removed it while it ran).
pub(super) fn apply(
    shared: &Shared,
    job: &Job,
    labels: &TaskLabels,
    report: &ScanReport,
    took: Duration,
) -> bool {
    let m = &shared.metrics;
    let found: BTreeSet<OpenPort> = report
        .results
        .results()
        .iter()
        .map(|r| (r.ip, r.protocol, r.port))
        .collect();
    let covered = |p: &OpenPort| {
        p.1 == job.protocol
            && job.task.subnet.contains(&p.0)
            && job.ports.list.index_of(p.2).is_some()
    };
    // The configuration is read under the lock a reload's `forget` takes
    // after swapping it, so a removed task's series cannot come back.
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let live = shared.live();
    let Some(owner) = live.owner_of(job) else {
        return false;
    };
    let room = room_for(&tasks, &owner, &live);
    let state = tasks.entry(owner.clone()).or_default();
    let mut touched: BTreeSet<IpAddr> = state
        .open
        .iter()
        .chain(&state.closed)
        .map(|p| p.0)
        .collect();
    // Ports that have read 0 since the last scan of them are dropped now.
    let gone: Vec<OpenPort> = state.closed.iter().copied().filter(covered).collect();
    for port in &gone {
        state.closed.remove(port);
        m.open_port_status.remove(&port_labels(port));
    }
    let opened = found.difference(&state.open).count();
    let closed: BTreeSet<OpenPort> = state
        .open
        .iter()
        .copied()
        .filter(|p| covered(p) && !found.contains(p))
        .collect();
    state.open.retain(|p| !closed.contains(p));
    state.open.extend(found.iter().copied());
    state.closed.extend(closed.iter().copied());
    state.exported = export(shared, state, room);
    let change = |kind: &str| ChangeLabels {
        target: owner.task.label(),
        change_type: kind.into(),
    };
    m.port_state_changes
        .get_or_create(&change("closed_to_open"))
        .inc_by(opened as u64);
    m.port_state_changes
        .get_or_create(&change("open_to_closed"))
        .inc_by(closed.len() as u64);
    let hosts = report
        .hosts
        .values()
        .fold((0, 0), |(u, d), (up, down)| (u + up, d + down));
    if job.query.is_none() {
        state.last_scan = Some(SystemTime::now());
        state.hosts = Some(hosts);
        state.took = Some(took);
        show_last_scan(shared, job, state);
    }
    touched.extend(state.open.iter().map(|p| p.0));
    count_open_ports(shared, &tasks, touched);
    drop(tasks);

    m.scans_successful.get_or_create(labels).inc();
    if job.query.is_some() {
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
    true
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// The gauges of a scheduled task's last scan: when, how long, hosts up and
/// down (after a scan, and as the state file remembers them at start).
fn show_last_scan(shared: &Shared, job: &Job, state: &TaskState) {
    let m = &shared.metrics;
    let labels = job.labels();
    if let Some(last) = state.last_scan {
        m.last_scan_timestamp_seconds
            .get_or_create(&labels)
            .set(unix_seconds(last));
    }
    if let Some(took) = state.took {
        // Exported only when duration_metrics registered it.
        m.scan_duration_seconds
            .get_or_create(&labels)
            .set(took.as_secs_f64());
    }
    if let Some((up, down)) = state.hosts {
        let target = TargetLabels {
            target: labels.target,
        };
        m.nmap_host_up_count.get_or_create(&target).set(up as i64);
        m.nmap_host_down_count
            .get_or_create(&target)
            .set(down as i64);
    }
}

/// How many `open_port_status` series `owner` may export: the cap less what
/// every other task exports.
fn room_for(tasks: &HashMap<Job, TaskState>, owner: &Job, live: &Live) -> usize {
    let cap = live.config.scanning.max_open_port_series.0 as usize;
    let elsewhere: usize = tasks
        .iter()
        .filter(|(j, _)| *j != owner)
        .map(|(_, t)| t.exported)
        .sum();
    cap.saturating_sub(elsewhere)
}

/// Sets the task's series (1 open, 0 closed since the last scan), at most
/// `room` of them; returns how many it exports. The series cap protects
/// Prometheus from a misconfigured huge scan: ports beyond it are still
/// tracked, only not exported.
fn export(shared: &Shared, state: &TaskState, mut room: usize) -> usize {
    let m = &shared.metrics;
    let mut exported = 0;
    for (port, value) in state
        .open
        .iter()
        .map(|p| (p, 1))
        .chain(state.closed.iter().map(|p| (p, 0)))
    {
        if room == 0 {
            shared.agent.open_port_series_dropped.inc();
            m.open_port_status.remove(&port_labels(port));
            continue;
        }
        room -= 1;
        exported += 1;
        m.open_port_status
            .get_or_create(&port_labels(port))
            .set(value);
    }
    exported
}

/// Shows a task as the state file remembers it, within the series cap, as
/// it was before the restart (then count them with [`count_open_ports`]).
pub(super) fn restore(
    shared: &Shared,
    tasks: &mut HashMap<Job, TaskState>,
    job: Job,
    mut state: TaskState,
) {
    let room = room_for(tasks, &job, &shared.live());
    state.exported = export(shared, &state, room);
    if shared.live().jobs.contains(&job) {
        show_last_scan(shared, &job, &state);
    }
    tasks.insert(job, state);
}

/// Sets `open_ports_total` of each address in `ips` from every task's
/// open ports: distinct (protocol, port) pairs, so a port that two tasks
/// know (a configured target inside a `query_ranges` range) counts once.
/// An address that has none left reads 0 if it had some, and is dropped
/// once no task knows it.
pub(super) fn count_open_ports(
    shared: &Shared,
    tasks: &HashMap<Job, TaskState>,
    ips: BTreeSet<IpAddr>,
) {
    for ip in ips {
        let labels = IpLabels { ip: ip.to_string() };
        let mut open = BTreeSet::new();
        let mut known = false;
        for t in tasks.values() {
            open.extend(t.open.iter().filter(|p| p.0 == ip).map(|p| (p.1, p.2)));
            known |= t.closed.iter().any(|p| p.0 == ip);
        }
        if known || !open.is_empty() {
            shared
                .metrics
                .open_ports_total
                .get_or_create(&labels)
                .set(open.len() as i64);
        } else {
            shared.metrics.open_ports_total.remove(&labels);
        }
    }
}

/// The `error_type` values of `scans_failed_total`.
pub(super) const ERROR_TYPES: [&str; 3] = ["timeout", "permission", "other"];

/// Creates a scheduled job's counters at 0, so the first failure, timeout or
/// change is an increase Prometheus can see (a series born at 1 is not).
pub(super) fn declare(shared: &Shared, job: &Job) {
    let m = &shared.metrics;
    let labels = job.labels();
    m.scans_successful.get_or_create(&labels).inc_by(0);
    m.nmap_scan_timeouts.get_or_create(&labels).inc_by(0);
    for error_type in ERROR_TYPES {
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
