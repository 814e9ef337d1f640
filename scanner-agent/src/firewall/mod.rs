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
//! notices hosts still on x_tables. The daemon's HTTP server serves them,
//! also on the separate drop-in port when asked.

mod collector;
mod layout;
mod legacy;
mod netlink;
mod render;
mod ruleset;
mod xt_match;
mod xt_target;

use std::{io, net::SocketAddr};

use prometheus_client::registry::Registry;
use serde::{Deserialize, Deserializer};

use crate::config::checked_str;

pub use self::collector::FirewallCollector;

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

/// The `firewall:` section of `config.yaml` (new).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Export the counters on the agent's `/metrics`.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// A separate listener serving only these metrics on `/metrics`, for
    /// drop-in use where iptables_exporter ran (it used `:9455`). Off by default.
    #[serde(default)]
    pub listen: Option<ListenAddress>,
    /// Adds a `position` label (the rule's 1-based place in its chain), so
    /// identical rules in one chain get series of their own instead of one
    /// summed series.
    #[serde(default)]
    pub rule_position_label: bool,
    /// Also export `iptables_default_packets_toal`, the misspelt name the
    /// original exporter used, for dashboards built on it.
    #[serde(default)]
    pub legacy_metric_names: bool,
}

fn enabled() -> bool {
    true
}

/// An `address:port`, checked while reading so the error names key and line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddress(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an address and port such as \"[::]:9455\"", |v| {
            v.parse().map(ListenAddress).map_err(|_| {
                format!(
                    "{v:?} is not an address and port such as \"[::]:9455\" or \"127.0.0.1:9455\""
                )
            })
        })
    }
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            rule_position_label: false,
            legacy_metric_names: false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_export_on_metrics_only() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.firewall, FirewallConfig::default());
        assert!(c.firewall.enabled && c.firewall.listen.is_none());
        assert!(!c.firewall.rule_position_label && !c.firewall.legacy_metric_names);
        let c = Config::parse(
            "firewall:\n  enabled: false\n  listen: \"[::]:9455\"\n  rule_position_label: true\n  legacy_metric_names: true\n",
        )
        .unwrap();
        assert_eq!(
            c.firewall.listen,
            Some(ListenAddress("[::]:9455".parse().unwrap()))
        );
        assert!(!c.firewall.enabled && c.firewall.rule_position_label);
    }

    /// Like every other section: unknown keys, wrong types and bad
    /// addresses name the key and the line.
    #[test]
    fn rejections_name_key_and_line() {
        let cases = [
            (
                "firewall:\n  enable: true\n",
                "firewall: unknown field `enable`",
            ),
            (
                "firewall:\n  enabled: sometimes\n",
                "firewall.enabled: invalid type: string \"sometimes\", expected a boolean at line 2 column 12",
            ),
            (
                "firewall:\n  listen: 9455\n",
                "firewall.listen: \"9455\" is not an address and port such as \"[::]:9455\" or \"127.0.0.1:9455\" at line 2 column 11",
            ),
            (
                "firewall:\n  listen: \"localhost:9455\"\n",
                "firewall.listen: \"localhost:9455\" is not an address and port such as \"[::]:9455\" or \"127.0.0.1:9455\" at line 2 column 11",
            ),
        ];
        for (yaml, want) in cases {
            let err = Config::parse(yaml).unwrap_err();
            assert!(
                err.contains(want),
                "for {yaml:?}\n got: {err}\nwant: {want}"
            );
            assert!(err.contains("line "), "no line in: {err}");
        }
    }
}
