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

/// Chooses the send rate. Fixed rates only obey the per-host ceiling;
/// adaptive ones move between their bounds every period.
#[derive(Clone, Debug)]
pub struct RateController {
    current: f64,
    floor: f64,
    ceiling: f64,
    adaptive: bool,
    answered: u64,
    lost: u64,
}

/// Loss above this share of answers counts as congestion.
const LOSS_THRESHOLD: f64 = 0.02;

impl RateController {
    pub fn new(t: &Tuning, hosts: u64) -> Self {
        let (host_floor, host_ceiling) = t.host_rate_bounds(hosts);
        match t.rate {
            Rate::Fixed(r) => {
                let r = (r as f64).min(host_ceiling);
                Self {
                    current: r,
                    floor: r,
                    ceiling: r,
                    adaptive: false,
                    answered: 0,
                    lost: 0,
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
    /// used all it was allowed (speeding up would be used).
    pub fn end_period(&mut self, limited: bool) -> f64 {
        if self.adaptive {
            let loss = self.lost as f64 / self.answered.max(1) as f64;
            if self.lost > 0 && loss > LOSS_THRESHOLD {
                self.current = (self.current * 0.7).max(self.floor);
            } else if limited {
                self.current = (self.current * 1.3).min(self.ceiling);
            }
        }
        self.answered = 0;
        self.lost = 0;
        self.current
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
        assert_eq!(c.end_period(true), 1300.0);
        assert_eq!(
            c.end_period(false),
            1300.0,
            "no speed-up when the sender was not limited"
        );
        for _ in 0..5 {
            c.end_period(true);
        }
        assert_eq!(c.rate(), 2000.0, "never above max_rate");
        for _ in 0..10 {
            c.answered(false);
        }
        c.answered(true);
        assert_eq!(c.end_period(true), 1400.0, "loss backs off");
        for _ in 0..10 {
            c.answered(true);
            c.end_period(true);
        }
        assert_eq!(c.rate(), 1000.0, "never below min_rate");
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
            c.end_period(true);
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
