//! What to scan: target ranges (IPv4 and IPv6, hostnames), exclusions, port
//! lists, all validated before anything is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs as _};

use ipnet::IpNet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error(
        "invalid target {0:?}: expected an IP address, a CIDR range such as 198.18.0.0/24, a range such as 198.18.0.1-198.18.0.9, or a hostname"
    )]
    Invalid(String),
    #[error("target {0:?} is not an IP address or CIDR range, and DNS resolution is disabled")]
    NoDns(String),
    #[error("cannot resolve target {name:?}: {reason}")]
    Resolve { name: String, reason: String },
    #[error("invalid exclude {0:?}: expected an IP address or CIDR range")]
    InvalidExclude(String),
    #[error("target {target} cannot be scanned: it includes {what} ({range})")]
    Forbidden {
        target: String,
        what: &'static str,
        range: &'static str,
    },
    #[error(
        "IPv6 target {target} is larger than the maximum of a /{max}; split it or raise the limit"
    )]
    TooLarge { target: String, max: u8 },
    #[error("no targets given")]
    Empty,
    #[error("every target address is excluded")]
    AllExcluded,
    #[error("invalid port specification {spec:?}: {reason}")]
    Ports { spec: String, reason: String },
}

/// Ranges no probe may ever be sent to, whatever the operator asks for.
const NEVER_TARGETS: [(&str, &str); 5] = [
    ("0.0.0.0/8", "the \"this network\" range"),
    ("224.0.0.0/4", "multicast addresses"),
    ("255.255.255.255/32", "the limited broadcast address"),
    ("::/128", "the unspecified address"),
    ("ff00::/8", "multicast addresses"),
];

/// Default size limit of one IPv6 range (a /112: 65,536 addresses).
pub const DEFAULT_MAX_V6_PREFIX: u8 = 112;

/// How targets are given.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The longest-allowed IPv6 prefix is `/max_v6_prefix` or narrower.
    pub max_v6_prefix: u8,
    pub resolve_dns: bool,
}

impl TargetSpec {
    pub fn new(include: Vec<String>) -> Self {
        Self {
            include,
            exclude: Vec::new(),
            max_v6_prefix: DEFAULT_MAX_V6_PREFIX,
            resolve_dns: true,
        }
    }
}

/// A contiguous run of addresses of one family, as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Run {
    v6: bool,
    first: u128,
    /// Exclusive end.
    end: u128,
}

impl Run {
    fn of(net: IpNet) -> Self {
        match net {
            IpNet::V4(n) => Self {
                v6: false,
                first: u32::from(n.network()).into(),
                end: u128::from(u32::from(n.broadcast())) + 1,
            },
            IpNet::V6(n) => Self {
                v6: true,
                first: u128::from(n.network()),
                end: u128::from(n.broadcast()).saturating_add(1),
            },
        }
    }

    fn len(&self) -> u128 {
        self.end - self.first
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let v = self.first + offset;
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(v))
        } else {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        }
    }
}

/// A deduplicated set of addresses, indexable in `0..len()`, with the names
/// they were given by (for per-target reports).
#[derive(Clone, Debug)]
pub struct TargetSet {
    runs: Vec<Run>,
    /// `starts[i]` is the index of the first address of `runs[i]`.
    starts: Vec<u64>,
    len: u64,
    /// (name as given, the networks it stands for)
    named: Vec<(String, Vec<IpNet>)>,
}

impl TargetSet {
    /// Plain addresses and ranges, no exclusions, DNS allowed.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, TargetError> {
        Self::build(&TargetSpec::new(
            specs.iter().map(|s| s.as_ref().to_owned()).collect(),
        ))
    }

    pub fn build(spec: &TargetSpec) -> Result<Self, TargetError> {
        let mut named = Vec::new();
        for raw in &spec.include {
            let name = raw.trim();
            let nets = resolve(name, spec.resolve_dns)?;
            for net in &nets {
                check_allowed(name, *net, spec.max_v6_prefix)?;
            }
            let v6_addresses: u128 = nets
                .iter()
                .filter(|n| matches!(n, IpNet::V6(_)))
                .map(|n| Run::of(*n).len())
                .sum();
            if v6_addresses > 1 << (128 - u32::from(spec.max_v6_prefix.min(128))) {
                return Err(TargetError::TooLarge {
                    target: name.to_owned(),
                    max: spec.max_v6_prefix,
                });
            }
            named.push((name.to_owned(), nets));
        }
        if named.is_empty() {
            return Err(TargetError::Empty);
        }
        let excludes = spec
            .exclude
            .iter()
            .map(|e| parse_net(e.trim()).ok_or_else(|| TargetError::InvalidExclude(e.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut runs: Vec<Run> = named
            .iter()
            .flat_map(|(_, nets)| nets.iter().map(|n| Run::of(*n)))
            .collect();
        runs = merge(runs);
        runs = subtract(&runs, &merge(excludes.into_iter().map(Run::of).collect()));
        let mut starts = Vec::with_capacity(runs.len());
        let mut len: u64 = 0;
        for run in &runs {
            starts.push(len);
            len += run.len() as u64;
        }
        if len == 0 {
            return Err(TargetError::AllExcluded);
        }
        Ok(Self {
            runs,
            starts,
            len,
            named,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `index`-th address (IPv4 first, ascending).
    pub fn get(&self, index: u64) -> Option<IpAddr> {
        if index >= self.len {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= index) - 1;
        Some(self.runs[i].addr(u128::from(index - self.starts[i])))
    }

    /// The index of `addr`, the inverse of [`Self::get`].
    pub fn index_of(&self, addr: IpAddr) -> Option<u64> {
        let (v6, v) = match addr {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        let i = self
            .runs
            .iter()
            .position(|r| r.v6 == v6 && r.first <= v && v < r.end)?;
        Some(self.starts[i] + (v - self.runs[i].first) as u64)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.index_of(addr).is_some()
    }

    /// The set as the fewest CIDR blocks covering exactly its addresses.
    pub fn networks(&self) -> Vec<IpNet> {
        self.runs
            .iter()
            .flat_map(|r| {
                let (first, last) = (r.addr(0), r.addr(r.len() - 1));
                match (first, last) {
                    (IpAddr::V4(a), IpAddr::V4(b)) => ipnet::Ipv4Subnets::new(a, b, 0)
                        .map(IpNet::V4)
                        .collect::<Vec<_>>(),
                    (IpAddr::V6(a), IpAddr::V6(b)) => {
                        ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect()
                    }
                    _ => unreachable!("a run has one family"),
                }
            })
            .collect()
    }

    /// The first address of every disjoint run (one per route to check).
    pub fn range_starts(&self) -> Vec<IpAddr> {
        self.runs.iter().map(|r| r.addr(0)).collect()
    }

    /// The targets as they were named (after DNS resolution).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(n, _)| n.as_str())
    }

    /// The name of the first target that covers `addr`.
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        self.named
            .iter()
            .find(|(_, nets)| nets.iter().any(|n| n.contains(&addr)))
            .map(|(n, _)| n.as_str())
    }

    /// Only the addresses of `self` that `keep` accepts (e.g. hosts found up).
    pub fn retain(&self, mut keep: impl FnMut(IpAddr) -> bool) -> Option<Self> {
        let nets: Vec<IpNet> = (0..self.len)
            .filter_map(|i| self.get(i))
            .filter(|a| keep(*a))
            .map(IpNet::from)
            .collect();
        let runs = merge(nets.into_iter().map(Run::of).collect());
        let mut starts = Vec::with_capacity(runs.len());
        let mut len = 0;
        for run in &runs {
            starts.push(len);
            len += run.len() as u64;
        }
        (len > 0).then(|| Self {
            runs,
            starts,
            len,
            named: self.named.clone(),
        })
    }
}

fn parse_net(spec: &str) -> Option<IpNet> {
    if spec.contains('/') {
        spec.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        spec.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

fn looks_like_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Checks a target's syntax without resolving it, and refuses addresses
/// that can never be targets.
pub fn check_syntax(spec: &str) -> Result<(), TargetError> {
    let spec = spec.trim();
    let nets = match (parse_net(spec), parse_range(spec)) {
        (Some(net), _) => vec![net],
        (None, Some(nets)) => nets,
        (None, None) if looks_like_hostname(spec) => return Ok(()),
        (None, None) => return Err(TargetError::Invalid(spec.to_owned())),
    };
    nets.into_iter()
        .try_for_each(|net| check_allowed(spec, net, 0))
}

/// The networks an address, CIDR or `first-last` target stands for; none
/// for a hostname (known only once resolved).
pub fn literal_networks(spec: &str) -> Option<Vec<IpNet>> {
    let spec = spec.trim();
    parse_net(spec)
        .map(|n| vec![n])
        .or_else(|| parse_range(spec))
}

/// `first-last` address ranges (as masscan writes them), as CIDR blocks.
fn parse_range(spec: &str) -> Option<Vec<IpNet>> {
    let (a, b) = spec.split_once('-')?;
    let nets: Vec<IpNet> = match (
        a.trim().parse::<IpAddr>().ok()?,
        b.trim().parse::<IpAddr>().ok()?,
    ) {
        (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => {
            ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect()
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => {
            ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect()
        }
        _ => return None,
    };
    Some(nets)
}

fn resolve(name: &str, dns: bool) -> Result<Vec<IpNet>, TargetError> {
    if let Some(net) = parse_net(name) {
        return Ok(vec![net]);
    }
    if let Some(nets) = parse_range(name) {
        return Ok(nets);
    }
    // Two addresses around a dash but no range: backwards, or mixed families.
    if name.split_once('-').is_some_and(|(a, b)| {
        a.trim().parse::<IpAddr>().is_ok() && b.trim().parse::<IpAddr>().is_ok()
    }) {
        return Err(TargetError::Invalid(name.to_owned()));
    }
    if !looks_like_hostname(name) {
        return Err(TargetError::Invalid(name.to_owned()));
    }
    if !dns {
        return Err(TargetError::NoDns(name.to_owned()));
    }
    let addrs = (name, 0)
        .to_socket_addrs()
        .map_err(|e| TargetError::Resolve {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
    let mut nets: Vec<IpNet> = addrs.map(|a| IpNet::from(a.ip())).collect();
    nets.sort();
    nets.dedup();
    if nets.is_empty() {
        return Err(TargetError::Resolve {
            name: name.to_owned(),
            reason: "no addresses".into(),
        });
    }
    Ok(nets)
}

fn check_allowed(name: &str, net: IpNet, max_v6_prefix: u8) -> Result<(), TargetError> {
    for (range, what) in NEVER_TARGETS {
        let forbidden: IpNet = range.parse().expect("constant range");
        if net.contains(&forbidden) || forbidden.contains(&net) {
            return Err(TargetError::Forbidden {
                target: name.to_owned(),
                what,
                range,
            });
        }
    }
    if let IpNet::V6(n) = net
        && n.prefix_len() < max_v6_prefix
    {
        return Err(TargetError::TooLarge {
            target: name.to_owned(),
            max: max_v6_prefix,
        });
    }
    Ok(())
}

/// Sorts and merges overlapping or adjacent runs.
fn merge(mut runs: Vec<Run>) -> Vec<Run> {
    runs.sort();
    let mut out: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs {
        match out.last_mut() {
            Some(last) if last.v6 == r.v6 && r.first <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `runs` minus `excludes`, both sorted and merged, in one pass over each
/// (an exclude file of many entries costs their number, not its square).
fn subtract(runs: &[Run], excludes: &[Run]) -> Vec<Run> {
    let mut out = Vec::with_capacity(runs.len() + excludes.len());
    let mut j = 0;
    for &r in runs {
        // Excludes wholly before this run (an earlier family, or ending
        // before it starts) are before every later run too.
        while excludes
            .get(j)
            .is_some_and(|ex| (ex.v6, ex.end) <= (r.v6, r.first))
        {
            j += 1;
        }
        let mut rest = r;
        for ex in &excludes[j..] {
            if ex.v6 != rest.v6 || rest.end <= ex.first {
                break;
            }
            if rest.first < ex.first {
                out.push(Run {
                    end: ex.first,
                    ..rest
                });
            }
            rest.first = rest.first.max(ex.end);
            if rest.end <= rest.first {
                break;
            }
        }
        if rest.first < rest.end {
            out.push(rest);
        }
    }
    out
}

/// A sorted, deduplicated list of ports from a spec like `22,80,8000-8100`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortList(Vec<u16>);

impl PortList {
    /// Parses a spec into ranges, merges them, and only then lists the
    /// ports: a spec repeating `1-65535` thousands of times costs its
    /// length, not thousands of copies of every port.
    pub fn parse(spec: &str) -> Result<Self, TargetError> {
        let err = |reason: String| TargetError::Ports {
            spec: spec.to_owned(),
            reason,
        };
        let mut ranges = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (parse_port(lo), parse_port(hi)),
                None => (parse_port(part), parse_port(part)),
            };
            let (lo, hi) = lo
                .zip(hi)
                .ok_or_else(|| err(format!("{part:?} is not a port or range of ports 1-65535")))?;
            if lo > hi {
                return Err(err(format!("range {part:?} ends before it starts")));
            }
            ranges.push((lo, hi));
        }
        Ok(Self(
            merge_port_ranges(ranges)
                .into_iter()
                .flat_map(|(lo, hi)| lo..=hi)
                .collect(),
        ))
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Position of `port` in the list.
    pub fn index_of(&self, port: u16) -> Option<usize> {
        self.0.binary_search(&port).ok()
    }
}

/// Sorted, non-overlapping ranges covering the same ports as `ranges`.
fn merge_port_ranges(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(t: &TargetSet) -> Vec<String> {
        (0..t.len())
            .map(|i| t.get(i).unwrap().to_string())
            .collect()
    }

    #[test]
    fn ranges_are_merged_and_indexed() {
        let t = TargetSet::parse(&[
            "198.18.0.0/30",
            "198.18.0.2",
            "198.18.0.8/31",
            "2001:db8::1",
        ])
        .unwrap();
        assert_eq!(
            ips(&t),
            [
                "198.18.0.0",
                "198.18.0.1",
                "198.18.0.2",
                "198.18.0.3",
                "198.18.0.8",
                "198.18.0.9",
                "2001:db8::1"
            ]
        );
        for i in 0..t.len() {
            assert_eq!(t.index_of(t.get(i).unwrap()), Some(i));
        }
        assert_eq!(t.get(7), None);
        assert!(!t.contains("198.18.0.4".parse().unwrap()));
        assert_eq!(
            t.name_of("198.18.0.9".parse().unwrap()),
            Some("198.18.0.8/31")
        );
    }

    #[test]
    fn address_ranges_as_masscan_writes_them() {
        let t =
            TargetSet::parse(&["198.18.0.254-198.18.1.2", "2001:db8::ffff-2001:db8::1:1"]).unwrap();
        assert_eq!(
            ips(&t),
            [
                "198.18.0.254",
                "198.18.0.255",
                "198.18.1.0",
                "198.18.1.1",
                "198.18.1.2",
                "2001:db8::ffff",
                "2001:db8::1:0",
                "2001:db8::1:1"
            ]
        );
        assert_eq!(
            t.name_of("198.18.1.0".parse().unwrap()),
            Some("198.18.0.254-198.18.1.2")
        );
        assert!(matches!(
            TargetSet::parse(&["198.18.0.9-198.18.0.1"]),
            Err(TargetError::Invalid(_)) | Err(TargetError::Resolve { .. })
        ));
        assert!(matches!(
            TargetSet::parse(&["2001:db8::-2001:db8::2:0"]),
            Err(TargetError::TooLarge { .. })
        ));
        assert!(matches!(
            TargetSet::parse(&["0.0.0.0-0.0.0.0"]),
            Err(TargetError::Forbidden { .. })
        ));
    }

    #[test]
    fn excludes_always_win() {
        let mut spec = TargetSpec::new(vec!["198.18.0.0/28".into(), "2001:db8::/126".into()]);
        spec.exclude = vec![
            "198.18.0.4/30".into(),
            "198.18.0.15".into(),
            "2001:db8::2".into(),
        ];
        let t = TargetSet::build(&spec).unwrap();
        assert_eq!(t.len(), 16 - 4 - 1 + 3);
        assert!(!t.contains("198.18.0.5".parse().unwrap()));
        assert!(!t.contains("2001:db8::2".parse().unwrap()));
        assert!(t.contains("2001:db8::3".parse().unwrap()));
        spec.exclude = vec!["0.0.0.0/0".into(), "::/0".into()];
        assert_eq!(
            TargetSet::build(&spec).unwrap_err(),
            TargetError::AllExcluded
        );
        spec.exclude = vec!["198.18.0.0/33".into()];
        assert_eq!(
            TargetSet::build(&spec).unwrap_err(),
            TargetError::InvalidExclude("198.18.0.0/33".into())
        );
    }

    /// Excludes given in any order, overlapping each other and spanning
    /// several target ranges of both families, are applied in one pass.
    #[test]
    fn excludes_spanning_ranges_and_families_are_all_applied() {
        let mut spec = TargetSpec::new(vec![
            "198.18.0.16/29".into(),
            "198.18.0.0/29".into(),
            "2001:db8::/126".into(),
        ]);
        spec.exclude = vec![
            "2001:db8::1".into(),
            "198.18.0.6/31".into(),
            "198.18.0.2/31".into(),
            "198.18.0.4/30".into(),
            "198.18.0.8/29".into(),
            "198.18.0.16".into(),
            "198.18.0.22".into(),
            "2001:db8::1".into(),
        ];
        let t = TargetSet::build(&spec).unwrap();
        assert_eq!(
            ips(&t),
            [
                "198.18.0.0",
                "198.18.0.1",
                "198.18.0.17",
                "198.18.0.18",
                "198.18.0.19",
                "198.18.0.20",
                "198.18.0.21",
                "198.18.0.23",
                "2001:db8::",
                "2001:db8::2",
                "2001:db8::3",
            ]
        );
    }

    #[test]
    fn host_bits_of_a_cidr_are_ignored() {
        let t = TargetSet::parse(&["198.18.0.77/24"]).unwrap();
        assert_eq!(t.get(0), Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0))));
        assert_eq!(t.len(), 256);
    }

    #[test]
    fn bad_targets_are_named() {
        assert_eq!(
            TargetSet::parse(&["198.18.0.300"]).unwrap_err(),
            TargetError::Invalid("198.18.0.300".into())
        );
        assert_eq!(
            TargetSet::parse(&["198.18.0.0/33"]).unwrap_err(),
            TargetError::Invalid("198.18.0.0/33".into())
        );
        assert_eq!(
            TargetSet::parse(&["a b"]).unwrap_err(),
            TargetError::Invalid("a b".into())
        );
        assert_eq!(
            TargetSet::parse::<&str>(&[]).unwrap_err(),
            TargetError::Empty
        );
        let e = TargetSet::parse(&["224.0.0.1"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "target 224.0.0.1 cannot be scanned: it includes multicast addresses (224.0.0.0/4)"
        );
        for never in [
            "0.0.0.0/0",
            "255.255.255.255",
            "0.0.0.0/8",
            "::",
            "ff02::1",
            "::/0",
        ] {
            assert!(
                matches!(
                    TargetSet::parse(&[never]),
                    Err(TargetError::Forbidden { .. })
                ),
                "{never}"
            );
        }
        assert_eq!(
            TargetSet::parse(&["2001:db8::/64"])
                .unwrap_err()
                .to_string(),
            "IPv6 target 2001:db8::/64 is larger than the maximum of a /112; split it or raise the limit"
        );
        assert_eq!(TargetSet::parse(&["2001:db8::/112"]).unwrap().len(), 65536);
    }

    #[test]
    fn hostnames_resolve_unless_disabled() {
        let t = TargetSet::parse(&["localhost"]).unwrap();
        assert!(t.contains(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(
            t.name_of(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some("localhost")
        );
        let mut spec = TargetSpec::new(vec!["localhost".into()]);
        spec.resolve_dns = false;
        assert_eq!(
            TargetSet::build(&spec).unwrap_err(),
            TargetError::NoDns("localhost".into())
        );
    }

    #[test]
    fn retain_keeps_only_chosen_hosts() {
        let t = TargetSet::parse(&["198.18.0.0/29"]).unwrap();
        let up = t
            .retain(|a| a.to_string().ends_with(".3") || a.to_string().ends_with(".4"))
            .unwrap();
        assert_eq!(ips(&up), ["198.18.0.3", "198.18.0.4"]);
        assert!(t.retain(|_| false).is_none());
    }

    #[test]
    fn port_specs() {
        assert_eq!(
            PortList::parse("80,22,8000-8002,22").unwrap().as_slice(),
            [22, 80, 8000, 8001, 8002]
        );
        assert_eq!(PortList::parse("1-65535").unwrap().len(), 65535);
        for bad in ["", "0", "65536", "a", "10-", "-5", "9-3", "1,,2"] {
            assert!(
                matches!(PortList::parse(bad), Err(TargetError::Ports { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            PortList::parse("9-3").unwrap_err().to_string(),
            "invalid port specification \"9-3\": range \"9-3\" ends before it starts"
        );
        assert_eq!(PortList::parse("22,80").unwrap().index_of(80), Some(1));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_are_merged_before_listing() {
        assert_eq!(
            merge_port_ranges(vec![
                (8000, 8100),
                (1, 5),
                (6, 10),
                (4, 4),
                (8050, 9000),
                (12, 12)
            ]),
            [(1, 10), (12, 12), (8000, 9000)]
        );
        assert_eq!(
            merge_port_ranges(vec![(65535, 65535), (1, 65535)]),
            [(1, 65535)]
        );
        // Thousands of full ranges list each port once.
        let spec = vec!["1-65535"; 5000].join(",");
        let list = PortList::parse(&spec).unwrap();
        assert_eq!(list.len(), 65535);
        assert_eq!(list.as_slice()[..3], [1, 2, 3]);
        assert_eq!(
            PortList::parse("30-40,35,20-31").unwrap().as_slice(),
            (20..=40).collect::<Vec<u16>>()
        );
    }
}
