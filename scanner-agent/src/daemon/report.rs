//! Turning a finished scan into metric values, with the state between two
//! scans of the same task that `port_state_changes_total` and the closing of
//! ports need (the original reset it before each scan and got both wrong).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::PoisonError,
    time::{Duration, SystemTime},
};

use super::{
    Job, Live, Shared,
    metrics::{Metrics, OpenPort},
};
use crate::scan::ScanReport;

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

/// Puts a finished scan's results into the state of the task they belong
/// to (see `Live::owner_of`) and its metrics. A `/query` scan changes
/// exactly the (ip, port, protocol) it covered, as a scheduled scan of them
/// would. Returns false, changing nothing, when no configured task holds
/// the job any more (a reload removed it while it ran). The scan counts
/// as successful ([`Metrics::succeeded`]) once its state is saved.
pub(super) fn apply(shared: &Shared, job: &Job, report: &ScanReport, took: Duration) -> bool {
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
    let mut tasks = shared
        .state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
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
        m.drop_port(port);
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
    state.exported = export(m, state, room);
    m.changes(owner.task.label(), opened as u64, closed.len() as u64);
    let hosts = report
        .hosts
        .values()
        .fold((0, 0), |(u, d), (up, down)| (u + up, d + down));
    if job.query.is_none() {
        state.last_scan = Some(SystemTime::now());
        state.hosts = Some(hosts);
        state.took = Some(took);
        show_last_scan(m, job, state);
    }
    touched.extend(state.open.iter().map(|p| p.0));
    count_open_ports(m, &tasks, touched);
    true
}

/// The gauges of a scheduled task's last scan (after a scan, and as the
/// state file remembers them at start).
fn show_last_scan(m: &Metrics, job: &Job, state: &TaskState) {
    m.last_scan(job.labels(), state.last_scan, state.took, state.hosts);
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
fn export(m: &Metrics, state: &TaskState, mut room: usize) -> usize {
    let mut exported = 0;
    for (port, value) in state
        .open
        .iter()
        .map(|p| (p, 1))
        .chain(state.closed.iter().map(|p| (p, 0)))
    {
        if room == 0 {
            m.port_left_out(port);
            continue;
        }
        room -= 1;
        exported += 1;
        m.port(port, value);
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
    state.exported = export(&shared.metrics, &state, room);
    if shared.live().jobs.contains(&job) {
        show_last_scan(&shared.metrics, &job, &state);
    }
    tasks.insert(job, state);
}

/// Sets `open_ports_total` of each address in `ips` from every task's
/// open ports: distinct (protocol, port) pairs, so a port that two tasks
/// know (a configured target inside a `query_ranges` range) counts once.
/// An address that has none left reads 0 if it had some, and is dropped
/// once no task knows it.
pub(super) fn count_open_ports(
    m: &Metrics,
    tasks: &HashMap<Job, TaskState>,
    ips: BTreeSet<IpAddr>,
) {
    for ip in ips {
        let mut open = BTreeSet::new();
        let mut known = false;
        for t in tasks.values() {
            open.extend(t.open.iter().filter(|p| p.0 == ip).map(|p| (p.1, p.2)));
            known |= t.closed.iter().any(|p| p.0 == ip);
        }
        m.open_ports(ip, (known || !open.is_empty()).then_some(open.len()));
    }
}

/// Drops what is known of a job that is no longer configured, and its
/// gauges, so a removed target leaves no stale series.
pub(super) fn forget(shared: &Shared, job: &Job) {
    let mut tasks = shared
        .state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(state) = tasks.remove(job) else {
        return;
    };
    let m = &shared.metrics;
    for port in state.open.iter().chain(&state.closed) {
        m.drop_port(port);
    }
    let ips = state
        .open
        .iter()
        .chain(&state.closed)
        .map(|p| p.0)
        .collect();
    count_open_ports(m, &tasks, ips);
    drop(tasks);
    m.forget_task(job.labels());
}
