//! Which probes a scan sends, in which order, and what they look like.

pub mod packets;
pub mod payloads;

use std::{fmt, net::IpAddr, str::FromStr};

use rand::Rng as _;
use scanner_common::ProbeKey;
use siphasher::sip::SipHasher13;

use crate::scan::targets::{PortList, TargetSet};

/// A keyed bijection on `0..n`, so every probe is sent exactly once in an
/// order that spreads load over hosts and ports.
///
/// A balanced Feistel network permutes the smallest even-bit-width domain
/// holding `n`; values outside `0..n` are walked through the cipher again
/// (cycle walking), which keeps it a bijection on `0..n`.
#[derive(Clone, Debug)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [SipHasher13; 4],
}

impl Permutation {
    pub fn new(n: u64, seed: [u64; 2]) -> Self {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let half_bits = bits.div_ceil(2);
        let keys = [0u64, 1, 2, 3].map(|r| SipHasher13::new_with_keys(seed[0] ^ r, seed[1]));
        Self { n, half_bits, keys }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The `i`-th element of the permuted order (`i < len()`).
    pub fn get(&self, i: u64) -> u64 {
        self.walk(i, Self::encrypt)
    }

    /// The position of `x` in the permuted order: the inverse of [`Self::get`].
    pub fn position(&self, x: u64) -> u64 {
        self.walk(x, Self::decrypt)
    }

    fn walk(&self, start: u64, step: fn(&Self, u64) -> u64) -> u64 {
        debug_assert!(start < self.n);
        let mut x = step(self, start);
        while x >= self.n {
            x = step(self, x);
        }
        x
    }

    fn round(&self, r: usize, half: u64) -> u64 {
        self.keys[r].hash(&half.to_le_bytes()) & ((1 << self.half_bits) - 1)
    }

    fn encrypt(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for r in 0..self.keys.len() {
            (left, right) = (right, left ^ self.round(r, right));
        }
        (left << self.half_bits) | right
    }

    fn decrypt(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for r in (0..self.keys.len()).rev() {
            (left, right) = (right ^ self.round(r, left), left);
        }
        (left << self.half_bits) | right
    }
}

/// A fresh random secret.
pub fn new_key() -> ProbeKey {
    let mut rng = rand::rng();
    [rng.random(), rng.random()]
}

/// What a probe is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP / ICMPv6 echo (host discovery only).
    Icmp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "icmp" => Ok(Self::Icmp),
            other => Err(format!("{other:?} is not a protocol (expected tcp or udp)")),
        }
    }
}

/// One probe: where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    pub addr: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// `--shard i/N`: this agent's share of a scan split over N agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based, as masscan counts.
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Self = Self { index: 1, count: 1 };
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid shard {s:?}: expected i/N with 1 <= i <= N, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(err)?;
        let (index, count) = (
            i.trim().parse::<u64>().map_err(|_| err())?,
            n.trim().parse::<u64>().map_err(|_| err())?,
        );
        if index == 0 || index > count {
            return Err(err());
        }
        Ok(Self { index, count })
    }
}

/// Every probe of a scan, in a keyed pseudo-random order. Shard `i/N`
/// takes every N-th position of the full order, so the shards of one seed
/// are disjoint and together are exactly the whole scan.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    targets: TargetSet,
    /// (protocol, port) pairs probed on every address, sorted.
    units: Vec<(Protocol, u16)>,
    /// The same as runs of consecutive ports: each reply looks its port up
    /// here, in a few cache lines, not in a binary search of `units`.
    runs: Vec<UnitRun>,
    order: Permutation,
    shard: Shard,
}

/// Ports `first..=last` of `protocol`, which are `units[start..]`.
#[derive(Clone, Copy, Debug)]
struct UnitRun {
    protocol: Protocol,
    first: u16,
    last: u16,
    start: u32,
}

/// `units` (sorted, without duplicates) as runs of consecutive ports.
fn unit_runs(units: &[(Protocol, u16)]) -> Vec<UnitRun> {
    let mut runs: Vec<UnitRun> = Vec::new();
    for (i, &(protocol, port)) in units.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if r.protocol == protocol && u32::from(r.last) + 1 == u32::from(port) => {
                r.last = port;
            }
            _ => runs.push(UnitRun {
                protocol,
                first: port,
                last: port,
                start: i as u32,
            }),
        }
    }
    runs
}

impl ProbePlan {
    pub fn new(
        targets: TargetSet,
        mut units: Vec<(Protocol, u16)>,
        seed: [u64; 2],
        shard: Shard,
    ) -> Self {
        units.sort_unstable();
        units.dedup();
        let n = targets.len() * units.len() as u64;
        Self {
            targets,
            runs: unit_runs(&units),
            units,
            order: Permutation::new(n, seed),
            shard,
        }
    }

    /// Port probes: every port of `ports` for each protocol.
    pub fn ports(
        targets: TargetSet,
        ports: &PortList,
        protocols: &[Protocol],
        seed: [u64; 2],
        shard: Shard,
    ) -> Self {
        let units = protocols
            .iter()
            .flat_map(|&p| ports.as_slice().iter().map(move |&port| (p, port)))
            .collect();
        Self::new(targets, units, seed, shard)
    }

    /// Number of probes in this shard (first attempts).
    pub fn len(&self) -> u64 {
        let first = self.shard.index - 1;
        self.order
            .len()
            .saturating_sub(first)
            .div_ceil(self.shard.count)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn targets(&self) -> &TargetSet {
        &self.targets
    }

    /// How many probes each address gets.
    pub fn per_address(&self) -> usize {
        self.units.len()
    }

    pub fn get(&self, i: u64) -> Probe {
        self.get_with_host(i).0
    }

    /// The `i`-th probe and the index of its address in the target set.
    pub fn get_with_host(&self, i: u64) -> (Probe, u64) {
        let x = self.order.get(self.shard.index - 1 + i * self.shard.count);
        let n_units = self.units.len() as u64;
        let host = x / n_units;
        let addr = self.targets.get(host).expect("index within the target set");
        let (protocol, port) = self.units[(x % n_units) as usize];
        (
            Probe {
                addr,
                protocol,
                port,
            },
            host,
        )
    }

    /// The position of `probe` in this shard's order, if it is part of it.
    pub fn index_of(&self, probe: &Probe) -> Option<u64> {
        let key = (probe.protocol, probe.port);
        let run = self.runs[self.runs.partition_point(|r| (r.protocol, r.last) < key)..]
            .first()
            .filter(|r| r.protocol == probe.protocol && r.first <= probe.port)?;
        let unit = u64::from(run.start) + u64::from(probe.port - run.first);
        let x = self.targets.index_of(probe.addr)? * self.units.len() as u64 + unit;
        let p = self.order.position(x);
        let offset = p.checked_sub(self.shard.index - 1)?;
        (offset % self.shard.count == 0).then_some(offset / self.shard.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn permutation_is_a_bijection_with_an_inverse() {
        for n in [1u64, 2, 3, 5, 16, 17, 1000, 65535, 3 * 65535] {
            let p = Permutation::new(n, [n, 42]);
            let seen: HashSet<u64> = (0..n).map(|i| p.get(i)).collect();
            assert_eq!(seen.len() as u64, n, "n = {n}");
            assert!(seen.iter().all(|&x| x < n));
            for i in (0..n).step_by((n as usize / 500).max(1)) {
                assert_eq!(p.position(p.get(i)), i, "n = {n}, i = {i}");
            }
        }
    }

    #[test]
    fn permutation_depends_on_the_seed_and_shuffles() {
        let a: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, [1, 2]).get(i))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, [3, 4]).get(i))
            .collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
    }

    fn plan(shard: Shard) -> ProbePlan {
        let t = TargetSet::parse(&["198.18.0.0/30", "2001:db8::/127"]).unwrap();
        let p = PortList::parse("22,80,443").unwrap();
        ProbePlan::ports(t, &p, &[Protocol::Tcp, Protocol::Udp], [9, 9], shard)
    }

    #[test]
    fn plan_covers_every_probe_once_and_inverts() {
        let plan = plan(Shard::WHOLE);
        let all: HashSet<Probe> = (0..plan.len()).map(|i| plan.get(i)).collect();
        assert_eq!(all.len(), 6 * 3 * 2);
        for i in 0..plan.len() {
            assert_eq!(plan.index_of(&plan.get(i)), Some(i));
        }
        let v6 = Probe {
            addr: "2001:db8::1".parse().unwrap(),
            protocol: Protocol::Udp,
            port: 443,
        };
        assert!(all.contains(&v6));
        assert_eq!(plan.index_of(&Probe { port: 444, ..v6 }), None);
    }

    /// Replies are looked up by runs of consecutive ports: every port of
    /// every run is found, none between or beside them, nor of a protocol
    /// the plan does not probe.
    #[test]
    fn reply_lookup_finds_exactly_the_planned_ports() {
        let t = TargetSet::parse(&["198.18.0.1"]).unwrap();
        let ports = PortList::parse("1-3,7,9-10,65534-65535").unwrap();
        let plan = ProbePlan::ports(
            t,
            &ports,
            &[Protocol::Tcp, Protocol::Udp],
            [1, 1],
            Shard::WHOLE,
        );
        let addr = "198.18.0.1".parse().unwrap();
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
            for port in [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 65533, 65534, 65535] {
                let probe = Probe {
                    addr,
                    protocol,
                    port,
                };
                let planned = protocol != Protocol::Icmp && ports.as_slice().contains(&port);
                match plan.index_of(&probe) {
                    Some(i) => assert!(planned && plan.get(i) == probe, "{protocol} {port}"),
                    None => assert!(!planned, "{protocol} {port} not found"),
                }
            }
        }
    }

    #[test]
    fn shards_are_disjoint_and_their_union_is_the_scan() {
        let whole: HashSet<Probe> = {
            let p = plan(Shard::WHOLE);
            (0..p.len()).map(|i| p.get(i)).collect()
        };
        for count in [2, 3, 5, 36, 40] {
            let mut union = HashSet::new();
            let mut total = 0;
            for index in 1..=count {
                let p = plan(Shard { index, count });
                total += p.len();
                for i in 0..p.len() {
                    let probe = p.get(i);
                    assert_eq!(p.index_of(&probe), Some(i));
                    union.insert(probe);
                }
            }
            assert_eq!(
                total,
                whole.len() as u64,
                "{count} shards overlap or miss probes"
            );
            assert_eq!(union, whole);
        }
    }

    #[test]
    fn shard_specs() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
