//! The host's addresses and the names of their interfaces, over
//! rtnetlink (`RTM_GETLINK` and `RTM_GETADDR` dumps, as `ip addr` reads
//! them).

use std::{collections::HashMap, net::IpAddr, time::Instant};

use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage},
};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::{HostError, dump::dump};

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Address {
    pub(super) ip: IpAddr,
    pub(super) index: u32,
    pub(super) interface: String,
}

/// At most this many addresses are read (a host with a few thousand
/// service addresses stays below); the rest are counted.
pub(super) const MAX_ADDRESSES: usize = 65_536;

/// Every address of every interface, and how many past
/// [`MAX_ADDRESSES`] were left out.
pub(super) fn read(deadline: Instant) -> Result<(Vec<Address>, usize), HostError> {
    let mut names = HashMap::new();
    dump(
        "rtnetlink link",
        NETLINK_ROUTE,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        deadline,
        |message| {
            if let RouteNetlinkMessage::NewLink(link) = message {
                let name = link.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                });
                names.insert(link.header.index, name.unwrap_or_default());
            }
            Ok(())
        },
    )?;
    let mut addresses = Vec::new();
    let mut left_out = 0;
    dump(
        "rtnetlink address",
        NETLINK_ROUTE,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        deadline,
        |message| {
            let RouteNetlinkMessage::NewAddress(address) = message else {
                return Ok(());
            };
            // IFA_LOCAL is the host's own address; IFA_ADDRESS is the peer's
            // on a point-to-point link, and the only one given for IPv6.
            let mut ip = None;
            for attribute in address.attributes {
                match attribute {
                    AddressAttribute::Local(local) => ip = Some(local),
                    AddressAttribute::Address(a) if ip.is_none() => ip = Some(a),
                    _ => {}
                }
            }
            let Some(ip) = ip else { return Ok(()) };
            if addresses.len() >= MAX_ADDRESSES {
                left_out += 1;
                return Ok(());
            }
            let index = address.header.index;
            addresses.push(Address {
                ip,
                index,
                // An interface that appeared between the two dumps.
                interface: names
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| index.to_string()),
            });
            Ok(())
        },
    )?;
    Ok((addresses, left_out))
}
