//! Internet checksums (RFC 1071) for the probes the agent builds.

/// Adds `data` as big-endian 16-bit words to a running 32-bit sum.
#[inline(always)]
pub fn sum_words(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a running sum into the final one's-complement checksum.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checksum of a TCP or UDP segment over IPv4 (pseudo-header included).
pub fn ipv4_transport(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8]) -> u16 {
    let mut sum = sum_words(0, &src);
    sum = sum_words(sum, &dst);
    sum += u32::from(protocol) + segment.len() as u32;
    fold(sum_words(sum, segment))
}

/// Checksum of a TCP, UDP or ICMPv6 segment over IPv6 (pseudo-header included).
pub fn ipv6_transport(src: [u8; 16], dst: [u8; 16], protocol: u8, segment: &[u8]) -> u16 {
    let mut sum = sum_words(0, &src);
    sum = sum_words(sum, &dst);
    sum += u32::from(protocol) + segment.len() as u32;
    fold(sum_words(sum, segment))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use std::vec::Vec;

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(0, &data)), !0xddf2);
    }

    #[test]
    fn matches_etherparse_for_tcp() {
        let b = PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .tcp(61000, 443, 0xdead_beef, 1024)
            .syn();
        let mut pkt = Vec::new();
        b.write(&mut pkt, &[]).unwrap();
        let sliced = SlicedPacket::from_ip(&pkt).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("no tcp")
        };
        let mut segment = pkt[20..].to_vec();
        segment[16..18].copy_from_slice(&[0, 0]);
        let ours = ipv4_transport([198, 18, 0, 1], [198, 18, 0, 2], 6, &segment);
        assert_eq!(ours, tcp.checksum());
    }

    #[test]
    fn matches_etherparse_for_udp_over_ipv6() {
        let (src, dst) = (
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        );
        let mut pkt = Vec::new();
        PacketBuilder::ipv6(src, dst, 64)
            .udp(61000, 53)
            .write(&mut pkt, &[1, 2, 3, 4, 5])
            .unwrap();
        let expect = u16::from_be_bytes([pkt[46], pkt[47]]);
        let mut segment = pkt[40..].to_vec();
        segment[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(ipv6_transport(src, dst, 17, &segment), expect);
    }
}
