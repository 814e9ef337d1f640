//! How far a running scan has got, for a display on another thread (the
//! CLI's progress line). The engine stores its counters here once per turn
//! of its loop with relaxed atomic stores (no lock, nothing the send path
//! waits on); the display reads them when it redraws, a few times a second.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use super::Phase;

/// The counters of the phase in progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// 0 before the first phase, then [`Phase`] as 1 or 2.
    phase: AtomicU8,
    total: AtomicU64,
    started: AtomicU64,
    sent: AtomicU64,
    retries: AtomicU64,
    open: AtomicU64,
}

/// One reading of [`Progress`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Option<Phase>,
    /// Probes the phase will send, retries not counted.
    pub total: u64,
    /// Probes sent at least once (or skipped: their host timed out).
    pub started: u64,
    /// Packets sent in the phase, retries included.
    pub sent: u64,
    pub retries: u64,
    /// Ports found open so far (the port scan only).
    pub open: u64,
}

impl Progress {
    /// A new phase of `total` probes starts: its counters from zero.
    pub(super) fn begin(&self, phase: Phase, total: u64) {
        self.total.store(total, Relaxed);
        self.update(0, 0, 0, 0);
        self.phase.store(
            match phase {
                Phase::Discovery => 1,
                Phase::Ports => 2,
            },
            Relaxed,
        );
    }

    pub(super) fn update(&self, started: u64, sent: u64, retries: u64, open: u64) {
        self.started.store(started, Relaxed);
        self.sent.store(sent, Relaxed);
        self.retries.store(retries, Relaxed);
        self.open.store(open, Relaxed);
    }

    /// The counters now (each exact; together within one turn of the loop).
    pub fn read(&self) -> Snapshot {
        Snapshot {
            phase: match self.phase.load(Relaxed) {
                1 => Some(Phase::Discovery),
                2 => Some(Phase::Ports),
                _ => None,
            },
            total: self.total.load(Relaxed),
            started: self.started.load(Relaxed),
            sent: self.sent.load(Relaxed),
            retries: self.retries.load(Relaxed),
            open: self.open.load(Relaxed),
        }
    }
}
