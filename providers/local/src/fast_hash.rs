//! A fast keyed hash for the maps every request looks in: the router's, the listeners', the
//! policies' and keys', the counters', the upstream endpoints'; and for the configuration
//! loader's document cache, keyed by each document's text.
//!
//! The keys are short (hostnames, path segments, addresses, key digests) and every request
//! hashes several of them, so SipHash would take a third of a lookup. This hash reads eight
//! bytes per multiply and is keyed with a random seed per map, so route authors cannot pick keys
//! that collide.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` using [`SeededState`].
pub type FastMap<K, V> = HashMap<K, V, SeededState>;

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// Builds [`FoldHasher`]s from a random seed drawn when the map is created.
#[derive(Clone, Debug)]
pub struct SeededState {
    seed: u64,
}

impl Default for SeededState {
    fn default() -> Self {
        Self { seed: RandomState::new().build_hasher().finish() }
    }
}

impl BuildHasher for SeededState {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { state: self.seed }
    }
}

/// Mixes each 8-byte word in with a 64×64→128-bit multiply folded back to 64 bits.
#[derive(Debug)]
pub struct FoldHasher {
    state: u64,
}

fn fold_mul(x: u64, k: u64) -> u64 {
    let product = u128::from(x) * u128::from(k);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut state = self.state;
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(word);
            state = fold_mul(state ^ u64::from_le_bytes(buf), K1);
        }
        let tail = words.remainder();
        let mut buf = [0u8; 8];
        buf[..tail.len()].copy_from_slice(tail);
        // The length keeps inputs that differ only by trailing zero bytes apart.
        state = fold_mul(state ^ u64::from_le_bytes(buf), K2 ^ bytes.len() as u64);
        self.state = state;
    }

    fn write_u8(&mut self, byte: u8) {
        self.state = fold_mul(self.state ^ u64::from(byte), K1);
    }

    fn finish(&self) -> u64 {
        fold_mul(self.state, K2)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn similar_keys_hash_apart() {
        let state = SeededState::default();
        let keys: Vec<String> = (0..10_000)
            .map(|i| format!("svc{i}"))
            .chain(["", "\0", "\0\0", "a", "a\0", "abcdefgh", "abcdefgh\0"].map(String::from))
            .collect();
        let hashes: HashSet<u64> = keys.iter().map(|k| state.hash_one(k.as_str())).collect();
        assert_eq!(hashes.len(), keys.len());
        // Buckets of a 16k-slot table stay balanced, by the low bits (the slot) and the high
        // ones (hashbrown's tag).
        for slot in [|h: u64| h & 0x3fff, |h: u64| h >> 50] {
            let mut buckets = vec![0u32; 1 << 14];
            for k in &keys {
                buckets[slot(state.hash_one(k.as_str())) as usize] += 1;
            }
            assert!(buckets.iter().all(|&n| n < 12), "max bucket {}", buckets.iter().max().unwrap());
        }
    }

    #[test]
    fn seeds_differ_between_maps() {
        let (a, b) = (SeededState::default(), SeededState::default());
        assert_ne!(a.hash_one("key"), b.hash_one("key"));
    }
}
