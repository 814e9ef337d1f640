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
    Job, Live, Shared, exposure,
    metrics::Metrics,
    task_state::{OpenPort, TaskState},
};
use crate::scan::ScanReport;

/// Puts a finished scan's results into the state of the task they belong
/// to (see `Live::owner_of`) and its metrics. A `/query` scan changes
/// exactly the (ip, port, protocol) it covered, as a scheduled scan of them
/// would. Returns false, changing nothing, when no configured task holds
/// the job any more (a reload removed it while it ran). The scan counts
/// as successful ([`Metrics::succeeded`]) once its state is saved.
pub(super) fn apply(shared: &Shared, job: &Job, report: &ScanReport, took: Duration) -> bool {
    let m = &shared.metrics;
    let mut found: BTreeSet<OpenPort> = report
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
    // Hosts flagged before count too: a scan that clears a flag changes
    // their `open_ports_total`.
    let mut touched: BTreeSet<IpAddr> = state
        .open
        .iter()
        .chain(&state.closed)
        .map(|p| p.0)
        .chain(state.every_port.keys().copied())
        .collect();
    every_port(
        m,
        state,
        job,
        &mut found,
        live.config.scanning.every_port_share.0,
    );
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
        state.up = report.answered.iter().copied().collect();
        show_last_scan(m, job, state);
    }
    touched.extend(state.open.iter().map(|p| p.0));
    touched.extend(state.every_port.keys());
    count_open_ports(m, &tasks, touched);
    judge(m, &tasks, &live);
    true
}

/// Takes the hosts that answered on more than `share` of the scan's ports
/// out of `found`, and out of what the task shows port by port: a SYN
/// proxy or tarpit makes per-port results meaningless and would flood
/// Prometheus. A scan of enough ports that finds such a host no more
/// clears its flag.
fn every_port(
    m: &Metrics,
    state: &mut TaskState,
    job: &Job,
    found: &mut BTreeSet<OpenPort>,
    share: f64,
) {
    let scanned = job.ports.list.len();
    let flagged = exposure::answering_every_port(found, scanned, share);
    if scanned >= 100 {
        state
            .every_port
            .retain(|ip, _| !job.task.subnet.contains(ip) || flagged.contains_key(ip));
    }
    for (&ip, &open) in &flagged {
        if !state.every_port.contains_key(&ip) {
            tracing::warn!(%ip, open, scanned, protocol = %job.protocol, "the host answers on nearly every port (a SYN proxy, tarpit or middlebox?): reported as host_answers_every_port, not port by port");
        }
        state.every_port.insert(ip, open);
        found.retain(|p| p.0 != ip);
        for port in state.open.iter().chain(&state.closed).filter(|p| p.0 == ip) {
            m.drop_port(port);
        }
        state.open.retain(|p| p.0 != ip);
        state.closed.retain(|p| p.0 != ip);
    }
}

/// Shows the exposure verdicts of every task under `live`'s policies, in
/// the room `max_open_port_series` leaves after `open_port_status`.
pub(super) fn judge(m: &Metrics, tasks: &HashMap<Job, TaskState>, live: &Live) {
    let verdicts = exposure::judge(&live.groups, tasks);
    let cap = live.config.scanning.max_open_port_series.0 as usize;
    let exported: usize = tasks.values().map(|t| t.exported).sum();
    m.exposure(verdicts, cap.saturating_sub(exported));
}

/// [`judge`], with the lock on the tasks taken (after a reload).
pub(super) fn rejudge(shared: &Shared) {
    let tasks = shared
        .state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    judge(&shared.metrics, &tasks, &shared.live());
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
        let mut every_port = 0;
        for t in tasks.values() {
            open.extend(t.open.iter().filter(|p| p.0 == ip).map(|p| (p.1, p.2)));
            known |= t.closed.iter().any(|p| p.0 == ip);
            every_port += t.every_port.get(&ip).copied().unwrap_or_default();
        }
        let count = open.len() + every_port;
        m.open_ports(ip, (known || count > 0).then_some(count));
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
        .chain(state.every_port.keys().copied())
        .collect();
    count_open_ports(m, &tasks, ips);
    drop(tasks);
    m.forget_task(job.labels());
}
