//! The `firewall:` section of `config.yaml`.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer};

use crate::config::values::checked_str;

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
