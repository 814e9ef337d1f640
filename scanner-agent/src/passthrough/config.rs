//! The passthrough's configuration: SiteRM's `general` keys for this host
//! (`sitename`, `node_exporter`, `node_exporter_passthrough`, plus
//! `hostname`), and `passthrough.hosts` with the same keys for further hosts
//! an agent fronts. Checked when read: errors name the key and the line.

use std::collections::HashMap;

use hyper::Uri;
use serde::{Deserialize, Deserializer};
use url::Url;

use super::normalise;
use crate::config::values::{Bounded, checked_str};

/// A site or host name as it appears in the route: a path segment that
/// needs no escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name(pub String);

impl Name {
    fn parse(v: &str) -> Result<Self, String> {
        let ok = !v.is_empty()
            && v.len() <= 253
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if ok && v != "." && v != ".." {
            Ok(Self(v.to_owned()))
        } else {
            Err(format!(
                "{v:?} is not a name (letters, digits, '.', '-' and '_', at most 253)"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a site or host name", Self::parse)
    }
}

/// A normalised `node_exporter` URL (see [`normalise`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeExporter(pub Url);

impl<'de> Deserialize<'de> for NodeExporter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(
            d,
            "a node_exporter URL such as \"localhost:9100\"",
            parse_node_exporter,
        )
    }
}

fn parse_node_exporter(v: &str) -> Result<NodeExporter, String> {
    normalise::node_exporter_url(v).map(NodeExporter)
}

/// SiteRM `main.yaml`'s `general` keys that feed the passthrough.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// The `{sitename}` of the route; without it every request is 404.
    #[serde(default)]
    pub sitename: Option<Name>,
    /// This host's name in the route (new key; default: the machine's hostname).
    #[serde(default)]
    pub hostname: Option<Name>,
    #[serde(default)]
    pub node_exporter: Option<NodeExporter>,
    #[serde(default)]
    pub node_exporter_passthrough: bool,
}

/// One further host an agent fronts, with `general`'s key names.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub hostname: Name,
    pub node_exporter: NodeExporter,
    /// Off when absent, as in SiteRM.
    #[serde(default)]
    pub node_exporter_passthrough: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct Settings {
    pub hosts: Vec<HostEntry>,
    /// Seconds for the whole upstream fetch, body included.
    pub timeout: Timeout,
    pub max_body_bytes: BodyBytes,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    hosts: Vec<HostEntry>,
    #[serde(default = "default_timeout")]
    timeout: Timeout,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: BodyBytes,
}

/// Below Prometheus's default scrape timeout (10 s), so a slow exporter
/// gets a 504 the scraper can see instead of a scrape that just times out.
fn default_timeout() -> Timeout {
    Bounded(8)
}

fn default_max_body_bytes() -> BodyBytes {
    Bounded(16 << 20)
}

/// Seconds for the whole upstream fetch: at most 10 minutes.
pub type Timeout = Bounded<1, 600>;
/// The largest body passed on: at most 1 GiB.
pub type BodyBytes = Bounded<1, { 1 << 30 }>;

impl TryFrom<RawSettings> for Settings {
    type Error = String;
    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let mut seen = HashMap::new();
        for (i, h) in raw.hosts.iter().enumerate() {
            if let Some(first) = seen.insert(&h.hostname, i) {
                return Err(format!(
                    "passthrough.hosts: hostname {:?} is listed twice (entries {first} and {i})",
                    h.hostname.0
                ));
            }
        }
        Ok(Self {
            hosts: raw.hosts,
            timeout: raw.timeout,
            max_body_bytes: raw.max_body_bytes,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("every key has a default")
    }
}

/// The machine's hostname, under which the agent registers its own node_exporter.
fn machine_hostname() -> Option<String> {
    nix::unistd::gethostname().ok()?.into_string().ok()
}

/// Checks across the two sections that serde cannot: errors name the keys.
pub fn check(g: &General, settings: &Settings) -> Result<(), String> {
    if g.node_exporter_passthrough && g.node_exporter.is_none() {
        return Err(
            "general.node_exporter_passthrough is true but general.node_exporter is not set".into(),
        );
    }
    if any_enabled(g, settings) && g.sitename.is_none() {
        return Err(
            "general.sitename is not set, but a passthrough is enabled: the route needs it".into(),
        );
    }
    let own = own_hostname(g);
    if let Some(own) = own
        && settings.hosts.iter().any(|h| h.hostname.0 == own)
    {
        return Err(format!(
            "passthrough.hosts lists {own:?}, which is this host (general.hostname or the machine's name): configure it under general"
        ));
    }
    Ok(())
}

fn own_hostname(g: &General) -> Option<String> {
    g.hostname
        .as_ref()
        .map(|n| n.0.clone())
        .or_else(machine_hostname)
}

/// Whether a passthrough is on for this host or any further one.
fn any_enabled(g: &General, settings: &Settings) -> bool {
    g.node_exporter_passthrough || settings.hosts.iter().any(|h| h.node_exporter_passthrough)
}

/// Allowed but probably not meant (`credentials`: whether any are configured).
pub fn warnings(g: &General, settings: &Settings, credentials: bool) -> Vec<String> {
    if any_enabled(g, settings) && !credentials {
        vec!["the passthrough route answers 401 to everyone: it is never anonymous and no credentials are configured (auth.basic, auth.users, auth.bearer_tokens or the web config's basic_auth_users)".into()]
    } else {
        Vec::new()
    }
}

/// A host of the table: its exporter's URL, if any, and whether passthrough is on.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub uri: Option<Uri>,
    pub enabled: bool,
}

/// What the route serves: the site name and every registered host.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    pub sitename: Option<String>,
    pub table: HashMap<String, Upstream>,
}

impl Hosts {
    pub fn new(g: &General, settings: &Settings) -> Self {
        let uri = |u: &NodeExporter| u.0.as_str().parse::<Uri>().ok();
        let mut table = HashMap::new();
        if let Some(own) = own_hostname(g) {
            table.insert(
                own,
                Upstream {
                    uri: g.node_exporter.as_ref().and_then(uri),
                    enabled: g.node_exporter_passthrough,
                },
            );
        }
        for h in &settings.hosts {
            table.insert(
                h.hostname.0.clone(),
                Upstream {
                    uri: uri(&h.node_exporter),
                    enabled: h.node_exporter_passthrough,
                },
            );
        }
        Self {
            sitename: g.sitename.as_ref().map(|s| s.0.clone()),
            table,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(yaml: &str) -> String {
        Config::parse(yaml).expect_err(yaml)
    }

    #[test]
    fn siterm_keys_and_further_hosts() {
        let c = Config::parse(
            "general:\n  sitename: T2_XX_Example\n  hostname: dtn1\n  node_exporter: \"localhost:9100\"\n  \
             node_exporter_passthrough: true\npassthrough:\n  timeout: 3\n  hosts:\n    \
             - {hostname: dtn2, node_exporter: \"httpbox:9100/\", node_exporter_passthrough: true}\n    \
             - {hostname: dtn3, node_exporter: \"dtn3:9100\"}\n",
        )
        .unwrap();
        let hosts = super::Hosts::new(&c.general, &c.passthrough);
        assert_eq!(hosts.sitename.as_deref(), Some("T2_XX_Example"));
        let uri = |h: &str| hosts.table[h].uri.as_ref().map(ToString::to_string);
        assert_eq!(
            uri("dtn1").as_deref(),
            Some("http://localhost:9100/metrics")
        );
        assert_eq!(uri("dtn2").as_deref(), Some("http://httpbox:9100/metrics"));
        assert!(hosts.table["dtn1"].enabled && hosts.table["dtn2"].enabled);
        assert!(
            !hosts.table["dtn3"].enabled,
            "off when absent, as in SiteRM"
        );
        assert_eq!(c.passthrough.timeout.0, 3);
        assert_eq!(c.passthrough.max_body_bytes.0, 16 << 20);
        assert_eq!(
            c.warnings(),
            [
                "no targets configured: nothing will be scanned",
                "the passthrough route answers 401 to everyone: it is never anonymous and no credentials are configured (auth.basic, auth.users, auth.bearer_tokens or the web config's basic_auth_users)"
            ]
        );
    }

    #[test]
    fn rejections_name_key_and_line() {
        for (yaml, says) in [
            (
                "general:\n  node_exporter: \"https://h:9100\"\n",
                "general.node_exporter: \"https://h:9100\": https is not supported",
            ),
            (
                "general:\n  node_exporter: \"http://u:p@h:9100\"\n",
                "general.node_exporter: \"http://u:p@h:9100\" carries credentials",
            ),
            (
                "general:\n  sitename: \"a/b\"\n",
                "general.sitename: \"a/b\" is not a name",
            ),
            (
                "general:\n  hostname: \"..\"\n",
                "general.hostname: \"..\" is not a name",
            ),
            ("general:\n  sitname: X\n", "unknown field `sitname`"),
            (
                "general:\n  node_exporter_passthrough: yes please\n",
                "general.node_exporter_passthrough: invalid type",
            ),
            (
                "passthrough:\n  hosts:\n    - {hostname: a, node_exporter: \"ftp://a\"}\n",
                "passthrough.hosts[0].node_exporter: \"ftp://a\": scheme \"ftp\" is not http",
            ),
            (
                "passthrough:\n  hosts:\n    - {hostname: a}\n",
                "missing field `node_exporter`",
            ),
            (
                "passthrough:\n  timeout: 0\n",
                "passthrough.timeout: 0 is out of range",
            ),
            (
                "passthrough:\n  max_body_bytes: -1\n",
                "passthrough.max_body_bytes: invalid type",
            ),
            (
                "passthrough:\n  hosts:\n    - {hostname: a, node_exporter: a}\n    - {hostname: a, node_exporter: b}\n",
                "hostname \"a\" is listed twice",
            ),
        ] {
            let e = err(yaml);
            assert!(e.contains(says), "{yaml}: {e}");
            assert!(e.contains(" line "), "{yaml}: {e} has no line");
        }
        // Checks across keys name them (serde gives no line for those).
        for (yaml, says) in [
            (
                "general:\n  node_exporter_passthrough: true\n  sitename: S\n",
                "general.node_exporter_passthrough is true but general.node_exporter is not set",
            ),
            (
                "general:\n  node_exporter: \"h:9100\"\n  node_exporter_passthrough: true\n",
                "general.sitename is not set",
            ),
            (
                "passthrough:\n  hosts:\n    - {hostname: a, node_exporter: a, node_exporter_passthrough: true}\n",
                "general.sitename is not set",
            ),
            (
                "general:\n  hostname: me\npassthrough:\n  hosts:\n    - {hostname: me, node_exporter: a}\n",
                "passthrough.hosts lists \"me\", which is this host",
            ),
        ] {
            let e = err(yaml);
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
