//! Firewall counters: a drop-in for iptables_exporter that reads nftables
//! over netlink at scrape time instead of running `iptables-save`.
//!
//! Data flow: [`netlink`] (one consistent read of chains, rules and counter
//! objects: their structure as [`ruleset`]'s plain Rust values when the
//! ruleset generation is new, their counter values always) -> [`layout`]
//! (the label sets, with [`render`] giving iptables-save's rule text and
//! [`xt_match`]/[`xt_target`] the xtables extensions; kept while the
//! generation holds) -> [`collector`] (adds up the values and encodes the
//! `iptables_*`, `ip6tables_*` and `nftables_*` families); [`legacy`]
//! reads hosts still on x_tables (getsockopt, rendered by the same
//! printers) into the same `iptables_*`/`ip6tables_*` families. The daemon's HTTP server serves them,
//! also on the separate drop-in port when asked.
//!
//! Around that: [`flight`] makes concurrent scrapes share one read (with a
//! deadline), [`labels`] keeps each series' label text written out while
//! the ruleset holds, [`netlink`] dumps large rulesets on several threads
//! and takes unchanged rules over from the last read (so only rules that
//! changed are parsed and rendered), and [`set_counts`] counts set elements
//! apart from the scrapes, at a bounded rate.

mod collector;
mod digest;
pub mod config;
mod flight;
mod labels;
mod layout;
mod legacy;
mod netlink;
mod render;
mod retire;
mod ruleset;
mod save_text;
mod set_counts;
mod xt_match;
mod xt_target;

use std::io;

pub use self::{
    collector::FirewallCollector,
    config::{FirewallConfig, ListenAddress},
};
use prometheus_client::registry::Registry;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "reading nftables needs CAP_NET_ADMIN in the agent's network namespace (netlink answered: {0})"
    )]
    Permission(io::Error),
    #[error("nftables netlink error: {0}")]
    Netlink(io::Error),
    #[error("the ruleset changed during each of {attempts} attempts to read it")]
    KeepsChanging { attempts: usize },
    #[error("malformed {0} message from the kernel")]
    Malformed(&'static str),
    #[error("out of memory allocating a libnftnl object")]
    OutOfMemory,
    #[error("the read did not finish within its deadline")]
    Deadline,
    #[error("a dump thread started in another network namespace than its scrape's")]
    ThreadNamespace,
}

impl FirewallError {
    fn netlink(e: io::Error) -> Self {
        if e.raw_os_error() == Some(libc::EPERM) {
            Self::Permission(e)
        } else {
            Self::Netlink(e)
        }
    }
}

/// Registers the counters in the agent's `registry` (when enabled) and
/// returns a registry of their own for the drop-in listener (when one is
/// configured).
pub fn start(config: &FirewallConfig, registry: &mut Registry) -> Option<Registry> {
    let collector = FirewallCollector::new(config);
    if config.enabled {
        registry.register_collector(Box::new(collector.clone()));
    }
    legacy::warn_if_present();
    config.listen.map(|_| {
        let mut own = Registry::default();
        own.register_collector(Box::new(collector));
        own
    })
}
