//! One read in flight: concurrent scrapes of the firewall families share a
//! read instead of each starting a dump of their own. A scrape that finds a
//! read under way waits for that read's result (at most until its own
//! deadline); one that finds none starts one. So a burst of scrapes, or the
//! agent's `/metrics` and the drop-in listener scraped at once, costs one
//! read, and a slow read cannot pile up further reads behind it.

use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

#[derive(Debug)]
pub(super) struct Flight<T> {
    state: Mutex<State<T>>,
    done: Condvar,
    /// Reads started, for `scanner_agent_firewall_reads_total`.
    reads: AtomicU64,
}

#[derive(Debug)]
struct State<T> {
    reading: bool,
    /// Reads finished: a waiter waits for this to pass the read it found.
    finished: u64,
    last: Option<Arc<T>>,
}

impl<T> Default for Flight<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                reading: false,
                finished: 0,
                last: None,
            }),
            done: Condvar::new(),
            reads: AtomicU64::new(0),
        }
    }
}

/// Ends a read even when it panics, so waiters never wait on a dead one.
struct Finish<'a, T: Send + Sync + 'static> {
    flight: &'a Flight<T>,
    result: Option<Arc<T>>,
}

impl<T: Send + Sync + 'static> Drop for Finish<'_, T> {
    fn drop(&mut self) {
        let mut state = self.flight.lock();
        state.reading = false;
        state.finished += 1;
        // None when the read panicked: its waiters fail rather than take
        // an older read for it.
        let replaced = std::mem::replace(&mut state.last, self.result.take());
        self.flight.done.notify_all();
        drop(state);
        // The last result may hold the last reference to a large layout.
        if let Some(replaced) = replaced {
            super::retire::retire(replaced);
        }
    }
}

impl<T: Send + Sync + 'static> Flight<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The result of the read under way, or of a read `read` makes now when
    /// there is none. `None` when `deadline` passes before the read under
    /// way ends (or that read panicked).
    pub(super) fn share(&self, deadline: Instant, read: impl FnOnce() -> T) -> Option<Arc<T>> {
        let mut state = self.lock();
        if state.reading {
            let awaited = state.finished + 1;
            while state.finished < awaited {
                let left = deadline.checked_duration_since(Instant::now())?;
                state = self
                    .done
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            return state.last.clone();
        }
        state.reading = true;
        drop(state);
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut finish = Finish {
            flight: self,
            result: None,
        };
        let result = Arc::new(read());
        finish.result = Some(Arc::clone(&result));
        drop(finish);
        Some(result)
    }

    /// Reads started so far.
    pub(super) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Barrier,
        thread,
        time::{Duration, Instant},
    };

    use super::*;

    #[test]
    fn callers_during_a_read_share_it_and_later_ones_read_again() {
        let flight = Arc::new(Flight::<u64>::default());
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (flight, barrier) = (Arc::clone(&flight), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    *flight
                        .share(deadline, || {
                            thread::sleep(Duration::from_millis(300));
                            7
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 7);
        }
        assert_eq!(flight.reads(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(*flight.share(deadline, || 8).unwrap(), 8);
        assert_eq!(flight.reads(), 2);
    }

    #[test]
    fn a_waiter_gives_up_at_its_deadline() {
        let flight = Arc::new(Flight::<u64>::default());
        let reader = {
            let flight = Arc::clone(&flight);
            thread::spawn(move || {
                flight.share(Instant::now() + Duration::from_secs(10), || {
                    thread::sleep(Duration::from_millis(800));
                    1
                })
            })
        };
        while flight.reads() == 0 {
            thread::yield_now();
        }
        let started = Instant::now();
        assert!(
            flight
                .share(started + Duration::from_millis(100), || 2)
                .is_none()
        );
        assert!(started.elapsed() < Duration::from_millis(700));
        assert_eq!(*reader.join().unwrap().unwrap(), 1);
        assert_eq!(flight.reads(), 1);
    }
}
