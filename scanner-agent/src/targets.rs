//! What to scan: target address ranges and port lists, parsed and validated.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("invalid target {0:?}: expected an IPv4 address or CIDR range such as 198.18.0.0/24")]
    Invalid(String),
    #[error("target {target} cannot be scanned: it includes {what} ({range})")]
    Forbidden {
        target: String,
        what: &'static str,
        range: &'static str,
    },
    #[error("no targets given")]
    Empty,
    #[error("invalid port specification {spec:?}: {reason}")]
    Ports { spec: String, reason: String },
}

/// Ranges no probe may ever be sent to, whatever the operator asks for.
const NEVER_TARGETS: [(&str, &str); 3] = [
    ("0.0.0.0/8", "the \"this network\" range"),
    ("224.0.0.0/4", "multicast addresses"),
    ("255.255.255.255/32", "the limited broadcast address"),
];

/// A deduplicated set of IPv4 addresses, indexable in `0..len()`.
#[derive(Clone, Debug)]
pub struct TargetSet {
    /// Disjoint, sorted ranges as (first address, number of addresses).
    ranges: Vec<(u32, u64)>,
    /// `starts[i]` is the index of the first address of `ranges[i]`.
    starts: Vec<u64>,
    len: u64,
}

impl TargetSet {
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, TargetError> {
        let mut nets = Vec::with_capacity(specs.len());
        for spec in specs {
            let spec = spec.as_ref().trim();
            let net = parse_net(spec)?;
            for (range, what) in NEVER_TARGETS {
                let forbidden: Ipv4Net = range.parse().expect("constant range");
                if net.contains(&forbidden) || forbidden.contains(&net) {
                    return Err(TargetError::Forbidden {
                        target: spec.to_owned(),
                        what,
                        range,
                    });
                }
            }
            nets.push(net);
        }
        if nets.is_empty() {
            return Err(TargetError::Empty);
        }
        let ranges: Vec<(u32, u64)> = Ipv4Net::aggregate(&nets)
            .into_iter()
            .map(|n| (u32::from(n.network()), 1u64 << (32 - n.prefix_len())))
            .collect();
        let mut starts = Vec::with_capacity(ranges.len());
        let mut len = 0;
        for (_, count) in &ranges {
            starts.push(len);
            len += count;
        }
        Ok(Self {
            ranges,
            starts,
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `index`-th address in ascending order.
    pub fn get(&self, index: u64) -> Option<Ipv4Addr> {
        if index >= self.len {
            return None;
        }
        let i = self.starts.partition_point(|&s| s <= index) - 1;
        let (first, _) = self.ranges[i];
        Some(Ipv4Addr::from(first + (index - self.starts[i]) as u32))
    }

    /// The first address of every disjoint range.
    pub fn range_starts(&self) -> Vec<Ipv4Addr> {
        self.ranges
            .iter()
            .map(|&(first, _)| Ipv4Addr::from(first))
            .collect()
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let a = u64::from(u32::from(addr));
        self.ranges
            .iter()
            .any(|&(first, count)| (u64::from(first)..u64::from(first) + count).contains(&a))
    }
}

fn parse_net(spec: &str) -> Result<Ipv4Net, TargetError> {
    let invalid = || TargetError::Invalid(spec.to_owned());
    if spec.contains('/') {
        let net: Ipv4Net = spec.parse().map_err(|_| invalid())?;
        Ok(net.trunc())
    } else {
        let addr: Ipv4Addr = spec.parse().map_err(|_| invalid())?;
        Ok(Ipv4Net::from(addr))
    }
}

/// A sorted, deduplicated list of ports from a spec like `22,80,8000-8100`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortList(Vec<u16>);

impl PortList {
    pub fn parse(spec: &str) -> Result<Self, TargetError> {
        let err = |reason: String| TargetError::Ports {
            spec: spec.to_owned(),
            reason,
        };
        let mut ports = Vec::new();
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
            ports.extend(lo..=hi);
        }
        ports.sort_unstable();
        ports.dedup();
        Ok(Self(ports))
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
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_merged_and_indexed() {
        let t = TargetSet::parse(&["198.18.0.0/30", "198.18.0.2", "198.18.0.8/31"]).unwrap();
        assert_eq!(t.len(), 6);
        let all: Vec<_> = (0..6).map(|i| t.get(i).unwrap().to_string()).collect();
        assert_eq!(
            all,
            [
                "198.18.0.0",
                "198.18.0.1",
                "198.18.0.2",
                "198.18.0.3",
                "198.18.0.8",
                "198.18.0.9"
            ]
        );
        assert_eq!(t.get(6), None);
        assert!(t.contains("198.18.0.9".parse().unwrap()));
        assert!(!t.contains("198.18.0.4".parse().unwrap()));
    }

    #[test]
    fn host_bits_of_a_cidr_are_ignored() {
        let t = TargetSet::parse(&["198.18.0.77/24"]).unwrap();
        assert_eq!(t.get(0), Some(Ipv4Addr::new(198, 18, 0, 0)));
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
            TargetSet::parse::<&str>(&[]).unwrap_err(),
            TargetError::Empty
        );
        let e = TargetSet::parse(&["224.0.0.1"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "target 224.0.0.1 cannot be scanned: it includes multicast addresses (224.0.0.0/4)"
        );
        assert!(matches!(
            TargetSet::parse(&["0.0.0.0/0"]),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(matches!(
            TargetSet::parse(&["255.255.255.255"]),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(matches!(
            TargetSet::parse(&["0.1.2.3"]),
            Err(TargetError::Forbidden { .. })
        ));
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
    }
}
