//! Adapting to the network: round-trip time estimates (for retry timeouts)
//! and the rate controller (for `min_rate`/`max_rate`).

use std::time::Duration;

use super::tuning::{Rate, Tuning};

/// RFC 6298 smoothed RTT, clamped to the configured bounds.
#[derive(Clone, Debug)]
pub struct RttEstimator {
    srtt: Option<f64>,
    rttvar: f64,
    initial: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    pub fn new(t: &Tuning) -> Self {
        Self {
            srtt: None,
            rttvar: 0.0,
            initial: t.initial_rtt_timeout,
            min: t.min_rtt_timeout,
            max: t.max_rtt_timeout,
        }
    }

    pub fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64();
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                self.srtt = Some(0.875 * s + 0.125 * r);
            }
        }
    }

    /// How long to wait for an answer before retrying.
    pub fn timeout(&self) -> Duration {
        let t = match self.srtt {
            None => self.initial,
            Some(s) => Duration::from_secs_f64(s + 4.0 * self.rttvar),
        };
        t.clamp(self.min, self.max.max(self.min))
    }
}

/// Chooses the send rate. Adaptive rates move between their bounds every
/// period. A fixed rate is kept as long as the path carries it; above what
/// the path carries (the senders make the scan wait, or answers are lost)
/// it is held just below that, since sending faster would only cost
/// retries, and climbs back towards the asked rate when the path allows.
#[derive(Clone, Debug)]
pub struct RateController {
    current: f64,
    floor: f64,
    ceiling: f64,
    adaptive: bool,
    answered: u64,
    lost: u64,
    /// Periods a fixed rate was held below the asked one.
    held: u64,
}

/// Loss above this share of answers counts as congestion.
const LOSS_THRESHOLD: f64 = 0.02;
/// A fixed rate backs off for loss only when a period had this many
/// answers (fewer say little) and lost above [`FIXED_LOSS_THRESHOLD`].
const MIN_ANSWERS: u64 = 100;
const FIXED_LOSS_THRESHOLD: f64 = 0.05;
/// A held fixed rate never falls below this (probes per second), or the
/// asked rate if lower.
const FIXED_FLOOR: f64 = 1000.0;
/// How fast a held fixed rate climbs back per period (from a tenth of the
/// asked rate to all of it in about 2.4 s).
const FIXED_CLIMB: f64 = 1.1;

impl RateController {
    pub fn new(t: &Tuning, hosts: u64) -> Self {
        let (host_floor, host_ceiling) = t.host_rate_bounds(hosts);
        match t.rate {
            Rate::Fixed(r) => {
                let r = (r as f64).min(host_ceiling);
                Self {
                    current: r,
                    floor: FIXED_FLOOR.min(r),
                    ceiling: r,
                    adaptive: false,
                    answered: 0,
                    lost: 0,
                    held: 0,
                }
            }
            Rate::Adaptive { min, max } => {
                let ceiling = max.map_or(f64::INFINITY, |m| m as f64).min(host_ceiling);
                let floor = (min as f64).max(host_floor).min(ceiling).max(1.0);
                Self {
                    current: floor,
                    floor,
                    ceiling,
                    adaptive: true,
                    answered: 0,
                    lost: 0,
                    held: 0,
                }
            }
        }
    }

    pub fn rate(&self) -> f64 {
        self.current
    }

    /// An answer arrived; `retry` says it answered a retransmission, which
    /// means an earlier attempt (or its answer) was lost.
    pub fn answered(&mut self, retry: bool) {
        self.answered += 1;
        self.lost += u64::from(retry);
    }

    /// Adjusts the rate at the end of a period. `limited` says the sender
    /// used all it was allowed (speeding up would be used); `carried` is
    /// the rate the period achieved when the senders, not the pacer, set
    /// the pace (the path is full).
    pub fn end_period(&mut self, limited: bool, carried: Option<f64>) -> f64 {
        let loss = self.lost as f64 / self.answered.max(1) as f64;
        if self.adaptive {
            if self.lost > 0 && loss > LOSS_THRESHOLD {
                self.current = (self.current * 0.7).max(self.floor);
            } else if limited && carried.is_none() {
                self.current = (self.current * 1.3).min(self.ceiling);
            }
        } else if self.answered >= MIN_ANSWERS && loss > FIXED_LOSS_THRESHOLD {
            self.current = (self.current * 0.85).max(self.floor);
            self.held += 1;
        } else if let Some(carried) = carried {
            // Just below what the path carried, so its queues drain.
            self.current = (carried * 0.95).clamp(self.floor, self.current);
            self.held += 1;
        } else if limited {
            self.current = (self.current * FIXED_CLIMB).min(self.ceiling);
        }
        self.answered = 0;
        self.lost = 0;
        self.current
    }

    /// The lowest rate the controller goes to (`min_rate` for adaptive
    /// rates), which scans yield to.
    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// Periods a fixed rate spent held below the asked one.
    pub fn held_periods(&self) -> u64 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuning(rate: Rate) -> Tuning {
        Tuning {
            rate,
            ..Tuning::default()
        }
    }

    #[test]
    fn rtt_timeout_follows_samples_within_bounds() {
        let t = Tuning {
            initial_rtt_timeout: Duration::from_millis(500),
            min_rtt_timeout: Duration::from_millis(50),
            max_rtt_timeout: Duration::from_millis(1500),
            ..Tuning::default()
        };
        let mut rtt = RttEstimator::new(&t);
        assert_eq!(rtt.timeout(), Duration::from_millis(500));
        for _ in 0..50 {
            rtt.sample(Duration::from_micros(200));
        }
        assert_eq!(
            rtt.timeout(),
            Duration::from_millis(50),
            "clamped to the minimum"
        );
        for _ in 0..50 {
            rtt.sample(Duration::from_secs(3));
        }
        assert_eq!(
            rtt.timeout(),
            Duration::from_millis(1500),
            "clamped to the maximum"
        );
    }

    #[test]
    fn adaptive_rate_climbs_without_loss_and_backs_off_with_it() {
        let mut c = RateController::new(
            &tuning(Rate::Adaptive {
                min: 1000,
                max: Some(2000),
            }),
            10,
        );
        assert_eq!(c.rate(), 1000.0);
        c.answered(false);
        assert_eq!(c.end_period(true, None), 1300.0);
        assert_eq!(
            c.end_period(false, None),
            1300.0,
            "no speed-up when the sender was not limited"
        );
        for _ in 0..5 {
            c.end_period(true, None);
        }
        assert_eq!(c.rate(), 2000.0, "never above max_rate");
        for _ in 0..10 {
            c.answered(false);
        }
        c.answered(true);
        assert_eq!(c.end_period(true, None), 1400.0, "loss backs off");
        for _ in 0..10 {
            c.answered(true);
            c.end_period(true, None);
        }
        assert_eq!(c.rate(), 1000.0, "never below min_rate");
    }

    #[test]
    fn a_fixed_rate_holds_below_a_full_path_and_climbs_back() {
        let mut c = RateController::new(&tuning(Rate::Fixed(1_000_000)), 1);
        assert_eq!(
            c.end_period(true, None),
            1_000_000.0,
            "a carried rate stays"
        );
        assert_eq!(c.end_period(true, Some(400_000.0)), 380_000.0);
        assert_eq!(c.end_period(true, Some(390_000.0)), 370_500.0);
        // A few lost answers among many are not congestion.
        for i in 0..1000 {
            c.answered(i % 50 == 0);
        }
        assert_eq!(c.end_period(true, None), 370_500.0 * 1.1);
        for i in 0..1000 {
            c.answered(i % 10 == 0);
        }
        assert_eq!(c.end_period(true, None), 370_500.0 * 1.1 * 0.85, "10% lost");
        for _ in 0..200 {
            c.end_period(true, None);
        }
        assert_eq!(c.rate(), 1_000_000.0, "never above the asked rate");
        for _ in 0..200 {
            c.end_period(true, Some(1.0));
        }
        assert_eq!(c.rate(), 1000.0, "never below 1000 probes per second");
        assert_eq!(c.held_periods(), 203);
    }

    #[test]
    fn no_ceiling_and_per_host_delays() {
        let mut c = RateController::new(
            &tuning(Rate::Adaptive {
                min: 100,
                max: None,
            }),
            1,
        );
        for _ in 0..100 {
            c.end_period(true, None);
        }
        assert!(c.rate() > 1e9, "max_rate 0 has no fixed ceiling");
        let t = Tuning {
            scan_delay: Duration::from_millis(10),
            ..tuning(Rate::Fixed(10_000))
        };
        assert_eq!(
            RateController::new(&t, 5).rate(),
            500.0,
            "5 hosts, 10 ms apart each"
        );
        let t = Tuning {
            max_scan_delay: Some(Duration::from_millis(100)),
            ..tuning(Rate::Adaptive { min: 1, max: None })
        };
        assert_eq!(
            RateController::new(&t, 50).rate(),
            500.0,
            "floor from max_scan_delay"
        );
    }
}
