//! Keyed probe cookies (SipHash-2-4, as masscan does).
//!
//! One keyed hash of (remote address, local address, remote port, protocol)
//! gives both a probe's local port (within its scan's slot) and its TCP
//! sequence number, so a reply is ours exactly when both match. No
//! per-probe state is kept. The hash is written out for fixed-size input
//! because the eBPF side needs a loop-free, bounded function; tests check it
//! against the `siphasher` crate.

/// A scan's secret key. Random per scan, never logged.
pub type ProbeKey = [u64; 2];

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of the little-endian bytes of `words`: the same value as
/// hashing those `8 * N` bytes with a standard SipHash-2-4 implementation.
#[inline(always)]
pub fn siphash24<const N: usize>(key: &ProbeKey, words: &[u64; N]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    let mut i = 0;
    while i < N {
        v[3] ^= words[i];
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= words[i];
        i += 1;
    }
    // Message length is a multiple of 8: the last block holds only the length.
    let last = ((N as u64 * 8) & 0xff) << 56;
    v[3] ^= last;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// An IP address in a family-tagged 16-byte form (IPv4 in the first 4 bytes),
/// the layout the XDP program and the agent share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub family: u8,
    pub bytes: [u8; 16],
}

impl Addr {
    pub const fn v4(octets: [u8; 4]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[0] = octets[0];
        bytes[1] = octets[1];
        bytes[2] = octets[2];
        bytes[3] = octets[3];
        Self { family: 4, bytes }
    }

    pub const fn v6(bytes: [u8; 16]) -> Self {
        Self { family: 6, bytes }
    }

    pub fn to_ip(&self) -> core::net::IpAddr {
        if self.family == 4 {
            let b = &self.bytes;
            core::net::IpAddr::V4(core::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            core::net::IpAddr::V6(core::net::Ipv6Addr::from(self.bytes))
        }
    }

    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        let b = &self.bytes;
        let hi = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let lo = u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        (hi, lo)
    }
}

impl From<core::net::IpAddr> for Addr {
    fn from(ip: core::net::IpAddr) -> Self {
        match ip {
            core::net::IpAddr::V4(a) => Self::v4(a.octets()),
            core::net::IpAddr::V6(a) => Self::v6(a.octets()),
        }
    }
}

/// The keyed hash of one probe's flow.
#[inline(always)]
pub fn probe_hash(
    key: &ProbeKey,
    remote: &Addr,
    local: &Addr,
    remote_port: u16,
    protocol: u8,
) -> u64 {
    let tail = (u64::from(remote_port) << 8) | u64::from(protocol);
    if remote.family == 4 {
        let (r, _) = remote.words();
        let (l, _) = local.words();
        siphash24(key, &[(r & 0xffff_ffff_0000_0000) | (l >> 32), tail])
    } else {
        let (rh, rl) = remote.words();
        let (lh, ll) = local.words();
        siphash24(key, &[rh, rl, lh, ll, tail | (6 << 32)])
    }
}

/// The TCP sequence number a probe with hash `hash` carries.
#[inline(always)]
pub const fn seq_of(hash: u64) -> u32 {
    hash as u32
}

/// The local port (offset within the slot) a probe with hash `hash` uses.
#[inline(always)]
pub fn port_offset_of(hash: u64, ports_per_slot: u16) -> u16 {
    if ports_per_slot == 0 {
        return 0;
    }
    ((hash >> 32) % u64::from(ports_per_slot)) as u16
}

/// A second keyed hash of a probe, from its [`probe_hash`]: the secrets its
/// IP header and payload carry beyond the port and TCP sequence number
/// (SipHash of one word, so it never equals a [`probe_hash`] input).
#[inline(always)]
pub fn tag_of(key: &ProbeKey, hash: u64) -> u64 {
    siphash24(key, &[hash])
}

/// The IPv4 identification (family 4) or IPv6 flow label (family 6) a probe
/// with tag `tag` carries; ICMP errors quote it. Bits 48..63 (IPv4) or
/// 44..63 (IPv6) of the tag, apart from the tag bits [`payload_secret`]
/// uses, so a quoted UDP probe's identification and checksum are
/// independent. Never zero for IPv4: the kernel fills in a zero
/// identification itself.
#[inline(always)]
pub const fn ident_of(family: u8, tag: u64) -> u32 {
    if family == 4 {
        match (tag >> 48) as u16 {
            0 => 1,
            id => id as u32,
        }
    } else {
        ((tag >> 44) & 0xf_ffff) as u32
    }
}

/// The 64-bit secret a UDP probe's payload carries (request ids, see
/// [`crate::payload`]): bits 0..31 of the hash (the TCP sequence number's
/// bits, unused by UDP probes) and bits 0..31 of the tag, so it is
/// independent of the port (hash bits 32..63) and of [`ident_of`].
#[inline(always)]
pub const fn payload_secret(hash: u64, tag: u64) -> u64 {
    (tag << 32) | (hash & 0xffff_ffff)
}

/// The 8 data bytes an echo request carries (big-endian) and its reply
/// echoes: the whole tag, checked on top of [`echo_id_seq`] (the hash's
/// bits). An echo reply has its own IP header, so the request's
/// [`ident_of`] (the same tag bits) is never checked against it.
#[inline(always)]
pub const fn echo_data(tag: u64) -> u64 {
    tag
}

/// ICMP echo identifier and sequence: the slot in the top 3 identifier
/// bits (echo replies carry no port), the hash in the rest.
#[inline(always)]
pub const fn echo_id_seq(hash: u64, slot: u32) -> (u16, u16) {
    (
        ((slot as u16 & 0x7) << 13) | (hash as u16 & 0x1fff),
        (hash >> 16) as u16,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::Hasher;
    use siphasher::sip::SipHasher24;

    fn reference(key: &ProbeKey, words: &[u64]) -> u64 {
        let mut h = SipHasher24::new_with_keys(key[0], key[1]);
        for w in words {
            h.write(&w.to_le_bytes());
        }
        h.finish()
    }

    #[test]
    fn matches_the_siphasher_crate() {
        let keys = [[0, 0], [1, 2], [u64::MAX, 0x0123_4567_89ab_cdef]];
        for key in &keys {
            assert_eq!(siphash24(key, &[]), reference(key, &[]));
            assert_eq!(siphash24(key, &[42]), reference(key, &[42]));
            let w = [7, u64::MAX, 0xdead_beef, 3, 9];
            assert_eq!(siphash24(key, &w), reference(key, &w));
        }
    }

    #[test]
    fn hash_depends_on_every_field_and_the_key() {
        let key = [11, 22];
        let r = Addr::v4([198, 18, 0, 2]);
        let l = Addr::v4([198, 18, 0, 1]);
        let base = probe_hash(&key, &r, &l, 22, 6);
        assert_ne!(
            base,
            probe_hash(&key, &Addr::v4([198, 18, 0, 3]), &l, 22, 6)
        );
        assert_ne!(
            base,
            probe_hash(&key, &r, &Addr::v4([198, 18, 0, 9]), 22, 6)
        );
        assert_ne!(base, probe_hash(&key, &r, &l, 23, 6));
        assert_ne!(base, probe_hash(&key, &r, &l, 22, 17));
        assert_ne!(base, probe_hash(&[11, 23], &r, &l, 22, 6));
        assert_eq!(base, probe_hash(&key, &r, &l, 22, 6));
        let mut r6 = [0u8; 16];
        r6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let l6 = Addr::v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let h6 = probe_hash(&key, &Addr::v6(r6), &l6, 22, 6);
        r6[15] = 1;
        assert_ne!(h6, probe_hash(&key, &Addr::v6(r6), &l6, 22, 6));
    }

    #[test]
    fn tags_and_what_derives_from_them() {
        let key = [11, 22];
        let h = probe_hash(
            &key,
            &Addr::v4([198, 18, 0, 2]),
            &Addr::v4([198, 18, 0, 1]),
            53,
            17,
        );
        let tag = tag_of(&key, h);
        assert_ne!(tag, h);
        assert_ne!(tag, tag_of(&[11, 23], h));
        assert_eq!(tag, reference(&key, &[h]));
        assert_eq!(
            ident_of(4, 0),
            1,
            "a zero IPv4 identification would be replaced"
        );
        assert_eq!(ident_of(4, 0xabcd << 48), 0xabcd);
        assert_eq!(ident_of(6, u64::MAX), 0xf_ffff);
        assert_eq!(ident_of(6, 0xabcde << 44), 0xabcde);
        // The payload secret takes the tag's low half and the hash's low
        // half: neither the port (hash bits 32..63) nor the identification.
        assert_eq!(
            payload_secret(0xffff_ffff_0000_0001, 0xffff_0000_0000_0002),
            0x2_0000_0001
        );
    }

    #[test]
    fn echo_ids_carry_the_slot() {
        let (id, _) = echo_id_seq(u64::MAX, 5);
        assert_eq!(id >> 13, 5);
        assert_eq!(port_offset_of(u64::MAX, 0), 0);
        assert!(port_offset_of(u64::MAX, 567) < 567);
    }
}
