//! Maps keyed by values that are digests already (rule keys, label sets'
//! digests): the hasher passes the digest through instead of hashing it
//! again.

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
