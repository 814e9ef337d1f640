//! Header parsing over any bounds-checked view of a frame.
//!
//! The XDP program implements [`Frame`] over its packet pointers, the host
//! tests over byte slices, so the same parser runs in both places.

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Bounds-checked reads at byte offsets of a frame.
pub trait Frame {
    /// `N` bytes at `offset`, or `None` if the frame is shorter.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    #[inline(always)]
    fn u8_at(&self, offset: usize) -> Option<u8> {
        self.bytes::<1>(offset).map(|b| b[0])
    }
    #[inline(always)]
    fn be16_at(&self, offset: usize) -> Option<u16> {
        self.bytes::<2>(offset).map(u16::from_be_bytes)
    }
    #[inline(always)]
    fn be32_at(&self, offset: usize) -> Option<u32> {
        self.bytes::<4>(offset).map(u32::from_be_bytes)
    }
}

impl Frame for [u8] {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.get(offset..offset.checked_add(N)?)?.try_into().ok()
    }
}

/// The fields of a TCP segment that may answer a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpReply {
    /// Source address (the probed host), host order.
    pub remote: u32,
    /// Destination address (us), host order.
    pub local: u32,
    pub remote_port: u16,
    pub local_port: u16,
    pub ack: u32,
    pub flags: u8,
    pub ttl: u8,
}

impl TcpReply {
    /// SYN-ACK or RST with ACK: the two answers a SYN probe can get.
    #[inline(always)]
    pub fn is_probe_answer(&self) -> bool {
        let syn_ack = self.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK;
        let rst = self.flags & (TCP_SYN | TCP_RST | TCP_ACK) == TCP_RST | TCP_ACK;
        syn_ack || rst
    }
}

/// Offset of the layer-3 header and its ethertype, skipping up to two VLAN
/// tags (DTNs often sit on tagged links).
#[inline(always)]
fn l3<F: Frame + ?Sized>(f: &F) -> Option<(usize, u16)> {
    let mut off = 12;
    let mut ethertype = f.be16_at(off)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        off += 4;
        ethertype = f.be16_at(off)?;
        if ethertype == ETH_P_8021Q {
            off += 4;
            ethertype = f.be16_at(off)?;
        }
    }
    Some((off + 2, ethertype))
}

/// Parses an Ethernet frame carrying IPv4/TCP (first fragment only).
/// Anything else, including every truncated frame, yields `None`.
#[inline(always)]
pub fn parse_tcp_reply<F: Frame + ?Sized>(f: &F) -> Option<TcpReply> {
    let (ip, ethertype) = l3(f)?;
    if ethertype != ETH_P_IP {
        return None;
    }
    // Whole headers are copied out with one bounds check each: the eBPF
    // verifier only trusts reads through the very pointer it saw checked.
    let iph: [u8; 20] = f.bytes(ip)?;
    let ihl = usize::from(iph[0] & 0x0f) * 4;
    if iph[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    // A non-first fragment has no TCP header at its start.
    if u16::from_be_bytes([iph[6], iph[7]]) & 0x1fff != 0 || iph[9] != IPPROTO_TCP {
        return None;
    }
    let tcp: [u8; 20] = f.bytes(ip + ihl)?;
    let be16 = |i: usize| u16::from_be_bytes([tcp[i], tcp[i + 1]]);
    Some(TcpReply {
        remote: u32::from_be_bytes([iph[12], iph[13], iph[14], iph[15]]),
        local: u32::from_be_bytes([iph[16], iph[17], iph[18], iph[19]]),
        remote_port: be16(0),
        local_port: be16(2),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        flags: tcp[13],
        ttl: iph[8],
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use etherparse::PacketBuilder;
    use std::vec::Vec;

    fn syn_ack(ack: u32) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 61)
            .tcp(22, 61000, 777, 1024)
            .syn()
            .ack(ack);
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn parses_a_syn_ack() {
        let r = parse_tcp_reply(syn_ack(1234).as_slice()).unwrap();
        assert_eq!(r.remote, 0xc612_0002);
        assert_eq!(r.local, 0xc612_0001);
        assert_eq!((r.remote_port, r.local_port), (22, 61000));
        assert_eq!(r.ack, 1234);
        assert_eq!(r.ttl, 61);
        assert!(r.is_probe_answer());
    }

    #[test]
    fn every_truncation_is_rejected() {
        let frame = syn_ack(1);
        assert_eq!(frame.len(), ETH_HLEN + 20 + 20);
        for len in 0..frame.len() {
            assert_eq!(parse_tcp_reply(&frame[..len]), None, "length {len}");
        }
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let frame = syn_ack(5);
        let mut tagged = frame[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged.extend_from_slice(&frame[12..]);
        assert_eq!(
            parse_tcp_reply(tagged.as_slice()),
            parse_tcp_reply(frame.as_slice())
        );
    }

    #[test]
    fn ip_options_move_the_tcp_header() {
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
            .tcp(80, 61001, 1, 1024)
            .rst()
            .ack(99);
        let mut plain = Vec::new();
        b.write(&mut plain, &[]).unwrap();
        // Insert 4 bytes of NOP options and fix IHL and total length.
        let mut f = plain[..34].to_vec();
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&plain[34..]);
        f[14] = 0x46;
        f[17] += 4;
        let r = parse_tcp_reply(f.as_slice()).unwrap();
        assert_eq!((r.remote_port, r.local_port, r.ack), (80, 61001, 99));
        assert!(r.is_probe_answer());
    }

    #[test]
    fn non_answers_are_recognised() {
        let r = TcpReply {
            remote: 0,
            local: 0,
            remote_port: 1,
            local_port: 2,
            ack: 0,
            flags: TCP_SYN,
            ttl: 1,
        };
        assert!(!r.is_probe_answer());
        assert!(
            !TcpReply {
                flags: TCP_ACK,
                ..r
            }
            .is_probe_answer()
        );
        assert!(
            !TcpReply {
                flags: TCP_RST,
                ..r
            }
            .is_probe_answer()
        );
        assert!(
            TcpReply {
                flags: TCP_RST | TCP_ACK,
                ..r
            }
            .is_probe_answer()
        );
        assert!(
            !TcpReply {
                flags: TCP_SYN | TCP_ACK | TCP_RST,
                ..r
            }
            .is_probe_answer()
        );
    }

    #[test]
    fn other_protocols_are_ignored() {
        let b = PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
            .udp(53, 61000);
        let mut f = Vec::new();
        b.write(&mut f, &[1, 2, 3]).unwrap();
        assert_eq!(parse_tcp_reply(f.as_slice()), None);
        let mut arp = syn_ack(1);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_tcp_reply(arp.as_slice()), None);
    }
}
