//! `targets:` entries. The seed's plain strings are scanned with the
//! `scanning` section's settings and belong to no group; a mapping is a
//! named group with its own ports, protocols and interval, and the exposure
//! policy its verdicts come from: ports `allow`ed to be open, ports
//! `require`d to be open. Upstream OpenPort Exporter's per-target keys
//! (`target`, `protocol`, `interval: 1h`) are read too.

use std::{collections::HashMap, fmt};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};

use super::{Ports, Scanning, Target, values::checked_str};
use crate::scan::{probes::Protocol, targets};

/// One item of `targets:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetEntry {
    /// The seed's form: an address, range or hostname.
    Plain(Target),
    Group(Box<TargetGroup>),
}

/// A named group of ranges with settings and policy of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroup {
    pub name: String,
    pub ranges: Vec<Target>,
    /// None: `scanning.port_range`.
    pub port_range: Option<Ports>,
    /// None: TCP, and UDP with `scanning.udp_scan`.
    pub protocols: Option<Vec<Protocol>>,
    /// Seconds between scans; None: `scanning.interval`.
    pub interval: Option<u64>,
    pub allow: PortPolicy,
    pub require: PortPolicy,
}

/// Ports per protocol, for `allow` and `require`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortPolicy {
    #[serde(default)]
    pub tcp: Option<Ports>,
    #[serde(default)]
    pub udp: Option<Ports>,
}

impl PortPolicy {
    pub fn is_empty(&self) -> bool {
        self.tcp.is_none() && self.udp.is_none()
    }

    pub fn ports(&self, protocol: Protocol) -> Option<&Ports> {
        match protocol {
            Protocol::Tcp => self.tcp.as_ref(),
            Protocol::Udp => self.udp.as_ref(),
            Protocol::Icmp => None,
        }
    }

    pub fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.ports(protocol)
            .is_some_and(|p| p.list.index_of(port).is_some())
    }
}

impl TargetGroup {
    /// Whether the group has a policy: a group without one exports no
    /// verdicts (nothing is unexpected until the operator says what is
    /// expected).
    pub fn has_policy(&self) -> bool {
        !(self.allow.is_empty() && self.require.is_empty())
    }

    pub fn ports<'a>(&'a self, scanning: &'a Scanning) -> &'a Ports {
        self.port_range.as_ref().unwrap_or(&scanning.port_range)
    }

    pub fn protocols(&self, scanning: &Scanning) -> Vec<Protocol> {
        self.protocols
            .clone()
            .unwrap_or_else(|| scanning.protocols())
    }

    pub fn interval(&self, scanning: &Scanning) -> u64 {
        self.interval.unwrap_or(scanning.interval.0)
    }
}

/// The longest group name: it is a label value on every verdict series.
const MAX_NAME_LEN: usize = 128;
/// The longest interval a group may ask for (as `scanning.interval`): a year.
const MAX_INTERVAL: u64 = 31_536_000;

/// A group as written, before the checks that need more than one key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    name: Option<String>,
    #[serde(default)]
    ranges: Option<Vec<Target>>,
    /// Upstream's single range.
    #[serde(default)]
    target: Option<Target>,
    #[serde(default, alias = "ports")]
    port_range: Option<Ports>,
    #[serde(default, deserialize_with = "protocol_list")]
    protocols: Option<Vec<Protocol>>,
    /// Upstream's single protocol.
    #[serde(default, deserialize_with = "one_protocol")]
    protocol: Option<Protocol>,
    #[serde(default, deserialize_with = "interval")]
    interval: Option<u64>,
    #[serde(default)]
    allow: PortPolicy,
    #[serde(default)]
    require: PortPolicy,
}

impl TryFrom<Written> for TargetGroup {
    type Error = String;

    fn try_from(w: Written) -> Result<Self, String> {
        let name = w
            .name
            .ok_or("a target mapping needs a `name` (it names the group in the metrics)")?;
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(format!(
                "name {name:?}: 1 to {MAX_NAME_LEN} bytes without control characters"
            ));
        }
        let ranges = match (w.ranges, w.target) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "group {name}: `ranges` and `target` are both set: keep one"
                ));
            }
            (Some(r), None) if !r.is_empty() => r,
            (None, Some(t)) => vec![t],
            _ => return Err(format!("group {name}: `ranges` (or `target`) is missing")),
        };
        let protocols = match (w.protocols, w.protocol) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "group {name}: `protocols` and `protocol` are both set: keep one"
                ));
            }
            (Some(p), None) => Some(p),
            (None, Some(p)) => Some(vec![p]),
            (None, None) => None,
        };
        Ok(Self {
            name,
            ranges,
            port_range: w.port_range,
            protocols,
            interval: w.interval,
            allow: w.allow,
            require: w.require,
        })
    }
}

impl<'de> Deserialize<'de> for TargetEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TargetEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address, range or hostname, or a group mapping with a `name`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetEntry, E> {
                Target::deserialize(de::value::StrDeserializer::<E>::new(v)).map(TargetEntry::Plain)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TargetEntry, A::Error> {
                let written = Written::deserialize(de::value::MapAccessDeserializer::new(map))?;
                TargetGroup::try_from(written)
                    .map(|g| TargetEntry::Group(Box::new(g)))
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.parse() {
        Ok(p @ (Protocol::Tcp | Protocol::Udp)) => Ok(p),
        _ => Err(format!("{s:?} is not a protocol (expected tcp or udp)")),
    }
}

fn one_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Protocol>, D::Error> {
    checked_str(d, "tcp or udp", parse_protocol).map(Some)
}

fn protocol_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Protocol>>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    let mut list = Vec::new();
    for name in &names {
        let p = parse_protocol(name).map_err(|e| de::Error::custom(format!("protocols: {e}")))?;
        if !list.contains(&p) {
            list.push(p);
        }
    }
    if list.is_empty() {
        return Err(de::Error::custom("protocols: name tcp, udp or both"));
    }
    list.sort();
    Ok(Some(list))
}

/// Seconds, or a duration such as `1h`, `90m` or `1h30m` (upstream's form).
fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "seconds from 1 to {MAX_INTERVAL}, or a duration such as \"1h\""
            )
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if (1..=MAX_INTERVAL).contains(&v) {
                Ok(v)
            } else {
                Err(E::custom(format!(
                    "interval {v} s is out of range (expected 1 s to {MAX_INTERVAL} s)"
                )))
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            let v =
                u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))?;
            self.visit_u64(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            let d = humantime::parse_duration(v)
                .map_err(|e| E::custom(format!("interval {v:?}: {e}")))?;
            if d.subsec_nanos() != 0 {
                return Err(E::custom(format!("interval {v:?}: whole seconds only")));
            }
            self.visit_u64(d.as_secs())
        }
    }
    d.deserialize_any(V).map(Some)
}

/// The checks that need the whole file: group names that repeat, ranges
/// that overlap between two entries, required ports a group does not scan.
/// `text` is the file, to name the line of the entry at fault.
pub(super) fn check(
    entries: &[TargetEntry],
    scanning: &Scanning,
    text: &str,
) -> Result<(), String> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let TargetEntry::Group(g) = entry else {
            continue;
        };
        if let Some(first) = names.insert(&g.name, i) {
            return Err(format!(
                "targets[{i}]: the group name {:?} is used by targets[{first}] too{}",
                g.name,
                at_line(text, entry, 2)
            ));
        }
        let protocols = g.protocols(scanning);
        let ports = g.ports(scanning);
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let Some(required) = g.require.ports(protocol) else {
                continue;
            };
            if !protocols.contains(&protocol) {
                return Err(format!(
                    "targets[{i}] ({}): require.{protocol} but the group does not scan {protocol}{}",
                    g.name,
                    at_line(text, entry, 1)
                ));
            }
            if let Some(&port) = required
                .list
                .as_slice()
                .iter()
                .find(|&&p| ports.list.index_of(p).is_none())
            {
                return Err(format!(
                    "targets[{i}] ({}): require.{protocol} port {port} is outside the port range {:?}{}",
                    g.name,
                    ports.spec,
                    at_line(text, entry, 1)
                ));
            }
        }
    }
    let nets = entries.iter().enumerate().flat_map(|(i, e)| {
        e.ranges()
            .iter()
            .filter_map(|t| targets::literal_networks(&t.0))
            .flatten()
            .map(move |n| (n, i))
    });
    if let Some((a, b)) = first_overlap(nets) {
        return Err(format!(
            "targets[{b}] ({}) overlaps targets[{a}] ({}): an address belongs to one entry{}",
            entries[b].describe(),
            entries[a].describe(),
            at_line(text, &entries[b], 1)
        ));
    }
    Ok(())
}

impl TargetEntry {
    pub fn ranges(&self) -> &[Target] {
        match self {
            Self::Plain(t) => std::slice::from_ref(t),
            Self::Group(g) => &g.ranges,
        }
    }

    pub fn group(&self) -> Option<&TargetGroup> {
        match self {
            Self::Plain(_) => None,
            Self::Group(g) => Some(g),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Plain(t) => t.0.clone(),
            Self::Group(g) => format!("group {}", g.name),
        }
    }
}

/// The first two different entries (their indexes, the earlier first) whose
/// networks share an address, in one pass over the networks sorted by
/// their first address.
pub fn first_overlap(nets: impl Iterator<Item = (IpNet, usize)>) -> Option<(usize, usize)> {
    let key = |n: &IpNet| match n {
        IpNet::V4(n) => (
            4u8,
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (6, u128::from(n.network()), u128::from(n.broadcast())),
    };
    let mut sorted: Vec<((u8, u128, u128), usize)> = nets.map(|(n, i)| (key(&n), i)).collect();
    sorted.sort_unstable();
    // The network reaching furthest so far, of the same family.
    let mut reach: Option<(u8, u128, usize)> = None;
    for ((family, first, last), entry) in sorted {
        if let Some((f, end, owner)) = reach
            && f == family
            && first <= end
        {
            if owner != entry {
                return Some((owner.min(entry), owner.max(entry)));
            }
            if last > end {
                reach = Some((family, last, entry));
            }
            continue;
        }
        reach = Some((family, last, entry));
    }
    None
}

/// " at line N" of the entry's `n`th mention in `text` (its group name, or
/// its plain string as a list item, else anywhere), when it can be found.
fn at_line(text: &str, entry: &TargetEntry, n: usize) -> String {
    let code = |l: &str| l.split('#').next().unwrap_or_default().trim().to_owned();
    let found = match entry {
        TargetEntry::Group(g) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                let l = code(l);
                l.contains("name") && l.contains(g.name.as_str())
            })
            .nth(n - 1),
        TargetEntry::Plain(t) => {
            let item = |l: &str| {
                let l = code(l);
                let l = l.strip_prefix("- ").unwrap_or(&l).trim_matches(['"', '\'']);
                l == t.0
            };
            let mut lines = text.lines().enumerate();
            lines
                .clone()
                .find(|(_, l)| item(l))
                .or_else(|| lines.find(|(_, l)| code(l).contains(t.0.as_str())))
        }
    };
    found
        .map(|(i, _)| format!(" at line {}", i + 1))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const GROUPS: &str = "targets:
  - 198.18.10.0/24
  - name: dtn-data
    ranges: [198.18.20.0/26, \"2001:db8:20::/120\"]
    port_range: \"1-65535\"
    protocols: [tcp, udp]
    interval: 21600
    allow:   {tcp: \"22,443,2811,50000-51000\", udp: \"123\"}
    require: {tcp: \"443,2811\"}
  - name: upstream-style
    target: 198.18.30.0/28
    protocol: udp
    ports: \"53,123\"
    interval: 1h30m
";

    #[test]
    fn groups_and_upstream_keys_load() {
        let c = Config::parse(GROUPS).unwrap();
        assert_eq!(c.targets.len(), 3);
        assert!(matches!(&c.targets[0], TargetEntry::Plain(t) if t.0 == "198.18.10.0/24"));
        let g = c.targets[1].group().unwrap();
        assert_eq!(g.name, "dtn-data");
        assert_eq!(g.ranges.len(), 2);
        assert_eq!(g.interval(&c.scanning), 21600);
        assert_eq!(g.protocols(&c.scanning), [Protocol::Tcp, Protocol::Udp]);
        assert!(g.allow.contains(Protocol::Tcp, 50_500) && !g.allow.contains(Protocol::Udp, 22));
        assert!(g.require.contains(Protocol::Tcp, 2811) && g.has_policy());
        let u = c.targets[2].group().unwrap();
        assert_eq!(u.ranges[0].0, "198.18.30.0/28");
        assert_eq!(u.protocols(&c.scanning), [Protocol::Udp]);
        assert_eq!(u.ports(&c.scanning).spec, "53,123");
        assert_eq!(u.interval(&c.scanning), 5400);
        assert!(!u.has_policy());
        // Defaults come from the scanning section.
        let d = Config::parse("scanning: {interval: 600, udp_scan: true, port_range: '1-100'}\ntargets: [{name: d, target: 198.18.0.1}]\n").unwrap();
        let g = d.targets[0].group().unwrap();
        assert_eq!(
            (g.interval(&d.scanning), g.ports(&d.scanning).spec.as_str()),
            (600, "1-100")
        );
        assert_eq!(g.protocols(&d.scanning), [Protocol::Tcp, Protocol::Udp]);
    }

    /// Every rejection names the key (and the line where serde_yaml or the
    /// file can tell it).
    #[test]
    fn rejections_name_key_and_line() {
        let group = "targets:\n  - name: a\n    ranges: [198.18.0.0/24]\n";
        let cases = [
            (
                format!("{group}    colour: red\n"),
                "targets[0]: unknown field `colour`, expected one of `name`, `ranges`, `target`, `port_range`, `ports`, `protocols`, `protocol`, `interval`, `allow`, `require` at line 4 column 5",
            ),
            (
                "targets:\n  - ranges: [198.18.0.0/24]\n".into(),
                "targets[0]: a target mapping needs a `name` (it names the group in the metrics) at line 2 column 5",
            ),
            (
                format!("{group}  - name: a\n    ranges: [198.18.1.0/24]\n"),
                "targets[1]: the group name \"a\" is used by targets[0] too at line 4",
            ),
            (
                "targets:\n  - 198.18.0.0/23\n  - name: b\n    ranges: [198.18.1.0/24]\n".into(),
                "targets[1] (group b) overlaps targets[0] (198.18.0.0/23): an address belongs to one entry at line 3",
            ),
            (
                "targets:\n  - 198.18.0.0-198.18.0.9\n  - 198.18.0.9\n".into(),
                "targets[1] (198.18.0.9) overlaps targets[0] (198.18.0.0-198.18.0.9): an address belongs to one entry at line 3",
            ),
            (
                "targets:\n  - \"2001:db8::/64\"\n  - {name: v6, target: \"2001:db8::1\"}\n".into(),
                "targets[1] (group v6) overlaps targets[0] (2001:db8::/64): an address belongs to one entry at line 3",
            ),
            (
                format!("{group}    port_range: '1-1000'\n    require: {{tcp: '2000'}}\n"),
                "targets[0] (a): require.tcp port 2000 is outside the port range \"1-1000\" at line 2",
            ),
            (
                format!("{group}    require: {{udp: '53'}}\n"),
                "targets[0] (a): require.udp but the group does not scan udp at line 2",
            ),
            (
                format!("{group}    interval: 2 fortnights\n"),
                "targets[0].interval: interval \"2 fortnights\": unknown time unit \"fortnights\"",
            ),
            (
                format!("{group}    interval: 0\n"),
                "targets[0].interval: interval 0 s is out of range (expected 1 s to 31536000 s) at line 4 column 15",
            ),
            (
                format!("{group}    interval: 400d\n"),
                "targets[0].interval: interval 34560000 s is out of range",
            ),
            (
                format!("{group}    protocols: [tcp, icmp]\n"),
                "targets[0]: protocols: \"icmp\" is not a protocol (expected tcp or udp) at line 2 column 5",
            ),
            (
                format!("{group}    protocols: []\n"),
                "targets[0]: protocols: name tcp, udp or both",
            ),
            (
                format!("{group}    protocol: tcp\n    protocols: [udp]\n"),
                "targets[0]: group a: `protocols` and `protocol` are both set: keep one",
            ),
            (
                format!("{group}    allow: {{sctp: '1'}}\n"),
                "targets[0].allow: unknown field `sctp`, expected `tcp` or `udp` at line 4 column 13",
            ),
            (
                format!("{group}    allow: {{tcp: '99999'}}\n"),
                "targets[0].allow.tcp: invalid port specification",
            ),
            (
                format!("{group}    target: 198.18.1.0/24\n"),
                "targets[0]: group a: `ranges` and `target` are both set: keep one at line 2 column 5",
            ),
            (
                "targets:\n  - name: a\n    ranges: []\n".into(),
                "targets[0]: group a: `ranges` (or `target`) is missing",
            ),
            (
                "targets:\n  - name: ''\n    ranges: [198.18.0.0/24]\n".into(),
                "targets[0]: name \"\": 1 to 128 bytes without control characters at line 2 column 5",
            ),
            (
                format!(
                    "targets:\n  - name: {}\n    ranges: [198.18.0.0/24]\n",
                    "n".repeat(129)
                ),
                "targets[0]: name \"nnnn",
            ),
            (
                "targets:\n  - name: a\n    ranges: [198.18.0.300]\n".into(),
                "targets[0].ranges[0]: invalid target \"198.18.0.300\"",
            ),
            (
                "targets:\n  - [1, 2]\n".into(),
                "targets[0]: invalid type: sequence, expected an address, range or hostname, or a group mapping with a `name` at line 2 column 5",
            ),
            (
                "scanning:\n  every_port_share: 1.5\n".into(),
                "scanning.every_port_share: 1.5 is out of range (expected a share above 0 and at most 1) at line 2 column 21",
            ),
            (
                "scanning:\n  every_port_share: 0\n".into(),
                "scanning.every_port_share: 0 is out of range",
            ),
            (
                "scanning:\n  every_port_share: .nan\n".into(),
                "scanning.every_port_share: NaN is out of range",
            ),
        ];
        for (yaml, expected) in cases {
            let err = Config::parse(&yaml).unwrap_err();
            assert!(
                err.starts_with(expected),
                "{yaml}\n got: {err}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn overlaps_are_found_in_one_pass_whatever_the_order() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        type Case<'a> = (&'a [(&'a str, usize)], Option<(usize, usize)>);
        let cases: [Case<'_>; 5] = [
            (&[("198.18.0.0/24", 0), ("198.18.1.0/24", 1)], None),
            (&[("198.18.0.0/16", 0), ("198.18.9.9/32", 1)], Some((0, 1))),
            (&[("198.18.9.9/32", 1), ("198.18.0.0/16", 0)], Some((0, 1))),
            // An entry may overlap itself; it then reaches furthest.
            (
                &[
                    ("198.18.0.0/24", 0),
                    ("198.18.0.0/23", 0),
                    ("198.18.1.7/32", 1),
                ],
                Some((0, 1)),
            ),
            // The same numbers in the two families are different addresses.
            (&[("0.0.0.0/8", 0), ("::/104", 1)], None),
        ];
        for (nets, want) in cases {
            let got = first_overlap(nets.iter().map(|&(n, i)| (net(n), i)));
            assert_eq!(got, want, "{nets:?}");
        }
    }

    #[test]
    fn many_entries_are_checked_quickly() {
        // A site's list: 20,000 /32 entries, and one overlapping the last.
        let mut yaml = String::from("targets:\n");
        for i in 0..20_000u32 {
            yaml.push_str(&format!("  - 198.18.{}.{}\n", i / 256, i % 256));
        }
        assert!(Config::parse(&yaml).is_ok());
        yaml.push_str("  - 198.18.78.0/24\n");
        let err = Config::parse(&yaml).unwrap_err();
        assert!(err.contains("overlaps"), "{err}");
    }
}
