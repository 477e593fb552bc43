//! [`EntryCache`]: the most recently appended entries of every group, so that replicating to
//! followers and handing committed entries to the state machine rarely read from disk.
//!
//! Invariants:
//! - For each group, the cached entries are consecutive and end at the group's last stored
//!   index: they are always a suffix of the stored log, so a read takes `[low, first_cached)`
//!   from the store and the rest from here. Truncating appends, compaction and group removal
//!   keep this true (the engine calls [`EntryCache::append`], [`EntryCache::compact`] and
//!   [`EntryCache::remove_group`] under the same lock as the write they mirror).
//! - `bytes` (the sum of [`Entry::size_bytes`] of cached entries) is at most `capacity_bytes`
//!   after every call. Eviction drops the entries appended longest ago, across all groups.
//! - The insertion-order queue holds at most `2 * cached entries + STALE_RECORDS_SLACK`
//!   records: stale ones (of entries already dropped) are purged when it grows past that.

use std::collections::{BTreeMap, VecDeque};

use mosaic_raft::{Entry, LogIndex, Term};

use crate::ids::GroupId;

/// How many stale insertion records may pile up beyond twice the live ones before a purge.
const STALE_RECORDS_SLACK: usize = 1024;

#[derive(Debug)]
struct CachedEntry {
    entry: Entry,
    /// Insertion sequence number: tells a live record in `order` from a stale one.
    sequence: u64,
}

/// One record of the global insertion order.
#[derive(Clone, Copy, Debug)]
struct InsertionRecord {
    group: GroupId,
    index: LogIndex,
    sequence: u64,
}

/// A bounded cache of each group's most recent entries.
#[derive(Debug)]
pub struct EntryCache {
    capacity_bytes: u64,
    bytes: u64,
    entry_count: usize,
    groups: BTreeMap<GroupId, VecDeque<CachedEntry>>,
    order: VecDeque<InsertionRecord>,
    next_sequence: u64,
}

impl EntryCache {
    /// An empty cache holding at most `capacity_bytes` (0 disables caching).
    #[must_use]
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            capacity_bytes,
            bytes: 0,
            entry_count: 0,
            groups: BTreeMap::new(),
            order: VecDeque::new(),
            next_sequence: 0,
        }
    }

    /// Bytes currently cached.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records entries just written to `group`'s log, dropping cached entries at or after the
    /// first new index (they were replaced), then evicts the oldest entries while over capacity.
    ///
    /// # Panics
    /// When `entries` are not consecutive or leave a gap after the cached ones: the engine
    /// validated both before writing, so either is a bug.
    pub fn append(&mut self, group: GroupId, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        for pair in entries.windows(2) {
            assert_eq!(pair[1].index, pair[0].index.next(), "cached entries not consecutive");
        }
        self.truncate_from(group, first.index);
        let cached = self.groups.entry(group).or_default();
        if let Some(last) = cached.back() {
            assert_eq!(
                first.index,
                last.entry.index.next(),
                "group {group}: append at {} after cached {}",
                first.index,
                last.entry.index
            );
        }
        for entry in entries {
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            self.bytes += entry.size_bytes();
            self.entry_count += 1;
            cached.push_back(CachedEntry { entry: entry.clone(), sequence });
            self.order.push_back(InsertionRecord { group, index: entry.index, sequence });
        }
        self.evict_over_capacity();
        self.purge_stale_records();
    }

    /// Drops `group`'s cached entries at or below `index` (the log was compacted through it).
    pub fn compact(&mut self, group: GroupId, index: LogIndex) {
        let Some(cached) = self.groups.get_mut(&group) else { return };
        while cached.front().is_some_and(|front| front.entry.index <= index) {
            let dropped = cached.pop_front().expect("front exists");
            self.bytes -= dropped.entry.size_bytes();
            self.entry_count -= 1;
        }
        if cached.is_empty() {
            self.groups.remove(&group);
        }
    }

    /// Drops every cached entry of `group`.
    pub fn remove_group(&mut self, group: GroupId) {
        if let Some(cached) = self.groups.remove(&group) {
            for dropped in cached {
                self.bytes -= dropped.entry.size_bytes();
                self.entry_count -= 1;
            }
        }
    }

    /// The index of `group`'s first cached entry, if any.
    #[must_use]
    pub fn first_index(&self, group: GroupId) -> Option<LogIndex> {
        self.groups.get(&group)?.front().map(|cached| cached.entry.index)
    }

    /// The cached entries of `group` with index in `[low, high)`; `low` must be at least
    /// [`EntryCache::first_index`]; the range stops at the last cached entry.
    pub fn entries(
        &self,
        group: GroupId,
        low: LogIndex,
        high: LogIndex,
    ) -> impl Iterator<Item = &Entry> + '_ {
        let cached = self.groups.get(&group);
        let first = cached.and_then(|cached| cached.front()).map_or(low, |f| f.entry.index);
        assert!(low >= first, "group {group}: cache read at {low} below first cached {first}");
        let start = (low.0 - first.0) as usize;
        let count = high.0.saturating_sub(low.0) as usize;
        cached
            .into_iter()
            .flat_map(move |cached| {
                let end = start.saturating_add(count).min(cached.len());
                cached.range(start.min(end)..end)
            })
            .map(|cached| &cached.entry)
    }

    /// The term of `group`'s entry at `index`, if it is cached.
    #[must_use]
    pub fn term(&self, group: GroupId, index: LogIndex) -> Option<Term> {
        let cached = self.groups.get(&group)?;
        let first = cached.front()?.entry.index;
        let offset = index.0.checked_sub(first.0)?;
        cached.get(usize::try_from(offset).ok()?).map(|cached| cached.entry.term)
    }

    fn truncate_from(&mut self, group: GroupId, index: LogIndex) {
        let Some(cached) = self.groups.get_mut(&group) else { return };
        while cached.back().is_some_and(|back| back.entry.index >= index) {
            let dropped = cached.pop_back().expect("back exists");
            self.bytes -= dropped.entry.size_bytes();
            self.entry_count -= 1;
        }
    }

    fn is_live(&self, record: InsertionRecord) -> bool {
        self.groups.get(&record.group).is_some_and(|cached| {
            let Some(front) = cached.front() else { return false };
            let Some(offset) = record.index.0.checked_sub(front.entry.index.0) else {
                return false;
            };
            usize::try_from(offset)
                .ok()
                .and_then(|offset| cached.get(offset))
                .is_some_and(|cached| cached.sequence == record.sequence)
        })
    }

    fn evict_over_capacity(&mut self) {
        while self.bytes > self.capacity_bytes {
            let Some(record) = self.order.pop_front() else { break };
            let Some(cached) = self.groups.get_mut(&record.group) else { continue };
            // Entries of a group are inserted in index order, so a live record is always the
            // group's front entry; any other record is stale.
            if cached.front().is_some_and(|front| front.sequence == record.sequence) {
                let dropped = cached.pop_front().expect("front exists");
                self.bytes -= dropped.entry.size_bytes();
                self.entry_count -= 1;
                if cached.is_empty() {
                    self.groups.remove(&record.group);
                }
            }
        }
        assert!(
            self.bytes <= self.capacity_bytes,
            "entry cache holds {} bytes over its capacity {}",
            self.bytes,
            self.capacity_bytes
        );
    }

    fn purge_stale_records(&mut self) {
        if self.order.len() <= 2 * self.entry_count + STALE_RECORDS_SLACK {
            return;
        }
        let order = std::mem::take(&mut self.order);
        self.order = order.into_iter().filter(|record| self.is_live(*record)).collect();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mosaic_raft::EntryKind;

    use super::*;

    fn entry(index: u64, term: u64, data_bytes: usize) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::from(vec![0u8; data_bytes]),
        }
    }

    fn cached_indexes(cache: &EntryCache, group: GroupId) -> Vec<u64> {
        let Some(first) = cache.first_index(group) else { return Vec::new() };
        cache.entries(group, first, LogIndex(u64::MAX)).map(|e| e.index.0).collect()
    }

    #[test]
    fn eviction_drops_the_oldest_appends_across_groups() {
        let size = entry(1, 1, 76).size_bytes();
        let mut cache = EntryCache::new(4 * size);
        cache.append(GroupId(1), &[entry(1, 1, 76), entry(2, 1, 76)]);
        cache.append(GroupId(2), &[entry(1, 1, 76), entry(2, 1, 76)]);
        cache.append(GroupId(1), &[entry(3, 1, 76)]);
        assert_eq!(cached_indexes(&cache, GroupId(1)), vec![2, 3]);
        assert_eq!(cached_indexes(&cache, GroupId(2)), vec![1, 2]);
        assert_eq!(cache.bytes(), 4 * size);
    }

    #[test]
    fn a_truncating_append_replaces_the_cached_suffix() {
        let mut cache = EntryCache::new(1 << 20);
        cache.append(GroupId(1), &[entry(1, 1, 8), entry(2, 1, 8), entry(3, 1, 8)]);
        cache.append(GroupId(1), &[entry(2, 2, 8)]);
        assert_eq!(cached_indexes(&cache, GroupId(1)), vec![1, 2]);
        assert_eq!(cache.term(GroupId(1), LogIndex(2)), Some(Term(2)));
        assert_eq!(cache.term(GroupId(1), LogIndex(3)), None);
        assert_eq!(cache.bytes(), 2 * entry(1, 1, 8).size_bytes());
    }

    #[test]
    fn stale_insertion_records_are_purged() {
        let mut cache = EntryCache::new(1 << 30);
        for round in 0..10_000u64 {
            cache.append(GroupId(1), &[entry(1, round + 1, 0)]);
        }
        assert!(cache.order.len() <= 2 + STALE_RECORDS_SLACK, "{} records", cache.order.len());
        assert_eq!(cached_indexes(&cache, GroupId(1)), vec![1]);
    }

    #[test]
    fn compaction_and_removal_release_bytes() {
        let mut cache = EntryCache::new(1 << 20);
        cache.append(GroupId(1), &[entry(1, 1, 8), entry(2, 1, 8)]);
        cache.append(GroupId(2), &[entry(5, 1, 8)]);
        cache.compact(GroupId(1), LogIndex(1));
        assert_eq!(cached_indexes(&cache, GroupId(1)), vec![2]);
        cache.remove_group(GroupId(2));
        assert_eq!(cache.first_index(GroupId(2)), None);
        assert_eq!(cache.bytes(), entry(2, 1, 8).size_bytes());
    }
}
