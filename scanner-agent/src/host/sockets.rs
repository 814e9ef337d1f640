//! The sockets that accept connections or datagrams from outside: TCP in
//! LISTEN and UDP bound but not connected (the kernel's `CLOSE` state,
//! `UNCONN` in `ss`), IPv4 and IPv6, over sock_diag: what `ss -Hltnu`
//! lists, read the way `ss` reads it.

use std::{collections::BTreeSet, net::IpAddr, time::Instant};

use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use super::{HostError, dump::dump};

/// One bound socket, as far as who can reach it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Binding {
    pub(super) protocol: &'static str,
    /// The bound address: unspecified for a wildcard bind.
    pub(super) address: IpAddr,
    pub(super) port: u16,
    /// An IPv6 socket that takes no IPv4 (`IPV6_V6ONLY`); false for IPv4.
    pub(super) v6only: bool,
    /// The interface it is bound to (`SO_BINDTODEVICE`), or 0 for any.
    pub(super) interface: u32,
}

/// At most this many distinct bindings are kept from one read (a
/// DNS server with a socket per address and port stays far below); the
/// rest are counted.
pub(super) const MAX_BINDINGS: usize = 65_536;

/// Every listening TCP and unconnected UDP socket of the agent's network
/// namespace, and how many past [`MAX_BINDINGS`] were left out.
pub(super) fn read(deadline: Instant) -> Result<(BTreeSet<Binding>, usize), HostError> {
    let mut bindings = BTreeSet::new();
    let mut left_out = 0;
    for (protocol, name, states) in [
        (IPPROTO_TCP, "tcp", StateFlags::LISTEN),
        (IPPROTO_UDP, "udp", StateFlags::CLOSE),
    ] {
        for family in [AF_INET, AF_INET6] {
            let request = InetRequest {
                family,
                protocol,
                extensions: ExtensionFlags::empty(),
                states: states.clone(),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            };
            dump(
                "sock_diag",
                NETLINK_SOCK_DIAG,
                SockDiagMessage::InetRequest(request),
                deadline,
                |message| {
                    let SockDiagMessage::InetResponse(response) = message else {
                        return Ok(());
                    };
                    let id = &response.header.socket_id;
                    // The kernel sends IPV6_V6ONLY for every IPv6 socket in
                    // LISTEN or CLOSE (inet_diag_msg_attrs_fill).
                    let v6only = response
                        .nlas
                        .iter()
                        .any(|nla| matches!(nla, Nla::SkV6Only(true)));
                    let binding = Binding {
                        protocol: name,
                        address: id.source_address,
                        port: id.source_port,
                        v6only,
                        interface: id.interface_id,
                    };
                    if bindings.len() < MAX_BINDINGS || bindings.contains(&binding) {
                        bindings.insert(binding);
                    } else {
                        left_out += 1;
                    }
                    Ok(())
                },
            )?;
        }
    }
    Ok((bindings, left_out))
}
