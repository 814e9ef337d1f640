//! The `guard:` section: the guard applied when the daemon starts.

use serde::{Deserialize, Deserializer};

use crate::config::values::checked_string;

/// One allowed source, checked when read so errors name the key and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source(pub String);

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_string(d, |s| {
            super::parse_source(s)
                .map(|_| Self(s.to_owned()))
                .ok_or_else(|| format!("{s:?} is not an IP address or CIDR range"))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSettings {
    /// Install the table at start (an existing one is never removed by
    /// turning this off: `scanner-agent guard remove` does that).
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Sources allowed besides loopback.
    #[serde(default)]
    pub allow: Vec<Source>,
    /// Allow guarding port 22 or the agent's own port.
    #[serde(default)]
    pub force: bool,
}

fn default_port() -> u16 {
    9100
}

impl Default for GuardSettings {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("every key has a default")
    }
}

impl GuardSettings {
    pub fn sources(&self) -> Vec<String> {
        self.allow.iter().map(|s| s.0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn guard_section() {
        let c =
            Config::parse("guard:\n  enabled: true\n  allow: [198.18.0.1, \"2001:db8::/64\"]\n")
                .unwrap();
        assert!(c.guard.enabled && !c.guard.force);
        assert_eq!(c.guard.port, 9100);
        assert_eq!(c.guard.sources(), ["198.18.0.1", "2001:db8::/64"]);
        for (yaml, says) in [
            (
                "guard:\n  allow: [198.18.0.300]\n",
                "guard.allow: \"198.18.0.300\" is not an IP address or CIDR range",
            ),
            ("guard:\n  port: 70000\n", "guard.port: invalid value"),
            ("guard:\n  ports: [1]\n", "unknown field `ports`"),
        ] {
            let e = Config::parse(yaml).expect_err(yaml);
            assert!(e.contains(says) && e.contains(" line "), "{yaml}: {e}");
        }
    }
}
