//! Sharding work over the pods of one workload (`docs/architecture.md#deployment`): a name
//! (a partition-sync group, a stream-sync table) belongs to shard `fnv1a(name) mod count`, the
//! same on every build and platform, so that every pod of an Indexed Job or a StatefulSet
//! agrees on who owns what without talking to the others.

use crate::canon::fnv1a;

/// The shard (0-based) that owns `name` among `count` shards (`count` 0 or 1: shard 0).
pub fn shard_of(name: &str, count: u64) -> u64 {
    if count <= 1 {
        0
    } else {
        fnv1a(name.as_bytes()) % count
    }
}

/// Whether shard `index` of `count` owns `name`.
pub fn owns(name: &str, index: u64, count: u64) -> bool {
    shard_of(name, count) == index
}

/// The ordinal of a StatefulSet pod from its name (`stream-sync-2` → 2).
pub fn pod_ordinal(pod_name: &str) -> Option<u64> {
    let (_, n) = pod_name.rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_exactly_one_owner() {
        for count in [1u64, 2, 3, 7] {
            for name in ["recipes", "ingredient_nutrition", "stats", "a", ""] {
                let owners = (0..count).filter(|i| owns(name, *i, count)).count();
                assert_eq!(owners, 1, "{name} over {count}");
            }
        }
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn the_assignment_is_stable() {
        // Fixed forever: pods of different builds must agree (FNV-1a 64 of "a" is a published
        // test vector; 0xaf63dc4c8601ec8c mod 3 = 1, mod 7 = 5).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("a", 3), 1);
        assert_eq!(shard_of("a", 7), 5);
    }

    #[test]
    fn ordinals_come_from_the_pod_name() {
        assert_eq!(pod_ordinal("stream-sync-0"), Some(0));
        assert_eq!(pod_ordinal("stream-sync-12"), Some(12));
        assert_eq!(pod_ordinal("stream-sync"), None);
        assert_eq!(pod_ordinal("stream-sync-abc12"), None);
        assert_eq!(pod_ordinal("stream-sync-"), None);
    }
}
