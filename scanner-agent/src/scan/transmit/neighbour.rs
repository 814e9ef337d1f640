//! The kernel's view of where a frame must go, over rtnetlink: the
//! interface's own link address and flags, its routes, and the neighbour
//! table (ARP / NDP) that maps a next hop to its MAC. The packet-ring path
//! addresses frames itself, so it must know what the kernel would have
//! chosen; the kernel stays the authority: entries are only read, and an
//! absent or stale one is handed back to the kernel to resolve (`NTF_USE`,
//! the same ARP request or neighbour solicitation its own traffic would
//! cause). [`Follower`] re-reads the table every [`FOLLOW_PERIOD`], so a
//! next hop whose MAC changes mid-scan is followed.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage},
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// An Ethernet address.
pub(super) type Mac = [u8; 6];

/// How often the neighbour table is read again during a scan.
pub(super) const FOLLOW_PERIOD: Duration = Duration::from_millis(100);
/// Routes beyond this many are not followed (a full BGP table would make
/// the per-packet lookup slow): such hosts use raw sockets.
pub(super) const MAX_ROUTES: usize = 4096;
/// Stale entries handed back to the kernel for revalidation per period, at
/// most, so a huge on-link scan cannot make the follower flood the link.
const MAX_NUDGES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub(super) enum NeighbourError {
    #[error("rtnetlink: {0}")]
    Io(#[from] io::Error),
    #[error("rtnetlink refused a request: {0}")]
    Refused(io::Error),
    #[error("cannot decode an rtnetlink answer: {0}")]
    Decode(String),
    #[error("interface {0} does not exist")]
    NoInterface(String),
}

/// One rtnetlink socket and its request sequence.
pub(super) struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// The last [`Rtnl::can_solicit_v6`] answer: interface, answer, when.
    link_local: Option<(u32, bool, Instant)>,
}

impl Rtnl {
    pub(super) fn open() -> Result<Self, NeighbourError> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            // Large enough for one datagram of a dump.
            buf: vec![0; 1 << 16],
            link_local: None,
        })
    }

    /// Sends one request and collects its answers: every message of a dump,
    /// the one answer of a get, nothing for an acknowledged change.
    fn call(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NeighbourError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut out = vec![0; req.header.length as usize];
        req.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[at..n])
                    .map_err(|e| NeighbourError::Decode(e.to_string()))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.seq {
                    match msg.payload {
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(answers),
                                Some(code) => Err(NeighbourError::Refused(
                                    io::Error::from_raw_os_error(-code.get()),
                                )),
                            };
                        }
                        NetlinkPayload::InnerMessage(m) => {
                            answers.push(m);
                            if !dump && flags & NLM_F_ACK == 0 {
                                return Ok(answers);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                // Messages are aligned to 4 bytes.
                at += (len + 3) & !3;
            }
        }
    }

    /// The interface's byte counters (received, sent), as `ip -s link`
    /// shows them.
    pub(super) fn byte_counts(&mut self, ifindex: u32) -> Result<(u64, u64), NeighbourError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let answers = self.call(RouteNetlinkMessage::GetLink(msg), 0)?;
        let gone = || NeighbourError::NoInterface(format!("index {ifindex}"));
        let Some(RouteNetlinkMessage::NewLink(link)) = answers.into_iter().next() else {
            return Err(gone());
        };
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some((s.rx_bytes, s.tx_bytes)),
                _ => None,
            })
            .ok_or_else(gone)
    }

    /// The interface's index, link address and whether frames can be
    /// addressed on it at all.
    pub(super) fn link(&mut self, name: &str) -> Result<Interface, NeighbourError> {
        let index = nix::net::if_::if_nametoindex(name)
            .map_err(|_| NeighbourError::NoInterface(name.to_owned()))?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let answers = self.call(RouteNetlinkMessage::GetLink(msg), 0)?;
        let Some(RouteNetlinkMessage::NewLink(link)) = answers.into_iter().next() else {
            return Err(NeighbourError::NoInterface(name.to_owned()));
        };
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <Mac>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        let unusable = if link.header.flags.contains(LinkFlags::Loopback) {
            Some("loopback")
        } else if link.header.link_layer_type != LinkLayerType::Ether {
            Some("not an Ethernet link")
        } else if link.header.flags.contains(LinkFlags::Noarp) {
            Some("the link resolves no neighbours (NOARP)")
        } else if mac.is_none_or(|m| m == [0; 6]) {
            Some("the link has no MAC address")
        } else {
            None
        };
        let veth = link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
        });
        Ok(Interface {
            index,
            mac: mac.unwrap_or_default(),
            unusable,
            veth,
        })
    }

    /// The main table's routes (IPv4 and IPv6), as the ring path follows
    /// them on interface `ifindex`.
    pub(super) fn routes(&mut self, ifindex: u32) -> Result<Vec<Route>, NeighbourError> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            for answer in self.call(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)? {
                let RouteNetlinkMessage::NewRoute(r) = answer else {
                    continue;
                };
                if let Some(route) = Route::of(&r, ifindex) {
                    routes.push(route);
                }
            }
        }
        // Longest prefix first: the first match is the one that applies.
        routes.sort_by_key(|r| std::cmp::Reverse(r.len));
        Ok(routes)
    }

    /// What the kernel itself answers for `dest` leaving through `ifindex`
    /// (`ip route get DEST oif IF`).
    pub(super) fn route_to(&mut self, dest: IpAddr, ifindex: u32) -> Result<Hop, NeighbourError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dest);
        msg.header.destination_prefix_length = if dest.is_ipv4() { 32 } else { 128 };
        msg.attributes = vec![
            RouteAttribute::Destination(RouteAddress::from(dest)),
            RouteAttribute::Oif(ifindex),
        ];
        let answers = self.call(RouteNetlinkMessage::GetRoute(msg), 0)?;
        Ok(match answers.first() {
            Some(RouteNetlinkMessage::NewRoute(r)) if r.header.kind == RouteType::Local => {
                Hop::Local
            }
            Some(RouteNetlinkMessage::NewRoute(r)) => Route::hop_of(r, ifindex),
            _ => Hop::Opaque,
        })
    }

    /// Every neighbour entry of interface `ifindex`, IPv4 and IPv6, with a
    /// usable unicast MAC or not.
    pub(super) fn neighbours(&mut self, ifindex: u32) -> Result<Vec<Entry>, NeighbourError> {
        let answers = self.call(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut entries = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewNeighbour(n) = answer else {
                continue;
            };
            if n.header.ifindex != ifindex {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6));
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) => {
                        mac = <Mac>::try_from(bytes.as_slice()).ok();
                    }
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                entries.push(Entry {
                    ip,
                    // Never a broadcast, multicast or empty destination.
                    mac: mac.filter(|m| m[0] & 1 == 0 && *m != [0; 6]),
                    state: n.header.state,
                });
            }
        }
        Ok(entries)
    }

    /// Makes the kernel resolve `ip` on `ifindex` as if its own traffic
    /// used the entry (`NTF_USE`): an absent or failed entry is solicited,
    /// a stale one re-probed, a fresh one left alone. False when the kernel
    /// could not solicit it now (nothing was asked).
    pub(super) fn nudge(&mut self, ifindex: u32, ip: IpAddr) -> Result<bool, NeighbourError> {
        if ip.is_ipv6() && !self.can_solicit_v6(ifindex)? {
            // The kernel would mark the entry INCOMPLETE without sending
            // anything (a solicitation not caused by a packet needs a
            // link-local source) and only retry a second later; left alone,
            // the first probe's own packet makes it solicit at once.
            return Ok(false);
        }
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(ip);
        msg.header.ifindex = ifindex;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes = vec![NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        })];
        self.call(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_ACK,
        )?;
        Ok(true)
    }
}

impl Rtnl {
    /// Whether the kernel can solicit IPv6 neighbours on `ifindex` by
    /// itself: it needs a link-local address that is not tentative.
    /// Remembered for a second (an address finishing DAD is seen soon).
    fn can_solicit_v6(&mut self, ifindex: u32) -> Result<bool, NeighbourError> {
        if let Some((index, ready, at)) = self.link_local
            && index == ifindex
            && at.elapsed() < LINK_LOCAL_RECHECK
        {
            return Ok(ready);
        }
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        let answers = self.call(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
        let ready = answers.iter().any(|a| match a {
            RouteNetlinkMessage::NewAddress(m) => m.header.index == ifindex && usable_link_local(m),
            _ => false,
        });
        self.link_local = Some((ifindex, ready, Instant::now()));
        Ok(ready)
    }
}

/// How long [`Rtnl::can_solicit_v6`] trusts its last answer.
const LINK_LOCAL_RECHECK: Duration = Duration::from_secs(1);

/// A link-local IPv6 address the kernel may send from (not tentative or
/// failed DAD).
fn usable_link_local(m: &AddressMessage) -> bool {
    let mut flags = u32::from(m.header.flags.bits());
    let mut link_local = false;
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(IpAddr::V6(v6)) => {
                link_local = v6.segments()[0] & 0xffc0 == 0xfe80;
            }
            AddressAttribute::Flags(f) => flags |= f.bits(),
            _ => {}
        }
    }
    let unusable = (AddressFlags::Tentative | AddressFlags::Dadfailed).bits();
    link_local && flags & unusable == 0
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// The interface frames leave through.
#[derive(Clone, Copy, Debug)]
pub(super) struct Interface {
    pub(super) index: u32,
    pub(super) mac: Mac,
    /// Why frames cannot be addressed on it, if they cannot.
    pub(super) unusable: Option<&'static str>,
    /// A veth device (where XDP is cheaper in SKB mode, see `capture`).
    pub(super) veth: bool,
}

/// A neighbour entry as the kernel reports it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) ip: IpAddr,
    pub(super) mac: Option<Mac>,
    pub(super) state: NeighbourState,
}

impl Entry {
    /// The MAC, if the kernel itself would send to it now.
    fn usable(&self) -> Option<Mac> {
        match self.state {
            NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp => self.mac,
            _ => None,
        }
    }
}

/// Where a destination's frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hop {
    /// On the link: the destination's own neighbour entry.
    OnLink,
    /// Through this router: the gateway's neighbour entry.
    Gateway(IpAddr),
    /// One of our own addresses (the kernel loops it back).
    Local,
    /// Something the ring path does not follow (another interface,
    /// multipath, blackhole, unreachable...): raw sockets, where the kernel
    /// decides.
    Opaque,
}

/// One route of the main table, reduced to what the ring path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Route {
    pub(super) net: IpAddr,
    pub(super) len: u8,
    pub(super) hop: Hop,
}

impl Route {
    fn of(r: &RouteMessage, ifindex: u32) -> Option<Self> {
        let table = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        });
        let table = table.unwrap_or(u32::from(r.header.table));
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            return None;
        }
        let net = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        });
        let net = net.unwrap_or(match r.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        });
        Some(Self {
            net,
            len: r.header.destination_prefix_length,
            hop: Self::hop_of(r, ifindex),
        })
    }

    fn hop_of(r: &RouteMessage, ifindex: u32) -> Hop {
        if r.header.kind != RouteType::Unicast {
            return Hop::Opaque;
        }
        let mut oif = None;
        let mut gateway = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
                RouteAttribute::MultiPath(_) | RouteAttribute::Via(_) => return Hop::Opaque,
                _ => {}
            }
        }
        match (oif, gateway) {
            (Some(i), _) if i != ifindex => Hop::Opaque,
            (None, _) => Hop::Opaque,
            (_, Some(g)) => Hop::Gateway(g),
            (_, None) => Hop::OnLink,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The routes and neighbour MACs one scan's frames are addressed with: a
/// snapshot, replaced whole by the [`Follower`] when the kernel's table
/// changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Table {
    routes: Vec<Route>,
    /// The gateways the scan's targets leave through (solicited when absent).
    gateways: Vec<IpAddr>,
    macs: HashMap<IpAddr, Mac>,
}

impl Table {
    pub(super) fn new(routes: Vec<Route>, gateways: Vec<IpAddr>) -> Self {
        Self {
            routes,
            gateways,
            macs: HashMap::new(),
        }
    }

    /// The next hop of `dest` by the longest matching route.
    pub(super) fn hop(&self, dest: IpAddr) -> Hop {
        self.routes
            .iter()
            .find(|r| r.contains(dest))
            .map_or(Hop::Opaque, |r| r.hop)
    }

    /// The MAC `dest`'s frame goes to, or `None` when the kernel must
    /// decide (no route the ring path follows, or no usable entry yet).
    pub(super) fn mac_for(&self, dest: IpAddr) -> Option<Mac> {
        match self.hop(dest) {
            Hop::OnLink => self.macs.get(&dest).copied(),
            Hop::Gateway(g) => self.macs.get(&g).copied(),
            Hop::Local | Hop::Opaque => None,
        }
    }

    /// Whether a stale entry for `ip` is worth revalidating: a gateway the
    /// routes name, or an on-link address `wanted` says is a target.
    fn worth_nudging(&self, ip: IpAddr, wanted: &dyn Fn(IpAddr) -> bool) -> bool {
        self.is_gateway(ip) || (self.hop(ip) == Hop::OnLink && wanted(ip))
    }

    fn is_gateway(&self, ip: IpAddr) -> bool {
        self.gateways.contains(&ip)
    }
}

/// The current [`Table`], shared by the sending threads: they compare the
/// generation (one atomic load a batch) and take a new snapshot only when
/// it changed.
pub(super) struct Shared {
    table: RwLock<Arc<Table>>,
    generation: AtomicU64,
}

impl Shared {
    pub(super) fn new(table: Table) -> Self {
        Self {
            table: RwLock::new(Arc::new(table)),
            generation: AtomicU64::new(0),
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn snapshot(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn publish(&self, table: Table) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Reads the neighbour table into `shared` (if it changed); revalidates the
/// stale entries the scan uses and solicits absent gateways.
pub(super) fn refresh(
    rtnl: &mut Rtnl,
    ifindex: u32,
    shared: &Shared,
    wanted: &dyn Fn(IpAddr) -> bool,
) -> Result<(), NeighbourError> {
    let current = shared.snapshot();
    let entries = rtnl.neighbours(ifindex)?;
    let mut next = Table {
        routes: current.routes.clone(),
        gateways: current.gateways.clone(),
        macs: HashMap::with_capacity(entries.len()),
    };
    let mut nudge = Vec::new();
    for e in &entries {
        if let Some(mac) = e.usable() {
            next.macs.insert(e.ip, mac);
        }
        // Stale entries in use are revalidated (a silent MAC change then
        // fails the kernel's unicast probe and the entry is resolved anew);
        // failed ones only for a gateway, since absent hosts of an on-link
        // scan fail by the thousand and their probes resolve them anyway.
        let revalidate = match e.state {
            NeighbourState::Stale => next.worth_nudging(e.ip, wanted),
            NeighbourState::Failed => next.is_gateway(e.ip),
            _ => false,
        };
        if revalidate && nudge.len() < MAX_NUDGES {
            nudge.push(e.ip);
        }
    }
    // A gateway with no entry at all is solicited too.
    for &g in &next.gateways {
        if !entries.iter().any(|e| e.ip == g) && !nudge.contains(&g) {
            nudge.push(g);
        }
    }
    for ip in nudge {
        // A refusal only delays the kernel's own resolution.
        if let Err(e) = rtnl.nudge(ifindex, ip) {
            tracing::debug!(%ip, error = %e, "cannot hand a neighbour entry to the kernel");
        }
    }
    if next != *current {
        for (ip, mac) in &next.macs {
            if current.macs.get(ip).is_some_and(|old| old != mac) {
                tracing::info!(%ip, mac = %format_mac(mac), "a next hop's MAC changed; frames follow it");
            }
        }
        shared.publish(next);
    }
    Ok(())
}

/// Solicits `ip` and waits up to `patience` for its entry to resolve.
pub(super) fn resolve(
    rtnl: &mut Rtnl,
    ifindex: u32,
    ip: IpAddr,
    patience: Duration,
) -> Result<Option<Mac>, NeighbourError> {
    let until = Instant::now() + patience;
    let mut asked = false;
    loop {
        let entry = rtnl.neighbours(ifindex)?.into_iter().find(|e| e.ip == ip);
        if let Some(mac) = entry.and_then(|e| e.usable()) {
            return Ok(Some(mac));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        if !asked {
            if !rtnl.nudge(ifindex, ip)? {
                // Nothing will resolve it before a packet needs it: the
                // caller's raw sockets then make the kernel do it.
                return Ok(None);
            }
            asked = true;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Solicits the on-link addresses among `sample` at once and waits until
/// each has resolved or failed, for `patience` at most: a short scan's
/// first probes then already leave through the ring (on a LAN an existing
/// host answers within a millisecond; only absent ones use up the wait).
pub(super) fn prime(
    rtnl: &mut Rtnl,
    ifindex: u32,
    table: &Table,
    sample: &[IpAddr],
    patience: Duration,
) -> Result<(), NeighbourError> {
    let mut on_link = Vec::new();
    for &a in sample {
        // Only what the kernel is soliciting now is worth waiting for.
        if table.hop(a) == Hop::OnLink && rtnl.nudge(ifindex, a)? {
            on_link.push(a);
        }
    }
    if on_link.is_empty() {
        return Ok(());
    }
    let until = Instant::now() + patience;
    while Instant::now() < until {
        let entries = rtnl.neighbours(ifindex)?;
        let settled = on_link.iter().all(|a| {
            entries
                .iter()
                .any(|e| e.ip == *a && (e.usable().is_some() || e.state == NeighbourState::Failed))
        });
        if settled {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

pub(super) fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The thread that keeps a scan's [`Shared`] table in step with the
/// kernel's, every [`FOLLOW_PERIOD`], until dropped.
pub(super) struct Follower {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Follower {
    pub(super) fn start(
        mut rtnl: Rtnl,
        ifindex: u32,
        shared: Arc<Shared>,
        wanted: Box<dyn Fn(IpAddr) -> bool + Send>,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("tx-neighbours".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = refresh(&mut rtnl, ifindex, &shared, &*wanted) {
                        // The last snapshot stays in use; the next period retries.
                        tracing::warn!(error = %e, "cannot read the neighbour table");
                    }
                    thread::park_timeout(FOLLOW_PERIOD);
                }
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(net: &str, len: u8, hop: Hop) -> Route {
        Route {
            net: net.parse().unwrap(),
            len,
            hop,
        }
    }

    #[test]
    fn the_longest_route_names_the_next_hop() {
        let gw: IpAddr = "198.18.0.254".parse().unwrap();
        let mut routes = vec![
            route("0.0.0.0", 0, Hop::Gateway(gw)),
            route("198.18.0.0", 24, Hop::OnLink),
            route("198.18.0.128", 25, Hop::Opaque),
            route("2001:db8::", 64, Hop::OnLink),
        ];
        routes.sort_by_key(|r| std::cmp::Reverse(r.len));
        let mut t = Table::new(routes, vec![gw]);
        let mac = |b| [2, 0, 0, 0, 0, b];
        t.macs.insert(gw, mac(1));
        t.macs.insert("198.18.0.7".parse().unwrap(), mac(7));
        t.macs.insert("2001:db8::7".parse().unwrap(), mac(8));
        let at = |s: &str| t.mac_for(s.parse().unwrap());
        assert_eq!(at("198.18.0.7"), Some(mac(7)));
        // On the link but not resolved: the kernel decides (raw socket).
        assert_eq!(at("198.18.0.8"), None);
        // A route the ring path does not follow.
        assert_eq!(at("198.18.0.200"), None);
        // Everything else through the gateway.
        assert_eq!(at("198.19.5.1"), Some(mac(1)));
        assert_eq!(at("2001:db8::7"), Some(mac(8)));
        // No IPv6 route at all.
        assert_eq!(at("2001:db9::1"), None);
    }

    #[test]
    fn loopback_is_unusable_for_frames() {
        testbed::require_root!();
        let mut rtnl = Rtnl::open().unwrap();
        let lo = rtnl.link("lo").unwrap();
        assert_eq!(lo.unusable, Some("loopback"));
        assert!(matches!(
            rtnl.link("no-such-if0"),
            Err(NeighbourError::NoInterface(_))
        ));
    }

    /// Without a usable link-local address the kernel cannot solicit an
    /// IPv6 neighbour by itself: such entries are left to the first probe
    /// (whose own source address the solicitation then uses) instead of
    /// being marked INCOMPLETE for a second with nothing sent.
    #[test]
    fn ipv6_neighbours_are_only_nudged_when_the_kernel_can_solicit_them() {
        testbed::require_root!();
        let lab = testbed::Lab::new(&[std::net::Ipv4Addr::new(198, 18, 0, 2)], 1500);
        let target: IpAddr = "2001:db8::2".parse().unwrap();
        let ask = move || {
            let mut rtnl = Rtnl::open().unwrap();
            let link = rtnl.link(testbed::SCANNER_IF).unwrap();
            let nudged = rtnl.nudge(link.index, target).unwrap();
            let listed = rtnl
                .neighbours(link.index)
                .unwrap()
                .iter()
                .any(|e| e.ip == target);
            (nudged, listed)
        };
        assert_eq!(lab.scanner.run(ask), (true, true));
        lab.scanner
            .ip(&["neigh", "flush", "dev", testbed::SCANNER_IF]);
        lab.scanner.ip(&[
            "-6",
            "addr",
            "flush",
            "dev",
            testbed::SCANNER_IF,
            "scope",
            "link",
        ]);
        assert_eq!(
            lab.scanner.run(ask),
            (false, false),
            "nothing asked of the kernel without a link-local source"
        );
    }
}
