//! Which interface and source addresses reach the targets, and which local
//! ports probes may use.

use std::{
    fs, io,
    net::{IpAddr, SocketAddr},
};

use nix::ifaddrs::getifaddrs;
use scanner_common::maps::{MAX_SCANS, Settings};
use socket2::{Domain, Socket, Type};

use crate::scan::engine::Sources;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no route to {addr}: {source}")]
    NoRoute { addr: IpAddr, source: io::Error },
    #[error("no interface holds the source address {0} chosen for the targets; pass --interface")]
    NoInterface(IpAddr),
    #[error("interface {0} does not exist")]
    UnknownInterface(String),
    #[error(
        "targets leave through different interfaces ({first} via {first_if}, {other} via {other_if}); scan them separately or pass --interface"
    )]
    Split {
        first: IpAddr,
        first_if: String,
        other: IpAddr,
        other_if: String,
    },
    #[error(
        "no local ports are free for probes: the ephemeral range {lo}-{hi} leaves fewer than {need} ports outside it"
    )]
    NoProbePorts { lo: u16, hi: u16, need: u32 },
    #[error("cannot read the ephemeral port range: {0}")]
    PortRange(io::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    pub sources: (Option<IpAddr>, Option<IpAddr>),
}

impl Route {
    pub fn sources(&self) -> Sources {
        let v4 = match self.sources.0 {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        };
        let v6 = match self.sources.1 {
            Some(IpAddr::V6(a)) => Some(a),
            _ => None,
        };
        Sources { v4, v6 }
    }
}

/// The route the kernel would use, asked by connecting a UDP socket (which
/// sends nothing) and reading back the local address it picked.
fn source_for(addr: IpAddr, interface: Option<&str>) -> Result<IpAddr, RouteError> {
    let no_route = |source| RouteError::NoRoute { addr, source };
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(addr, 9)),
        Type::DGRAM,
        None,
    )
    .map_err(no_route)?;
    if let Some(name) = interface {
        socket
            .bind_device(Some(name.as_bytes()))
            .map_err(|_| RouteError::UnknownInterface(name.to_owned()))?;
    }
    socket
        .connect(&SocketAddr::new(addr, 9).into())
        .map_err(no_route)?;
    let local = socket.local_addr().map_err(no_route)?;
    local
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| no_route(io::Error::other("no local address")))
}

fn interface_of(source: IpAddr) -> Result<String, RouteError> {
    let addrs = getifaddrs().map_err(|e| RouteError::NoRoute {
        addr: source,
        source: e.into(),
    })?;
    for ifa in addrs {
        let Some(addr) = ifa.address else { continue };
        let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        if ip == source {
            return Ok(ifa.interface_name);
        }
    }
    Err(RouteError::NoInterface(source))
}

/// Finds the one interface all `targets` share (checked on each range's
/// first address) and our source address per family. An explicit interface
/// wins over the routing table.
pub fn lookup(
    targets: impl IntoIterator<Item = IpAddr>,
    interface: Option<&str>,
) -> Result<Route, RouteError> {
    let mut first: Option<(IpAddr, String)> = None;
    let mut sources = (None, None);
    for addr in targets {
        let source = source_for(addr, interface)?;
        let name = match interface {
            Some(name) => name.to_owned(),
            None => interface_of(source)?,
        };
        match &first {
            None => first = Some((addr, name)),
            Some((f, f_if)) if *f_if != name => {
                return Err(RouteError::Split {
                    first: *f,
                    first_if: f_if.clone(),
                    other: addr,
                    other_if: name,
                });
            }
            Some(_) => {}
        }
        let slot = if addr.is_ipv4() {
            &mut sources.0
        } else {
            &mut sources.1
        };
        slot.get_or_insert(source);
    }
    let (_, interface) = first.ok_or(RouteError::NoInterface(IpAddr::from([0, 0, 0, 0])))?;
    Ok(Route { interface, sources })
}

/// Local ports for probes, outside the kernel's ephemeral range so probes
/// never collide with the host's own connections.
pub fn probe_ports() -> Result<Settings, RouteError> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map_err(RouteError::PortRange)?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>());
    let (Some(Ok(lo)), Some(Ok(hi))) = (it.next(), it.next()) else {
        return Err(RouteError::PortRange(io::Error::other(format!(
            "unexpected content {text:?}"
        ))));
    };
    probe_ports_outside(lo, hi)
}

/// Fewest ports a scan slot may have.
const MIN_PORTS_PER_SLOT: u32 = 16;
const MAX_PORTS_PER_SLOT: u32 = 1024;

fn probe_ports_outside(lo: u16, hi: u16) -> Result<Settings, RouteError> {
    let above = (u32::from(hi) + 1, 65535 - u32::from(hi));
    let below = (1024, u32::from(lo).saturating_sub(1024));
    // Above the ephemeral range is the usual place (as masscan does); below
    // it only when the range leaves too little room at the top.
    let enough = MIN_PORTS_PER_SLOT * MAX_SCANS;
    let (base, count) = if above.1 >= enough || above.1 >= below.1 {
        above
    } else {
        below
    };
    let per_slot = (count / MAX_SCANS).min(MAX_PORTS_PER_SLOT);
    if per_slot < MIN_PORTS_PER_SLOT {
        return Err(RouteError::NoProbePorts {
            lo,
            hi,
            need: MIN_PORTS_PER_SLOT * MAX_SCANS,
        });
    }
    Ok(Settings {
        port_base: base as u16,
        ports_per_slot: per_slot as u16,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ports_avoid_the_ephemeral_range() {
        let s = probe_ports_outside(32768, 60999).unwrap();
        assert_eq!((s.port_base, s.ports_per_slot), (61000, 567));
        assert!(u32::from(s.port_base) + MAX_SCANS * u32::from(s.ports_per_slot) <= 65536);
        let s = probe_ports_outside(40000, 65535).unwrap();
        assert_eq!((s.port_base, s.ports_per_slot), (1024, 1024));
        assert!(matches!(
            probe_ports_outside(1100, 65500),
            Err(RouteError::NoProbePorts { .. })
        ));
    }

    #[test]
    fn loopback_routes_through_lo() {
        let r = lookup(["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()], None).unwrap();
        assert_eq!(r.interface, "lo");
        assert_eq!(
            r.sources,
            (
                Some("127.0.0.1".parse().unwrap()),
                Some("::1".parse().unwrap())
            )
        );
        let bad = lookup(["127.0.0.1".parse().unwrap()], Some("no-such-if0"));
        assert!(matches!(bad, Err(RouteError::UnknownInterface(_))));
    }
}
