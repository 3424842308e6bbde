//! Tables keyed by packet id (or by topic alias, also a `u16`): a `HashMap` with a hasher
//! made for small integer keys. The default SipHash is built to resist collision attacks on
//! keys an attacker chooses freely; a packet id table holds at most Receive Maximum
//! entries (alias tables at most Topic Alias Maximum), so its worst case is bounded by the
//! limit anyway, and a multiplication is all the mixing `u16` keys need. The hasher has no
//! state, which also keeps an empty table at 32 bytes instead of 48.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A table keyed by packet id.
pub(crate) type PkidMap<V> = HashMap<u16, V, BuildHasherDefault<PkidHasher>>;

/// Fibonacci hashing of a `u16`: the key times 2^64/φ, so that both the low bits (the
/// bucket) and the high bits (the table's control byte) vary with every bit of the key.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PkidHasher(u64);

impl Hasher for PkidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u16` keys; any other key still hashes correctly, byte by byte.
        for b in bytes {
            self.write_u16(u16::from(*b));
        }
    }
}

/// Memory a table holds outside itself: its buckets (entries and control bytes), roughly.
pub(crate) fn heap_size<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    if map.capacity() == 0 {
        return 0;
    }
    let buckets = (map.capacity() * 8 / 7).next_power_of_two();
    buckets * (std::mem::size_of::<(K, V)>() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_is_small_and_holds_nothing() {
        let mut m: PkidMap<u32> = PkidMap::default();
        assert_eq!(std::mem::size_of_val(&m), 32);
        assert_eq!(heap_size(&m), 0);
        for id in 1..=1000u16 {
            m.insert(id, u32::from(id));
        }
        assert!((1..=1000u16).all(|id| m.get(&id) == Some(&u32::from(id))));
        assert!(heap_size(&m) >= 1000 * 7);
    }

    #[test]
    fn consecutive_ids_spread_over_the_control_bits() {
        // hashbrown takes the top 7 bits as the control byte: consecutive ids must not share it.
        let tops: std::collections::HashSet<u64> = (1..=128u16)
            .map(|id| {
                let mut h = PkidHasher::default();
                h.write_u16(id);
                h.finish() >> 57
            })
            .collect();
        assert!(
            tops.len() > 64,
            "only {} distinct control bytes",
            tops.len()
        );
    }
}
