//! The tuning options of the replaced exporter (nmap's), with the meaning
//! each has in this engine. Units and defaults are the seed's; 0 means
//! "engine default" where nmap's did, read in one place for the
//! configuration and the command line alike ([`NmapTimings`]).

use std::time::Duration;

/// How fast probes go out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Exactly this many packets per second (`scan --rate`).
    Fixed(u64),
    /// nmap's semantics: start at `min`, speed up while no loss is seen,
    /// back off when retries answer what first attempts did not; never below
    /// `min`, never above `max` (`None`: no fixed ceiling).
    Adaptive { min: u64, max: Option<u64> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    pub rate: Rate,
    /// Probes allowed to await an answer at once, at least (the window is
    /// never smaller than this).
    pub min_parallelism: usize,
    /// Retransmissions of an unanswered probe before it counts as silent,
    /// at most: see `fixed_retries`.
    pub max_retries: u8,
    /// Every unanswered probe gets all `max_retries` retries. Without it, as
    /// in nmap, a probe gets one attempt more than the most any answer of
    /// the scan needed (at least 2 attempts), and more only once an answer
    /// needs them: on a lossless path a filtered port costs 2 probes, not 7.
    pub fixed_retries: bool,
    /// Give up on a host that has answered nothing this long after its first
    /// probe; its remaining probes are not sent.
    pub host_timeout: Option<Duration>,
    /// Minimum gap between probes to one host: caps the rate at
    /// hosts / scan_delay.
    pub scan_delay: Duration,
    /// When backing off, the per-host gap never grows past this: the rate
    /// never falls below hosts / max_scan_delay.
    pub max_scan_delay: Option<Duration>,
    pub initial_rtt_timeout: Duration,
    pub min_rtt_timeout: Duration,
    pub max_rtt_timeout: Duration,
    /// The most the scan listens for late replies after its last probe
    /// (`--wait`); without it, one retry timeout (see `Engine::final_wait`).
    pub wait: Option<Duration>,
}

pub const DEFAULT_INITIAL_RTT: Duration = Duration::from_millis(1000);
pub const DEFAULT_MIN_RTT: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_RTT: Duration = Duration::from_millis(10_000);

impl Rate {
    /// nmap's adaptive rate; a `max` of 0 is no fixed ceiling.
    pub fn adaptive(min: u64, max: u64) -> Self {
        Self::Adaptive {
            min,
            max: (max > 0).then_some(max),
        }
    }
}

/// The timing options as nmap (and the replaced exporter) take them: whole
/// seconds or milliseconds, where 0 means nmap's default for a round-trip
/// timeout, and none for the host timeout and the largest scan delay.
/// `None` leaves a value as it is (a flag not given).
#[derive(Clone, Copy, Debug, Default)]
pub struct NmapTimings {
    /// Seconds; 0: never.
    pub host_timeout: Option<u64>,
    /// Milliseconds.
    pub scan_delay: Option<u64>,
    /// Milliseconds; 0: no limit.
    pub max_scan_delay: Option<u64>,
    /// Milliseconds; 0: [`DEFAULT_INITIAL_RTT`].
    pub initial_rtt_timeout: Option<u64>,
    /// Milliseconds; 0: [`DEFAULT_MAX_RTT`].
    pub max_rtt_timeout: Option<u64>,
    /// Milliseconds; 0: [`DEFAULT_MIN_RTT`].
    pub min_rtt_timeout: Option<u64>,
}

impl Default for Tuning {
    /// The seed's defaults, with the command line's fixed rate.
    fn default() -> Self {
        Self {
            rate: Rate::Fixed(10_000),
            min_parallelism: 1000,
            max_retries: 6,
            fixed_retries: false,
            host_timeout: Some(Duration::from_secs(300)),
            scan_delay: Duration::ZERO,
            max_scan_delay: None,
            initial_rtt_timeout: DEFAULT_INITIAL_RTT,
            min_rtt_timeout: DEFAULT_MIN_RTT,
            max_rtt_timeout: DEFAULT_MAX_RTT,
            wait: None,
        }
    }
}

impl Tuning {
    /// These settings with `t`'s given values, read as nmap reads them.
    pub fn with_nmap_timings(mut self, t: NmapTimings) -> Self {
        let millis_or = |ms: u64, default| {
            if ms == 0 {
                default
            } else {
                Duration::from_millis(ms)
            }
        };
        if let Some(s) = t.host_timeout {
            self.host_timeout = (s > 0).then(|| Duration::from_secs(s));
        }
        if let Some(ms) = t.scan_delay {
            self.scan_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = t.max_scan_delay {
            self.max_scan_delay = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(ms) = t.initial_rtt_timeout {
            self.initial_rtt_timeout = millis_or(ms, DEFAULT_INITIAL_RTT);
        }
        if let Some(ms) = t.max_rtt_timeout {
            self.max_rtt_timeout = millis_or(ms, DEFAULT_MAX_RTT);
        }
        if let Some(ms) = t.min_rtt_timeout {
            self.min_rtt_timeout = millis_or(ms, DEFAULT_MIN_RTT);
        }
        self
    }

    /// Rate bounds from the per-host delays, for `hosts` targets.
    pub fn host_rate_bounds(&self, hosts: u64) -> (f64, f64) {
        let hosts = hosts.max(1) as f64;
        let ceiling = if self.scan_delay.is_zero() {
            f64::INFINITY
        } else {
            hosts / self.scan_delay.as_secs_f64()
        };
        let floor = self
            .max_scan_delay
            .filter(|d| !d.is_zero())
            .map_or(0.0, |d| hosts / d.as_secs_f64());
        (floor, ceiling)
    }
}
