//! Header parsing over any bounds-checked view of a frame.
//!
//! The XDP program implements [`Frame`] over its packet pointers, the host
//! tests over byte slices, so the same parser runs in both places. Whole
//! headers are copied out with one bounds check each: the eBPF verifier only
//! trusts reads through the very pointer it saw checked.

use crate::{cookie::Addr, payload::ANSWER_PREFIX};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Bounds-checked reads at byte offsets of a frame.
pub trait Frame {
    /// `N` bytes at `offset`, or `None` if the frame is shorter.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Frame for [u8] {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.get(offset..offset.checked_add(N)?)?.try_into().ok()
    }
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The transport header fields a probe reply can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        /// The first `payload_len` bytes of the payload (at most
        /// [`ANSWER_PREFIX`]; the rest is zero), where answers echo
        /// request ids.
        payload: [u8; ANSWER_PREFIX],
        payload_len: u8,
    },
    /// Destination unreachable (ICMP type 3 / ICMPv6 type 1) quoting the
    /// start of the packet that caused it.
    Unreachable {
        icmp_type: u8,
        code: u8,
        quoted: Quoted,
    },
    /// Echo reply (ICMP type 0 / ICMPv6 type 129) with at least 8 data
    /// bytes (our echo requests carry 8).
    EchoReply {
        id: u16,
        seq: u16,
        /// The first 8 data bytes, big-endian.
        data: u64,
    },
}

/// The quoted header of the packet an ICMP error is about: one of our probes,
/// if it is ours, so `src` is us and `dst` the probed host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub protocol: u8,
    pub src: Addr,
    pub dst: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP sequence number (zero for UDP).
    pub seq: u32,
    /// IPv4 identification, or IPv6 flow label.
    pub ident: u32,
    /// UDP length and checksum (zero for TCP).
    pub udp_len: u16,
    pub udp_check: u16,
}

/// An IP packet as far as replies to probes are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: Addr,
    pub dst: Addr,
    pub ttl: u8,
    pub transport: Transport,
}

/// Offset of the layer-3 header and its ethertype, skipping up to two VLAN
/// tags (DTNs often sit on tagged links).
#[inline(always)]
fn l3<F: Frame + ?Sized>(f: &F) -> Option<(usize, u16)> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes(f.bytes(off)?);
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        off += 4;
        ethertype = u16::from_be_bytes(f.bytes(off)?);
        if ethertype == ETH_P_8021Q {
            off += 4;
            ethertype = u16::from_be_bytes(f.bytes(off)?);
        }
    }
    Some((off + 2, ethertype))
}

/// An IP header: addresses, protocol, hop limit, identification (IPv4) or
/// flow label (IPv6), and where the payload starts.
struct Ip {
    src: Addr,
    dst: Addr,
    protocol: u8,
    ttl: u8,
    ident: u32,
    payload: usize,
}

#[inline(always)]
fn ipv4<F: Frame + ?Sized>(f: &F, off: usize) -> Option<Ip> {
    let h: [u8; 20] = f.bytes(off)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    // A non-first fragment has no transport header at its start.
    if h[0] >> 4 != 4 || ihl < 20 || be16(&h, 6) & 0x1fff != 0 {
        return None;
    }
    Some(Ip {
        src: Addr::v4([h[12], h[13], h[14], h[15]]),
        dst: Addr::v4([h[16], h[17], h[18], h[19]]),
        protocol: h[9],
        ttl: h[8],
        ident: u32::from(be16(&h, 4)),
        payload: off + ihl,
    })
}

/// IPv6 with the transport header right after the fixed header (replies to
/// probes carry no extension headers).
#[inline(always)]
fn ipv6<F: Frame + ?Sized>(f: &F, off: usize) -> Option<Ip> {
    let h: [u8; 40] = f.bytes(off)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Some(Ip {
        src: Addr::v6(src),
        dst: Addr::v6(dst),
        protocol: h[6],
        ttl: h[7],
        ident: be32(&h, 0) & 0xf_ffff,
        payload: off + 40,
    })
}

/// The quoted probe inside an ICMP error, starting at `off`.
#[inline(always)]
fn quoted<F: Frame + ?Sized>(f: &F, off: usize, v6: bool) -> Option<Quoted> {
    let ip = if v6 { ipv6(f, off)? } else { ipv4(f, off)? };
    // ICMP errors quote at least the first 8 bytes of the transport header.
    let t: [u8; 8] = f.bytes(ip.payload)?;
    let tcp = ip.protocol == IPPROTO_TCP;
    Some(Quoted {
        protocol: ip.protocol,
        src: ip.src,
        dst: ip.dst,
        src_port: be16(&t, 0),
        dst_port: be16(&t, 2),
        seq: if tcp { be32(&t, 4) } else { 0 },
        ident: ip.ident,
        udp_len: if tcp { 0 } else { be16(&t, 4) },
        udp_check: if tcp { 0 } else { be16(&t, 6) },
    })
}

/// The first bytes of a UDP payload at `off`: up to [`ANSWER_PREFIX`], no
/// more than `len` and than the frame holds. Byte by byte, so every read
/// has a constant size the verifier can check.
#[inline(always)]
fn udp_prefix<F: Frame + ?Sized>(f: &F, off: usize, len: usize) -> ([u8; ANSWER_PREFIX], u8) {
    let mut p = [0u8; ANSWER_PREFIX];
    let mut n = 0;
    while n < ANSWER_PREFIX && n < len {
        match f.bytes::<1>(off + n) {
            Some([b]) => p[n] = b,
            None => break,
        }
        n += 1;
    }
    (p, n as u8)
}

/// Parses an Ethernet frame carrying IPv4 or IPv6 with TCP, UDP or the ICMP
/// messages that answer probes. Anything else, including every truncated
/// frame, yields `None`.
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(f: &F) -> Option<Packet> {
    let (off, ethertype) = l3(f)?;
    let v6 = match ethertype {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        _ => return None,
    };
    let ip = if v6 { ipv6(f, off)? } else { ipv4(f, off)? };
    let transport = match (ip.protocol, v6) {
        (IPPROTO_TCP, _) => {
            let t: [u8; 20] = f.bytes(ip.payload)?;
            Transport::Tcp {
                src_port: be16(&t, 0),
                dst_port: be16(&t, 2),
                seq: be32(&t, 4),
                ack: be32(&t, 8),
                flags: t[13],
            }
        }
        (IPPROTO_UDP, _) => {
            let t: [u8; 8] = f.bytes(ip.payload)?;
            // The UDP length, not the frame's, bounds the payload: short
            // frames carry Ethernet padding.
            let len = usize::from(be16(&t, 4)).saturating_sub(8);
            let (payload, payload_len) = udp_prefix(f, ip.payload + 8, len);
            Transport::Udp {
                src_port: be16(&t, 0),
                dst_port: be16(&t, 2),
                payload,
                payload_len,
            }
        }
        (IPPROTO_ICMP, false) | (IPPROTO_ICMPV6, true) => {
            let t: [u8; 8] = f.bytes(ip.payload)?;
            let (unreachable, echo_reply) = if v6 { (1, 129) } else { (3, 0) };
            if t[0] == unreachable {
                Transport::Unreachable {
                    icmp_type: t[0],
                    code: t[1],
                    quoted: quoted(f, ip.payload + 8, v6)?,
                }
            } else if t[0] == echo_reply {
                let data: [u8; 8] = f.bytes(ip.payload + 8)?;
                Transport::EchoReply {
                    id: be16(&t, 4),
                    seq: be16(&t, 6),
                    data: u64::from_be_bytes(data),
                }
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(Packet {
        src: ip.src,
        dst: ip.dst,
        ttl: ip.ttl,
        transport,
    })
}

/// [`parse`] for the XDP program: a separate BPF function (its stack frame
/// is gone before validation runs, keeping within the 512-byte limit) that
/// writes into `out` (the verifier forbids returning a stack pointer, which
/// a returned struct would be).
#[cfg_attr(target_arch = "bpf", inline(never))]
pub fn parse_into<F: Frame + ?Sized>(f: &F, out: &mut Packet) -> bool {
    match parse(f) {
        Some(p) => {
            *out = p;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};
    use std::vec::Vec;

    const T4: [u8; 4] = [198, 18, 0, 2];
    const U4: [u8; 4] = [198, 18, 0, 1];
    const T6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const U6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
        PacketBuilder::ethernet2([2; 6], [3; 6])
    }

    fn syn_ack() -> Vec<u8> {
        let mut out = Vec::new();
        eth()
            .ipv4(T4, U4, 61)
            .tcp(22, 61000, 777, 1024)
            .syn()
            .ack(1234)
            .write(&mut out, &[])
            .unwrap();
        out
    }

    /// Our SYN probe as an IP packet, the way an ICMP error quotes it.
    fn probe_v4() -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(U4, T4, 64)
            .tcp(61000, 22, 0xabcd_0123, 1024)
            .syn()
            .write(&mut out, &[])
            .unwrap();
        out
    }

    #[test]
    fn parses_a_syn_ack() {
        let p = parse(syn_ack().as_slice()).unwrap();
        assert_eq!((p.src, p.dst, p.ttl), (Addr::v4(T4), Addr::v4(U4), 61));
        assert_eq!(
            p.transport,
            Transport::Tcp {
                src_port: 22,
                dst_port: 61000,
                seq: 777,
                ack: 1234,
                flags: TCP_SYN | TCP_ACK
            }
        );
    }

    #[test]
    fn every_truncation_is_rejected() {
        let frames = [syn_ack(), unreachable_v4(13), unreachable_v6(), udp_v6()];
        for frame in frames {
            assert!(parse(frame.as_slice()).is_some());
            for len in 0..frame.len() {
                // A truncated ICMP error may still quote enough; everything
                // shorter than the headers we read must be refused.
                if let Some(p) = parse(&frame[..len]) {
                    panic!("length {len} of {} parsed as {p:?}", frame.len());
                }
            }
        }
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let frame = syn_ack();
        for tags in [
            &[0x81, 0x00, 0x00, 0x0a][..],
            &[0x88, 0xa8, 0, 1, 0x81, 0, 0, 2],
        ] {
            let mut tagged = frame[..12].to_vec();
            tagged.extend_from_slice(tags);
            tagged.extend_from_slice(&frame[12..]);
            assert_eq!(parse(tagged.as_slice()), parse(frame.as_slice()));
        }
    }

    #[test]
    fn ip_options_move_the_tcp_header() {
        let plain = syn_ack();
        let mut f = plain[..34].to_vec();
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&plain[34..]);
        f[14] = 0x46;
        f[17] += 4;
        assert_eq!(
            parse(f.as_slice()).unwrap().transport,
            parse(plain.as_slice()).unwrap().transport
        );
    }

    fn unreachable_v4(code: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let icmp = Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::from_values(code, 0).unwrap(),
        );
        eth()
            .ipv4([198, 18, 0, 254], U4, 64)
            .icmpv4(icmp)
            .write(&mut out, &probe_v4()[..28])
            .unwrap();
        out
    }

    #[test]
    fn icmp_errors_expose_the_quoted_probe() {
        let p = parse(unreachable_v4(13).as_slice()).unwrap();
        assert_eq!(p.src, Addr::v4([198, 18, 0, 254]));
        let Transport::Unreachable {
            icmp_type: 3,
            code: 13,
            quoted,
        } = p.transport
        else {
            panic!("{p:?}")
        };
        assert_eq!(quoted.protocol, IPPROTO_TCP);
        assert_eq!((quoted.src, quoted.dst), (Addr::v4(U4), Addr::v4(T4)));
        assert_eq!(
            (quoted.src_port, quoted.dst_port, quoted.seq),
            (61000, 22, 0xabcd_0123)
        );
    }

    fn unreachable_v6() -> Vec<u8> {
        let mut probe = Vec::new();
        PacketBuilder::ipv6(U6, T6, 64)
            .udp(61001, 53)
            .write(&mut probe, &[])
            .unwrap();
        let mut out = Vec::new();
        let icmp = Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port);
        eth()
            .ipv6(T6, U6, 64)
            .icmpv6(icmp)
            .write(&mut out, &probe)
            .unwrap();
        out
    }

    fn udp_v6() -> Vec<u8> {
        let mut out = Vec::new();
        eth()
            .ipv6(T6, U6, 63)
            .udp(53, 61001)
            .write(&mut out, &[])
            .unwrap();
        out
    }

    #[test]
    fn ipv6_udp_and_icmpv6() {
        let p = parse(udp_v6().as_slice()).unwrap();
        assert_eq!((p.src, p.dst, p.ttl), (Addr::v6(T6), Addr::v6(U6), 63));
        assert_eq!(
            p.transport,
            Transport::Udp {
                src_port: 53,
                dst_port: 61001,
                payload: [0; ANSWER_PREFIX],
                payload_len: 0,
            }
        );
        let p = parse(unreachable_v6().as_slice()).unwrap();
        let Transport::Unreachable {
            icmp_type: 1,
            code: 4,
            quoted,
        } = p.transport
        else {
            panic!("{p:?}")
        };
        assert_eq!(
            (quoted.protocol, quoted.dst, quoted.dst_port),
            (IPPROTO_UDP, Addr::v6(T6), 53)
        );
        assert_eq!((quoted.udp_len, quoted.seq), (8, 0));
    }

    #[test]
    fn quoted_headers_expose_ip_id_flow_label_and_udp_checksum() {
        let p = parse(unreachable_v4(3).as_slice()).unwrap();
        let Transport::Unreachable { quoted, .. } = p.transport else {
            panic!("{p:?}")
        };
        let probe = probe_v4();
        assert_eq!(
            quoted.ident,
            u32::from(u16::from_be_bytes([probe[4], probe[5]]))
        );
        let mut frame = unreachable_v4(3);
        // The quoted IPv4 header starts after Ethernet, IPv4 and ICMP headers.
        frame[14 + 20 + 8 + 4..14 + 20 + 8 + 6].copy_from_slice(&[0xbe, 0xef]);
        let Transport::Unreachable { quoted, .. } = parse(frame.as_slice()).unwrap().transport
        else {
            panic!()
        };
        assert_eq!(quoted.ident, 0xbeef);

        let mut probe = Vec::new();
        PacketBuilder::ipv6(U6, T6, 64)
            .udp(61001, 53)
            .write(&mut probe, &[9, 9, 9])
            .unwrap();
        probe[1..4].copy_from_slice(&[0x0a, 0xbc, 0xde]);
        let check = u16::from_be_bytes([probe[46], probe[47]]);
        let mut out = Vec::new();
        let icmp = Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port);
        eth()
            .ipv6(T6, U6, 64)
            .icmpv6(icmp)
            .write(&mut out, &probe)
            .unwrap();
        let Transport::Unreachable { quoted, .. } = parse(out.as_slice()).unwrap().transport else {
            panic!()
        };
        assert_eq!(
            (quoted.ident, quoted.udp_len, quoted.udp_check),
            (0xabcde, 11, check)
        );
    }

    fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        eth()
            .ipv4(T4, U4, 63)
            .udp(53, 61001)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn udp_payloads_are_kept_up_to_their_length() {
        let long: Vec<u8> = (1..=40).collect();
        for n in [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 40] {
            let Transport::Udp {
                payload,
                payload_len,
                ..
            } = parse(udp_v4(&long[..n]).as_slice()).unwrap().transport
            else {
                panic!()
            };
            let kept = n.min(ANSWER_PREFIX);
            assert_eq!(usize::from(payload_len), kept, "{n}");
            assert_eq!(&payload[..kept], &long[..kept]);
            assert!(payload[kept..].iter().all(|&b| b == 0));
        }
        // Ethernet padding after a short datagram is not payload.
        let mut padded = udp_v4(&[7, 7]);
        padded.resize(60, 0xee);
        let Transport::Udp {
            payload_len,
            payload,
            ..
        } = parse(padded.as_slice()).unwrap().transport
        else {
            panic!()
        };
        assert_eq!((payload_len, &payload[..3]), (2, &[7, 7, 0][..]));
        // A frame cut short keeps what it holds.
        let frame = udp_v4(&long);
        let Transport::Udp { payload_len, .. } =
            parse(&frame[..frame.len() - 30]).unwrap().transport
        else {
            panic!()
        };
        assert_eq!(payload_len, 10);
    }

    #[test]
    fn echo_replies_and_other_icmp() {
        let mut out = Vec::new();
        let echo = Icmpv4Type::EchoReply(IcmpEchoHeader { id: 0xa001, seq: 7 });
        eth()
            .ipv4(T4, U4, 64)
            .icmpv4(echo.clone())
            .write(&mut out, &[1, 2, 3, 4, 5, 6, 7, 8, 9])
            .unwrap();
        assert_eq!(
            parse(out.as_slice()).unwrap().transport,
            Transport::EchoReply {
                id: 0xa001,
                seq: 7,
                data: 0x0102_0304_0506_0708
            }
        );
        // Without the 8 data bytes our echo requests carry, it is no reply to them.
        let mut short = Vec::new();
        eth()
            .ipv4(T4, U4, 64)
            .icmpv4(echo)
            .write(&mut short, &[1, 2, 3, 4, 5, 6, 7])
            .unwrap();
        assert_eq!(parse(short.as_slice()), None);
        let mut req = Vec::new();
        let echo = Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 7 });
        eth()
            .ipv4(T4, U4, 64)
            .icmpv4(echo)
            .write(&mut req, &[])
            .unwrap();
        assert_eq!(parse(req.as_slice()), None);
        let mut arp = syn_ack();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(arp.as_slice()), None);
    }
}
