//! The daemon's long-lived threads (scheduler, workers): each loops forever,
//! so one that ends has died. That is logged and turns `/healthz` to 503
//! with the thread's name, instead of the agent going quiet while saying
//! "ok".

use std::{
    io,
    sync::{Arc, Mutex, PoisonError},
    thread,
};

#[derive(Clone, Default)]
pub(super) struct Vitals {
    stopped: Arc<Mutex<Vec<String>>>,
}

/// Records its thread's end when dropped: on return, and on a panic's unwind.
struct Watch {
    name: String,
    stopped: Arc<Mutex<Vec<String>>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let how = if thread::panicking() {
            "panicked"
        } else {
            "returned"
        };
        tracing::error!(thread = %self.name, "a daemon thread {how}; the agent needs a restart");
        self.stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{} {how}", self.name));
    }
}

impl Vitals {
    /// Starts a thread that is meant to run as long as the daemon.
    pub(super) fn spawn(
        &self,
        name: String,
        f: impl FnOnce() + Send + 'static,
    ) -> io::Result<thread::JoinHandle<()>> {
        let watch = Watch {
            name: name.clone(),
            stopped: Arc::clone(&self.stopped),
        };
        thread::Builder::new().name(name).spawn(move || {
            let _watch = watch;
            f();
        })
    }

    /// The threads that have ended, e.g. `["worker-3 panicked"]`.
    pub(super) fn stopped(&self) -> Vec<String> {
        self.stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_dies_is_named() {
        let vitals = Vitals::default();
        let quiet = vitals
            .spawn("scheduler".into(), || {
                std::thread::park_timeout(std::time::Duration::from_millis(1))
            })
            .unwrap();
        quiet.join().unwrap();
        let dying = vitals.spawn("worker-3".into(), || panic!("a bug")).unwrap();
        assert!(dying.join().is_err());
        assert_eq!(
            vitals.stopped(),
            ["scheduler returned", "worker-3 panicked"]
        );
    }
}
