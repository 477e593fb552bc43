//! Which shard a key belongs to.
//!
//! A key's shard is decided by its hash tag if it has one, else by the whole key: the tag is
//! the part between the first `{` and the first `}` after it, when that part is not empty (the
//! rule of Redis Cluster). Keys with the same tag (`{user:42}:name`, `{user:42}:email`) are
//! always in the same shard, so one atomic batch can change them together; a key with no tag,
//! or with `{}` first, is hashed whole.
//!
//! This function is part of Mosaic's data format, not a detail of the client: every client
//! routes a key by it, so all of them must compute the same shard for every key. Changing it
//! (or the hash) moves every key to another shard: existing data would no longer be found.
//! Storage nodes placed by a controller check every request's `shard_id` against it (with the
//! cluster's shard count) and refuse a key named in another shard (docs/migration.md).

use crate::ids::ShardId;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Returns the FNV-1a 64-bit hash of `bytes`.
#[must_use]
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(FNV_OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME))
}

/// The part of `key` its shard is decided by: its hash tag (module documentation), else the
/// whole key.
#[must_use]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|byte| *byte == b'{') else { return key };
    let after = &key[open + 1..];
    match after.iter().position(|byte| *byte == b'}') {
        Some(close) if close > 0 => &after[..close],
        Some(_) | None => key,
    }
}

/// Returns the shard `key` belongs to among `shard_count` shards:
/// `fnv1a_64(hash_tag(key)) % shard_count`.
///
/// # Panics
/// If `shard_count` is 0 (a cluster always has at least one shard).
#[must_use]
pub fn shard_for_key(key: &[u8], shard_count: u32) -> ShardId {
    assert!(shard_count > 0, "shard_for_key: shard_count is 0; a cluster has at least one shard");
    let shard = fnv1a_64(hash_tag(key)) % u64::from(shard_count);
    // The remainder is below `shard_count`, which is a u32.
    ShardId(u32::try_from(shard).expect("a remainder modulo a u32 fits in a u32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_map_to_fixed_shards() {
        // These values are part of the data format: if this test fails, stored keys would move.
        assert_eq!(shard_for_key(b"", 64), ShardId(37));
        assert_eq!(shard_for_key(b"a", 64), ShardId(12));
        assert_eq!(shard_for_key(b"foobar", 64), ShardId(40));
        assert_eq!(shard_for_key(b"user:42", 64), ShardId(2));
        assert_eq!(shard_for_key(&[0x00, 0xff], 64), ShardId(32));
        assert_eq!(shard_for_key(b"foobar", 10), ShardId(8));
        assert_eq!(shard_for_key(b"user:42", 10), ShardId(0));
    }

    #[test]
    fn a_hash_tag_is_the_first_non_empty_part_in_braces() {
        assert_eq!(hash_tag(b"{user:42}:name"), b"user:42");
        assert_eq!(hash_tag(b"profile:{user:42}"), b"user:42");
        // Only the first `{` and the first `}` after it count.
        assert_eq!(hash_tag(b"{a}{b}"), b"a");
        assert_eq!(hash_tag(b"x{a{b}c}"), b"a{b");
        // No tag: hashed whole.
        for key in [&b"plain"[..], b"{}x{a}", b"{open", b"close}", b"", b"}{"] {
            assert_eq!(hash_tag(key), key, "{key:?}");
        }
        assert_eq!(hash_tag(b"}{a}"), b"a");
    }

    #[test]
    fn keys_with_one_hash_tag_share_their_shard() {
        for shard_count in [7, 64, 1000] {
            let shard = shard_for_key(b"user:42", shard_count);
            for key in [&b"{user:42}"[..], b"{user:42}:name", b"x{user:42}y", b"{user:42}{z}"] {
                assert_eq!(shard_for_key(key, shard_count), shard, "{key:?}");
            }
        }
        // Part of the data format, like the values above.
        assert_eq!(shard_for_key(b"{user:42}:email", 64), ShardId(2));
        assert_eq!(shard_for_key(b"{}user:42", 64), ShardId(fnv_shard(b"{}user:42", 64)));
    }

    fn fnv_shard(key: &[u8], shard_count: u32) -> u32 {
        u32::try_from(fnv1a_64(key) % u64::from(shard_count)).expect("below a u32")
    }

    #[test]
    fn one_shard_holds_every_key() {
        for key in [&b""[..], b"a", b"foobar", &[0xff; 100]] {
            assert_eq!(shard_for_key(key, 1), ShardId(0));
        }
    }

    #[test]
    fn shards_stay_below_the_shard_count() {
        for shard_count in [1, 2, 3, 7, 64, 1000, u32::MAX] {
            for key in 0u32..200 {
                let shard = shard_for_key(&key.to_be_bytes(), shard_count);
                assert!(shard.0 < shard_count, "key {key}: shard {shard} of {shard_count}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "shard_count is 0")]
    fn zero_shards_is_refused() {
        let _ = shard_for_key(b"a", 0);
    }
}
