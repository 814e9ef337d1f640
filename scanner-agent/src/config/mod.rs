//! `config.yaml`: every key of the OpenPort Exporter's file, same names,
//! units and defaults, read strictly. Unknown keys, wrong types and
//! out-of-range values are errors naming the key and the line.
//!
//! Three deliberate differences from the original: no default target (no
//! `targets` scans nothing), no default password, and values the original
//! silently rewrote (an `interval` under 600 became 10800) are used as given,
//! with a warning.

mod auth;
mod groups;
pub mod values;
mod web;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use self::values::{checked_str, listening_port, yaml_error};
pub use self::{
    auth::{Account, Auth, BasicAuth, Networks, Password, Scope, Scopes, Token, User, Username},
    groups::{PortPolicy, TargetEntry, TargetGroup, first_overlap},
    values::{Bounded, Millis, Prefix, Share},
};
use crate::{
    scan::{
        capture::ModeSetting,
        engine::tuning::{NmapTimings, Rate, Tuning},
        exclude_file,
        probes::{Protocol, Shard},
        targets::{self, PortList, TargetSpec},
        transmit::LinkPolicy,
    },
    web::tls::TlsSettings,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub scanning: Scanning,
    #[serde(default)]
    pub auth: Auth,
    /// Addresses, ranges or hostnames to scan, and named groups of them
    /// with their own settings and exposure policy. None by default.
    #[serde(default)]
    pub targets: Vec<TargetEntry>,
    /// SiteRM `main.yaml`'s keys for this host's node_exporter passthrough.
    #[serde(default)]
    pub general: crate::passthrough::config::General,
    /// Further hosts the passthrough fronts, its timeout and size limit.
    #[serde(default)]
    pub passthrough: crate::passthrough::config::Settings,
    /// The port guard installed at start.
    #[serde(default)]
    pub guard: crate::guard::config::GuardSettings,
    /// Warnings found while reading the files the configuration names.
    #[serde(skip)]
    web_warnings: Vec<String>,
    /// Firewall counters (new section).
    #[serde(default)]
    pub firewall: crate::firewall::config::FirewallConfig,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    #[serde(default = "defaults::port", deserialize_with = "listening_port")]
    pub port: u16,
    /// HTTPS instead of HTTP (new key; exporter-toolkit's key names).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// An exporter-toolkit `web-config.yml` (new key): its
    /// `tls_server_config` and `basic_auth_users` apply as if written here.
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
    /// Connections served at once, on all listeners together (new key); at
    /// the cap, connections that have not sent a request are closed first.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: Bounded<1, 1_000_000>,
}

impl Default for Server {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("every key has a default")
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scanning {
    /// Seconds between scans of a target.
    #[serde(default = "defaults::interval")]
    pub interval: Bounded<1, 31_536_000>,
    #[serde(default = "defaults::port_range")]
    pub port_range: Ports,
    /// Largest IPv4 subnet one task scans, as a prefix length.
    #[serde(default = "defaults::max_cidr_size")]
    pub max_cidr_size: Prefix<32>,
    /// Largest IPv6 subnet one task scans (new key).
    #[serde(default = "defaults::max_cidr_size_v6")]
    pub max_cidr_size_v6: Prefix<128>,
    /// Seconds after which a task is cancelled.
    #[serde(default = "defaults::timeout")]
    pub timeout: Bounded<1, 604_800>,
    #[serde(default)]
    pub duration_metrics: bool,
    #[serde(default = "defaults::yes")]
    pub disable_dns_resolution: bool,
    #[serde(default)]
    pub udp_scan: bool,
    #[serde(default = "defaults::min_rate")]
    pub min_rate: Bounded<1, MAX_RATE>,
    /// 0: no fixed ceiling.
    #[serde(default)]
    pub max_rate: Bounded<0, MAX_RATE>,
    /// At most the engine's window (probes awaiting an answer).
    #[serde(default = "defaults::min_parallelism")]
    pub min_parallelism: Bounded<0, 524_288>,
    #[serde(default = "defaults::max_retries")]
    pub max_retries: Bounded<0, 50>,
    /// Every unanswered probe gets all `max_retries` retries (new key; by
    /// default, as nmap, only as many as the scan's answers show needed).
    #[serde(default)]
    pub fixed_retries: bool,
    /// Seconds; 0: never.
    #[serde(default = "defaults::host_timeout")]
    pub host_timeout: Bounded<0, 604_800>,
    /// Milliseconds.
    #[serde(default)]
    pub scan_delay: Millis,
    #[serde(default)]
    pub max_scan_delay: Millis,
    #[serde(default)]
    pub initial_rtt_timeout: Millis,
    #[serde(default)]
    pub max_rtt_timeout: Millis,
    #[serde(default)]
    pub min_rtt_timeout: Millis,
    #[serde(default = "defaults::yes")]
    pub disable_host_discovery: bool,
    /// `/query` requests per minute.
    #[serde(default = "defaults::rate_limit")]
    pub rate_limit: Bounded<1, 1_000_000>,
    #[serde(default = "defaults::task_queue_size")]
    pub task_queue_size: Bounded<1, 1_000_000>,
    /// More than 8 is accepted; 8 scan at once (the XDP key slots).
    #[serde(default = "defaults::worker_count")]
    pub worker_count: Bounded<1, 1024>,
    /// Never probed, whatever the targets say (new key).
    #[serde(default)]
    pub exclude: Vec<Target>,
    /// A zmap-style blocklist file (new key): its addresses and ranges are
    /// excluded like `exclude`'s, reread on every reload.
    #[serde(default)]
    pub exclude_file: Option<PathBuf>,
    /// The file's entries as CIDR ranges, read by [`Config::load`].
    #[serde(skip)]
    pub exclude_from_file: Vec<String>,
    /// This agent's share `i/N` of every scheduled task, when N agents
    /// share one target list (new key; `1/1`: all of it).
    #[serde(default = "defaults::shard", deserialize_with = "shard")]
    pub shard: Shard,
    /// The probe order's seed for every scheduled task (new key; by
    /// default each task's seed is derived from its target, ports and
    /// protocol, so agents with different configs still agree).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Largest IPv6 range accepted as a target, as a prefix length (new key).
    #[serde(default = "defaults::max_ipv6_prefix")]
    pub max_ipv6_prefix: Prefix<128>,
    /// Ranges `/query` may scan besides the targets (new key; none by default).
    #[serde(default)]
    pub query_ranges: Vec<Target>,
    /// Most `open_port_status` series exported; the excess is counted in
    /// `scanner_agent_open_port_series_dropped_total` (new key).
    #[serde(default = "defaults::max_open_port_series")]
    pub max_open_port_series: Bounded<1, 10_000_000>,
    /// A host answering on more than this share of at least 100 scanned
    /// ports is reported as `host_answers_every_port` instead of port by
    /// port (new key; 1.0 turns it off).
    #[serde(default = "defaults::every_port_share")]
    pub every_port_share: Share,
    /// The agent's own probes stay under this share of the scan
    /// interface's speed (new key).
    #[serde(default = "defaults::max_link_share")]
    pub max_link_share: Share,
    /// While the interface's other traffic is above this share of its
    /// speed, scans drop to `min_rate` (new key; 1 turns it off).
    #[serde(default = "defaults::yield_above")]
    pub yield_above: Share,
    /// The scan interface's speed in Mbit/s, for links that report none
    /// or the wrong one (new key).
    #[serde(default)]
    pub link_speed_mbps: Option<Bounded<1, 10_000_000>>,
    /// How the XDP program attaches: `auto`, `driver` or `skb` (new key).
    #[serde(default)]
    pub xdp_mode: ModeSetting,
}

impl Default for Scanning {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("every key has a default")
    }
}

mod defaults {
    use super::{Bounded, Ports, Prefix};

    pub(super) fn port() -> u16 {
        9919
    }
    pub(super) fn max_connections() -> Bounded<1, 1_000_000> {
        Bounded(4096)
    }
    pub(super) fn interval() -> Bounded<1, 31_536_000> {
        Bounded(86400)
    }
    pub(super) fn port_range() -> Ports {
        Ports::parse("1-65535").expect("constant")
    }
    pub(super) fn max_cidr_size() -> Prefix<32> {
        Prefix(24)
    }
    pub(super) fn max_cidr_size_v6() -> Prefix<128> {
        Prefix(120)
    }
    pub(super) fn max_ipv6_prefix() -> Prefix<128> {
        Prefix(crate::scan::targets::DEFAULT_MAX_V6_PREFIX)
    }
    pub(super) fn timeout() -> Bounded<1, 604_800> {
        Bounded(3600)
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn min_rate() -> Bounded<1, { super::MAX_RATE }> {
        Bounded(1000)
    }
    pub(super) fn min_parallelism() -> Bounded<0, 524_288> {
        Bounded(1000)
    }
    pub(super) fn max_retries() -> Bounded<0, 50> {
        Bounded(6)
    }
    pub(super) fn host_timeout() -> Bounded<0, 604_800> {
        Bounded(300)
    }
    pub(super) fn rate_limit() -> Bounded<1, 1_000_000> {
        Bounded(30)
    }
    pub(super) fn task_queue_size() -> Bounded<1, 1_000_000> {
        Bounded(1000)
    }
    pub(super) fn max_open_port_series() -> Bounded<1, 10_000_000> {
        Bounded(100_000)
    }
    pub(super) fn worker_count() -> Bounded<1, 1024> {
        Bounded(10)
    }
    pub(super) fn every_port_share() -> super::Share {
        super::Share(0.9)
    }
    pub(super) fn max_link_share() -> super::Share {
        super::Share(0.05)
    }
    pub(super) fn yield_above() -> super::Share {
        super::Share(0.7)
    }
    pub(super) fn shard() -> crate::scan::probes::Shard {
        crate::scan::probes::Shard::WHOLE
    }
}

/// `scanning.shard`: `i/N`, as `scan --shard` reads it.
fn shard<'de, D: Deserializer<'de>>(d: D) -> Result<Shard, D::Error> {
    checked_str(d, "a shard i/N such as \"2/4\"", str::parse::<Shard>)
}

/// Probes per second a rate key may ask for: far above what one host's
/// kernel sends, low enough that every computation with it stays exact.
pub const MAX_RATE: u64 = 100_000_000;

/// A port specification such as `22,80,8000-8100`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ports {
    pub spec: String,
    pub list: PortList,
}

impl Ports {
    /// The longest `ports` a `/query` may give: room for a hundred ranges, and a
    /// bound on what a request can make the agent parse and keep.
    pub const QUERY_MAX_LEN: usize = 1024;

    pub fn parse(spec: &str) -> Result<Self, String> {
        let list = PortList::parse(spec).map_err(|e| e.to_string())?;
        Ok(Self {
            spec: spec.to_owned(),
            list,
        })
    }

    /// [`Ports::parse`] of a spec of at most `max_len` bytes.
    pub fn parse_capped(spec: &str, max_len: usize) -> Result<Self, String> {
        if spec.len() > max_len {
            return Err(format!(
                "{} bytes long, more than the {max_len} allowed",
                spec.len()
            ));
        }
        Self::parse(spec)
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(
            d,
            "ports such as \"1-65535\" or \"22,80,8000-8100\"",
            Self::parse,
        )
    }
}

/// One target or exclusion, checked for syntax when read (hostnames are
/// resolved when a scan starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target(pub String);

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(
            d,
            "an IP address, a CIDR range, a first-last range or a hostname",
            |v| {
                targets::check_syntax(v)
                    .map(|()| Self(v.to_owned()))
                    .map_err(|e| e.to_string())
            },
        )
    }
}

impl Config {
    /// Reads, parses and validates a configuration file, with the files it
    /// names (web config, certificates): nothing starts with a bad one.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(invalid)?;
        config
            .resolve_files(path.parent().unwrap_or(Path::new(".")))
            .map_err(invalid)?;
        Ok(config)
    }

    /// Parses and validates a configuration; the error names the key and line.
    pub fn parse(text: &str) -> Result<Self, String> {
        // An empty file is an empty mapping: every default.
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_yaml::from_str(text).map_err(yaml_error)?;
        groups::check(&config.targets, &config.scanning, text)?;
        crate::passthrough::config::check(&config.general, &config.passthrough)?;
        Ok(config)
    }

    /// Reads the web config and checks the TLS files; relative paths are
    /// relative to the directory of the file that names them.
    fn resolve_files(&mut self, dir: &Path) -> Result<(), String> {
        let server = &mut self.server;
        server.tls = server.tls.take().map(|t| t.relative_to(dir));
        if let Some(file) = &mut server.web_config_file {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
            let web = web::WebConfig::load(file)
                .map_err(|e| format!("server.web_config_file {}: {e}", file.display()))?;
            if web.tls_server_config.is_some() && server.tls.is_some() {
                return Err(format!(
                    "server.tls and tls_server_config in {} are both set: keep one",
                    file.display()
                ));
            }
            if web.tls_server_config.is_some() {
                server.tls = web.tls_server_config.clone();
            }
            self.auth.add_web_users(web.users(), file)?;
            if web.http_server_config.is_some() {
                self.web_warnings
                    .push("http_server_config in the web config is ignored".into());
            }
        }
        if let Some(tls) = &self.server.tls {
            tls.server_config()
                .map_err(|e| format!("server.tls: {e}"))?;
        }
        if let Some(file) = &mut self.scanning.exclude_file {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
            self.scanning.exclude_from_file =
                exclude_file::read(file).map_err(|e| format!("scanning.exclude_file: {e}"))?;
        }
        Ok(())
    }

    /// Things that are allowed but probably not meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.web_warnings.clone();
        w.extend(self.server.tls.iter().flat_map(TlsSettings::warnings));
        if self.targets.is_empty() {
            w.push("no targets configured: nothing will be scanned".into());
        }
        if self.scanning.interval.0 < 600 {
            w.push(format!(
                "scanning.interval is {} s: every target is rescanned that often (the original silently used 10800 s for values under 600)",
                self.scanning.interval.0
            ));
        }
        for key in self.auth.plain_password_keys() {
            w.push(format!("{key} is a plain password; prefer a bcrypt hash"));
        }
        w.extend(crate::passthrough::config::warnings(
            &self.general,
            &self.passthrough,
            self.auth.configured(),
        ));
        w
    }
}

/// Parses a web config's text as `server.web_config_file` would be read,
/// without the files it names (for the fuzzer).
pub fn parse_web_config(text: &str) -> Result<(), String> {
    web::WebConfig::parse(text).map(drop)
}

impl Scanning {
    /// What the seed's plain targets are scanned for: TCP, and UDP with `udp_scan`.
    pub fn protocols(&self) -> Vec<Protocol> {
        if self.udp_scan {
            vec![Protocol::Tcp, Protocol::Udp]
        } else {
            vec![Protocol::Tcp]
        }
    }

    /// The scan engine's tuning from these keys (0 means "default" where nmap's did).
    pub fn tuning(&self) -> Tuning {
        Tuning {
            rate: Rate::adaptive(self.min_rate.0, self.max_rate.0),
            min_parallelism: self.min_parallelism.0 as usize,
            max_retries: self.max_retries.0 as u8,
            fixed_retries: self.fixed_retries,
            ..Tuning::default()
        }
        .with_nmap_timings(NmapTimings {
            host_timeout: Some(self.host_timeout.0),
            scan_delay: Some(self.scan_delay.0),
            max_scan_delay: Some(self.max_scan_delay.0),
            initial_rtt_timeout: Some(self.initial_rtt_timeout.0),
            max_rtt_timeout: Some(self.max_rtt_timeout.0),
            min_rtt_timeout: Some(self.min_rtt_timeout.0),
        })
    }

    /// How much of the scan interface scans may take, and when they yield.
    pub fn link_policy(&self) -> LinkPolicy {
        LinkPolicy {
            max_share: self.max_link_share.0,
            yield_above: self.yield_above.0,
            speed_mbps: self.link_speed_mbps.map(|b| b.0),
        }
    }

    /// The target specification for `include`, with this section's
    /// exclusions, DNS and size settings.
    pub fn target_spec(&self, include: Vec<String>) -> TargetSpec {
        TargetSpec {
            include,
            exclude: self
                .exclude
                .iter()
                .map(|t| t.0.clone())
                .chain(self.exclude_from_file.iter().cloned())
                .collect(),
            max_v6_prefix: self.max_ipv6_prefix.0,
            resolve_dns: !self.disable_dns_resolution,
        }
    }
}

#[cfg(test)]
mod tests;
