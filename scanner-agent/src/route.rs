//! Which interface and source address reach the targets, and which local
//! ports probes may use.

use std::{
    fs, io,
    net::{Ipv4Addr, SocketAddrV4},
};

use nix::ifaddrs::getifaddrs;
use scanner_common::maps::{MAX_SCANS, Settings};
use socket2::{Domain, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no route to {addr}: {source}")]
    NoRoute { addr: Ipv4Addr, source: io::Error },
    #[error("no interface holds the source address {0} chosen for the targets; pass --interface")]
    NoInterface(Ipv4Addr),
    #[error("interface {0} does not exist")]
    UnknownInterface(String),
    #[error(
        "targets leave through different interfaces ({first} via {first_if}, {other} via {other_if}); scan them separately or pass --interface"
    )]
    Split {
        first: Ipv4Addr,
        first_if: String,
        other: Ipv4Addr,
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
    pub source: Ipv4Addr,
}

/// The route the kernel would use, asked by connecting a UDP socket (which
/// sends nothing) and reading back the local address it picked.
fn source_for(addr: Ipv4Addr, interface: Option<&str>) -> Result<Ipv4Addr, RouteError> {
    let no_route = |source| RouteError::NoRoute { addr, source };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(no_route)?;
    if let Some(name) = interface {
        socket
            .bind_device(Some(name.as_bytes()))
            .map_err(|_| RouteError::UnknownInterface(name.to_owned()))?;
    }
    socket
        .connect(&SocketAddrV4::new(addr, 9).into())
        .map_err(no_route)?;
    let local = socket.local_addr().map_err(no_route)?;
    local
        .as_socket_ipv4()
        .map(|a| *a.ip())
        .ok_or_else(|| no_route(io::Error::other("not IPv4")))
}

fn interface_of(source: Ipv4Addr) -> Result<String, RouteError> {
    let addrs = getifaddrs().map_err(|e| RouteError::NoRoute {
        addr: source,
        source: e.into(),
    })?;
    addrs
        .filter(|ifa| ifa.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())) == Some(source))
        .map(|ifa| ifa.interface_name)
        .next()
        .ok_or(RouteError::NoInterface(source))
}

/// Finds the one route all `targets` share (checked on each range's first
/// address). An explicit interface wins over the routing table.
pub fn lookup(
    targets: impl IntoIterator<Item = Ipv4Addr>,
    interface: Option<&str>,
) -> Result<Route, RouteError> {
    let mut route: Option<(Ipv4Addr, Route)> = None;
    for addr in targets {
        let source = source_for(addr, interface)?;
        let name = match interface {
            Some(name) => name.to_owned(),
            None => interface_of(source)?,
        };
        match &route {
            None => {
                route = Some((
                    addr,
                    Route {
                        interface: name,
                        source,
                    },
                ))
            }
            Some((first, r)) if r.interface != name => {
                return Err(RouteError::Split {
                    first: *first,
                    first_if: r.interface.clone(),
                    other: addr,
                    other_if: name,
                });
            }
            Some(_) => {}
        }
    }
    route.map(|(_, r)| r).ok_or(RouteError::NoRoute {
        addr: Ipv4Addr::UNSPECIFIED,
        source: io::Error::other("no targets"),
    })
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

/// Fewest ports a scan slot may have: retries reuse them, so a handful suffice.
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
        let r = lookup([Ipv4Addr::LOCALHOST], None).unwrap();
        assert_eq!(
            r,
            Route {
                interface: "lo".into(),
                source: Ipv4Addr::LOCALHOST
            }
        );
        assert!(matches!(
            lookup([Ipv4Addr::LOCALHOST], Some("no-such-if0")),
            Err(RouteError::UnknownInterface(_))
        ));
    }
}
