//! The scan loop: sends probes from a [`ProbePlan`] at the controlled rate,
//! retries what goes unanswered, turns replies into port states, and closes
//! half-open connections. One thread does it all: the ring buffer is read
//! through shared memory, so only sending costs system calls. The rate
//! belongs here too: each scan's own [`pacer`], under the [`Budget`] that
//! the daemon's scans share.

mod pacer;
pub mod progress;
pub mod rate;
pub mod tuning;
mod window;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use scanner_common::{
    Addr, ProbeKey, ReplyEvent, ReplyKind,
    cookie::{echo_data, echo_id_seq, ident_of, payload_secret, probe_hash, seq_of, tag_of},
    frame::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    maps::Settings,
    reply,
};

pub use self::pacer::Budget;
use self::{
    pacer::{MAX_TURN, Pacer},
    progress::Progress,
    rate::{RateController, RttEstimator},
    tuning::Tuning,
    window::{Fate, Slot, Window},
};
use crate::scan::{
    capture::hub::Replies,
    probes::{
        Probe, ProbePlan, Protocol,
        packets::{self, SynTemplate},
    },
    results::{PortState, Reason, ResultSet, classify},
    transmit::{BATCH, Packet, TransmitError, TxPool},
    transmit::{Link, Running},
};

/// Probes awaiting an answer at once, unless `min_parallelism` asks for more.
pub const DEFAULT_WINDOW: usize = 1 << 19;
/// How often the adaptive rate is reconsidered.
const RATE_PERIOD: Duration = Duration::from_millis(100);
/// The scan loop naps at least long enough for this many probes' tokens
/// (at most [`MAX_NAP`]): turns of a few hundred probes keep the bursts
/// that reach the link and the target's queues short at any rate.
const PROBES_PER_NAP: f64 = 512.0;
/// The longest of those naps: the pacer's bucket holds 4 ms, so a turn a
/// millisecond late loses no tokens, and replies wait at most this long to
/// be read (nothing to the retry timeouts, 100 ms at least).
const MAX_NAP: Duration = Duration::from_millis(1);
/// An Ethernet header, which the link's counters count with each probe.
const ETHERNET_HEADER: usize = 14;
/// A probe frame's size before any was sent: an IPv4 SYN with its MSS.
const DEFAULT_FRAME_BYTES: f64 = 58.0;
/// What a reply frame is reckoned to weigh on the link (a SYN-ACK with
/// options or an ICMP error is about this; the estimate only keeps the
/// agent's own replies from counting as other traffic).
const REPLY_FRAME_V4: u64 = 64;
const REPLY_FRAME_V6: u64 = 84;
/// Hosts beyond this many are not tracked (host_timeout, up/down report).
const MAX_TRACKED_HOSTS: u64 = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Transmit(#[from] TransmitError),
    #[error("reading replies failed: {0}")]
    Receive(std::io::Error),
    #[error("no IPv{0} source address on the scan interface for an IPv{0} target")]
    NoSource(u8),
    #[error(
        "the scan ran past its deadline (not counting time yielded to other traffic) and was cancelled"
    )]
    TimedOut,
    #[error("the scan was cancelled: its target is no longer configured")]
    Cancelled,
}

/// What the scan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Host discovery: any answer means the host is up.
    Discovery,
    /// Port states by nmap's rules.
    Ports,
}

/// Our addresses, per family.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sources {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Sources {
    fn for_target(&self, target: IpAddr) -> Result<IpAddr, EngineError> {
        match target {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4).ok_or(EngineError::NoSource(4)),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6).ok_or(EngineError::NoSource(6)),
        }
    }
}

/// The scan's identity towards the XDP program.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub key: ProbeKey,
    pub slot: u32,
    pub settings: Settings,
    pub sources: Sources,
}

#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// Packets sent, retries included.
    pub sent: u64,
    pub retries: u64,
    /// The sending phase: from the first probe to the last new one (the
    /// retries of silent probes trickle out after it, a timeout apart,
    /// and say nothing of the rate the link carried).
    pub send_time: Duration,
    /// Packets sent in the sending phase, retries included.
    pub sent_in_phase: u64,
    pub hosts_timed_out: u64,
    /// Probes given up before `max_retries` because no answer of the scan
    /// needed that many attempts (see `Tuning::fixed_retries`).
    pub capped: u64,
    /// The rate the controller ended at.
    pub final_rate: f64,
    /// Rate periods (100 ms) a fixed rate was held below the asked one
    /// because the path carried less.
    pub held_periods: u64,
    /// Time the scan ran at its floor rate because other traffic filled
    /// the link (not counted against host_timeout or the deadline).
    pub yielded: Duration,
    pub window_bytes: usize,
}

impl EngineStats {
    /// Packets per second in the sending phase.
    pub fn achieved_rate(&self) -> f64 {
        self.sent_in_phase as f64 / self.send_time.as_secs_f64().max(1e-9)
    }
}

/// Per-host bookkeeping for `host_timeout` and discovery, one word a host.
struct Hosts {
    /// 0: not probed yet; `ANSWERED`; `TIMED_OUT`; else first probe time + 1 (ms).
    state: Vec<u32>,
}

const ANSWERED: u32 = u32::MAX;
const TIMED_OUT: u32 = u32::MAX - 1;

pub struct Engine<'a> {
    plan: &'a ProbePlan,
    phase: Phase,
    tuning: &'a Tuning,
    id: Identity,
    window: Window,
    rtt: RttEstimator,
    rate: RateController,
    pacer: Pacer,
    hosts: Hosts,
    start: Instant,
    /// Retransmissions due, sent before new probes.
    due: Vec<u64>,
    /// Probes on the bench (see [`Fate::Benched`]) now: they are found in
    /// the window, so nothing grows with the scan.
    benched: usize,
    /// The most attempts any answered probe had had (0: no answer yet).
    most_tries_answered: u8,
    rsts: Vec<Packet>,
    stats: EngineStats,
    /// Until when (ms since the start) answers to given-up probes may
    /// still come: see [`Engine::end`].
    listen_until_ms: u32,
    /// SYN templates for IPv4 and IPv6, where we have a source.
    syn: (Option<SynTemplate>, Option<SynTemplate>),
    results: &'a mut ResultSet,
    deadline: Option<Instant>,
    cancel: Option<Cancel>,
    budget: Option<Budget>,
    /// The link's share and its other traffic (and this scan's place on it).
    link: Option<(Arc<Link>, Running)>,
    /// Frame bytes sent (probes and RSTs), and how many of them the link
    /// was told of.
    frame_bytes: u64,
    reported_bytes: u64,
    /// Reply bytes reckoned since the link was last told.
    reply_bytes: u64,
    progress: Option<Arc<Progress>>,
}

/// Set from another thread to stop a scan at once (a reload that removes its
/// target): the engine sends nothing more once it has seen it.
pub type Cancel = std::sync::Arc<std::sync::atomic::AtomicBool>;

impl<'a> Engine<'a> {
    pub fn new(
        plan: &'a ProbePlan,
        phase: Phase,
        tuning: &'a Tuning,
        id: Identity,
        results: &'a mut ResultSet,
    ) -> Self {
        let hosts = plan.targets().len();
        let capacity = tuning
            .min_parallelism
            .max(DEFAULT_WINDOW.min(plan.len() as usize));
        let rate = RateController::new(tuning, hosts);
        // Hosts are tracked (for discovery, host_timeout and the up/down
        // report) unless there are too many to keep a word for each.
        let tracked = if hosts <= MAX_TRACKED_HOSTS {
            vec![0; hosts as usize]
        } else {
            Vec::new()
        };
        let window = Window::new(capacity);
        let stats = EngineStats {
            window_bytes: window.memory() + tracked.len() * 4,
            ..EngineStats::default()
        };
        Self {
            plan,
            phase,
            tuning,
            id,
            window,
            rtt: RttEstimator::new(tuning),
            pacer: Pacer::new(rate.rate()),
            rate,
            hosts: Hosts { state: tracked },
            start: Instant::now(),
            due: Vec::new(),
            benched: 0,
            most_tries_answered: 0,
            rsts: Vec::new(),
            stats,
            listen_until_ms: 0,
            syn: (
                id.sources.v4.map(|a| SynTemplate::new(a.into())),
                id.sources.v6.map(|a| SynTemplate::new(a.into())),
            ),
            results,
            deadline: None,
            cancel: None,
            budget: None,
            link: None,
            frame_bytes: 0,
            reported_bytes: 0,
            reply_bytes: 0,
            progress: None,
        }
    }

    /// Reports the scan's counters to `progress` as it goes (for a display).
    pub fn with_progress(mut self, progress: Option<Arc<Progress>>) -> Self {
        self.progress = progress;
        self
    }

    /// Keeps the scan within the link's share, yielding to other traffic
    /// (see [`Link`]).
    pub fn with_link(mut self, link: Option<Arc<Link>>) -> Self {
        self.link = link.map(|l| {
            let running = l.running();
            (l, running)
        });
        self
    }

    /// Draws every packet from `budget` too, so scans sharing it together
    /// never exceed its rate.
    pub fn with_budget(mut self, budget: Option<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// Cancels the scan (with [`EngineError::TimedOut`]) if it is still
    /// running at `deadline`.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Stops the scan (with [`EngineError::Cancelled`]) once `cancel` is set.
    pub fn with_cancel(mut self, cancel: Option<Cancel>) -> Self {
        self.cancel = cancel;
        self
    }

    fn ms(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.start)
            .as_millis()
            .min(u128::from(TIMED_OUT - 2)) as u32
    }

    /// Whether host `h` answered anything (discovery's verdict).
    pub fn host_answered(&self, h: u64) -> bool {
        self.hosts.state.get(h as usize) == Some(&ANSWERED)
    }

    /// Runs the scan to the end and returns its statistics.
    pub fn run(
        &mut self,
        stream: &mut impl Replies,
        tx: &mut TxPool,
    ) -> Result<EngineStats, EngineError> {
        self.start = Instant::now();
        let first = self.within_link(self.rate.rate(), Duration::ZERO);
        self.pacer.set_rate(first);
        let mut period = Period::new(self.start, tx.blocked(), 0);
        let mut last_send = self.start;
        let mut sent_every_probe = false;
        let mut replies = Vec::new();
        if let Some(p) = &self.progress {
            p.begin(self.phase, self.plan.len());
        }
        loop {
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d + self.stats.yielded) {
                return Err(EngineError::TimedOut);
            }
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(std::sync::atomic::Ordering::Acquire))
            {
                return Err(EngineError::Cancelled);
            }
            self.expire(now);
            self.window.advance();

            let wanted = (self.due.len()
                + usize::from(self.window.head < self.plan.len() && self.window.has_room())
                    * MAX_TURN)
                .min(MAX_TURN);
            let mut allowed = self.pacer.take(now, wanted);
            if let Some(budget) = &self.budget {
                let granted = budget.take(now, allowed);
                self.pacer.refund(allowed - granted);
                allowed = granted;
            }
            period.limited |= wanted > 0 && allowed < wanted;
            let n = self.send_turn(tx, allowed, now)?;
            if n < allowed {
                // The window or the plan ran out first: the rest of the
                // tokens are not lost.
                self.pacer.refund(allowed - n);
                if let Some(budget) = &self.budget {
                    budget.refund(allowed - n);
                }
            }
            if n > 0 {
                if let Some((link, _)) = &self.link {
                    link.sent(n as u64, self.frame_bytes - self.reported_bytes);
                    self.reported_bytes = self.frame_bytes;
                }
                self.stats.sent += n as u64;
                last_send = Instant::now();
                if !sent_every_probe {
                    self.stats.send_time = last_send - self.start;
                    self.stats.sent_in_phase = self.stats.sent;
                }
            }
            sent_every_probe |= self.window.head >= self.plan.len();
            if let Some(p) = &self.progress {
                let open = self.results.count(PortState::Open);
                p.update(self.window.head, self.stats.sent, self.stats.retries, open);
            }
            if now - period.start >= RATE_PERIOD {
                period = self.close_period(&period, now, tx.blocked());
            }

            let finished =
                self.window.head >= self.plan.len() && self.window.settled() && self.due.is_empty();
            if finished && now >= self.end(last_send) {
                break;
            }
            // Nap, then read what arrived meanwhile: waking for every reply
            // (a poll on the ring) would cost a system call, a timer and a
            // thread switch per turn, on cores the target's kernel and the
            // senders need.
            let timeout = self.next_wake(now, finished, last_send);
            if !timeout.is_zero() {
                let nap = Duration::from_secs_f64(PROBES_PER_NAP / self.pacer.rate()).min(MAX_NAP);
                std::thread::sleep(timeout.max(nap));
            }
            stream
                .poll(Duration::ZERO, |ev| replies.push(ev))
                .map_err(EngineError::Receive)?;
            let now = Instant::now();
            for ev in replies.drain(..) {
                self.on_reply(&ev, now);
            }
            // Told once a turn, not per reply: the link's counters are shared.
            if let Some((link, _)) = &self.link
                && self.reply_bytes > 0
            {
                link.received(std::mem::take(&mut self.reply_bytes));
            }
            if !self.rsts.is_empty() {
                tx.submit(std::mem::take(&mut self.rsts))?;
            }
        }
        self.stats.final_rate = self.rate.rate();
        self.stats.held_periods = self.rate.held_periods();
        Ok(self.stats.clone())
    }

    /// Ends a rate period at `now` (with `blocked` the senders' wait so
    /// far): the controller's new rate, within the link's share, goes to
    /// the pacer. Returns the next period.
    fn close_period(&mut self, period: &Period, now: Instant, blocked: Duration) -> Period {
        let elapsed = now - period.start;
        // The senders held the loop up for a fifth of the period: the
        // path, not the pacer, set the pace.
        let carried = (blocked - period.blocked > elapsed / 5)
            .then(|| (self.stats.sent - period.sent) as f64 / elapsed.as_secs_f64());
        let rate = self.rate.end_period(period.limited, carried);
        let rate = self.within_link(rate, elapsed);
        self.pacer.set_rate(rate);
        Period::new(now, blocked, self.stats.sent)
    }

    /// `rate` within the link's share, or the floor rate while the link's
    /// other traffic asks scans to yield (`elapsed` of yielding counted).
    fn within_link(&mut self, rate: f64, elapsed: Duration) -> f64 {
        let Some((link, _)) = &self.link else {
            return rate;
        };
        let frame = if self.stats.sent > 0 {
            self.frame_bytes as f64 / self.stats.sent as f64
        } else {
            DEFAULT_FRAME_BYTES
        };
        let mut rate = link.cap_pps(frame).map_or(rate, |cap| rate.min(cap));
        if link.yielding() {
            rate = rate.min(self.rate.floor());
            self.stats.yielded += elapsed;
        }
        rate
    }

    /// Sends up to `allowed` packets, a batch at a time; returns how many
    /// went (fewer when the window or the plan runs out).
    fn send_turn(
        &mut self,
        tx: &mut TxPool,
        allowed: usize,
        now: Instant,
    ) -> Result<usize, EngineError> {
        let mut sent = 0;
        let mut now = now;
        while sent < allowed {
            let mut batch = tx.buffer();
            batch.resize((allowed - sent).min(BATCH), Packet::default());
            let n = self.fill(&mut batch, now)?;
            batch.truncate(n);
            tx.submit(batch)?;
            if n == 0 {
                break;
            }
            sent += n;
            // A full queue may have held the batch: the next probes' send
            // times are their own.
            now = Instant::now();
        }
        Ok(sent)
    }

    /// When the scan ends once every probe is answered or given up: when
    /// the retry timeout each given-up probe's last attempt went out with
    /// has passed (answers in that time still count), so a LAN scan ends
    /// about `min_rtt_timeout` after its last attempt instead of a fixed
    /// second later, and one with nothing given up ends at once; `--wait`
    /// after the last probe caps it.
    fn end(&self, last_send: Instant) -> Instant {
        let own = self.start + Duration::from_millis(u64::from(self.listen_until_ms));
        self.tuning.wait.map_or(own, |w| own.min(last_send + w))
    }

    /// The current retry timeout in ms.
    fn timeout_ms(&self) -> u32 {
        self.rtt.timeout().as_millis().min(u128::from(u32::MAX)) as u32
    }

    /// How long the loop may sleep waiting for replies.
    fn next_wake(&self, now: Instant, finished: bool, last_send: Instant) -> Duration {
        let mut wake = Duration::from_millis(50);
        if finished {
            wake = wake.min(self.end(last_send).saturating_duration_since(now));
        } else if !self.due.is_empty()
            || (self.window.head < self.plan.len() && self.window.has_room())
        {
            wake = wake.min(self.pacer.next_in());
            if let Some(budget) = &self.budget {
                wake = wake.min(budget.next_in());
            }
        }
        if let Some(deadline) = self.window.next_deadline(self.timeout_ms()) {
            let at = self.start + Duration::from_millis(u64::from(deadline));
            wake = wake.min(at.saturating_duration_since(now));
        }
        wake
    }

    /// Attempts a probe may have for now: all `max_retries` + 1 with
    /// `fixed_retries`; else, as nmap, one more than the most any answer
    /// needed, at least 2.
    fn allowed_tries(&self) -> u8 {
        let all = self.tuning.max_retries.saturating_add(1);
        if self.tuning.fixed_retries {
            return all;
        }
        self.most_tries_answered.saturating_add(1).max(2).min(all)
    }

    /// Moves overdue probes to the retry list or the bench, or decides them
    /// silent; settles benched probes the window needs room from, and all
    /// of them once nothing could raise the allowed attempts any more.
    fn expire(&mut self, now: Instant) {
        let (now_ms, timeout_ms) = (self.ms(now), self.timeout_ms());
        let allowed = self.allowed_tries();
        while let Some((i, slot)) = self.window.next_overdue(now_ms, timeout_ms) {
            if slot.tries > self.tuning.max_retries {
                self.settle_silent(i, slot);
            } else if slot.tries >= allowed {
                self.window.decide(i, Fate::Benched);
                self.benched += 1;
            } else {
                self.due.push(i);
            }
        }
        while !self.window.has_room()
            && let Some((i, slot)) = self.window.benched_base()
        {
            self.settle_silent(i, slot);
            self.benched -= 1;
            self.stats.capped += 1;
            self.window.advance();
        }
        let all_sent = self.window.head >= self.plan.len() || !self.window.has_room();
        if self.benched > 0 && all_sent && self.due.is_empty() && self.window.nothing_in_flight() {
            for (i, slot) in self.window.benched() {
                self.settle_silent(i, slot);
                self.stats.capped += 1;
            }
            self.benched = 0;
        }
    }

    /// An answer came after `tries` attempts: benched probes go back to
    /// the retry list when that allows them more.
    fn answered_after(&mut self, tries: u8) {
        if tries <= self.most_tries_answered {
            return;
        }
        let before = self.allowed_tries();
        self.most_tries_answered = tries;
        if self.benched == 0 || self.allowed_tries() == before {
            return;
        }
        for (i, _) in self.window.benched() {
            self.window.decide(i, Fate::Pending);
            self.due.push(i);
        }
        self.benched = 0;
    }

    fn settle_silent(&mut self, i: u64, slot: Slot) {
        self.window.decide(i, Fate::Silent);
        let heard_until = slot.sent_ms.saturating_add(u32::from(slot.patience_ms));
        self.listen_until_ms = self.listen_until_ms.max(heard_until);
        if self.phase == Phase::Ports {
            let probe = self.plan.get(i);
            let state = silence_of(probe.protocol);
            self.results.record_first(
                probe.addr,
                probe.protocol,
                probe.port,
                state,
                Reason::NoResponse,
                None,
            );
        }
    }

    /// Fills `batch` with retries first, then new probes; returns how many.
    fn fill(&mut self, batch: &mut [Packet], now: Instant) -> Result<usize, EngineError> {
        let now_ms = self.ms(now);
        let patience = self.timeout_ms().min(u32::from(u16::MAX)) as u16;
        let mut n = 0;
        while n < batch.len() {
            if let Some(i) = self.due.pop() {
                self.window.resend(i, now_ms, patience);
                self.stats.retries += 1;
                self.write_probe(&mut batch[n], self.plan.get(i))?;
                self.frame_bytes += (batch[n].len + ETHERNET_HEADER) as u64;
                n += 1;
                continue;
            }
            if self.window.head >= self.plan.len() || !self.window.has_room() {
                break;
            }
            let (probe, host) = self.plan.get_with_host(self.window.head);
            let i = self.window.push(now_ms, patience);
            // Time yielded to other traffic does not count against host_timeout.
            let active_ms = now_ms.saturating_sub(self.stats.yielded.as_millis() as u32);
            if !self.host_may_be_probed(host, active_ms) {
                // Its host timed out: decided, but nothing to report.
                self.window.decide(i, Fate::Silent);
                continue;
            }
            self.write_probe(&mut batch[n], probe)?;
            self.frame_bytes += (batch[n].len + ETHERNET_HEADER) as u64;
            n += 1;
        }
        Ok(n)
    }

    /// Applies `host_timeout`: a host silent that long after its first
    /// probe gets no more.
    fn host_may_be_probed(&mut self, host: u64, now_ms: u32) -> bool {
        let Some(state) = self.hosts.state.get_mut(host as usize) else {
            return true;
        };
        match *state {
            ANSWERED => true,
            TIMED_OUT => false,
            0 => {
                *state = now_ms + 1;
                true
            }
            first => match self.tuning.host_timeout {
                Some(limit)
                    if self.phase == Phase::Ports
                        && u64::from(now_ms + 1 - first) > limit.as_millis() as u64 =>
                {
                    *state = TIMED_OUT;
                    self.stats.hosts_timed_out += 1;
                    false
                }
                _ => true,
            },
        }
    }

    fn write_probe(&self, out: &mut Packet, probe: Probe) -> Result<(), EngineError> {
        let Identity {
            key,
            slot,
            settings,
            sources,
        } = self.id;
        let src = sources.for_target(probe.addr)?;
        let (remote, local) = (Addr::from(probe.addr), Addr::from(src));
        let addrs = (src, probe.addr);
        out.dest = probe.addr;
        // Everything a reply is checked against derives from the probe's
        // hash and tag, so the XDP program recomputes it with no state.
        let (protocol, port) = match probe.protocol {
            Protocol::Tcp => (IPPROTO_TCP, probe.port),
            Protocol::Udp => (IPPROTO_UDP, probe.port),
            Protocol::Icmp if probe.addr.is_ipv4() => (IPPROTO_ICMP, 0),
            Protocol::Icmp => (IPPROTO_ICMPV6, 0),
        };
        let h = probe_hash(&key, &remote, &local, port, protocol);
        let tag = tag_of(&key, h);
        let ident = ident_of(remote.family, tag);
        let ports = (reply::local_port(&settings, slot, h), port);
        out.len = match probe.protocol {
            Protocol::Tcp => {
                let template = if probe.addr.is_ipv4() {
                    &self.syn.0
                } else {
                    &self.syn.1
                };
                match template {
                    Some(t) => t.write(&mut out.bytes, probe.addr, ports, seq_of(h), ident),
                    None => packets::syn(&mut out.bytes, addrs, ports, seq_of(h), ident),
                }
            }
            Protocol::Udp => {
                let secret = payload_secret(h, tag);
                packets::udp(&mut out.bytes, addrs, ports, ident, secret)
            }
            Protocol::Icmp => {
                let id_seq = echo_id_seq(h, slot);
                packets::echo(&mut out.bytes, addrs, id_seq, echo_data(tag), ident)
            }
        };
        Ok(())
    }

    fn on_reply(&mut self, ev: &ReplyEvent, now: Instant) {
        if u32::from(ev.slot) != self.id.slot {
            return;
        }
        let Some(kind) = ev.kind() else { return };
        self.reply_bytes += if ev.remote_addr().to_ip().is_ipv4() {
            REPLY_FRAME_V4
        } else {
            REPLY_FRAME_V6
        };
        if kind == ReplyKind::SynAck {
            self.queue_rst(ev);
        }
        let protocol = match ev.protocol {
            IPPROTO_TCP => Protocol::Tcp,
            IPPROTO_UDP => Protocol::Udp,
            _ => Protocol::Icmp,
        };
        let port = if protocol == Protocol::Icmp {
            0
        } else {
            ev.remote_port
        };
        let probe = Probe {
            addr: ev.remote_addr().to_ip(),
            protocol,
            port,
        };
        let Some(i) = self.plan.index_of(&probe) else {
            return;
        };
        let verdict = match self.phase {
            Phase::Ports => classify(ev, protocol),
            // Any direct answer proves the host is up; an ICMP error may come from a router.
            Phase::Discovery => {
                (kind != ReplyKind::Unreachable).then_some((PortState::Open, Reason::SynAck))
            }
        };
        let Some((state, reason)) = verdict else {
            return;
        };
        if let Some(host) = self.plan.targets().index_of(probe.addr)
            && let Some(h) = self.hosts.state.get_mut(host as usize)
        {
            *h = ANSWERED;
        }
        let now_ms = self.ms(now);
        let base = self.window.base;
        match self.window.get(i) {
            Some(slot) if matches!(slot.fate, Fate::Pending | Fate::Benched) => {
                let was_benched = slot.fate == Fate::Benched;
                slot.fate = Fate::Answered;
                let (tries, sent_ms) = (slot.tries, slot.sent_ms);
                self.benched -= usize::from(was_benched);
                self.answered_after(tries);
                // Karn: only answers to a single attempt time the round trip.
                if tries == 1 {
                    self.rtt.sample(Duration::from_millis(u64::from(
                        now_ms.saturating_sub(sent_ms),
                    )));
                }
                self.rate.answered(tries > 1);
                if self.phase == Phase::Ports {
                    self.results.record_first(
                        probe.addr,
                        protocol,
                        port,
                        state,
                        reason,
                        Some(ev.ttl),
                    );
                }
            }
            Some(_) => {} // a duplicate answer
            None if i < base && self.phase == Phase::Ports => {
                // A late answer after the retries ran out: it still counts.
                self.results.record_after_silence(
                    probe.addr,
                    protocol,
                    port,
                    silence_of(protocol),
                    (state, reason, Some(ev.ttl)),
                );
            }
            None => {}
        }
    }

    fn queue_rst(&mut self, ev: &ReplyEvent) {
        let (remote, local) = (ev.remote_addr(), ev.local_addr());
        let h = probe_hash(&self.id.key, &remote, &local, ev.remote_port, IPPROTO_TCP);
        let mut pkt = Packet {
            dest: remote.to_ip(),
            ..Packet::default()
        };
        let ports = (ev.local_port, ev.remote_port);
        pkt.len = packets::rst(
            &mut pkt.bytes,
            (local.to_ip(), remote.to_ip()),
            ports,
            seq_of(h).wrapping_add(1),
        );
        self.frame_bytes += (pkt.len + ETHERNET_HEADER) as u64;
        self.rsts.push(pkt);
    }
}

/// One period of the rate controller: when it began, whether the pacer
/// held the sender back, and the senders' wait and packets sent at its
/// start.
struct Period {
    start: Instant,
    limited: bool,
    blocked: Duration,
    sent: u64,
}

impl Period {
    fn new(start: Instant, blocked: Duration, sent: u64) -> Self {
        Self {
            start,
            limited: false,
            blocked,
            sent,
        }
    }
}

/// The state of a port whose probes all went unanswered.
fn silence_of(protocol: Protocol) -> PortState {
    match protocol {
        Protocol::Udp => PortState::OpenFiltered,
        Protocol::Tcp | Protocol::Icmp => PortState::Filtered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{
        probes::Shard,
        targets::{PortList, TargetSet},
    };

    fn window_bytes(targets: &str, ports: &str) -> usize {
        let plan = ProbePlan::ports(
            TargetSet::parse(&[targets]).unwrap(),
            &PortList::parse(ports).unwrap(),
            &[Protocol::Tcp],
            [1, 2],
            Shard::WHOLE,
        );
        let id = Identity {
            key: [0, 0],
            slot: 0,
            settings: Settings::default(),
            sources: Sources::default(),
        };
        let mut results = ResultSet::new(&[PortState::Open]);
        let tuning = Tuning::default();
        Engine::new(&plan, Phase::Ports, &tuning, id, &mut results)
            .stats
            .window_bytes
    }

    #[test]
    fn memory_is_fixed_whatever_the_scan_size() {
        // A /16 x 65535 ports: 4.3 billion probes in 12 MiB of window plus
        // one word per host.
        let window = DEFAULT_WINDOW * 24;
        assert_eq!(window, 12 << 20);
        assert_eq!(window_bytes("198.18.0.0/16", "1-65535"), window + 65536 * 4);
        assert_eq!(
            window_bytes("198.18.0.0/15", "1-65535"),
            window + 2 * 65536 * 4
        );
        // Small scans take only what they need.
        assert_eq!(window_bytes("198.18.0.1", "1-1000"), 1000 * 24 + 4);
    }
}
