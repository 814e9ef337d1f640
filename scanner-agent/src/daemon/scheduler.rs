//! Queues each scheduled job once per `interval`, and keeps what the state
//! file remembers of them across restarts.

use std::{
    collections::HashMap,
    sync::{PoisonError, atomic::Ordering, mpsc::TrySendError},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::Rng as _;

use super::{
    Job, Live, Shared,
    report::{self, TaskState},
    state,
};

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
            *at = now + interval;
            match shared.enqueue(job.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(target = %job.task.label(), "task queue full; skipping this round");
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        let next = due.values().min().copied().unwrap_or(now + interval);
        thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
        );
    }
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
                (now + interval.saturating_sub(age)).max(soon)
            });
            let at = before.get(job).copied().or(after_last).unwrap_or(soon);
            (job.clone(), at)
        })
        .collect()
}

/// Restores what the state file remembers of the scheduled jobs.
fn restore(shared: &Shared) {
    let Some(path) = &shared.state_file else {
        return;
    };
    let saved = state::load(path);
    let live = shared.live();
    let mut tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    for job in &live.jobs {
        let remembered = saved.tasks.iter().find(|t| {
            t.target == job.task.label()
                && t.protocol == job.protocol.to_string()
                && t.ports == job.ports.spec
        });
        if let Some(saved) = remembered {
            let open = saved
                .open
                .iter()
                .filter_map(|(ip, proto, port)| Some((*ip, proto.parse().ok()?, *port)))
                .collect();
            tasks.insert(
                job.clone(),
                TaskState::restored(shared, open, saved.last_scan_time()),
            );
        }
    }
    let ips = tasks.values().flat_map(|t| &t.open).map(|p| p.0).collect();
    report::count_open_ports(shared, &tasks, ips);
}

/// Writes every scheduled task's open ports and last-scan time.
pub(super) fn persist(shared: &Shared) {
    let Some(path) = &shared.state_file else {
        return;
    };
    let tasks = shared.tasks.lock().unwrap_or_else(PoisonError::into_inner);
    let saved = state::Saved {
        tasks: tasks
            .iter()
            .filter(|(job, _)| job.query.is_none())
            .filter_map(|(job, t)| {
                let last_scan = t.last_scan?.duration_since(UNIX_EPOCH).ok()?.as_secs();
                let open = t
                    .open
                    .iter()
                    .map(|(ip, proto, port)| (*ip, proto.to_string(), *port))
                    .collect();
                Some(state::SavedTask {
                    target: job.task.label(),
                    protocol: job.protocol.to_string(),
                    ports: job.ports.spec.clone(),
                    last_scan,
                    open,
                })
            })
            .collect(),
    };
    drop(tasks);
    if let Err(e) = state::save(path, &saved) {
        tracing::warn!(path = %path.display(), "cannot write the state file: {e}");
    }
}
