//! A scan of one shard: the keys of a key range, in key order, one bounded page at a time.
//!
//! A page is read from one point-in-time view of the store taken when the read was served
//! (linearizable, lease or stale, as a get), so it is exactly the shard's keys in its range
//! at that point. It holds at most `limit` keys and at most `limit_bytes` of keys, values and
//! [`SCAN_ENTRY_OVERHEAD_BYTES`] for each key, except that it always holds a key when one is
//! left (so a scan always progresses); `more` says whether the shard holds another key in the
//! range after the last one. A client scanning
//! the whole key space merges the pages of every shard (docs/api.md "Scans").

use bytes::Bytes;
use mosaic_engine::{EngineSnapshot, GroupId, KvRead, ShardId};

use mosaic_raftstore::Result;

use crate::state_machine::decode_stored;
use crate::version::Version;

/// The most keys a page may hold.
pub const SCAN_KEYS_MAX: u32 = 10_000;

/// What each key of a page counts for beyond its key and value: more than its framing on the
/// wire (field tags, lengths, its version), so a page's bytes bound its encoded size.
pub const SCAN_ENTRY_OVERHEAD_BYTES: u64 = 32;

/// A scan of one shard's keys from `start` (included) to `end` (excluded; `None`: no end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardScan {
    /// The shard.
    pub shard: ShardId,
    /// The shard count the client routes by (a group placed by a controller refuses another).
    pub shard_count: u32,
    /// The first key to read.
    pub start: Bytes,
    /// The key to stop before, if any.
    pub end: Option<Bytes>,
    /// At most this many keys (1 to [`SCAN_KEYS_MAX`]).
    pub limit: u32,
    /// At most this many bytes of keys, values and per-key overhead (but at least one key).
    pub limit_bytes: u64,
    /// Leave the values out.
    pub keys_only: bool,
}

/// One key of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEntry {
    /// The key.
    pub key: Bytes,
    /// Its value (empty for a keys-only scan).
    pub value: Bytes,
    /// Its version.
    pub version: Version,
}

/// What a scan of one shard read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The keys, in order.
    pub entries: Vec<ScanEntry>,
    /// The shard holds more keys in the range after the last one.
    pub more: bool,
}

/// Why a scan is malformed, if it is: no shard count, a limit out of range, or a range that
/// ends before it starts.
#[must_use]
pub fn scan_refusal(scan: &ShardScan) -> Option<String> {
    if scan.shard_count == 0 {
        return Some("a scan names the shard count it routes by".into());
    }
    if scan.limit == 0 || scan.limit > SCAN_KEYS_MAX {
        return Some(format!("a scan reads 1 to {SCAN_KEYS_MAX} keys, not {}", scan.limit));
    }
    if scan.limit_bytes == 0 {
        return Some("a scan's byte limit must be above 0".into());
    }
    match &scan.end {
        Some(end) if *end <= scan.start => {
            Some("a scan's range must end after it starts (the end is excluded)".into())
        }
        _ => None,
    }
}

impl ShardScan {
    /// Reads the page from `view` (of `group`'s replica, taken when the read was served).
    ///
    /// # Errors
    /// Engine errors; corruption for a value that does not decode.
    pub fn read<S: KvRead>(&self, group: GroupId, view: &EngineSnapshot<S>) -> Result<ScanPage> {
        let mut page = ScanPage::default();
        let (mut count, mut bytes) = (0_u32, 0_u64);
        view.scan_data(group, self.shard, &self.start, self.end.as_deref(), &mut |key, stored| {
            let stored = decode_stored(view.path(), group, self.shard, stored)?;
            let value = if self.keys_only { Bytes::new() } else { stored.value };
            let cost = (key.len() + value.len()) as u64 + SCAN_ENTRY_OVERHEAD_BYTES;
            if count >= self.limit || (count > 0 && bytes + cost > self.limit_bytes) {
                page.more = true;
                return Ok(false);
            }
            count += 1;
            bytes += cost;
            let (key, version) = (Bytes::copy_from_slice(key), stored.version);
            page.entries.push(ScanEntry { key, value, version });
            Ok(true)
        })?;
        Ok(page)
    }
}
