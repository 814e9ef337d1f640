//! Frees what a read replaced on a thread of its own. After a ruleset
//! change, the last layout and the last read's rules hold tens of
//! thousands of reference counts on scattered cache lines (about a
//! millisecond at 10,000 rules); dropping them on the scrape's thread
//! delayed its answer.

use std::sync::{OnceLock, mpsc};

type Retired = Box<dyn Send>;

/// Drops `value` on the retiring thread (started on first use), or here if
/// that thread cannot be started.
pub(super) fn retire<T: Send + 'static>(value: T) {
    static RETIRED: OnceLock<Option<mpsc::Sender<Retired>>> = OnceLock::new();
    let sender = RETIRED.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Retired>();
        std::thread::Builder::new()
            .name("firewall-free".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = sender {
        // Fails only if the thread is gone; the value is then dropped here.
        let _ = tx.send(Box::new(value));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::retire;

    /// A value whose drop waits for the test: it is freed on another thread.
    struct Gate(Arc<Barrier>);

    impl Drop for Gate {
        fn drop(&mut self) {
            self.0.wait();
        }
    }

    #[test]
    fn retired_values_are_dropped_on_another_thread() {
        let barrier = Arc::new(Barrier::new(2));
        // Dropped here, this would wait for ever (nobody else waits).
        retire(Gate(Arc::clone(&barrier)));
        barrier.wait();
    }
}
