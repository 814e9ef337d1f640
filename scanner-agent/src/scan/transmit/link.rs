//! Gentle with transfers: a data-transfer node's link is for its transfers.
//! [`LinkWatch`] reads the scan interface's byte counters every
//! [`SAMPLE_PERIOD`] over rtnetlink, subtracts what the agent itself sent
//! and received for its scans, and decides whether that other traffic is
//! above `yield_above` of the link's speed. Scans then drop to their floor
//! rate ([`Link::yielding`]), and never send more than `max_link_share` of
//! the speed ([`Link::cap_pps`]).

use std::{
    fs, io,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::neighbour::Rtnl;

/// How often the counters are read.
const SAMPLE_PERIOD: Duration = Duration::from_millis(100);
/// Yielding lasts at least this long after the last sample above the
/// threshold, so a bursty transfer does not make the rate flap.
const YIELD_HOLD: Duration = Duration::from_millis(500);
/// The link's speed is read again this often (a renegotiated link).
const SPEED_RECHECK: Duration = Duration::from_secs(10);
/// A counter that moved more than this in one sample was reset, not
/// wrapped (a terabyte in 100 ms is 80 Tbit/s).
const PLAUSIBLE_BYTES: u64 = 1 << 40;

/// How much of the link scans may take, and when they give way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkPolicy {
    /// The agent's own probes stay under this share of the link's speed.
    pub max_share: f64,
    /// While other traffic is above this share, scans drop to their floor.
    pub yield_above: f64,
    /// The speed to assume (Mbit/s) instead of what the interface reports.
    pub speed_mbps: Option<u64>,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        Self {
            max_share: 0.05,
            yield_above: 0.7,
            speed_mbps: None,
        }
    }
}

/// The other traffic's share of the link's speed in one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Utilisation {
    pub rx: f64,
    pub tx: f64,
}

/// Bytes a counter moved from `prev` to `now`: a 64-bit wrap is counted,
/// a counter that went back (the interface was recreated) counts from
/// zero.
fn moved(prev: u64, now: u64) -> u64 {
    match now.wrapping_sub(prev) {
        d if d <= PLAUSIBLE_BYTES => d,
        _ => now,
    }
}

/// The other traffic's share of `speed_bps` when the interface's counters
/// moved by `link` (received, sent bytes) and the agent's own scans by
/// `own`, in `secs`.
fn utilisation(link: (u64, u64), own: (u64, u64), secs: f64, speed_bps: f64) -> Utilisation {
    if secs <= 0.0 || speed_bps <= 0.0 {
        return Utilisation::default();
    }
    let share = |total: u64, own: u64| total.saturating_sub(own) as f64 * 8.0 / secs / speed_bps;
    Utilisation {
        rx: share(link.0, own.0),
        tx: share(link.1, own.1),
    }
}

/// An `f64` in an atomic.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// One interface as its scans and its watch share it.
#[derive(Debug)]
pub struct Link {
    interface: String,
    policy: RwLock<LinkPolicy>,
    /// Bits per second; 0 when unknown (then nothing is capped or yielded).
    speed_bps: AtomicF64,
    own_rx: AtomicU64,
    own_tx: AtomicU64,
    own_probes: AtomicU64,
    yielding: AtomicBool,
    rx_share: AtomicF64,
    tx_share: AtomicF64,
    probe_rate: AtomicF64,
    yielded_ns: AtomicU64,
    active: AtomicUsize,
}

impl Link {
    pub fn new(interface: &str, policy: LinkPolicy) -> Arc<Self> {
        Arc::new(Self {
            interface: interface.to_owned(),
            policy: RwLock::new(policy),
            speed_bps: AtomicF64::default(),
            own_rx: AtomicU64::new(0),
            own_tx: AtomicU64::new(0),
            own_probes: AtomicU64::new(0),
            yielding: AtomicBool::new(false),
            rx_share: AtomicF64::default(),
            tx_share: AtomicF64::default(),
            probe_rate: AtomicF64::default(),
            yielded_ns: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    fn policy(&self) -> LinkPolicy {
        *self.policy.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a new policy (a reload); the speed override applies at the
    /// next sample.
    pub fn set_policy(&self, policy: LinkPolicy) {
        let mut p = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        if p.speed_mbps != policy.speed_mbps
            && let Some(mbps) = policy.speed_mbps
        {
            self.speed_bps.set(mbps as f64 * 1e6);
        }
        *p = policy;
    }

    /// A scan sent `probes` packets of `bytes` bytes (frames) in all.
    pub fn sent(&self, probes: u64, bytes: u64) {
        self.own_probes.fetch_add(probes, Ordering::Relaxed);
        self.own_tx.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A scan received `bytes` bytes of replies.
    pub fn received(&self, bytes: u64) {
        self.own_rx.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Whether scans should drop to their floor rate now.
    pub fn yielding(&self) -> bool {
        self.yielding.load(Ordering::Relaxed)
    }

    /// The most probes per second `max_link_share` of the link's speed
    /// allows for frames of `frame_bytes`; `None` when the speed is unknown.
    pub fn cap_pps(&self, frame_bytes: f64) -> Option<f64> {
        let speed = self.speed_bps.get();
        (speed > 0.0).then(|| self.policy().max_share * speed / 8.0 / frame_bytes.max(1.0))
    }

    /// The other traffic's share of the link in the last sample.
    pub fn utilisation(&self) -> Utilisation {
        Utilisation {
            rx: self.rx_share.get(),
            tx: self.tx_share.get(),
        }
    }

    /// Probes per second the scans on this link sent in the last sample.
    pub fn probe_rate(&self) -> f64 {
        self.probe_rate.get()
    }

    /// Time spent yielding while scans ran, in all.
    pub fn yielded(&self) -> Duration {
        Duration::from_nanos(self.yielded_ns.load(Ordering::Relaxed))
    }

    /// Marks a scan running on the link until the guard is dropped (only
    /// then does yielding count as time yielded).
    pub fn running(self: &Arc<Self>) -> Running {
        self.active.fetch_add(1, Ordering::Relaxed);
        Running(Arc::clone(self))
    }

    /// Takes one sample: `counts` the interface's (received, sent) bytes,
    /// or `None` when they cannot be read (then nothing is yielded).
    fn sample(&self, state: &mut SampleState, counts: Option<(u64, u64)>, now: Instant) {
        let own = (
            self.own_rx.load(Ordering::Relaxed),
            self.own_tx.load(Ordering::Relaxed),
            self.own_probes.load(Ordering::Relaxed),
        );
        let Some(counts) = counts else {
            *state = SampleState::default();
            self.rx_share.set(0.0);
            self.tx_share.set(0.0);
            self.yielding.store(false, Ordering::Relaxed);
            return;
        };
        if let Some((at, prev_counts, prev_own)) = state.prev {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            let u = utilisation(
                (
                    moved(prev_counts.0, counts.0),
                    moved(prev_counts.1, counts.1),
                ),
                (
                    own.0.wrapping_sub(prev_own.0),
                    own.1.wrapping_sub(prev_own.1),
                ),
                secs,
                self.speed_bps.get(),
            );
            self.rx_share.set(u.rx);
            self.tx_share.set(u.tx);
            if secs > 0.0 {
                self.probe_rate
                    .set(own.2.wrapping_sub(prev_own.2) as f64 / secs);
            }
            let yield_above = self.policy().yield_above;
            // 1 is "never", even when a link reports less than it carries.
            if yield_above < 1.0 && u.rx.max(u.tx) > yield_above {
                state.last_over = Some(now);
            }
            let yielding = state
                .last_over
                .is_some_and(|t| now.saturating_duration_since(t) < YIELD_HOLD);
            if yielding && self.active.load(Ordering::Relaxed) > 0 {
                let ns = (secs * 1e9) as u64;
                self.yielded_ns.fetch_add(ns, Ordering::Relaxed);
            }
            self.yielding.store(yielding, Ordering::Relaxed);
        }
        state.prev = Some((now, counts, own));
    }

    /// Reads the link's speed: the policy's, else what the interface
    /// reports in sysfs (none for loopback and most virtual links but
    /// veth, which says 10000).
    fn read_speed(&self) {
        let mbps = self.policy().speed_mbps.or_else(|| {
            fs::read_to_string(format!("/sys/class/net/{}/speed", self.interface))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .and_then(|m| u64::try_from(m).ok())
                .filter(|&m| m > 0)
        });
        self.speed_bps.set(mbps.map_or(0.0, |m| m as f64 * 1e6));
    }
}

/// A scan running on a [`Link`].
pub struct Running(Arc<Link>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One sample: when, the interface's (rx, tx) bytes, and the agent's own
/// (rx, tx, probes).
type Sample = (Instant, (u64, u64), (u64, u64, u64));

/// What the watch remembers between samples.
#[derive(Default)]
struct SampleState {
    prev: Option<Sample>,
    last_over: Option<Instant>,
}

/// The thread that samples a [`Link`]'s counters; stops when dropped.
pub struct LinkWatch {
    link: Arc<Link>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LinkWatch {
    pub fn start(link: Arc<Link>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (watched, stopped) = (Arc::clone(&link), Arc::clone(&stop));
        let thread = thread::Builder::new()
            .name("link-watch".into())
            .spawn(move || watch(&watched, &stopped))?;
        Ok(Self {
            link,
            stop,
            thread: Some(thread),
        })
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(link: &Link, stop: &AtomicBool) {
    let mut rtnl = None;
    let mut state = SampleState::default();
    let mut speed_read: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if speed_read.is_none_or(|t| now.saturating_duration_since(t) >= SPEED_RECHECK) {
            link.read_speed();
            speed_read = Some(now);
        }
        if rtnl.is_none() {
            rtnl = Rtnl::open().ok();
        }
        // A link that is gone (or a socket that failed) yields nothing.
        let counts = rtnl.as_mut().and_then(|r| {
            let index = nix::net::if_::if_nametoindex(link.interface.as_str()).ok()?;
            r.byte_counts(index).ok()
        });
        if counts.is_none() {
            rtnl = None;
        }
        link.sample(&mut state, counts, now);
        thread::sleep(SAMPLE_PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_wrap_or_restart() {
        assert_eq!(moved(100, 250), 150);
        assert_eq!(moved(u64::MAX - 9, 10), 20, "a 64-bit wrap");
        assert_eq!(moved(5_000_000_000_000, 300), 300, "recreated: from zero");
        assert_eq!(moved(7, 7), 0);
    }

    #[test]
    fn own_traffic_is_not_other_traffic() {
        // 100 Mbit/s link, 0.1 s: 1.25 MB is all of it.
        let u = utilisation((1_250_000, 625_000), (250_000, 625_000), 0.1, 100e6);
        assert!((u.rx - 0.8).abs() < 1e-9, "{u:?}");
        assert_eq!(u.tx, 0.0, "all of it was ours");
        // Our own estimate above what the link counted is no negative use.
        let u = utilisation((10, 10), (1000, 1000), 0.1, 100e6);
        assert_eq!(u, Utilisation::default());
        // No speed, or no time: nothing is known.
        assert_eq!(
            utilisation((1, 1), (0, 0), 0.1, 0.0),
            Utilisation::default()
        );
        assert_eq!(
            utilisation((1, 1), (0, 0), 0.0, 1e9),
            Utilisation::default()
        );
    }

    fn link(speed_mbps: u64) -> Arc<Link> {
        let link = Link::new(
            "test0",
            LinkPolicy {
                speed_mbps: Some(speed_mbps),
                ..LinkPolicy::default()
            },
        );
        link.read_speed();
        link
    }

    #[test]
    fn busy_links_make_running_scans_yield_and_count_it() {
        let link = link(100);
        let mut state = SampleState::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        link.sample(&mut state, Some((0, 0)), at(0));
        // 90 Mbit/s of someone else's traffic: above 0.7.
        link.sample(&mut state, Some((0, 1_125_000)), at(100));
        assert!(link.yielding());
        assert_eq!(link.yielded(), Duration::ZERO, "no scan was running");
        let running = link.running();
        link.sample(&mut state, Some((0, 2_250_000)), at(200));
        assert_eq!(link.yielded(), Duration::from_millis(100));
        // Quiet again: the yield holds for YIELD_HOLD, then ends.
        link.sample(&mut state, Some((0, 2_250_000)), at(300));
        assert!(link.yielding(), "held");
        link.sample(&mut state, Some((0, 2_250_000)), at(700));
        assert!(!link.yielding());
        // The agent's own probes at the same volume are no reason to yield.
        link.sent(20_000, 1_125_000);
        link.sample(&mut state, Some((0, 3_375_000)), at(800));
        link.sample(&mut state, Some((0, 3_375_000)), at(1400));
        assert!(!link.yielding());
        assert_eq!(link.probe_rate(), 0.0);
        drop(running);
        // The interface is gone: nothing known, nothing yielded.
        link.sample(&mut state, Some((0, 9_000_000)), at(1500));
        assert!(link.yielding());
        link.sample(&mut state, None, at(1600));
        assert!(!link.yielding());
        assert_eq!(link.utilisation(), Utilisation::default());
    }

    #[test]
    fn yield_above_one_never_yields_even_past_the_reported_speed() {
        let link = link(100);
        link.set_policy(LinkPolicy {
            yield_above: 1.0,
            speed_mbps: Some(100),
            ..LinkPolicy::default()
        });
        let mut state = SampleState::default();
        let t0 = Instant::now();
        link.sample(&mut state, Some((0, 0)), t0);
        // 200 Mbit/s on a link that says 100.
        link.sample(
            &mut state,
            Some((0, 2_500_000)),
            t0 + Duration::from_millis(100),
        );
        assert!(link.utilisation().tx > 1.9);
        assert!(!link.yielding());
    }

    #[test]
    fn the_cap_is_a_share_of_the_speed() {
        let link = link(1000);
        // 5% of 1 Gbit/s in 58-byte frames.
        let cap = link.cap_pps(58.0).unwrap();
        assert!((cap - 50e6 / 8.0 / 58.0).abs() < 1e-6, "{cap}");
        let unknown = Link::new("test0", LinkPolicy::default());
        assert_eq!(unknown.cap_pps(58.0), None);
    }
}
