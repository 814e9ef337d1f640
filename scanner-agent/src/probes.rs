//! Which probe goes out when, and what it looks like on the wire.

use std::net::Ipv4Addr;

use rand::Rng as _;
use scanner_common::{ProbeKey, checksum, frame::IPPROTO_TCP, tcp_cookie};
use siphasher::sip::SipHasher13;

use crate::targets::{PortList, TargetSet};

/// A keyed bijection on `0..n`, so every (address, port) pair is visited
/// exactly once in an order that spreads load over hosts and ports.
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
        debug_assert!(i < self.n);
        let mut x = i;
        loop {
            x = self.encrypt(x);
            if x < self.n {
                return x;
            }
        }
    }

    fn encrypt(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for key in &self.keys {
            let f = key.hash(&right.to_le_bytes()) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }
}

/// A fresh random secret for one scan.
pub fn new_key() -> ProbeKey {
    let mut rng = rand::rng();
    [rng.random(), rng.random()]
}

/// One probe: where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// All probes of a scan in their pseudo-random order.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    targets: TargetSet,
    ports: PortList,
    order: Permutation,
}

impl ProbePlan {
    pub fn new(targets: TargetSet, ports: PortList, seed: [u64; 2]) -> Self {
        let n = targets.len() * ports.len() as u64;
        Self {
            targets,
            ports,
            order: Permutation::new(n, seed),
        }
    }

    pub fn len(&self) -> u64 {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn targets(&self) -> &TargetSet {
        &self.targets
    }

    pub fn get(&self, i: u64) -> Probe {
        let x = self.order.get(i);
        let ports = self.ports.as_slice();
        let n_ports = ports.len() as u64;
        let addr = self
            .targets
            .get(x / n_ports)
            .expect("index within the target set");
        Probe {
            addr,
            port: ports[(x % n_ports) as usize],
        }
    }
}

pub const SYN_LEN: usize = 44;
const TCP_MSS: u16 = 1460;

/// Writes an IPv4 TCP SYN carrying the probe cookie into `out`.
///
/// The kernel fills in the IP checksum and total length of a raw IP packet;
/// everything else, including the TCP checksum, is ours.
pub fn write_syn(
    out: &mut [u8; SYN_LEN],
    key: &ProbeKey,
    src: Ipv4Addr,
    local_port: u16,
    probe: Probe,
) {
    let seq = tcp_cookie(key, probe.addr.into(), src.into(), probe.port, local_port);
    write_tcp(
        out,
        src,
        local_port,
        probe,
        seq,
        scanner_common::frame::TCP_SYN,
        Some(TCP_MSS),
    );
}

pub const RST_LEN: usize = 40;

/// Writes the RST that closes the half-open connection a SYN-ACK announced.
pub fn write_rst(
    out: &mut [u8; RST_LEN],
    key: &ProbeKey,
    src: Ipv4Addr,
    local_port: u16,
    probe: Probe,
) {
    let seq =
        tcp_cookie(key, probe.addr.into(), src.into(), probe.port, local_port).wrapping_add(1);
    write_tcp(
        out,
        src,
        local_port,
        probe,
        seq,
        scanner_common::frame::TCP_RST,
        None,
    );
}

fn write_tcp(
    out: &mut [u8],
    src: Ipv4Addr,
    local_port: u16,
    probe: Probe,
    seq: u32,
    flags: u8,
    mss: Option<u16>,
) {
    let total = out.len();
    let (ip, tcp) = out.split_at_mut(20);
    ip.copy_from_slice(&[
        0x45,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        64,
        IPPROTO_TCP,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&probe.addr.octets());
    tcp.fill(0);
    tcp[0..2].copy_from_slice(&local_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&probe.port.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = ((tcp.len() / 4) as u8) << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    if let Some(mss) = mss {
        tcp[20..22].copy_from_slice(&[2, 4]);
        tcp[22..24].copy_from_slice(&mss.to_be_bytes());
    }
    let sum = checksum::ipv4_transport(src.octets(), probe.addr.octets(), IPPROTO_TCP, tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use std::collections::HashSet;

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 5, 16, 17, 1000, 65535, 3 * 65535] {
            let p = Permutation::new(n, [n, 42]);
            let seen: HashSet<u64> = (0..n).map(|i| p.get(i)).collect();
            assert_eq!(seen.len() as u64, n, "n = {n}");
            assert!(seen.iter().all(|&x| x < n));
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

    #[test]
    fn plan_covers_every_pair_once() {
        let t = TargetSet::parse(&["198.18.0.0/30"]).unwrap();
        let p = PortList::parse("22,80,443").unwrap();
        let plan = ProbePlan::new(t, p, [9, 9]);
        let all: HashSet<Probe> = (0..plan.len()).map(|i| plan.get(i)).collect();
        assert_eq!(all.len(), 12);
        assert!(all.contains(&Probe {
            addr: Ipv4Addr::new(198, 18, 0, 3),
            port: 443
        }));
    }

    #[test]
    fn syn_is_a_valid_segment_with_the_cookie() {
        let key = [5, 6];
        let src = Ipv4Addr::new(198, 18, 0, 1);
        let probe = Probe {
            addr: Ipv4Addr::new(198, 18, 0, 2),
            port: 8080,
        };
        let mut pkt = [0u8; SYN_LEN];
        write_syn(&mut pkt, &key, src, 61234, probe);
        // The kernel fills the IP checksum in; do it here so the parser accepts it.
        let sum = checksum::fold(checksum::sum_words(0, &pkt[..20]));
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
        let sliced = SlicedPacket::from_ip(&pkt).unwrap();
        let Some(NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().destination_addr(), probe.addr);
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not tcp")
        };
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (61234, 8080));
        assert_eq!(
            tcp.sequence_number(),
            tcp_cookie(&key, probe.addr.into(), src.into(), 8080, 61234)
        );
        let expect = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), &[])
            .unwrap();
        assert_eq!(tcp.checksum(), expect);

        let mut rst = [0u8; RST_LEN];
        write_rst(&mut rst, &key, src, 61234, probe);
        let sliced = SlicedPacket::from_ip(&rst).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not tcp")
        };
        assert!(tcp.rst() && !tcp.syn());
        assert_eq!(
            tcp.sequence_number(),
            tcp_cookie(&key, probe.addr.into(), src.into(), 8080, 61234).wrapping_add(1)
        );
    }
}
