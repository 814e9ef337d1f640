//! Wire formats of the probes (and of the RST that closes a half-open
//! connection), IPv4 and IPv6, written into caller-owned buffers: nothing is
//! allocated per packet.
//!
//! Every probe carries an `ident`: its IPv4 identification or IPv6 flow
//! label (see [`scanner_common::cookie::ident_of`]), which ICMP errors quote
//! and the XDP program checks.

use std::net::IpAddr;

use scanner_common::{
    checksum,
    frame::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_RST, TCP_SYN},
};

use super::payloads;

/// Room for the largest probe: IPv6 + TCP with options, or IPv6 + UDP + payload.
pub const MAX_PACKET: usize = 40 + 8 + payloads::MAX_LEN;

const TTL: u8 = 64;
const TCP_WINDOW: u16 = 1024;
const TCP_MSS: u16 = 1460;

/// Writes the IP header for `payload_len` bytes of `protocol` with
/// identification (IPv4) or flow label (IPv6, 20 bits) `ident`; returns its
/// length.
fn ip_header(
    out: &mut [u8],
    (src, dst): (IpAddr, IpAddr),
    protocol: u8,
    ident: u32,
    payload_len: usize,
) -> usize {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut out[..20];
            h.copy_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0, 0, TTL, protocol, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
            h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
            // The kernel keeps a non-zero identification of a raw packet.
            h[4..6].copy_from_slice(&(ident as u16).to_be_bytes());
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            // The kernel fills in the checksum of a raw IPv4 header; ours
            // keeps the buffer a valid packet on its own.
            let sum = checksum::fold(checksum::sum_words(0, h));
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            20
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = &mut out[..40];
            h[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, protocol, TTL]);
            h[..4].copy_from_slice(&(0x6000_0000 | (ident & 0xf_ffff)).to_be_bytes());
            h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            40
        }
        _ => unreachable!("source and destination of one family"),
    }
}

fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    match (src, dst) {
        // ICMPv4, unlike ICMPv6, has no pseudo-header.
        (IpAddr::V4(_), IpAddr::V4(_)) if protocol == IPPROTO_ICMP => {
            checksum::fold(checksum::sum_words(0, segment))
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::ipv4_transport(s.octets(), d.octets(), protocol, segment)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::ipv6_transport(s.octets(), d.octets(), protocol, segment)
        }
        _ => unreachable!("source and destination of one family"),
    }
}

/// A TCP segment with `flags`; SYNs carry an MSS option like real stacks do.
pub fn tcp(
    out: &mut [u8],
    (src, dst): (IpAddr, IpAddr),
    ports: (u16, u16),
    seq: u32,
    flags: u8,
    ident: u32,
) -> usize {
    let tcp_len = if flags & TCP_SYN != 0 { 24 } else { 20 };
    let ip_len = ip_header(out, (src, dst), IPPROTO_TCP, ident, tcp_len);
    let t = &mut out[ip_len..ip_len + tcp_len];
    t.fill(0);
    t[0..2].copy_from_slice(&ports.0.to_be_bytes());
    t[2..4].copy_from_slice(&ports.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&TCP_WINDOW.to_be_bytes());
    if tcp_len == 24 {
        t[20..22].copy_from_slice(&[2, 4]);
        t[22..24].copy_from_slice(&TCP_MSS.to_be_bytes());
    }
    let sum = transport_checksum(src, dst, IPPROTO_TCP, t);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ip_len + tcp_len
}

pub fn syn(
    out: &mut [u8],
    addrs: (IpAddr, IpAddr),
    ports: (u16, u16),
    seq: u32,
    ident: u32,
) -> usize {
    tcp(out, addrs, ports, seq, TCP_SYN, ident)
}

/// A scan's SYN probes to one address family from one source, built once:
/// each probe copies the template and writes only what differs
/// (destination, ports, sequence number, ident), and its checksums are the
/// template's partial sums plus those words (RFC 1624), so no probe sums
/// its whole header again.
#[derive(Clone, Copy, Debug)]
pub struct SynTemplate {
    bytes: [u8; SYN_V6_LEN],
    len: usize,
    /// The IPv4 header's sum with destination and identification zero
    /// (unused for IPv6, which has no header checksum).
    ip_sum: u32,
    /// The TCP checksum's sum (pseudo-header included) with destination,
    /// ports and sequence number zero.
    tcp_sum: u32,
}

/// An IPv6 SYN: 40 bytes of IP header, 24 of TCP (with the MSS option).
const SYN_V6_LEN: usize = 64;

impl SynTemplate {
    /// The template for SYNs from `src`.
    pub fn new(src: IpAddr) -> Self {
        let blank = match src {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        let mut bytes = [0; SYN_V6_LEN];
        let len = syn(&mut bytes, (src, blank), (0, 0), 0, 0);
        let ip_len = len - 24;
        // Both checksums zero, so the sums are of the fixed words alone.
        let tcp = ip_len;
        bytes[tcp + 16..tcp + 18].fill(0);
        let ip_sum = if src.is_ipv4() {
            bytes[10..12].fill(0);
            checksum::sum_words(0, &bytes[..20])
        } else {
            0
        };
        let src_words = match src {
            IpAddr::V4(a) => checksum::sum_words(0, &a.octets()),
            IpAddr::V6(a) => checksum::sum_words(0, &a.octets()),
        };
        let tcp_sum =
            checksum::sum_words(src_words + u32::from(IPPROTO_TCP) + 24, &bytes[tcp..len]);
        Self {
            bytes,
            len,
            ip_sum,
            tcp_sum,
        }
    }

    /// Writes the SYN to `dst` into `out` (as [`syn`] would); returns its
    /// length. `dst` must be of the template's family.
    pub fn write(
        &self,
        out: &mut [u8],
        dst: IpAddr,
        ports: (u16, u16),
        seq: u32,
        ident: u32,
    ) -> usize {
        let out = &mut out[..self.len];
        out.copy_from_slice(&self.bytes[..self.len]);
        let (tcp, dst_words) = match dst {
            IpAddr::V4(d) => {
                let d = d.octets();
                out[16..20].copy_from_slice(&d);
                let id = ident as u16;
                out[4..6].copy_from_slice(&id.to_be_bytes());
                let dst_words = checksum::sum_words(0, &d);
                let sum = checksum::fold(self.ip_sum + dst_words + u32::from(id));
                out[10..12].copy_from_slice(&sum.to_be_bytes());
                (20, dst_words)
            }
            IpAddr::V6(d) => {
                let d = d.octets();
                out[24..40].copy_from_slice(&d);
                out[..4].copy_from_slice(&(0x6000_0000 | (ident & 0xf_ffff)).to_be_bytes());
                (40, checksum::sum_words(0, &d))
            }
        };
        let t = &mut out[tcp..];
        t[0..2].copy_from_slice(&ports.0.to_be_bytes());
        t[2..4].copy_from_slice(&ports.1.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        let varying = u32::from(ports.0) + u32::from(ports.1) + (seq >> 16) + (seq & 0xffff);
        let sum = checksum::fold(self.tcp_sum + dst_words + varying);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        self.len
    }
}

/// The RST that closes the half-open connection a SYN-ACK announced (the
/// kernel picks its IPv4 identification).
pub fn rst(out: &mut [u8], addrs: (IpAddr, IpAddr), ports: (u16, u16), seq: u32) -> usize {
    tcp(out, addrs, ports, seq, TCP_RST, 0)
}

/// A UDP datagram with the payload the destination port's service answers,
/// carrying `secret` (see [`payloads`]).
pub fn udp(
    out: &mut [u8],
    (src, dst): (IpAddr, IpAddr),
    ports: (u16, u16),
    ident: u32,
    secret: u64,
) -> usize {
    let mut buf = [0u8; payloads::MAX_LEN];
    let len = payloads::write(ports.1, secret, &mut buf);
    let payload = &buf[..len];
    let udp_len = 8 + payload.len();
    let ip_len = ip_header(out, (src, dst), IPPROTO_UDP, ident, udp_len);
    let u = &mut out[ip_len..ip_len + udp_len];
    u[0..2].copy_from_slice(&ports.0.to_be_bytes());
    u[2..4].copy_from_slice(&ports.1.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[6..8].fill(0);
    u[8..].copy_from_slice(payload);
    let sum = match transport_checksum(src, dst, IPPROTO_UDP, u) {
        0 => 0xffff,
        s => s,
    };
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    ip_len + udp_len
}

/// An ICMP (or ICMPv6) echo request with 8 data bytes, for host discovery.
pub fn echo(
    out: &mut [u8],
    (src, dst): (IpAddr, IpAddr),
    (id, seq): (u16, u16),
    data: u64,
    ident: u32,
) -> usize {
    let (protocol, ty) = if src.is_ipv4() {
        (IPPROTO_ICMP, 8)
    } else {
        (IPPROTO_ICMPV6, 128)
    };
    let ip_len = ip_header(out, (src, dst), protocol, ident, 16);
    let m = &mut out[ip_len..ip_len + 16];
    m[..8].copy_from_slice(&[ty, 0, 0, 0, 0, 0, 0, 0]);
    m[4..6].copy_from_slice(&id.to_be_bytes());
    m[6..8].copy_from_slice(&seq.to_be_bytes());
    m[8..].copy_from_slice(&data.to_be_bytes());
    let sum = transport_checksum(src, dst, protocol, m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    ip_len + 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const V4: (&str, &str) = ("198.18.0.1", "198.18.0.2");
    const V6: (&str, &str) = ("2001:db8::1", "2001:db8::2");

    fn addrs((s, d): (&str, &str)) -> (IpAddr, IpAddr) {
        (s.parse().unwrap(), d.parse().unwrap())
    }

    const IDENT: u32 = 0xabcde;

    /// Parses `pkt` with etherparse, which also verifies every checksum we
    /// compute, and checks it carries IDENT.
    fn check(pkt: &[u8], src: IpAddr, dst: IpAddr) -> TransportSlice<'_> {
        let sliced = SlicedPacket::from_ip(pkt).unwrap();
        match (&sliced.net, src) {
            (Some(NetSlice::Ipv4(ip)), IpAddr::V4(s)) => {
                assert_eq!(ip.header().source_addr(), s);
                assert_eq!(usize::from(ip.header().total_len()), pkt.len());
                assert_eq!(ip.header().identification(), IDENT as u16);
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
            }
            (Some(NetSlice::Ipv6(ip)), IpAddr::V6(s)) => {
                assert_eq!(ip.header().source_addr(), s);
                assert_eq!(usize::from(ip.header().payload_length()) + 40, pkt.len());
                assert_eq!(ip.header().flow_label().value(), IDENT);
                assert_eq!(ip.header().version(), 6);
            }
            other => panic!("unexpected {other:?}"),
        }
        let _ = dst;
        sliced.transport.unwrap()
    }

    /// The template writes exactly what `syn` builds from scratch, for
    /// both families and edge values (all-ones words, zero ports).
    #[test]
    fn syn_templates_equal_syns_built_whole() {
        let cases: [(IpAddr, IpAddr); 4] = [
            addrs(V4),
            addrs(V6),
            (
                "255.255.255.254".parse().unwrap(),
                "198.19.255.255".parse().unwrap(),
            ),
            (
                "2001:db8:ffff::ffff".parse().unwrap(),
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            ),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for (src, dst) in cases {
            let template = SynTemplate::new(src);
            for i in 0..2000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (ports, seq, ident) = match i {
                    0 => ((0, 0), 0, 0),
                    1 => ((u16::MAX, u16::MAX), u32::MAX, u32::MAX),
                    _ => (
                        (x as u16, (x >> 16) as u16),
                        (x >> 32) as u32,
                        x as u32 ^ (x >> 40) as u32,
                    ),
                };
                let (mut whole, mut fast) = ([0u8; MAX_PACKET], [0xaau8; MAX_PACKET]);
                let n = syn(&mut whole, (src, dst), ports, seq, ident);
                assert_eq!(template.write(&mut fast, dst, ports, seq, ident), n);
                assert_eq!(
                    whole[..n],
                    fast[..n],
                    "{src} -> {dst} {ports:?} {seq:#x} {ident:#x}"
                );
            }
        }
    }

    #[test]
    fn syn_and_rst_in_both_families() {
        for (src, dst) in [addrs(V4), addrs(V6)] {
            let mut buf = [0u8; MAX_PACKET];
            let n = syn(&mut buf, (src, dst), (61234, 8080), 0xdead_beef, IDENT);
            let TransportSlice::Tcp(t) = check(&buf[..n], src, dst) else {
                panic!("not tcp")
            };
            assert!(t.syn() && !t.ack());
            assert_eq!(
                (t.source_port(), t.destination_port(), t.sequence_number()),
                (61234, 8080, 0xdead_beef)
            );
            let expect = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    t.to_header()
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), &[])
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    t.to_header()
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), &[])
                }
                _ => unreachable!(),
            };
            assert_eq!(t.checksum(), expect.unwrap());
            let n = tcp(&mut buf, (src, dst), (61234, 8080), 7, TCP_RST, IDENT);
            let TransportSlice::Tcp(t) = check(&buf[..n], src, dst) else {
                panic!("not tcp")
            };
            assert!(t.rst() && !t.syn());
            assert_eq!(rst(&mut buf, (src, dst), (61234, 8080), 7), n);
        }
    }

    #[test]
    fn udp_carries_the_service_payload() {
        for (src, dst) in [addrs(V4), addrs(V6)] {
            let mut buf = [0u8; MAX_PACKET];
            let n = udp(&mut buf, (src, dst), (61000, 53), IDENT, 0x1234_5678);
            let TransportSlice::Udp(u) = check(&buf[..n], src, dst) else {
                panic!("not udp")
            };
            let mut want = [0u8; payloads::MAX_LEN];
            let len = payloads::write(53, 0x1234_5678, &mut want);
            assert_eq!(u.payload(), &want[..len]);
            assert_eq!(&u.payload()[..2], &[0x56, 0x78], "the DNS id");
            let expect = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    u.to_header()
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload())
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    u.to_header()
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload())
                }
                _ => unreachable!(),
            };
            assert_eq!(u.checksum(), expect.unwrap());
        }
    }

    #[test]
    fn echo_requests_are_valid() {
        for (src, dst) in [addrs(V4), addrs(V6)] {
            let mut buf = [0u8; MAX_PACKET];
            let n = echo(
                &mut buf,
                (src, dst),
                (0xa123, 9),
                0x0102_0304_0506_0708,
                IDENT,
            );
            match check(&buf[..n], src, dst) {
                TransportSlice::Icmpv4(m) => {
                    assert_eq!(
                        m.icmp_type(),
                        etherparse::Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader {
                            id: 0xa123,
                            seq: 9
                        })
                    );
                    assert_eq!(m.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
                    assert_eq!(
                        m.checksum(),
                        m.header().icmp_type.calc_checksum(m.payload())
                    );
                }
                TransportSlice::Icmpv6(m) => {
                    assert_eq!(
                        m.icmp_type(),
                        etherparse::Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader {
                            id: 0xa123,
                            seq: 9
                        })
                    );
                    assert_eq!(m.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
                    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
                        unreachable!()
                    };
                    assert_eq!(
                        m.checksum(),
                        m.icmp_type()
                            .calc_checksum(s.octets(), d.octets(), m.payload())
                            .unwrap()
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
