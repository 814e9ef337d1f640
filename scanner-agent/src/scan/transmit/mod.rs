//! Putting packets on the wire, by one of two paths chosen per scan:
//! [`ring`], complete Ethernet frames through an AF_PACKET TX ring,
//! addressed to the next hop the kernel's [`neighbour`] table names (no
//! routing, neighbour lookup or netfilter per packet), or [`raw`], IPv4/IPv6
//! raw sockets fed by `sendmmsg`, where the kernel does all of that. The
//! ring is used wherever frames can be addressed; loopback, links without a
//! MAC, routes the ring does not follow and an unresolvable gateway get raw
//! sockets, and so does any single packet whose next hop has no usable
//! entry yet (sending it raw makes the kernel resolve it).

mod link;
mod neighbour;
mod raw;
mod ring;

use std::{
    fmt, io,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

pub use self::{
    link::{Link, LinkPolicy, LinkWatch, Running, Utilisation},
    raw::RawError,
    ring::RingError,
};
use self::{
    neighbour::{Follower, Hop, Interface, NeighbourError, Rtnl, Shared, Table},
    raw::RawSender,
    ring::Ring,
};
use crate::scan::probes::packets::MAX_PACKET;

/// Whether `interface` is a veth device (false when it cannot be told).
pub fn is_veth(interface: &str) -> bool {
    Rtnl::open()
        .and_then(|mut rtnl| rtnl.link(interface))
        .is_ok_and(|link| link.veth)
}

/// Packets handed to the kernel in one `sendmmsg` call (or one ring flush).
pub const BATCH: usize = 64;
/// How long a gateway may take to resolve before the scan falls back to raw
/// sockets.
const RESOLVE_PATIENCE: Duration = Duration::from_secs(1);
/// Range starts whose route is checked against the kernel's answer, at most.
const MAX_ROUTE_CHECKS: usize = 1024;
/// How long the first on-link targets may take to resolve before the scan
/// starts (only absent hosts make it wait that long).
const PRIME_PATIENCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum TransmitError {
    #[error(transparent)]
    Raw(#[from] RawError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("cannot start a sending thread: {0}")]
    Thread(io::Error),
    #[error("a sending thread panicked")]
    Panicked,
}

/// One packet in a send batch.
#[derive(Clone, Copy)]
pub struct Packet {
    pub bytes: [u8; MAX_PACKET],
    pub len: usize,
    pub dest: IpAddr,
}

impl Default for Packet {
    fn default() -> Self {
        Self {
            bytes: [0; MAX_PACKET],
            len: 0,
            dest: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// The send path a scan used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Path {
    /// Frames through an AF_PACKET TX ring (per-packet raw sockets only for
    /// next hops not resolved yet).
    PacketRing,
    /// Raw IP sockets: the kernel routes every packet.
    #[default]
    RawSocket,
}

impl Path {
    pub const ALL: [Path; 2] = [Path::PacketRing, Path::RawSocket];

    pub fn as_str(self) -> &'static str {
        match self {
            Path::PacketRing => "packet_ring",
            Path::RawSocket => "raw_socket",
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a scan's packets left.
#[derive(Clone, Debug, Default)]
pub struct TransmitReport {
    pub path: Path,
    /// Why the raw sockets were chosen, when they were.
    pub why_raw: Option<String>,
    /// Frames sent through the ring.
    pub ring_frames: u64,
    /// Packets sent through raw sockets (all of them on the raw path).
    pub raw_packets: u64,
    /// Times the kernel's queue was full and a batch had to wait.
    pub queue_full: u64,
}

/// What the ring path needs: the link, the next hops, and the thread that
/// keeps them current.
struct RingPlan {
    link: Interface,
    shared: Arc<Shared>,
    _follower: Follower,
}

/// Which path `interface` and the targets allow: the ring, or why not.
fn choose(interface: &str, targets: Targets) -> Result<RingPlan, String> {
    let Targets {
        range_starts,
        first,
        wanted,
    } = targets;
    let failed = |e: NeighbourError| format!("the next hop cannot be read: {e}");
    let mut rtnl = Rtnl::open().map_err(failed)?;
    let link = rtnl.link(interface).map_err(failed)?;
    if let Some(why) = link.unusable {
        return Err(format!("{interface}: {why}"));
    }
    let routes = rtnl.routes(link.index).map_err(failed)?;
    if routes.len() > neighbour::MAX_ROUTES {
        return Err(format!("{} routes are too many to follow", routes.len()));
    }
    let probe = Table::new(routes.clone(), Vec::new());
    let mut gateways = Vec::new();
    for &start in range_starts.iter().take(MAX_ROUTE_CHECKS) {
        let kernel = rtnl.route_to(start, link.index).map_err(failed)?;
        match kernel {
            Hop::Local => continue,
            Hop::Opaque => {
                return Err(format!(
                    "the route to {start} is not one the packet ring follows"
                ));
            }
            Hop::OnLink | Hop::Gateway(_) if kernel != probe.hop(start) => {
                return Err(format!(
                    "the kernel routes {start} otherwise than the main table says (policy routing?)"
                ));
            }
            Hop::OnLink => {}
            Hop::Gateway(g) => {
                if !gateways.contains(&g) {
                    gateways.push(g);
                }
            }
        }
    }
    for &g in &gateways {
        match neighbour::resolve(&mut rtnl, link.index, g, RESOLVE_PATIENCE) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("the next hop {g} does not resolve")),
            Err(e) => return Err(failed(e)),
        }
    }
    let table = Table::new(routes, gateways);
    neighbour::prime(&mut rtnl, link.index, &table, &first, PRIME_PATIENCE).map_err(failed)?;
    let shared = Arc::new(Shared::new(table));
    // The first snapshot before any frame is sent.
    neighbour::refresh(&mut rtnl, link.index, &shared, &*wanted).map_err(failed)?;
    let follower = Follower::start(rtnl, link.index, Arc::clone(&shared), wanted)
        .map_err(|e| format!("cannot start the neighbour follower: {e}"))?;
    Ok(RingPlan {
        link,
        shared,
        _follower: follower,
    })
}

/// What the send path needs to know of a scan's targets.
pub struct Targets {
    /// The first address of each target range (their routes are checked).
    pub range_starts: Vec<IpAddr>,
    /// The first few target addresses, resolved before the scan starts.
    pub first: Vec<IpAddr>,
    /// Whether an address is a target (its stale neighbour entry is
    /// revalidated during the scan).
    pub wanted: Box<dyn Fn(IpAddr) -> bool + Send>,
}

/// What one sending thread counted.
#[derive(Clone, Copy, Default)]
struct Counts {
    ring: u64,
    raw: u64,
    queue_full: u64,
}

/// One sending thread's way out.
enum Sender {
    Raw(RawSender),
    Ring {
        ring: Ring,
        /// For packets whose next hop is not resolved (yet).
        raw: RawSender,
        shared: Arc<Shared>,
        table: Arc<Table>,
        generation: u64,
        spill: Vec<Packet>,
    },
}

impl Sender {
    fn send_all(&mut self, packets: &[Packet], counts: &mut Counts) -> Result<(), TransmitError> {
        match self {
            Sender::Raw(raw) => {
                raw.send_all(packets)?;
                counts.raw += packets.len() as u64;
            }
            Sender::Ring {
                ring,
                raw,
                shared,
                table,
                generation,
                spill,
            } => {
                let now = shared.generation();
                if now != *generation {
                    *table = shared.snapshot();
                    *generation = now;
                }
                for p in packets {
                    match table.mac_for(p.dest) {
                        Some(mac) => {
                            ring.push(mac, &p.bytes[..p.len])?;
                            counts.ring += 1;
                        }
                        None => spill.push(*p),
                    }
                }
                ring.flush()?;
                if !spill.is_empty() {
                    raw.send_all(spill)?;
                    counts.raw += spill.len() as u64;
                    spill.clear();
                }
            }
        }
        Ok(())
    }

    fn queue_full(&self) -> u64 {
        match self {
            Sender::Raw(raw) => raw.queue_full,
            Sender::Ring { ring, raw, .. } => ring.queue_full + raw.queue_full,
        }
    }
}

/// Packets handed to the workers but not yet sent, at most: a whole turn
/// of the scan loop (4096 probes) fits, so `submit` only waits when the
/// senders are really behind, which is what the rate controller reads as
/// the path being full.
const QUEUED_PACKETS: usize = 4096;

/// Sending threads, each with its own sockets. Most of a probe's cost is in
/// the kernel (on the raw path its routing, and on a veth the receiver's
/// stack too), so several threads use several cores.
pub struct TxPool {
    queue: Option<SyncSender<Vec<Packet>>>,
    spare: Receiver<Vec<Packet>>,
    workers: Vec<JoinHandle<Result<Counts, TransmitError>>>,
    path: Path,
    why_raw: Option<String>,
    blocked: Duration,
    /// Keeps the next hops current while the pool runs.
    _plan: Option<RingPlan>,
}

impl TxPool {
    /// Starts `workers` senders on `interface`, through the ring where
    /// [`choose`] allows it, else through raw sockets; fails at once if a
    /// raw socket cannot be opened.
    pub fn start(interface: &str, workers: usize, targets: Targets) -> Result<Self, TransmitError> {
        let workers = workers.max(1);
        let (mut plan, mut why_raw) = match choose(interface, targets) {
            Ok(plan) => (Some(plan), None),
            Err(why) => (None, Some(why)),
        };
        let mut senders = Vec::with_capacity(workers);
        for _ in 0..workers {
            let raw = RawSender::open(interface)?;
            let sender = match &plan {
                None => Sender::Raw(raw),
                Some(p) => match Ring::open(p.link.index, p.link.mac) {
                    Ok(ring) => Sender::Ring {
                        ring,
                        raw,
                        shared: Arc::clone(&p.shared),
                        table: p.shared.snapshot(),
                        generation: p.shared.generation(),
                        spill: Vec::with_capacity(BATCH),
                    },
                    Err(e) => {
                        // Every sender takes the same path.
                        why_raw = Some(e.to_string());
                        plan = None;
                        senders = senders
                            .into_iter()
                            .map(|s| match s {
                                Sender::Ring { raw, .. } => Sender::Raw(raw),
                                raw => raw,
                            })
                            .collect();
                        Sender::Raw(raw)
                    }
                },
            };
            senders.push(sender);
        }
        let path = if plan.is_some() {
            Path::PacketRing
        } else {
            Path::RawSocket
        };
        match &why_raw {
            None => tracing::info!(%path, interface, "transmit path chosen"),
            Some(why) => tracing::info!(%path, interface, reason = %why, "transmit path chosen"),
        }
        let depth = QUEUED_PACKETS / BATCH;
        let (queue, jobs) = mpsc::sync_channel::<Vec<Packet>>(depth);
        let (recycle, spare) = mpsc::sync_channel(depth + 2 * workers);
        let jobs = Arc::new(Mutex::new(jobs));
        let mut handles = Vec::with_capacity(workers);
        for (n, mut sender) in senders.into_iter().enumerate() {
            let (jobs, recycle) = (Arc::clone(&jobs), recycle.clone());
            let handle = thread::Builder::new()
                .name(format!("tx-{n}"))
                .spawn(move || {
                    let mut counts = Counts::default();
                    loop {
                        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(mut batch) = next else {
                            counts.queue_full = sender.queue_full();
                            return Ok(counts);
                        };
                        sender.send_all(&batch, &mut counts)?;
                        batch.clear();
                        let _ = recycle.try_send(batch);
                    }
                })
                .map_err(TransmitError::Thread)?;
            handles.push(handle);
        }
        Ok(Self {
            queue: Some(queue),
            spare,
            workers: handles,
            path,
            why_raw,
            blocked: Duration::ZERO,
            _plan: plan,
        })
    }

    /// The path this pool sends by.
    pub fn path(&self) -> Path {
        self.path
    }

    /// An empty batch buffer (recycled when possible).
    pub fn buffer(&self) -> Vec<Packet> {
        self.spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH))
    }

    /// Queues `batch` for sending; blocks while every worker is busy, which
    /// is the back-pressure that keeps the rate honest.
    pub fn submit(&mut self, batch: Vec<Packet>) -> Result<(), TransmitError> {
        if batch.is_empty() {
            return Ok(());
        }
        let queue = self.queue.as_ref().expect("pool is running");
        let sent = match queue.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(batch)) => {
                let waited = Instant::now();
                let sent = queue.send(batch).map_err(drop);
                self.blocked += waited.elapsed();
                sent
            }
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        if sent.is_err() {
            // A worker only hangs up after a send error: report it.
            return Err(self.stop().err().unwrap_or(TransmitError::Panicked));
        }
        Ok(())
    }

    /// How long [`TxPool::submit`] has waited for the senders in all: time
    /// the path, not the pacer, set the pace.
    pub fn blocked(&self) -> Duration {
        self.blocked
    }

    /// Waits until everything queued is sent; reports the path and what
    /// went through it.
    pub fn finish(mut self) -> Result<TransmitReport, TransmitError> {
        let counts = self.stop()?;
        Ok(TransmitReport {
            path: self.path,
            why_raw: self.why_raw.take(),
            ring_frames: counts.ring,
            raw_packets: counts.raw,
            queue_full: counts.queue_full,
        })
    }

    fn stop(&mut self) -> Result<Counts, TransmitError> {
        self.queue = None;
        let mut total = Counts::default();
        let mut first_error = None;
        for worker in self.workers.drain(..) {
            match worker.join() {
                Ok(Ok(c)) => {
                    total.ring += c.ring;
                    total.raw += c.raw;
                    total.queue_full += c.queue_full;
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(TransmitError::Panicked);
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    }
}

impl Drop for TxPool {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_sends_everything_through_loopback() {
        testbed::require_root!();
        use std::net::{Ipv4Addr, UdpSocket};
        // Needs CAP_NET_RAW, like every privileged test here.
        let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = sink.local_addr().unwrap().port();
        let targets = Targets {
            range_starts: vec![Ipv4Addr::LOCALHOST.into()],
            first: vec![Ipv4Addr::LOCALHOST.into()],
            wanted: Box::new(|_| true),
        };
        let mut pool = TxPool::start("lo", 2, targets).unwrap();
        // Loopback has no neighbours: the kernel must route.
        assert_eq!(pool.path(), Path::RawSocket);
        // Few enough datagrams for the sink's default receive buffer.
        for _ in 0..3 {
            let mut batch = pool.buffer();
            for _ in 0..BATCH {
                let mut p = Packet {
                    dest: Ipv4Addr::LOCALHOST.into(),
                    ..Packet::default()
                };
                let addrs = (p.dest, p.dest);
                p.len = crate::scan::probes::packets::udp(&mut p.bytes, addrs, (40000, port), 1, 0);
                batch.push(p);
            }
            pool.submit(batch).unwrap();
        }
        let report = pool.finish().unwrap();
        assert_eq!(report.path, Path::RawSocket);
        assert_eq!(report.raw_packets, 3 * BATCH as u64);
        assert_eq!(report.ring_frames, 0);
        assert_eq!(report.why_raw.as_deref(), Some("lo: loopback"));
        let mut got = 0;
        let mut buf = [0u8; 64];
        while sink.recv(&mut buf).is_ok() {
            got += 1;
            if got == 3 * BATCH {
                break;
            }
        }
        assert_eq!(got, 3 * BATCH);
    }
}
