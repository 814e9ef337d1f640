//! `nftables_set_elements`: the element count of every named set and map,
//! refreshed apart from the rule read and at a bounded rate. A set can be
//! large (a blocklist of millions) or change all the time (a `dynamic` set
//! filled by the packet path, fail2ban's bans), so counting it must never
//! hold up a scrape: a scrape serves the counts of the last refresh and, if
//! those are older than [`REFRESH_EVERY`], starts the next refresh on a
//! thread of its own. At most one refresh runs at a time.

use std::{
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant, SystemTime},
};

use super::netlink::{self, SetElements};

/// The least time between two refreshes of the counts.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// A refresh gives up after this long.
pub(super) const REFRESH_DEADLINE: Duration = Duration::from_secs(10);

/// One refresh: when, how long it took, and its counts or why it failed.
#[derive(Debug)]
pub(super) struct Counted {
    /// The network namespace counted (scrapes from another are not served it).
    netns: u64,
    at: Instant,
    pub wall: SystemTime,
    pub took: Duration,
    pub sets: Result<Vec<SetElements>, String>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Arc<Counted>>,
    refreshing: bool,
}

/// Clones share the counts (the agent's `/metrics` and the drop-in listener).
#[derive(Clone, Debug, Default)]
pub(super) struct SetCounts(Arc<Mutex<State>>);

impl SetCounts {
    /// The counts of the last refresh in this thread's network namespace,
    /// starting a refresh when they are missing or stale. Never waits for one.
    pub(super) fn current(&self) -> Option<Arc<Counted>> {
        let netns = netlink::netns();
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let last = state.last.clone().filter(|c| c.netns == netns);
        let fresh = last
            .as_ref()
            .is_some_and(|c| c.at.elapsed() < REFRESH_EVERY);
        if !fresh && !state.refreshing {
            state.refreshing = true;
            let shared = Arc::clone(&self.0);
            // A thread started here is in this thread's network namespace.
            let started = thread::Builder::new()
                .name("nft-set-counts".into())
                .spawn(move || refresh(&shared, netns));
            if let Err(e) = started {
                state.refreshing = false;
                tracing::warn!("firewall counters: cannot start counting set elements: {e}");
            }
        }
        last
    }
}

fn refresh(shared: &Mutex<State>, netns: u64) {
    let at = Instant::now();
    let sets = netlink::set_elements(at + REFRESH_DEADLINE).map_err(|e| e.to_string());
    if let Err(e) = &sets {
        tracing::debug!("firewall counters: counting set elements failed: {e}");
    }
    let counted = Counted {
        netns,
        at,
        wall: SystemTime::now(),
        took: at.elapsed(),
        sets,
    };
    let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
    state.last = Some(Arc::new(counted));
    state.refreshing = false;
}
