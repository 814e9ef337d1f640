//! The daemon's work list: jobs waiting for a worker and jobs being
//! scanned. One lock over both, so that a reload can take out the queued
//! jobs of removed targets, cancel the running ones and wait until they have
//! stopped sending, with no job slipping between the two.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use super::Job;
use crate::scan::engine::Cancel;

/// The queue has `capacity` jobs waiting already.
#[derive(Debug)]
pub(super) struct Full;

struct Running {
    id: u64,
    job: Job,
    cancel: Cancel,
}

#[derive(Default)]
struct Inner {
    waiting: VecDeque<Job>,
    running: Vec<Running>,
    next_id: u64,
}

pub(super) struct Work {
    inner: Mutex<Inner>,
    /// Signalled when a job is queued, and when a running one ends.
    changed: Condvar,
    capacity: usize,
}

/// A job taken by a worker; ending it (dropping it) tells a waiting reload.
pub(super) struct Taken<'a> {
    work: &'a Work,
    id: u64,
    pub(super) job: Job,
    pub(super) cancel: Cancel,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.work.lock().running.retain(|r| r.id != self.id);
        self.work.changed.notify_all();
    }
}

impl Work {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            changed: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job at once, or says the queue is full (never waits).
    pub(super) fn push(&self, job: Job) -> Result<(), Full> {
        let mut inner = self.lock();
        if inner.waiting.len() >= self.capacity {
            return Err(Full);
        }
        inner.waiting.push_back(job);
        drop(inner);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits for the next job and marks it running.
    pub(super) fn take(&self) -> Taken<'_> {
        let mut inner = self.lock();
        loop {
            if let Some(job) = inner.waiting.pop_front() {
                inner.next_id += 1;
                let (id, cancel) = (inner.next_id, Cancel::default());
                inner.running.push(Running {
                    id,
                    job: job.clone(),
                    cancel: Arc::clone(&cancel),
                });
                return Taken {
                    work: self,
                    id,
                    job,
                    cancel,
                };
            }
            inner = self
                .changed
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Jobs waiting.
    pub(super) fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub(super) fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Whether `job` is queued or running (so the scheduler does not queue it twice).
    pub(super) fn holds(&self, job: &Job) -> bool {
        let inner = self.lock();
        inner.waiting.contains(job) || inner.running.iter().any(|r| r.job == *job)
    }

    /// Drops every queued job that `keep` refuses, cancels every running
    /// one it refuses, and waits (up to `patience`) until those have ended.
    /// Returns how many were dropped and cancelled, or the number still
    /// running when patience ran out.
    pub(super) fn withdraw(
        &self,
        keep: impl Fn(&Job) -> bool,
        patience: Duration,
    ) -> Result<(usize, usize), usize> {
        let mut inner = self.lock();
        let before = inner.waiting.len();
        inner.waiting.retain(|j| keep(j));
        let dropped = before - inner.waiting.len();
        let doomed: Vec<u64> = inner
            .running
            .iter()
            .filter(|r| !keep(&r.job))
            .map(|r| {
                r.cancel.store(true, Ordering::Release);
                r.id
            })
            .collect();
        let until = Instant::now() + patience;
        loop {
            let left = inner
                .running
                .iter()
                .filter(|r| doomed.contains(&r.id))
                .count();
            if left == 0 {
                return Ok((dropped, doomed.len()));
            }
            let wait = until.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(left);
            }
            inner = self
                .changed
                .wait_timeout(inner, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, thread};

    use super::*;
    use crate::{config::Ports, daemon::tasks::Task, scan::probes::Protocol};

    fn job(addr: &str) -> Job {
        Job {
            task: Task {
                subnet: addr.parse::<IpAddr>().unwrap().into(),
            },
            protocol: Protocol::Tcp,
            ports: Ports::parse("22").unwrap(),
            query: None,
        }
    }

    #[test]
    fn the_queue_counts_exactly_and_refuses_past_its_capacity() {
        let work = Work::new(2);
        assert_eq!(work.len(), 0);
        work.push(job("198.18.0.1")).unwrap();
        work.push(job("198.18.0.2")).unwrap();
        assert!(work.is_full());
        assert!(work.push(job("198.18.0.3")).is_err());
        let taken = work.take();
        assert_eq!(taken.job, job("198.18.0.1"));
        assert_eq!(work.len(), 1, "a running job is not queued");
        assert!(work.holds(&job("198.18.0.1")), "running");
        drop(taken);
        assert!(!work.holds(&job("198.18.0.1")));
        assert!(work.holds(&job("198.18.0.2")), "queued");
    }

    #[test]
    fn withdrawing_drops_queued_jobs_and_waits_for_running_ones() {
        let work = Work::new(10);
        for a in ["198.18.0.1", "198.18.0.2", "198.18.0.3"] {
            work.push(job(a)).unwrap();
        }
        let removed = job("198.18.0.1");
        thread::scope(|s| {
            let taken = work.take();
            assert_eq!(taken.job, removed);
            // The "scan": runs until cancelled.
            s.spawn(move || {
                while !taken.cancel.load(Ordering::Acquire) {
                    thread::sleep(Duration::from_millis(5));
                }
                drop(taken);
            });
            let outcome = work.withdraw(
                |j| *j != removed && *j != job("198.18.0.3"),
                Duration::from_secs(10),
            );
            assert_eq!(outcome, Ok((1, 1)));
        });
        assert_eq!(work.len(), 1);
        assert_eq!(work.take().job, job("198.18.0.2"));
    }

    #[test]
    fn withdrawing_gives_up_after_its_patience() {
        let work = Work::new(10);
        work.push(job("198.18.0.1")).unwrap();
        let stuck = work.take();
        assert_eq!(work.withdraw(|_| false, Duration::from_millis(50)), Err(1));
        assert!(stuck.cancel.load(Ordering::Acquire), "it was asked to stop");
    }
}
