//! The probes' pace: each scan's own [`Pacer`] (its engine sets the rate),
//! and the [`Budget`] that every scan of the daemon shares (`max_rate`).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// The longest burst the bucket allows, in time at the rate: long enough
/// that a loop turn of a few hundred microseconds (replies to handle, a
/// thread switch) loses no tokens, short enough that the link's queues
/// absorb it.
const BURST_TIME: f64 = 0.004;
/// The most packets a turn of the scan loop sends (a few ring flushes).
pub(super) const MAX_TURN: usize = 4096;

/// A token bucket: `rate` tokens per second, holding at most
/// [`BURST_TIME`] of them, so bursts stay short and the average holds.
#[derive(Debug)]
pub(super) struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A bucket at `rate` that starts full: the first burst goes out at
    /// once, before any answer is handled (so every probe of a small scan
    /// goes out with the same, initial, retry timeout).
    pub(super) fn new(rate: f64) -> Self {
        let mut p = Self {
            rate: rate.max(1.0),
            tokens: 0.0,
            last: Instant::now(),
        };
        p.tokens = p.burst();
        p
    }

    /// Probes per second.
    pub(super) fn rate(&self) -> f64 {
        self.rate
    }

    pub(super) fn set_rate(&mut self, rate: f64) {
        self.refill(Instant::now());
        self.rate = rate.max(1.0);
    }

    fn burst(&self) -> f64 {
        (self.rate * BURST_TIME).clamp(1.0, MAX_TURN as f64)
    }

    fn refill(&mut self, now: Instant) {
        // Scans sharing a budget pass the times their turns began, which
        // need not arrive in order: an earlier one must not move `last`
        // back, or the next refill would count that time twice.
        if now <= self.last {
            return;
        }
        let elapsed = (now - self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst());
        self.last = now;
    }

    /// How many packets may go out now (taken from the bucket).
    pub(super) fn take(&mut self, now: Instant, want: usize) -> usize {
        self.refill(now);
        let n = (self.tokens.floor() as usize).min(want);
        self.tokens -= n as f64;
        n
    }

    /// Gives back `n` tokens taken but not used (nothing was left to send).
    pub(super) fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.burst());
    }

    /// How long until the next packet may go.
    pub(super) fn next_in(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0))
    }
}

/// A rate ceiling shared by every scan of the agent (the daemon's
/// `max_rate`): a scan draws each packet from it as well as from its own
/// pacer, so scans sharing it together stay under its rate.
#[derive(Clone, Debug)]
pub struct Budget(Arc<Mutex<Pacer>>);

impl Budget {
    /// `rate` packets per second for all the scans that share it.
    pub fn new(rate: f64) -> Self {
        Self(Arc::new(Mutex::new(Pacer::new(rate))))
    }

    /// How many of `want` packets may go out now (taken from the budget).
    pub fn take(&self, now: Instant, want: usize) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(now, want)
    }

    /// Gives back `n` packets taken but not sent.
    pub fn refund(&self, n: usize) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refund(n);
    }

    /// How long until the next packet may go.
    pub fn next_in(&self) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_in()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two scans share a budget and pass the times their turns began, out
    /// of order: the budget still gives no more than its rate.
    #[test]
    fn a_budget_takes_times_out_of_order_without_counting_them_twice() {
        let budget = Budget::new(1000.0);
        let t0 = Instant::now();
        let mut granted = budget.take(t0, usize::MAX);
        for ms in 1..=1000u64 {
            let late = t0 + Duration::from_millis(ms);
            let early = late - Duration::from_micros(900);
            granted += budget.take(late, usize::MAX);
            granted += budget.take(early, usize::MAX);
        }
        // 1 s at 1000 per second, plus the 4 ms the bucket starts with.
        assert!(granted <= 1000 + 4, "{granted} granted in 1 s");
    }

    #[test]
    fn pacer_holds_the_rate_and_caps_bursts() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000.0);
        p.last = t0;
        p.tokens = 0.0;
        assert_eq!(p.take(t0, 100), 0);
        assert!(p.next_in() <= Duration::from_millis(1));
        assert_eq!(p.take(t0 + Duration::from_millis(1), 100), 1);
        // After a long pause only a short burst is allowed.
        assert_eq!(p.take(t0 + Duration::from_secs(10), 1000), 4);
        let mut fast = Pacer::new(10_000_000.0);
        assert_eq!(
            fast.take(Instant::now() + Duration::from_secs(1), 100_000),
            MAX_TURN
        );
        // Over a simulated second, the bucket lets through about `rate`.
        let mut p = Pacer::new(5000.0);
        p.tokens = 0.0;
        let start = p.last;
        let total: usize = (1..=1000)
            .map(|ms| p.take(start + Duration::from_millis(ms), usize::MAX))
            .sum();
        assert!((4990..=5010).contains(&total), "{total}");
    }

    /// The rate holds when the loop turns slowly: a turn every 500 us at
    /// 300 kpps (150 probes a turn) loses nothing. With bursts capped at a
    /// send batch (64), as before, it got 128 kpps.
    #[test]
    fn a_slow_loop_still_gets_the_whole_rate() {
        let mut p = Pacer::new(300_000.0);
        let start = p.last;
        let total: usize = (1..=2000)
            .map(|turn| p.take(start + Duration::from_micros(500 * turn), MAX_TURN))
            .sum();
        // The rate, plus the full bucket it started with (4 ms of it).
        assert!((299_000..=301_201).contains(&total), "{total}");
    }

    #[test]
    fn refunded_tokens_are_spent_later_but_never_exceed_a_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100_000.0);
        p.last = t0;
        p.tokens = 0.0;
        let got = p.take(t0 + Duration::from_millis(1), 1000);
        assert_eq!(got, 100);
        p.refund(60);
        assert_eq!(p.take(t0 + Duration::from_millis(1), 1000), 60);
        p.refund(10_000);
        assert_eq!(p.take(t0 + Duration::from_millis(1), 10_000), 400);
    }
}
