//! Queues each scheduled job once per `interval` (after restoring what the
//! state file remembers of them, see [`state`]).

use std::{
    collections::HashMap,
    sync::{PoisonError, atomic::Ordering},
    thread,
    time::{Duration, Instant, SystemTime},
};

use rand::Rng as _;

use super::{Job, Live, Shared, state};

/// Runs forever; a reload (a new generation) redoes the timetable.
pub(super) fn run(shared: &Shared) {
    state::restore(shared);
    let mut generation = None;
    let mut due: HashMap<Job, Instant> = HashMap::new();
    loop {
        let live = shared.live();
        let now_generation = shared.settings.generation.load(Ordering::Relaxed);
        if generation != Some(now_generation) {
            generation = Some(now_generation);
            due = timetable(shared, &live, &due);
        }
        let now = Instant::now();
        for (job, at) in &mut due {
            if *at > now {
                continue;
            }
            *at = after(now, live.interval_of(job));
            // A scan that outlasts its interval is not queued a second time.
            if shared.runtime.work.holds(job) {
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
            .unwrap_or_else(|| after(now, Duration::from_secs(1)));
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

/// When each job is next due: an interval after its last completed scan,
/// or soon (with a little jitter, so many agents do not all scan at the same
/// second) when never scanned or overdue. Jobs already in `before` keep
/// their time.
fn timetable(
    shared: &Shared,
    live: &Live,
    before: &HashMap<Job, Instant>,
) -> HashMap<Job, Instant> {
    let now = Instant::now();
    let tasks = shared
        .state
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    live.jobs
        .iter()
        .map(|job| {
            let interval = live.interval_of(job);
            let jitter = interval.min(Duration::from_secs(30)) / 10;
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
