//! The host's own view: which sockets listen on this host and on which of
//! its addresses, read over netlink at scrape time (no exec, no /proc).
//! Every agent exports it beside what its scans see of its peers, and
//! Prometheus joins the two (`on(ip, port, protocol)`): the shipped rules
//! in `configs/prometheus/host-view.yml` name the ports a scan finds open
//! where nothing listens, and the unexpected open ports a local listener
//! answers on.
//!
//! Data flow: [`dump`] (one netlink dump on a fresh socket, bounded in
//! time) -> [`sockets`] (TCP listeners and unconnected UDP sockets, over
//! sock_diag) and [`addresses`] (the interfaces' addresses, over
//! rtnetlink) -> [`view`] (wildcard binds expanded into the addresses they
//! accept, series capped) -> [`collector`] (a short cache, and the
//! `host_*` families).

mod addresses;
mod collector;
mod dump;
mod sockets;
mod view;

use std::{io, time::Duration};

pub use self::collector::HostView;

/// How long one read (all six dumps) may take: the kernel answers dumps of
/// thousands of sockets in milliseconds, and a scrape (Prometheus gives
/// 10 s by default) must never wait on a stuck one.
const READ_TIME: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot open a netlink socket for the {what} dump: {source}")]
    Socket {
        what: &'static str,
        source: io::Error,
    },
    #[error("netlink error during the {what} dump: {source}")]
    Netlink {
        what: &'static str,
        source: io::Error,
    },
    #[error("the kernel refused the {what} dump: {source}")]
    Refused {
        what: &'static str,
        source: io::Error,
    },
    #[error("malformed {what} message from the kernel: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("the read was still in the {what} dump after {} s", READ_TIME.as_secs())]
    TooSlow { what: &'static str },
}
