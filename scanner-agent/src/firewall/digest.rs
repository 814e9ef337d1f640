//! Values that are digests already (rule keys, label sets' digests,
//! handles): maps whose hasher passes them through, and a fold of many
//! into one, instead of hashing each again.

use std::hash::{BuildHasherDefault, Hasher};

/// The hasher of maps whose keys hash as one well-mixed u64.
pub(super) type ByDigest = BuildHasherDefault<DigestHasher>;

/// Hashes a digest to itself.
#[derive(Default)]
pub(super) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 digests are written; anything else still gets a fold.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, digest: u64) {
        self.0 = digest;
    }
}

/// A value spread over all 64 bits (murmur3's finaliser), so that small
/// numbers such as handles can be folded as digests.
pub(super) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// One step of folding well-mixed digests into one. Each step is a
/// bijection of the running value for a given input, so two sequences of
/// one length that differ in a single place always fold differently.
pub(super) fn fold(running: u64, digest: u64) -> u64 {
    (running.rotate_left(5) ^ digest).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn one_changed_digest_always_changes_the_fold() {
        let digests: Vec<u64> = (0..1000u64)
            .map(|i| i.wrapping_mul(0x2545_f491_4f6c_dd1d))
            .collect();
        let all = digests.iter().fold(0, |r, d| fold(r, *d));
        for at in [0, 1, 499, 999] {
            for other in [0, 1, u64::MAX, digests[at] ^ 1] {
                if other == digests[at] {
                    continue;
                }
                let mut changed = digests.clone();
                changed[at] = other;
                assert_ne!(
                    changed.iter().fold(0, |r, d| fold(r, *d)),
                    all,
                    "{at} {other}"
                );
            }
        }
    }
}
