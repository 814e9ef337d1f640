//! From bound sockets and addresses to series: a wildcard bind becomes one
//! series per local address it accepts, so `on(ip, port, protocol)` joins
//! with a peer's `open_port_status` work; both families are capped.

use std::{collections::BTreeSet, net::IpAddr};

use super::{addresses::Address, sockets::Binding};

/// At most this many `host_listening_port_info` series; past it the rest
/// are counted in `host_listening_series_dropped`.
pub(super) const MAX_LISTENING_SERIES: usize = 10_000;
/// At most this many `host_address_info` series, likewise.
pub(super) const MAX_ADDRESS_SERIES: usize = 4_096;

/// What one read exports.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct View {
    /// (ip, port, protocol), sorted.
    pub(super) listening: BTreeSet<(IpAddr, u16, &'static str)>,
    /// (interface, ip), sorted.
    pub(super) addresses: BTreeSet<(String, IpAddr)>,
    /// Series left out at the caps (and bindings and addresses left out of
    /// the read itself).
    pub(super) dropped: usize,
}

/// Whether `ip` is one a peer's scan can reach and whose `ip` label names
/// one host: not loopback, not link-local (a scan reaches it on one link
/// only, and the label has no zone to tell links apart), not multicast or
/// unspecified.
pub(super) fn shown(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unicast_link_local()
                || v6.is_multicast()
                || v6.is_unspecified())
        }
    }
}

/// The series of `bindings` on `addresses`; `left_out` bindings and
/// addresses were not read at all.
pub(super) fn build(bindings: &BTreeSet<Binding>, addresses: &[Address], left_out: usize) -> View {
    let mut view = View {
        dropped: left_out,
        ..View::default()
    };
    let local: Vec<&Address> = addresses.iter().filter(|a| shown(a.ip)).collect();
    for a in &local {
        let series = (a.interface.clone(), a.ip.to_canonical());
        if view.addresses.len() < MAX_ADDRESS_SERIES {
            view.addresses.insert(series);
        } else if !view.addresses.contains(&series) {
            view.dropped += 1;
        }
    }

    // Sockets bound to one address first, then wildcards: under the cap,
    // what is kept does not depend on how many wildcard sockets there are.
    let (wildcards, specific): (Vec<&Binding>, Vec<&Binding>) = bindings
        .iter()
        .partition(|b| b.address.to_canonical().is_unspecified());
    for b in specific {
        // A v4-mapped bind on an IPv6 socket takes that IPv4 address.
        let ip = b.address.to_canonical();
        if shown(ip) {
            add(&mut view, ip, b);
        }
    }
    for b in wildcards {
        let v4 = b.address.to_canonical().is_ipv4();
        for a in &local {
            let accepts = match a.ip {
                IpAddr::V4(_) => v4 || !b.v6only,
                IpAddr::V6(_) => !v4,
            };
            if accepts && (b.interface == 0 || b.interface == a.index) {
                add(&mut view, a.ip, b);
            }
        }
    }
    view
}

/// Adds the series of `b` on `ip`, or counts it past the cap.
fn add(view: &mut View, ip: IpAddr, b: &Binding) {
    let series = (ip, b.port, b.protocol);
    if view.listening.len() < MAX_LISTENING_SERIES {
        view.listening.insert(series);
    } else if !view.listening.contains(&series) {
        view.dropped += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn address(ip: &str, index: u32) -> Address {
        Address {
            ip: ip.parse().unwrap(),
            index,
            interface: format!("eth{index}"),
        }
    }

    fn bind(protocol: &'static str, address: &str, port: u16, v6only: bool) -> Binding {
        Binding {
            protocol,
            address: address.parse().unwrap(),
            port,
            v6only,
            interface: 0,
        }
    }

    fn addresses() -> Vec<Address> {
        vec![
            address("127.0.0.1", 1),
            address("::1", 1),
            address("198.18.0.2", 2),
            address("2001:db8::2", 2),
            address("fe80::1", 2),
            address("198.18.1.1", 3),
            address("169.254.0.1", 3),
        ]
    }

    fn series(view: &View) -> Vec<String> {
        view.listening
            .iter()
            .map(|(ip, port, protocol)| format!("{protocol} {ip} {port}"))
            .collect()
    }

    #[test]
    fn wildcards_expand_to_the_addresses_they_accept() {
        let bindings = BTreeSet::from([
            bind("tcp", "0.0.0.0", 22, false),
            bind("tcp", "::", 80, false),
            bind("tcp", "::", 443, true),
            bind("udp", "198.18.0.2", 53, false),
            bind("udp", "::ffff:198.18.1.1", 123, false),
            bind("tcp", "127.0.0.1", 631, false),
            bind("tcp", "::1", 631, true),
            bind("tcp", "fe80::1", 9, true),
        ]);
        let view = build(&bindings, &addresses(), 0);
        assert_eq!(
            series(&view),
            [
                "tcp 198.18.0.2 22",
                "udp 198.18.0.2 53",
                "tcp 198.18.0.2 80",
                "tcp 198.18.1.1 22",
                "tcp 198.18.1.1 80",
                "udp 198.18.1.1 123",
                "tcp 2001:db8::2 80",
                "tcp 2001:db8::2 443",
            ]
        );
        assert_eq!(
            view.addresses,
            BTreeSet::from([
                (
                    "eth2".to_owned(),
                    IpAddr::from(Ipv4Addr::new(198, 18, 0, 2))
                ),
                ("eth2".to_owned(), "2001:db8::2".parse::<IpAddr>().unwrap()),
                (
                    "eth3".to_owned(),
                    IpAddr::from(Ipv4Addr::new(198, 18, 1, 1))
                ),
            ])
        );
        assert_eq!(view.dropped, 0);
    }

    #[test]
    fn a_socket_bound_to_a_device_takes_only_its_addresses() {
        let mut b = bind("udp", "0.0.0.0", 67, false);
        b.interface = 3;
        let view = build(&BTreeSet::from([b]), &addresses(), 0);
        assert_eq!(series(&view), ["udp 198.18.1.1 67"]);
    }

    #[test]
    fn series_past_the_caps_are_counted_and_single_binds_kept_first() {
        let many: Vec<Address> = (0..MAX_ADDRESS_SERIES as u32 + 10)
            .map(|i| Address {
                ip: IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    (i >> 16) as u16,
                    i as u16,
                )),
                index: 2,
                interface: "eth2".into(),
            })
            .collect();
        let mut bindings: BTreeSet<Binding> = (1..=3).map(|p| bind("tcp", "::", p, true)).collect();
        bindings.insert(bind("tcp", "2001:db8::ffff:ffff", 9999, true));
        let view = build(&bindings, &many, 7);
        assert_eq!(view.addresses.len(), MAX_ADDRESS_SERIES);
        assert_eq!(view.listening.len(), MAX_LISTENING_SERIES);
        let expanded = 3 * many.len();
        assert_eq!(view.dropped, 7 + 10 + (expanded + 1 - MAX_LISTENING_SERIES),);
        assert!(
            view.listening
                .contains(&("2001:db8::ffff:ffff".parse().unwrap(), 9999, "tcp")),
            "a socket bound to one address is kept before wildcard expansions"
        );
    }
}
