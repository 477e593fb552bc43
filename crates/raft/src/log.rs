//! The Raft log as the core sees it: a durable prefix in [`Storage`] followed by an unstable
//! tail held in memory until the application persists it.
//!
//! Invariants:
//! - `applied <= applying <= committed <= last_index()`.
//! - The unstable tail starts right after the storage's last index, or right after the unstable
//!   snapshot if there is one: `unstable.offset == storage.last_index() + 1` once persisted.
//! - A committed entry is never truncated (Raft §5.3, Log Matching + Leader Completeness).

use crate::error::{Error, Result};
use crate::storage::{Storage, limit_size};
use crate::types::{Entry, LogIndex, Snapshot, Term};

/// Entries and a snapshot not yet persisted.
///
/// Invariant: `entries[i].index == offset + i`, and if `snapshot` is set, `offset ==
/// snapshot.index + 1`.
#[derive(Debug)]
pub(crate) struct Unstable {
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) offset: LogIndex,
}

impl Unstable {
    fn maybe_first_index(&self) -> Option<LogIndex> {
        self.snapshot.as_ref().map(|s| s.metadata.index.next())
    }

    fn maybe_last_index(&self) -> Option<LogIndex> {
        match self.entries.last() {
            Some(entry) => Some(entry.index),
            None => self.snapshot.as_ref().map(|s| s.metadata.index),
        }
    }

    fn maybe_term(&self, index: LogIndex) -> Option<Term> {
        if index < self.offset {
            let snapshot = self.snapshot.as_ref()?;
            return (snapshot.metadata.index == index).then_some(snapshot.metadata.term);
        }
        self.entries.get((index.0 - self.offset.0) as usize).map(|entry| entry.term)
    }

    /// Forgets entries up to `index` once they are persisted, if the persisted entry at
    /// `index` is still the one held here (it may have been overwritten meanwhile).
    fn stable_to(&mut self, index: LogIndex, term: Term) {
        if self.maybe_term(index) == Some(term) && index >= self.offset {
            self.entries.drain(..=(index.0 - self.offset.0) as usize);
            self.offset = index.next();
        }
    }

    fn stable_snap_to(&mut self, index: LogIndex) {
        if self.snapshot.as_ref().is_some_and(|s| s.metadata.index == index) {
            self.snapshot = None;
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot.metadata.index.next();
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            // The common case: entries follow the tail directly.
        } else if after <= self.offset {
            // Replaces the whole tail (and the caller's storage suffix from `after`).
            self.offset = after;
            self.entries.clear();
        } else {
            self.entries.truncate((after.0 - self.offset.0) as usize);
        }
        self.entries.extend_from_slice(entries);
    }
}

impl std::ops::Add<u64> for LogIndex {
    type Output = LogIndex;
    fn add(self, rhs: u64) -> LogIndex {
        LogIndex(self.0 + rhs)
    }
}

/// The log: storage plus the unstable tail, with the commit and apply positions.
pub(crate) struct RaftLog<S> {
    pub(crate) store: S,
    pub(crate) unstable: Unstable,
    /// Highest index known to be committed.
    pub(crate) committed: LogIndex,
    /// Highest index handed to the application for applying.
    pub(crate) applying: LogIndex,
    /// Highest index the application has applied.
    pub(crate) applied: LogIndex,
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `store`, whose hard state says `committed`.
    pub(crate) fn new(store: S, committed: LogIndex, applied: LogIndex) -> Result<Self> {
        let first_index = store.first_index()?;
        let last_index = store.last_index()?;
        let snapshot_index = first_index.prev();
        assert!(
            committed <= last_index,
            "hard state commit {committed} is past the stored last index {last_index}"
        );
        // A log restored from a snapshot has applied at least the snapshot.
        let applied = applied.max(snapshot_index);
        assert!(applied <= committed, "applied {applied} is past commit {committed}");
        Ok(Self {
            store,
            unstable: Unstable { snapshot: None, entries: Vec::new(), offset: last_index.next() },
            committed,
            applying: applied,
            applied,
        })
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match self.unstable.maybe_first_index() {
            Some(index) => index,
            None => self.store.first_index().expect("storage first_index"),
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        match self.unstable.maybe_last_index() {
            Some(index) => index,
            None => self.store.last_index().expect("storage last_index"),
        }
    }

    /// The last index that is persisted (not counting an unpersisted snapshot).
    pub(crate) fn last_stable_index(&self) -> LogIndex {
        if self.unstable.snapshot.is_some() {
            return LogIndex(0);
        }
        self.unstable.offset.prev()
    }

    /// Returns the term at `index`, or an error if it is compacted or past the end.
    pub(crate) fn term(&self, index: LogIndex) -> Result<Term> {
        let dummy_index = self.first_index().prev();
        if index < dummy_index {
            return Err(Error::Compacted { first_index: dummy_index.next() });
        }
        let last_index = self.last_index();
        if index > last_index {
            return Err(Error::Unavailable { index, last_index });
        }
        if let Some(term) = self.unstable.maybe_term(index) {
            return Ok(term);
        }
        self.store.term(index)
    }

    /// Returns the term at `index`, or 0 if it is not in the log.
    pub(crate) fn term_or_zero(&self, index: LogIndex) -> Term {
        self.term(index).unwrap_or(Term(0))
    }

    pub(crate) fn last_term(&self) -> Term {
        self.term(self.last_index()).expect("the last entry's term is always available")
    }

    pub(crate) fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as this one.
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Returns the entries from `low` to the end, at most `max_bytes` (at least one).
    pub(crate) fn entries(&self, low: LogIndex, max_bytes: Option<u64>) -> Result<Vec<Entry>> {
        let high = self.last_index().next();
        if low >= high {
            return Ok(Vec::new());
        }
        self.slice(low, high, max_bytes)
    }

    /// Returns the entries in `[low, high)`, at most `max_bytes` (at least one).
    pub(crate) fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>> {
        let first_index = self.first_index();
        if low < first_index {
            return Err(Error::Compacted { first_index });
        }
        let last_index = self.last_index();
        assert!(high <= last_index.next(), "slice [{low}, {high}) past last index {last_index}");
        if low >= high {
            return Ok(Vec::new());
        }
        let offset = self.unstable.offset;
        let mut out = Vec::new();
        if low < offset {
            out = self.store.entries(low, high.min(offset), max_bytes)?;
            let stored_high = high.min(offset);
            // Storage stopped early (size limit): do not add unstable entries after a gap.
            if out.last().map(|e| e.index.next()) != Some(stored_high) {
                return Ok(out);
            }
        }
        if high > offset {
            let start = (low.max(offset).0 - offset.0) as usize;
            let end = (high.0 - offset.0) as usize;
            let tail = &self.unstable.entries[start..end];
            match max_bytes {
                None => out.extend_from_slice(tail),
                Some(limit) => {
                    let used: u64 = out.iter().map(Entry::size_bytes).sum();
                    if out.is_empty() {
                        out = limit_size(tail, Some(limit));
                    } else {
                        let mut total = used;
                        for entry in tail {
                            total += entry.size_bytes();
                            if total > limit {
                                break;
                            }
                            out.push(entry.clone());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Returns the first entry of `entries` that conflicts with the log (same index, other
    /// term) or is new (past the last index), or `None` if all are already present.
    fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries.iter().find(|e| !self.match_term(e.index, e.term)).map(|e| e.index)
    }

    /// Returns the largest index at or below `index` whose term is at most `term`, with that
    /// term: where a leader and a follower may agree (fast conflict backtracking).
    pub(crate) fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(t) if t <= term => return (index, t),
                Ok(_) if index.0 > 0 => index = index.prev(),
                _ => return (index, Term(0)),
            }
        }
    }

    /// Appends the leader's entries after `prev_index` if the log matches there (Raft §5.3),
    /// advances the commit index, and returns the index of the last new entry.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        entries: &[Entry],
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        if let Some(conflict) = self.find_conflict(entries) {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with committed entry (committed {})",
                self.committed
            );
            let start = (conflict.0 - prev_index.0 - 1) as usize;
            self.append(&entries[start..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// Appends entries at the end of the unstable tail (truncating a conflicting suffix) and
    /// returns the new last index.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> LogIndex {
        if let Some(first) = entries.first() {
            assert!(
                first.index > self.committed,
                "append at {} would overwrite committed entries (committed {})",
                first.index,
                self.committed
            );
            self.unstable.truncate_and_append(entries);
        }
        self.last_index()
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            let last_index = self.last_index();
            assert!(index <= last_index, "commit {index} is past the last index {last_index}");
            self.committed = index;
        }
    }

    /// Commits `index` if it is from `term` (Raft §5.4.2: a leader counts replicas only for
    /// entries of its own term).
    pub(crate) fn maybe_commit(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.committed && self.term_or_zero(index) == term {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// The committed entries not yet handed to the application, limited to what is persisted
    /// and to `max_bytes`. None while a snapshot waits to be installed.
    pub(crate) fn next_committed_entries(&self, max_bytes: u64) -> Vec<Entry> {
        if self.unstable.snapshot.is_some() {
            return Vec::new();
        }
        let low = self.applying.next().max(self.first_index());
        let high = self.committed.min(self.last_stable_index()).next();
        if low >= high {
            return Vec::new();
        }
        self.slice(low, high, Some(max_bytes))
            .unwrap_or_else(|error| panic!("committed entries [{low}, {high}) unreadable: {error}"))
    }

    pub(crate) fn has_next_committed_entries(&self) -> bool {
        self.unstable.snapshot.is_none()
            && self.applying.next().max(self.first_index())
                <= self.committed.min(self.last_stable_index())
    }

    pub(crate) fn applying_to(&mut self, index: LogIndex) {
        assert!(index <= self.committed, "applying {index} past commit {}", self.committed);
        self.applying = self.applying.max(index);
    }

    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.applying,
            "applied {index} was never handed out (applying {})",
            self.applying
        );
        self.applied = self.applied.max(index);
    }

    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term) {
        self.unstable.stable_to(index, term);
    }

    pub(crate) fn stable_snap_to(&mut self, index: LogIndex) {
        self.unstable.stable_snap_to(index);
    }

    /// Replaces the log with a snapshot received from the leader.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        self.committed = index;
        self.applying = index;
        self.applied = index;
        self.unstable.restore(snapshot);
    }

    /// Returns the snapshot to send to a follower that needs entries from `next_index`.
    pub(crate) fn snapshot(&self, next_index: LogIndex, to: crate::NodeId) -> Result<Snapshot> {
        if let Some(snapshot) = &self.unstable.snapshot {
            return Ok(snapshot.clone());
        }
        self.store.snapshot(next_index.prev(), to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::types::{ConfState, EntryKind};
    use bytes::Bytes;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::from(vec![index as u8; 10]),
        }
    }

    /// A log whose stored entries have the given terms (index 1, 2, ...).
    fn log_with_terms(terms: &[u64]) -> RaftLog<MemStorage> {
        let mut store = MemStorage::new(ConfState::with_voters([1]));
        let entries: Vec<Entry> =
            terms.iter().enumerate().map(|(i, t)| entry(i as u64 + 1, *t)).collect();
        store.append(&entries);
        RaftLog::new(store, LogIndex(0), LogIndex(0)).expect("opens")
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 5, 5]);
        assert_eq!(log.find_conflict_by_term(LogIndex(7), Term(4)), (LogIndex(5), Term(2)));
        assert_eq!(log.find_conflict_by_term(LogIndex(7), Term(1)), (LogIndex(2), Term(1)));
        assert_eq!(log.find_conflict_by_term(LogIndex(7), Term(5)), (LogIndex(7), Term(5)));
        assert_eq!(log.find_conflict_by_term(LogIndex(9), Term(9)), (LogIndex(7), Term(5)));
        assert_eq!(log.find_conflict_by_term(LogIndex(3), Term(0)), (LogIndex(0), Term(0)));
    }

    #[test]
    fn maybe_append_truncates_only_the_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 1]);
        let last = log.maybe_append(LogIndex(1), Term(1), LogIndex(2), &[entry(2, 1), entry(3, 2)]);
        assert_eq!(last, Some(LogIndex(3)));
        assert_eq!(log.term(LogIndex(3)).unwrap(), Term(2));
        assert_eq!(log.committed, LogIndex(2));
        assert_eq!(log.unstable.offset, LogIndex(3), "only the conflicting entry is unstable");
        // A mismatching previous entry is rejected and changes nothing.
        assert_eq!(log.maybe_append(LogIndex(3), Term(1), LogIndex(3), &[entry(4, 2)]), None);
        assert_eq!(log.last_index(), LogIndex(3));
    }

    #[test]
    #[should_panic(expected = "conflicts with committed entry")]
    fn overwriting_a_committed_entry_panics() {
        let mut log = log_with_terms(&[1, 1, 1]);
        log.commit_to(LogIndex(3));
        log.maybe_append(LogIndex(1), Term(1), LogIndex(3), &[entry(2, 2)]);
    }

    #[test]
    fn slice_joins_storage_and_unstable_entries_under_a_size_limit() {
        let mut log = log_with_terms(&[1, 1]);
        log.append(&[entry(3, 2), entry(4, 2)]);
        let all = log.slice(LogIndex(1), LogIndex(5), None).unwrap();
        assert_eq!(all.iter().map(|e| e.index.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let one_entry_bytes = entry(1, 1).size_bytes();
        let limited = log.slice(LogIndex(1), LogIndex(5), Some(one_entry_bytes * 3)).unwrap();
        assert_eq!(limited.len(), 3);
        let tiny = log.slice(LogIndex(1), LogIndex(5), Some(1)).unwrap();
        assert_eq!(tiny.len(), 1, "at least one entry");
    }

    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = log_with_terms(&[1]);
        log.append(&[entry(2, 1), entry(3, 1)]);
        log.commit_to(LogIndex(3));
        let ready: Vec<u64> =
            log.next_committed_entries(u64::MAX).iter().map(|e| e.index.0).collect();
        assert_eq!(ready, vec![1], "unpersisted entries are not applied yet");
        // The application persists them, then reports it.
        log.store.append(&[entry(2, 1), entry(3, 1)]);
        log.stable_to(LogIndex(3), Term(1));
        let ready: Vec<u64> =
            log.next_committed_entries(u64::MAX).iter().map(|e| e.index.0).collect();
        assert_eq!(ready, vec![1, 2, 3]);
    }

    #[test]
    fn stable_to_ignores_an_overwritten_entry() {
        let mut log = log_with_terms(&[]);
        log.append(&[entry(1, 1), entry(2, 1)]);
        // The entries were replaced by a new leader before the write finished.
        log.append(&[entry(2, 2)]);
        log.stable_to(LogIndex(2), Term(1));
        assert_eq!(log.unstable.offset, LogIndex(1), "nothing became stable");
        log.stable_to(LogIndex(2), Term(2));
        assert_eq!(log.unstable.offset, LogIndex(3));
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_with_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }
}
