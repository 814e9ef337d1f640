//! The scan path, in data-flow order: [`targets`] (what to scan) ->
//! [`probes`] (order and wire format) -> [`transmit`] (raw sockets) ->
//! [`capture`] (the XDP program and its ring buffer) -> [`results`] (port
//! states, output), driven by [`engine`] (retries, timeouts, rate and its
//! budget); [`route`] picks the interface and sources, [`privileges`]
//! checks the capabilities first. [`run`] is one scan from start to end,
//! for the CLI and the daemon alike: validate, route, attach, discover
//! hosts, scan ports, report.

pub mod targets;
pub mod probes;
pub mod transmit;
pub mod capture;
pub mod results;
pub mod services;
pub mod exclude_file;
pub mod xml;
pub mod engine;
pub mod route;
pub mod privileges;

use std::{collections::BTreeMap, hash::Hasher as _, net::IpAddr, sync::Arc, time::Instant};

use scanner_common::maps::protocols;
use siphasher::sip::SipHasher13;

use self::{
    capture::{
        AttachMode, Capture, CaptureError, ModeSetting, XdpCounters,
        hub::{Hub, HubError, Replies},
    },
    engine::{
        Budget, Cancel, Engine, EngineError, EngineStats, Identity, Phase, progress::Progress,
        tuning::Tuning,
    },
    privileges::MissingCapability,
    probes::{ProbePlan, Protocol, Shard},
    results::{PortState, ResultSet},
    route::{Route, RouteError},
    targets::{PortList, TargetError, TargetSet, TargetSpec},
    transmit::{Link, LinkPolicy, LinkWatch, TransmitError, TransmitReport, TxPool},
};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Privilege(#[from] MissingCapability),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Transmit(#[from] TransmitError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ScanError {
    /// Errors the caller can fix (input, privileges, interface), as opposed
    /// to failures during the scan.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Target(_)
                | Self::Privilege(_)
                | Self::Route(_)
                | Self::Engine(EngineError::NoSource(_))
                | Self::Capture(
                    CaptureError::NoInterface(_)
                        | CaptureError::AlreadyAttached(_)
                        | CaptureError::CannotAttach { .. }
                )
        )
    }
}

#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub targets: TargetSpec,
    pub ports: PortList,
    pub protocols: Vec<Protocol>,
    pub tuning: Tuning,
    pub interface: Option<String>,
    pub host_discovery: bool,
    pub shard: Shard,
    /// Seed of the probe order; shards of one scan must share it.
    pub seed: Option<u64>,
    /// States kept and reported (the others are only counted).
    pub states: Vec<PortState>,
    /// Cancel the scan if it is still running then (the daemon's `timeout`).
    pub deadline: Option<Instant>,
    /// Stop the scan as soon as this is set (the daemon's reload).
    pub cancel: Option<Cancel>,
    /// A rate ceiling shared with other scans (the daemon's agent-wide budget).
    pub budget: Option<Budget>,
    /// How much of the link the scan may take, and when it gives way.
    pub link: LinkPolicy,
    /// The XDP attach modes to try (for a scan that attaches its own).
    pub xdp_mode: ModeSetting,
}

/// Hosts up and down per target, as the targets were named.
pub type HostReport = BTreeMap<String, (u64, u64)>;

pub struct ScanReport {
    pub results: ResultSet,
    pub hosts: HostReport,
    /// The addresses found up (that answered anything, or discovery).
    pub answered: Vec<IpAddr>,
    pub interface: String,
    pub mode: AttachMode,
    pub discovery: Option<EngineStats>,
    pub ports: EngineStats,
    pub xdp: XdpCounters,
    /// The send path and what went through it.
    pub transmit: TransmitReport,
    /// From the call to the first probe: targets, route, attachment, the
    /// send path and its next hops.
    pub startup: std::time::Duration,
    pub total_time: std::time::Duration,
}

/// The probe order's seed: random, unless the scan is sharded, where every
/// agent must derive the same order from the same command line.
fn order_seed(opts: &ScanOptions) -> [u64; 2] {
    if let Some(seed) = opts.seed {
        return [seed, !seed];
    }
    if opts.shard == Shard::WHOLE {
        return probes::new_key();
    }
    let mut h = SipHasher13::new();
    for t in &opts.targets.include {
        h.write(t.as_bytes());
        h.write_u8(0);
    }
    for p in opts.ports.as_slice() {
        h.write_u16(*p);
    }
    let s = h.finish();
    [s, s.rotate_left(32)]
}

/// The probe order's seed of one scheduled task when a fleet shares the
/// work (`scanning.shard`): from what defines the task (its target, its
/// ports and its protocol) and nothing else, so agents whose configs differ
/// elsewhere (credentials, rates, other targets) still agree on it.
pub fn task_seed(target: &str, ports: &PortList, protocol: Protocol) -> u64 {
    let mut h = SipHasher13::new();
    h.write(target.as_bytes());
    h.write_u8(0);
    for p in ports.as_slice() {
        h.write_u16(*p);
    }
    h.write(protocol.to_string().as_bytes());
    h.finish()
}

/// Where a scan gets its replies.
#[derive(Clone, Copy)]
pub enum Attachment<'a> {
    /// Its own attachment of the XDP program, to the interface that reaches
    /// the targets, read on the scan's own thread (no hand-over) and
    /// detached at the end: the CLI.
    Own,
    /// A program attached already and shared through `hub` with the other
    /// scans in flight on it, towards `route`: the daemon.
    Shared { hub: &'a Hub, route: &'a Route },
}

/// Runs one scan from start to end: the targets checked and resolved,
/// then host discovery (if asked for) and the port scan, with replies
/// from `attachment`.
pub fn run(opts: &ScanOptions, attachment: Attachment<'_>) -> Result<ScanReport, ScanError> {
    run_reporting(opts, attachment, None)
}

/// [`run`], with the engine's counters kept in `progress` as it goes (the
/// CLI's progress line reads them from another thread).
pub fn run_reporting(
    opts: &ScanOptions,
    attachment: Attachment<'_>,
    progress: Option<Arc<Progress>>,
) -> Result<ScanReport, ScanError> {
    let started = Instant::now();
    let targets = TargetSet::build(&opts.targets)?;
    match attachment {
        Attachment::Own => {
            privileges::check_scan()?;
            let route = route::lookup(targets.range_starts(), opts.interface.as_deref())?;
            tracing::info!(interface = %route.interface, sources = ?route.sources, "route chosen");
            let (mut capture, mut stream) =
                Capture::attach(&route.interface, route::probe_ports()?, opts.xdp_mode)?;
            let key = probes::new_key();
            const SLOT: u32 = 0;
            capture.activate(SLOT, key, slot_protocols(opts))?;
            let id = Identity {
                key,
                slot: SLOT,
                settings: capture.settings(),
                sources: route.sources(),
            };
            let watch = LinkWatch::start(Link::new(&route.interface, opts.link))
                .map_err(TransmitError::Thread)?;
            let at = (started, capture.mode());
            let mut report = execute(
                &mut stream,
                (id, watch.link()),
                &route,
                &targets,
                opts,
                at,
                progress,
            )?;
            report.xdp = capture.counters()?;
            Ok(report)
        }
        Attachment::Shared { hub, route } => {
            let key = probes::new_key();
            let mut lease = hub.lease(key, slot_protocols(opts))?;
            let id = Identity {
                key,
                slot: lease.slot(),
                settings: hub.settings(),
                sources: route.sources(),
            };
            // Every scan of the daemon carries the configuration's policy.
            hub.link().set_policy(opts.link);
            let at = (started, hub.mode());
            let mut report = execute(
                &mut lease,
                (id, hub.link()),
                route,
                &targets,
                opts,
                at,
                progress,
            )?;
            drop(lease);
            report.xdp = hub.counters()?;
            Ok(report)
        }
    }
}

/// The protocols a scan sends probes of, as the XDP program's slot records
/// them: the port scan's, and ICMP echo and TCP for host discovery. The XDP
/// program takes no reply of any other protocol for the scan's slot.
pub fn slot_protocols(opts: &ScanOptions) -> u64 {
    let mut bits = if opts.host_discovery {
        protocols::ICMP | protocols::TCP
    } else {
        0
    };
    for p in &opts.protocols {
        bits |= match p {
            Protocol::Tcp => protocols::TCP,
            Protocol::Udp => protocols::UDP,
            Protocol::Icmp => protocols::ICMP,
        };
    }
    bits
}

/// Sending threads per scan: one per core (most of a probe's cost is in the
/// kernel), at most 4.
fn tx_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Target addresses whose next hop is resolved before the first probe.
const FIRST_RESOLVED: u64 = 64;

/// Discovery (if asked for), then the port scan, with replies from
/// `replies`, as `id` on `link`; `(started, mode)`: when the scan was asked
/// for, and how the program is attached.
fn execute(
    replies: &mut impl Replies,
    (id, link): (Identity, &Arc<Link>),
    route: &Route,
    targets: &TargetSet,
    opts: &ScanOptions,
    (started, mode): (Instant, AttachMode),
    progress: Option<Arc<Progress>>,
) -> Result<ScanReport, ScanError> {
    let wanted = targets.clone();
    let tx_targets = transmit::Targets {
        range_starts: targets.range_starts(),
        first: (0..targets.len().min(FIRST_RESOLVED))
            .filter_map(|i| targets.get(i))
            .collect(),
        wanted: Box::new(move |a| wanted.contains(a)),
    };
    let mut sender = TxPool::start(&route.interface, tx_workers(), tx_targets)?;
    let startup = started.elapsed();
    tracing::debug!(
        seconds = startup.as_secs_f64(),
        "start-up done: first probe next"
    );
    let seed = order_seed(opts);
    let mut hosts = HostReport::new();
    let mut answered = Vec::new();
    let (up, discovery) = if opts.host_discovery {
        let (up, stats) = discover(
            targets,
            opts,
            (id, link),
            seed,
            replies,
            &mut sender,
            &progress,
        )?;
        (up, Some(stats))
    } else {
        (Some(targets.clone()), None)
    };
    let mut results = ResultSet::new(&opts.states);
    let ports = match &up {
        Some(up) => {
            let plan = ProbePlan::ports(up.clone(), &opts.ports, &opts.protocols, seed, opts.shard);
            let mut engine = Engine::new(&plan, Phase::Ports, &opts.tuning, id, &mut results)
                .with_deadline(opts.deadline)
                .with_cancel(opts.cancel.clone())
                .with_budget(opts.budget.clone())
                .with_link(Some(Arc::clone(link)))
                .with_progress(progress);
            let stats = engine.run(replies, &mut sender)?;
            tracing::debug!(window_bytes = stats.window_bytes, "port scan done");
            answered = count_hosts(targets, &mut hosts, |a| {
                // Without discovery, a host is up if it answered anything.
                opts.host_discovery && up.contains(a)
                    || plan
                        .targets()
                        .index_of(a)
                        .is_some_and(|h| engine.host_answered(h))
            });
            stats
        }
        None => {
            count_hosts(targets, &mut hosts, |_| false);
            EngineStats::default()
        }
    };
    let transmit = sender.finish()?;
    if transmit.queue_full > 0 {
        tracing::debug!(
            queue_full = transmit.queue_full,
            "the kernel's send queue was full at times; batches waited"
        );
    }
    Ok(ScanReport {
        results,
        hosts,
        answered,
        interface: route.interface.clone(),
        mode,
        discovery,
        ports,
        // Read by the caller, from the program this scan ran on.
        xdp: XdpCounters::default(),
        transmit,
        startup,
        total_time: started.elapsed(),
    })
}

/// Host discovery: an ICMP echo and TCP SYNs to 80 and 443 per host, as
/// nmap's default probes (SYN instead of ACK to 80); any direct answer
/// means up. Returns the hosts found up.
fn discover(
    targets: &TargetSet,
    opts: &ScanOptions,
    (id, link): (Identity, &Arc<Link>),
    seed: [u64; 2],
    replies: &mut impl Replies,
    sender: &mut TxPool,
    progress: &Option<Arc<Progress>>,
) -> Result<(Option<TargetSet>, EngineStats), ScanError> {
    let units = vec![
        (Protocol::Icmp, 0),
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 443),
    ];
    let plan = ProbePlan::new(targets.clone(), units, seed, Shard::WHOLE);
    // nmap retransmits discovery probes once at most.
    let tuning = Tuning {
        max_retries: opts.tuning.max_retries.min(1),
        ..opts.tuning.clone()
    };
    let mut unused = ResultSet::new(&[]);
    let mut engine = Engine::new(&plan, Phase::Discovery, &tuning, id, &mut unused)
        .with_deadline(opts.deadline)
        .with_cancel(opts.cancel.clone())
        .with_budget(opts.budget.clone())
        .with_link(Some(Arc::clone(link)))
        .with_progress(progress.clone());
    let stats = engine.run(replies, sender)?;
    let up = targets.retain(|a| targets.index_of(a).is_some_and(|h| engine.host_answered(h)));
    Ok((up, stats))
}

/// Counts the hosts up and down per target name; returns those up.
fn count_hosts(
    targets: &TargetSet,
    report: &mut HostReport,
    mut up: impl FnMut(IpAddr) -> bool,
) -> Vec<IpAddr> {
    let mut answered = Vec::new();
    for name in targets.names() {
        report.entry(name.to_owned()).or_default();
    }
    for i in 0..targets.len() {
        let Some(addr) = targets.get(i) else { continue };
        let Some(name) = targets.name_of(addr) else {
            continue;
        };
        let entry = report.entry(name.to_owned()).or_default();
        if up(addr) {
            entry.0 += 1;
            answered.push(addr);
        } else {
            entry.1 += 1;
        }
    }
    answered
}
