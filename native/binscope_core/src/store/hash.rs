//! Hashing for the registry's maps. Every put and every release looks up its label and its owner
//! (and an owner's reservations), so the hasher is on the hot path: std's SipHash over a label's
//! text or over a pid (which the NIF's pid type hashes by calling into the VM) cost more than
//! the rest of a small put's bookkeeping.
//!
//! [`Prehashed`] mixes the words a key writes with one multiply per word. It is only used for keys
//! whose words nobody can aim: labels write their own hash (seeded xxh3 of the text, see
//! `label`), owners are pids (assigned by the VM) or test integers, resource addresses (the
//! handle index's keys) are the VM's allocations.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// A random seed per OS process, for hashes of caller-chosen text.
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
    })
}

/// A multiply-rotate hasher over the words a key writes (see the module docs).
#[derive(Default, Clone, Copy)]
pub struct Prehashed(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes its bucket from the low bits and its tag from the top 7; a product's
        // low bits depend only on its factors' low bits, so mix the high half down (murmur3's
        // finaliser step).
        let x = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

/// The `BuildHasher` of the registry's label and owner maps.
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<Prehashed>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn nearby_words_spread_over_buckets() {
        let b = BuildHasherDefault::<Prehashed>::default();
        // Pid words differ in a few middle bits; the low 10 bits (a 1024-bucket table) must
        // still take as many values as random hashes would (about 1 - 1/e of 1024, 647).
        let low: std::collections::HashSet<u64> = (0..1024u64)
            .map(|i| b.hash_one((i << 4) | 3) & 1023)
            .collect();
        assert!(low.len() > 600, "{} distinct buckets", low.len());
    }
}
