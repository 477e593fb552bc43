//! When a group compacts its Raft log, and up to where: a pure decision over the count and the
//! bytes of the entries it has applied.
//!
//! A log is compacted once it holds more than `compact_log_after_entries` applied entries or
//! more than `compact_log_after_bytes` of them: a group of a few large entries (a shard's
//! chunks, 1 MiB values) never reaches the count, and its log would otherwise keep every byte
//! written. The compaction keeps the last applied entries within both `compact_log_keep_entries`
//! and `compact_log_keep_bytes`, so a follower lagging a little catches up from the log.
//!
//! Bytes are counted as entries are applied ([`mosaic_raft::Entry::size_bytes`]), in memory.
//! To keep that memory small whatever the number of entries, the count remembers marks (an
//! applied index and the bytes applied up to it) at least `compact_log_after_bytes / 32` apart,
//! and a compaction by bytes ends at a mark: the entries kept hold at most
//! `compact_log_keep_bytes`, and at least that less one step and one apply pass.
//!
//! A restart forgets the count: the entries applied before it are not counted. The next
//! compaction, whichever its trigger, removes them; until then they add at most one
//! `compact_log_after_bytes` to the group's log.

use std::collections::VecDeque;

use mosaic_raft::{Entry, LogIndex};

use crate::config::StoreConfig;

/// Bytes of a group's applied entries since its log's compaction point, as far as this
/// replica counted them.
#[derive(Debug, Default)]
pub(crate) struct AppliedLog {
    /// Bytes of the entries applied since the replica was loaded.
    total: u64,
    /// `total` as of the compaction point, at most (the entries after it hold
    /// `total - compacted_at` bytes or fewer).
    compacted_at: u64,
    /// `(index, total once it was applied)`, increasing, one step apart at least, every index
    /// past the compaction point.
    marks: VecDeque<(LogIndex, u64)>,
}

impl AppliedLog {
    /// Counts `entries`, just applied in order.
    pub(crate) fn applied(&mut self, entries: &[Entry], config: &StoreConfig) {
        let Some(last) = entries.last() else {
            return;
        };
        self.total += entries.iter().map(Entry::size_bytes).sum::<u64>();
        let step = mark_step(config);
        if self.marks.back().is_none_or(|(_, total)| self.total - total >= step) {
            self.marks.push_back((last.index, self.total));
        }
    }

    /// Bytes of the applied entries past the compaction point, at most.
    pub(crate) fn bytes(&self) -> u64 {
        self.total - self.compacted_at
    }

    /// The index to compact a log at whose entries up to `compacted` are gone and up to
    /// `applied` are applied, or `None` while it holds neither more than
    /// `compact_log_after_entries` applied entries nor more than `compact_log_after_bytes`.
    pub(crate) fn compaction_index(
        &self,
        compacted: LogIndex,
        applied: LogIndex,
        config: &StoreConfig,
    ) -> Option<LogIndex> {
        let entries = applied.0.saturating_sub(compacted.0);
        if entries <= config.compact_log_after_entries
            && self.bytes() <= config.compact_log_after_bytes
        {
            return None;
        }
        let by_entries = LogIndex(applied.0.saturating_sub(config.compact_log_keep_entries));
        // The earliest mark after which at most `compact_log_keep_bytes` were applied. Past the
        // last mark less than a step was applied; without marks, all that was counted is kept.
        let by_bytes = self
            .marks
            .iter()
            .find(|(_, total)| self.total - total <= config.compact_log_keep_bytes)
            .map_or(compacted, |(index, _)| *index);
        let index = by_entries.max(by_bytes).min(applied);
        (index > compacted).then_some(index)
    }

    /// The log was compacted at `index`.
    pub(crate) fn compacted(&mut self, index: LogIndex) {
        while let Some(&(mark, total)) = self.marks.front() {
            if mark > index {
                break;
            }
            self.compacted_at = total;
            self.marks.pop_front();
        }
    }

    /// The log was replaced by a snapshot: nothing past its point is applied.
    pub(crate) fn reset(&mut self) {
        self.compacted_at = self.total;
        self.marks.clear();
    }
}

/// The least distance, in bytes, between two marks.
fn mark_step(config: &StoreConfig) -> u64 {
    (config.compact_log_after_bytes / 32).max(1)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mosaic_raft::{EntryKind, Term};

    use super::*;

    const KIB: u64 = 1024;

    fn config() -> StoreConfig {
        StoreConfig {
            compact_log_after_entries: 100,
            compact_log_keep_entries: 10,
            compact_log_after_bytes: 64 * KIB,
            compact_log_keep_bytes: 16 * KIB,
            ..StoreConfig::default()
        }
    }

    /// Entries `first..=last` of `bytes` each (overhead included).
    fn entries(first: u64, last: u64, bytes: u64) -> Vec<Entry> {
        let payload = usize::try_from(bytes - mosaic_raft::ENTRY_OVERHEAD_BYTES).expect("small");
        (first..=last)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                kind: EntryKind::Normal,
                data: Bytes::from(vec![0; payload]),
            })
            .collect()
    }

    /// Applies `first..=last` one pass per entry, compacting where the decision says.
    fn run(log: &mut AppliedLog, compacted: &mut LogIndex, first: u64, last: u64, bytes: u64) {
        let config = config();
        for index in first..=last {
            log.applied(&entries(index, index, bytes), &config);
            if let Some(at) = log.compaction_index(*compacted, LogIndex(index), &config) {
                assert!(at > *compacted && at.0 <= index, "{at} after {compacted} at {index}");
                log.compacted(at);
                *compacted = at;
            }
        }
    }

    #[test]
    fn few_large_entries_are_compacted_by_bytes_keeping_about_the_bytes_to_keep() {
        let config = config();
        let (mut log, mut compacted) = (AppliedLog::default(), LogIndex(0));
        // 4 KiB entries: the count (100) is never reached in 64 entries, the bytes are.
        run(&mut log, &mut compacted, 1, 64, 4 * KIB);
        assert!(compacted.0 > 0, "never compacted");
        let kept_bytes = (64 - compacted.0) * 4 * KIB;
        assert!(kept_bytes <= config.compact_log_after_bytes, "{kept_bytes} kept");
        // Right after each compaction, what is kept is the bytes to keep less one step at most,
        // and the count knows it within a step.
        let step = config.compact_log_after_bytes / 32;
        let (mut log, mut compacted, mut compactions) = (AppliedLog::default(), LogIndex(0), 0);
        for index in 1..=256 {
            log.applied(&entries(index, index, 4 * KIB), &config);
            if let Some(at) = log.compaction_index(compacted, LogIndex(index), &config) {
                log.compacted(at);
                compacted = at;
                compactions += 1;
                let kept = (index - at.0) * 4 * KIB;
                assert!(
                    kept <= config.compact_log_keep_bytes
                        && kept + step + 4 * KIB >= config.compact_log_keep_bytes,
                    "kept {kept} bytes after compacting at {at} with {index} applied"
                );
                assert!(log.bytes() >= kept && log.bytes() <= kept + step, "{}", log.bytes());
            }
        }
        assert!(compactions >= 4, "{compactions} compactions");
    }

    #[test]
    fn many_small_entries_are_compacted_by_count_keeping_the_entries_to_keep() {
        let config = config();
        let (mut log, mut compacted) = (AppliedLog::default(), LogIndex(0));
        run(&mut log, &mut compacted, 1, 101, 32);
        assert_eq!(compacted, LogIndex(101 - config.compact_log_keep_entries));
        // The bytes kept are below the bytes to keep: the count decided.
        assert!(log.bytes() <= config.compact_log_keep_bytes, "{}", log.bytes());
    }

    #[test]
    fn an_entry_larger_than_the_bytes_to_keep_is_compacted_with_the_rest() {
        let config = config();
        let (mut log, mut compacted) = (AppliedLog::default(), LogIndex(0));
        run(&mut log, &mut compacted, 1, 2, 40 * KIB);
        assert_eq!(compacted, LogIndex(2), "nothing within the bytes to keep");
        assert_eq!(log.bytes(), 0);
        assert_eq!(log.compaction_index(compacted, LogIndex(2), &config), None);
    }

    #[test]
    fn marks_stay_few_however_many_entries_are_applied() {
        let config = config();
        let (mut log, mut compacted) = (AppliedLog::default(), LogIndex(0));
        for round in 0..50 {
            run(&mut log, &mut compacted, round * 1000 + 1, round * 1000 + 1000, 200);
            assert!(log.marks.len() <= 40, "{} marks", log.marks.len());
            assert!(log.bytes() <= config.compact_log_after_bytes + 200, "{}", log.bytes());
        }
    }

    #[test]
    fn a_restart_counts_from_zero_and_the_next_compaction_takes_what_came_before() {
        let config = config();
        // Before the restart 60 KiB were applied and not compacted; afterwards they are not
        // counted, and the next compaction by bytes still goes past them.
        let mut log = AppliedLog::default();
        let compacted = LogIndex(0);
        let applied_before = 15;
        let mut applied = applied_before;
        let at = loop {
            applied += 1;
            log.applied(&entries(applied, applied, 4 * KIB), &config);
            if let Some(at) = log.compaction_index(compacted, LogIndex(applied), &config) {
                break at;
            }
        };
        assert!(at.0 > applied_before, "compacted at {at}");
    }

    #[test]
    fn a_snapshot_installed_leaves_nothing_counted() {
        let config = config();
        let mut log = AppliedLog::default();
        log.applied(&entries(1, 10, 4 * KIB), &config);
        log.reset();
        assert_eq!(log.bytes(), 0);
        assert_eq!(log.compaction_index(LogIndex(50), LogIndex(50), &config), None);
        log.applied(&entries(51, 51, 4 * KIB), &config);
        assert_eq!(log.bytes(), 4 * KIB);
    }
}
