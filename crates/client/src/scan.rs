//! Scans across shards: what a scan reads ([`ScanRange`]), how ([`ScanOptions`]), and how the
//! pages of the shards it asks merge into one page in key order ([`merge`]).
//!
//! Keys are spread over the shards by hash, so a range of keys is in every shard (a prefix
//! that holds a whole hash tag is in one). A page asks each shard for its first keys in the
//! range, at most a share of the page each, in one read per shard, then keeps the keys up to
//! the lowest last key among the shards that have more: every key of the range up to there is
//! in one of the answers, so the page misses none, and the next page starts just after its
//! last key. The client holds at most about twice a page at once (docs/api.md "Scans").

use bytes::Bytes;
use mosaic_engine::ShardId;
use mosaic_proto::node::SCAN_KEYS_MAX;
use mosaic_proto::pb;
use mosaic_types::{hash_tag, prefix_end, shard_for_key};

use crate::client::Consistency;

/// Which keys a scan reads: from a start key (included) to an end key (excluded), or every
/// key with a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRange {
    start: Bytes,
    end: Option<Bytes>,
    /// The prefix the range was made from: a prefix holding a whole hash tag is in one shard.
    prefix: Option<Bytes>,
}

impl ScanRange {
    /// Every key.
    #[must_use]
    pub fn all() -> Self {
        Self { start: Bytes::new(), end: None, prefix: None }
    }

    /// Every key that starts with `prefix`.
    #[must_use]
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let prefix = prefix.into();
        let end = prefix_end(&prefix).map(Bytes::from);
        Self { start: prefix.clone(), end, prefix: Some(prefix) }
    }

    /// The keys from `start` (included) to `end` (excluded; `None`: to the last key).
    #[must_use]
    pub fn between(start: impl Into<Bytes>, end: Option<Bytes>) -> Self {
        Self { start: start.into(), end, prefix: None }
    }

    /// The first key the range holds.
    #[must_use]
    pub fn start(&self) -> &Bytes {
        &self.start
    }

    /// The key the range stops before, if any.
    #[must_use]
    pub fn end(&self) -> Option<&Bytes> {
        self.end.as_ref()
    }

    /// True when the range holds no key (its end is not above its start).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }

    /// The rest of the range after `key`.
    fn after(&self, key: &[u8]) -> Self {
        let mut start = Vec::with_capacity(key.len() + 1);
        start.extend_from_slice(key);
        start.push(0);
        Self { start: Bytes::from(start), end: self.end.clone(), prefix: self.prefix.clone() }
    }

    /// The shards that may hold keys of the range, of `shard_count`.
    pub(crate) fn shards(&self, shard_count: u32) -> Vec<ShardId> {
        match &self.prefix {
            Some(prefix) if hash_tag(prefix).len() < prefix.len() => {
                vec![shard_for_key(prefix, shard_count)]
            }
            _ => (0..shard_count).map(ShardId).collect(),
        }
    }
}

/// How a scan reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    /// At most this many keys a page, 1 to 10,000.
    pub limit: u32,
    /// At most about this many bytes of keys and values a page (a page always holds a key
    /// when one is left).
    pub limit_bytes: u64,
    /// Leave the values out.
    pub keys_only: bool,
    /// How fresh each shard's part of a page must be.
    pub consistency: Consistency,
    /// How many shards are asked at once.
    pub parallel: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            limit: 1_000,
            limit_bytes: 1 << 20,
            keys_only: false,
            consistency: Consistency::Linearizable,
            parallel: 16,
        }
    }
}

impl ScanOptions {
    /// Why the options cannot scan, if they cannot.
    pub(crate) fn refusal(&self) -> Option<String> {
        if self.limit == 0 || self.limit > SCAN_KEYS_MAX {
            return Some(format!(
                "a scan reads 1 to {SCAN_KEYS_MAX} keys a page, not {}",
                self.limit
            ));
        }
        if self.limit_bytes == 0 {
            return Some("a scan's byte limit must be above 0".into());
        }
        (self.parallel == 0).then(|| "a scan asks at least one shard at a time".into())
    }

    /// The share of a page each of `shards` shards is asked for: twice an even share (so a
    /// page is mostly full), at least 16 keys and 64 KiB, at most the page.
    pub(crate) fn per_shard(&self, shards: usize) -> (u32, u64) {
        let shards = shards.max(1) as u64;
        let keys = (2 * u64::from(self.limit)).div_ceil(shards).max(16);
        let bytes = (2 * self.limit_bytes).div_ceil(shards).max(64 << 10);
        (u32::try_from(keys).unwrap_or(u32::MAX).min(self.limit), bytes.min(self.limit_bytes))
    }
}

/// One key a scan read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEntry {
    /// The key.
    pub key: Bytes,
    /// Its value (empty for a keys-only scan).
    pub value: Bytes,
    /// Its version (what [`crate::Client::compare_and_set`] compares).
    pub version: u64,
}

/// A page of a scan: keys in key order, and the rest of the range if it holds more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The keys, in key order.
    pub entries: Vec<ScanEntry>,
    /// The range still to read, `None` when this page ended it: scan it for the next page.
    pub next: Option<ScanRange>,
}

/// Merges the answers of the shards asked for a page of `range`, into at most `limit` keys
/// and about `limit_bytes` of keys and values (at least one key when any was read).
pub(crate) fn merge(
    range: &ScanRange,
    answers: Vec<pb::ScanResponse>,
    limit: u32,
    limit_bytes: u64,
) -> ScanPage {
    // Every key of the range up to the lowest last key of a shard with more is read.
    let cut = answers
        .iter()
        .filter(|answer| answer.more)
        .filter_map(|answer| answer.entries.last().map(|entry| entry.key.clone()))
        .min();
    let mut entries: Vec<ScanEntry> = answers
        .into_iter()
        .flat_map(|answer| answer.entries)
        .filter(|entry| cut.as_ref().is_none_or(|cut| entry.key <= *cut))
        .map(|entry| ScanEntry { key: entry.key, value: entry.value, version: entry.version })
        .collect();
    entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut truncated = cut.is_some();
    let (mut kept, mut bytes) = (0_usize, 0_u64);
    for entry in &entries {
        let cost = (entry.key.len() + entry.value.len()) as u64;
        if kept == limit as usize || (kept > 0 && bytes + cost > limit_bytes) {
            truncated = true;
            break;
        }
        kept += 1;
        bytes += cost;
    }
    entries.truncate(kept);
    let next = match entries.last() {
        Some(last) if truncated => Some(range.after(&last.key)),
        _ => None,
    };
    ScanPage { entries, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(keys: &[&'static str], more: bool) -> pb::ScanResponse {
        let entries = keys
            .iter()
            .map(|key| pb::ScanEntry {
                key: Bytes::from_static(key.as_bytes()),
                value: Bytes::from_static(b"vv"),
                version: 1,
            })
            .collect();
        pb::ScanResponse { entries, more, applied_index: 1 }
    }

    fn keys(page: &ScanPage) -> Vec<&[u8]> {
        page.entries.iter().map(|entry| entry.key.as_ref()).collect()
    }

    #[test]
    fn a_page_keeps_the_keys_below_the_lowest_last_key_of_a_shard_with_more() {
        let range = ScanRange::prefix("k");
        let answers = vec![answer(&["k1", "k4", "k7"], true), answer(&["k2", "k9"], false)];
        let page = merge(&range, answers, 100, 1 << 20);
        assert_eq!(keys(&page), [b"k1", b"k2", b"k4", b"k7"]);
        let next = page.next.expect("more");
        assert_eq!(next.start(), &Bytes::from_static(b"k7\0"));
        assert_eq!(next.end(), Some(&Bytes::from_static(b"l")));

        // No shard has more: the page ends the range.
        let answers = vec![answer(&["k1"], false), answer(&["k2"], false), answer(&[], false)];
        let page = merge(&range, answers, 100, 1 << 20);
        assert_eq!(keys(&page), [b"k1", b"k2"]);
        assert_eq!(page.next, None);
        assert_eq!(merge(&range, vec![answer(&[], false)], 1, 1), ScanPage::default());
    }

    #[test]
    fn a_page_is_cut_to_its_limits_and_holds_at_least_one_key() {
        let range = ScanRange::all();
        let answers = || vec![answer(&["a", "c"], false), answer(&["b", "d"], false)];
        let page = merge(&range, answers(), 3, 1 << 20);
        assert_eq!(keys(&page), [b"a", b"b", b"c"]);
        assert_eq!(page.next.expect("cut").start(), &Bytes::from_static(b"c\0"));
        // Each key and value is 3 bytes: 7 bytes hold two.
        assert_eq!(keys(&merge(&range, answers(), 10, 7)), [b"a", b"b"]);
        assert_eq!(keys(&merge(&range, answers(), 10, 1)), [b"a"]);
    }

    #[test]
    fn a_prefix_ends_at_its_successor_and_a_whole_hash_tag_names_one_shard() {
        assert_eq!(ScanRange::prefix("ab").end(), Some(&Bytes::from_static(b"ac")));
        assert_eq!(ScanRange::prefix(&b"a\xff\xff"[..]).end(), Some(&Bytes::from_static(b"b")));
        assert_eq!(ScanRange::prefix(&b"\xff"[..]).end(), None);
        assert_eq!(ScanRange::prefix("").end(), None);
        assert_eq!(ScanRange::prefix("{user:7}/").shards(16), [shard_for_key(b"{user:7}", 16)]);
        assert_eq!(ScanRange::prefix("{user:7").shards(16).len(), 16, "no whole tag");
        assert_eq!(ScanRange::prefix("{}x").shards(16).len(), 16, "an empty tag is no tag");
        assert_eq!(ScanRange::between("a", None).shards(4).len(), 4);
        assert!(ScanRange::between("b", Some(Bytes::from_static(b"a"))).is_empty());
    }

    #[test]
    fn each_shard_is_asked_for_twice_its_share_within_the_page() {
        let options = ScanOptions { limit: 1_000, limit_bytes: 1 << 20, ..ScanOptions::default() };
        assert_eq!(options.per_shard(64), (32, 64 << 10));
        assert_eq!(options.per_shard(4), (500, 512 << 10));
        assert_eq!(options.per_shard(1), (1_000, 1 << 20));
        let small = ScanOptions { limit: 5, limit_bytes: 100, ..ScanOptions::default() };
        assert_eq!(small.per_shard(64), (5, 100));
        assert!(ScanOptions { limit: 0, ..ScanOptions::default() }.refusal().is_some());
        let over = ScanOptions { limit: 10_001, ..ScanOptions::default() };
        assert_eq!(
            over.refusal().as_deref(),
            Some("a scan reads 1 to 10000 keys a page, not 10001")
        );
        assert!(ScanOptions { parallel: 0, ..ScanOptions::default() }.refusal().is_some());
        assert_eq!(ScanOptions::default().refusal(), None);
    }
}
