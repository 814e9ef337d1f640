//! Keyed probe cookies (SipHash-2-4, as masscan does).
//!
//! A probe's TCP sequence number is a keyed hash of its 4-tuple, so a reply is
//! ours exactly when `ack - 1` equals the hash. No per-probe state is kept.
//! The hash is written out for fixed-size input because the eBPF side needs a
//! loop-free, bounded function; tests check it against the `siphasher` crate.

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

/// The sequence number of a TCP probe from `local:local_port` to
/// `remote:remote_port` (IPv4 addresses as host-order integers).
#[inline(always)]
pub fn tcp_cookie(
    key: &ProbeKey,
    remote: u32,
    local: u32,
    remote_port: u16,
    local_port: u16,
) -> u32 {
    let addrs = (u64::from(remote) << 32) | u64::from(local);
    let ports = (u64::from(remote_port) << 16) | u64::from(local_port) | (6 << 32);
    siphash24(key, &[addrs, ports]) as u32
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
    fn cookie_depends_on_every_field_and_the_key() {
        let key = [11, 22];
        let base = tcp_cookie(&key, 0xc612_0002, 0xc612_0001, 22, 61000);
        assert_ne!(base, tcp_cookie(&key, 0xc612_0003, 0xc612_0001, 22, 61000));
        assert_ne!(base, tcp_cookie(&key, 0xc612_0002, 0xc612_0009, 22, 61000));
        assert_ne!(base, tcp_cookie(&key, 0xc612_0002, 0xc612_0001, 23, 61000));
        assert_ne!(base, tcp_cookie(&key, 0xc612_0002, 0xc612_0001, 22, 61001));
        assert_ne!(
            base,
            tcp_cookie(&[11, 23], 0xc612_0002, 0xc612_0001, 22, 61000)
        );
        assert_eq!(base, tcp_cookie(&key, 0xc612_0002, 0xc612_0001, 22, 61000));
    }
}
