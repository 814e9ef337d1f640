//! Queues each scheduled job once per `interval`, and keeps what the state
//! file remembers of them across restarts.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{PoisonError, atomic::Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::Rng as _;

use super::{
    Job, Live, Shared,
    report::{self, OpenPort, TaskState},
    state,
    tasks::Task,
};
use crate::config::Ports;

/// Runs forever; a reload (a new generation) redoes the timetable.
pub(super) fn run(shared: &Shared) {
    restore(shared);
    let mut generation = None;
    let mut due: HashMap<Job, Instant> = HashMap::new();
    loop {
        let live = shared.live();
        let now_generation = shared.generation.load(Ordering::Relaxed);
        if generation != Some(now_generation) {
            generation = Some(now_generation);
            due = timetable(shared, &live, &due);
        }
        let interval = interval(&live);
        let now = Instant::now();
        for (job, at) in &mut due {
            if *at > now {
                continue;
            }
            *at = after(now, interval);
            // A scan that outlasts its interval is not queued a second time.
            if shared.work.holds(job) {
                continue;
            }
            if shared.enqueue(job.clone()).is_err() {
                tracing::warn!(target = %job.task.label(), "task queue full; skipping this round");
            }
        }
        let next = due
            .values()
            .min()
            .copied()
            .unwrap_or_else(|| after(now, interval));
        thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        );
    }
}

/// `d` after `now`, or as far as the clock goes (an `interval` of a
/// hundred years means "once").
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

fn interval(live: &Live) -> Duration {
    Duration::from_secs(live.config.scanning.interval.0)
}

/// When each job is next due: an interval after its last completed scan,
/// or soon (with a little jitter, so many agents do not all scan at the same
/// second) when never scanned or overdue. Jobs already in `before` keep
/// their time.
fn timetable(
    shared: &Shared,
    live: &Live,
    before: &HashMap<Job, Instant>,
) -> HashMap<Job, Instant> {
    let interval = interval(live);
    let jitter = interval.min(Duration::from_secs(30)) / 10;
    let now = Instant::now();
    let tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    live.jobs
        .iter()
        .map(|job| {
            let soon = now + jitter.mul_f64(rand::rng().random::<f64>());
            let after_last = tasks.get(job).and_then(|t| t.last_scan).map(|last| {
                let age = SystemTime::now().duration_since(last).unwrap_or_default();
                after(now, interval.saturating_sub(age)).max(soon)
            });
            let at = before.get(job).copied().or(after_last).unwrap_or(soon);
            (job.clone(), at)
        })
        .collect()
}

/// Restores what the state file remembers of the tasks this configuration
/// keeps (scheduled ones and those `/query` results were merged into).
fn restore(shared: &Shared) {
    let Some(file) = &shared.state_file else {
        return;
    };
    let saved = file.load();
    let live = shared.live();
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    for saved in saved.tasks {
        let Some(job) = saved_job(&live, &saved) else {
            continue;
        };
        let ports = |list: &[state::SavedPort]| -> BTreeSet<OpenPort> {
            list.iter()
                .filter_map(|(ip, proto, port)| Some((*ip, proto.parse().ok()?, *port)))
                .collect()
        };
        let state = TaskState {
            open: ports(&saved.open),
            closed: ports(&saved.closed),
            last_scan: saved.last_scan_time(),
            hosts: saved.hosts,
            took: saved.took(),
            ..TaskState::default()
        };
        report::restore(shared, &mut tasks, job, state);
    }
    let ips = tasks
        .values()
        .flat_map(|t| t.open.iter().chain(&t.closed))
        .map(|p| p.0)
        .collect();
    report::count_open_ports(shared, &tasks, ips);
}

/// The task a saved entry describes, if this configuration keeps it.
fn saved_job(live: &Live, saved: &state::SavedTask) -> Option<Job> {
    let job = Job {
        task: Task {
            subnet: saved.target.parse().ok()?,
        },
        protocol: saved.protocol.parse().ok()?,
        ports: Ports::parse(&saved.ports).ok()?,
        query: None,
    };
    live.keeps(&job).then_some(job)
}

/// Writes every kept task's open ports, last scan and host counts.
pub(super) fn persist(shared: &Shared) {
    let Some(file) = &shared.state_file else {
        return;
    };
    let saved_ports = |set: &BTreeSet<OpenPort>| -> Vec<state::SavedPort> {
        set.iter()
            .map(|(ip, proto, port)| (*ip, proto.to_string(), *port))
            .collect()
    };
    let tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let saved = state::Saved {
        tasks: tasks
            .iter()
            .map(|(job, t)| state::SavedTask {
                target: job.task.label(),
                protocol: job.protocol.to_string(),
                ports: job.ports.spec.clone(),
                last_scan: t
                    .last_scan
                    .and_then(|l| l.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                open: saved_ports(&t.open),
                closed: saved_ports(&t.closed),
                hosts: t.hosts,
                duration_seconds: t.took.map(|d| d.as_secs_f64()),
            })
            .collect(),
    };
    drop(tasks);
    if let Err(e) = file.save(&saved) {
        tracing::warn!(path = %file.path().display(), "cannot write the state file: {e}");
    }
}
