//! How the Raft core reads the durable log, and an in-memory implementation for tests.
//!
//! The core never writes storage: it hands what must be persisted to the application in a
//! [`crate::Ready`], and the application writes it (to RocksDB, to memory, ...) before calling
//! `advance`. The core then reads those entries back through [`Storage`] when it needs them
//! (to replicate to a follower, to hand out committed entries).

use crate::error::{Error, Result};
use crate::types::{ConfState, Entry, HardState, LogIndex, NodeId, Snapshot, Term};

/// What a node restarts from: its hard state and its membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// Term, vote and commit index as last persisted.
    pub hard_state: HardState,
    /// The membership as of the last applied entry (or snapshot).
    pub conf_state: ConfState,
}

/// Read access to a group's persisted log.
///
/// The log visible through a `Storage` is a snapshot at index `first_index() - 1` followed by
/// the entries `first_index()..=last_index()`. An empty log has first index 1 and last index 0.
pub trait Storage {
    /// Returns the persisted hard state and membership.
    ///
    /// # Errors
    /// [`Error::Storage`] when the state cannot be read.
    fn initial_state(&self) -> Result<RaftState>;

    /// Returns the entries in `[low, high)`, stopping once their total size would exceed
    /// `max_bytes` (but always returning at least one entry when the range is not empty).
    ///
    /// # Errors
    /// [`Error::Compacted`] when `low` is below the first index; [`Error::Unavailable`] when
    /// `high` is past the last index plus one.
    fn entries(&self, low: LogIndex, high: LogIndex, max_bytes: Option<u64>) -> Result<Vec<Entry>>;

    /// Returns the term of the entry at `index`, for `first_index() - 1 <= index <=
    /// last_index()`.
    ///
    /// # Errors
    /// [`Error::Compacted`] or [`Error::Unavailable`] outside that range.
    fn term(&self, index: LogIndex) -> Result<Term>;

    /// Returns the index of the first entry still stored (the snapshot's index plus one).
    ///
    /// # Errors
    /// [`Error::Storage`] when it cannot be read.
    fn first_index(&self) -> Result<LogIndex>;

    /// Returns the index of the last entry stored (the snapshot's index if there is none).
    ///
    /// # Errors
    /// [`Error::Storage`] when it cannot be read.
    fn last_index(&self) -> Result<LogIndex>;

    /// Returns the most recent snapshot, for a follower (`to`) whose needed entries are
    /// compacted. Its index must be at least `request_index`.
    ///
    /// # Errors
    /// [`Error::SnapshotTemporarilyUnavailable`] while it is being built; the core then tries
    /// again later.
    fn snapshot(&self, request_index: LogIndex, to: NodeId) -> Result<Snapshot>;
}

/// An in-memory [`Storage`] for tests, examples and benchmarks.
///
/// Invariant: `entries[i].index == snapshot.metadata.index + 1 + i`.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty log whose initial membership is `conf_state`.
    #[must_use]
    pub fn new(conf_state: ConfState) -> Self {
        let snapshot = Snapshot {
            metadata: crate::SnapshotMetadata {
                conf_state: conf_state.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        Self { conf_state, snapshot, ..Default::default() }
    }

    /// Returns the persisted hard state.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Persists a hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Persists a membership (the application does this when it applies a change).
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Returns the stored snapshot (index 0 when there is none).
    #[must_use]
    pub fn stored_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Returns every entry still stored.
    #[must_use]
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends entries, first discarding any stored suffix that they overwrite.
    ///
    /// # Panics
    /// When the entries would leave a gap after the last stored index, or overwrite entries
    /// that are compacted: both are bugs in the caller.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let offset = self.snapshot.metadata.index;
        assert!(
            first.index > offset,
            "append at {} overwrites compacted entries (snapshot at {offset})",
            first.index
        );
        let last = self.last_index_inner();
        assert!(first.index <= last.next(), "append at {} leaves a gap after {last}", first.index);
        self.entries.truncate((first.index.0 - offset.0 - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Records a snapshot of the state machine at `index` (which must be stored or be the
    /// current snapshot). Entries are kept; [`MemStorage::compact`] discards them.
    ///
    /// # Errors
    /// [`Error::SnapshotOutOfDate`] for an index at or below the current snapshot;
    /// [`Error::Unavailable`] for an index past the log's end.
    pub fn create_snapshot(
        &mut self,
        index: LogIndex,
        conf_state: ConfState,
        data: bytes::Bytes,
    ) -> Result<()> {
        if index <= self.snapshot.metadata.index {
            return Err(Error::SnapshotOutOfDate { index, term: self.snapshot.metadata.term });
        }
        let term = self.term(index)?;
        self.snapshot =
            Snapshot { metadata: crate::SnapshotMetadata { index, term, conf_state }, data };
        Ok(())
    }

    /// Discards entries up to and including `index`, which must not be past the snapshot.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when `index` is past the stored snapshot.
    pub fn compact(&mut self, index: LogIndex) -> Result<()> {
        let offset = self.snapshot.metadata.index;
        if index > offset {
            return Err(Error::Unavailable { index, last_index: offset });
        }
        // Entries at or below the snapshot are already gone.
        Ok(())
    }

    /// Replaces the log with a snapshot received from the leader; entries after the snapshot
    /// that match it are kept (Raft §7), the rest discarded.
    ///
    /// # Errors
    /// [`Error::SnapshotOutOfDate`] for a snapshot older than the stored one.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        let meta = &snapshot.metadata;
        if meta.index < self.snapshot.metadata.index {
            return Err(Error::SnapshotOutOfDate { index: meta.index, term: meta.term });
        }
        let keeps_suffix = self.term(meta.index).ok() == Some(meta.term);
        let offset = self.snapshot.metadata.index;
        if keeps_suffix {
            self.entries.drain(..(meta.index.0 - offset.0) as usize);
        } else {
            self.entries.clear();
        }
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        self.conf_state = meta.conf_state.clone();
        self.snapshot = snapshot;
        Ok(())
    }

    /// Keeps the log as of the snapshot and discards entries up to the snapshot's index: the
    /// usual pairing of [`MemStorage::create_snapshot`] and [`MemStorage::compact`].
    ///
    /// # Errors
    /// As [`MemStorage::create_snapshot`].
    pub fn snapshot_and_compact(
        &mut self,
        index: LogIndex,
        conf_state: ConfState,
        data: bytes::Bytes,
    ) -> Result<()> {
        let offset = self.snapshot.metadata.index;
        self.create_snapshot(index, conf_state, data)?;
        self.entries.drain(..(index.0 - offset.0) as usize);
        self.compact(index)
    }

    fn last_index_inner(&self) -> LogIndex {
        LogIndex(self.snapshot.metadata.index.0 + self.entries.len() as u64)
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state, conf_state: self.conf_state.clone() })
    }

    fn entries(&self, low: LogIndex, high: LogIndex, max_bytes: Option<u64>) -> Result<Vec<Entry>> {
        let offset = self.snapshot.metadata.index;
        if low <= offset {
            return Err(Error::Compacted { first_index: offset.next() });
        }
        let last = self.last_index_inner();
        if high > last.next() {
            return Err(Error::Unavailable { index: high.prev(), last_index: last });
        }
        let start = (low.0 - offset.0 - 1) as usize;
        let end = (high.0 - offset.0 - 1) as usize;
        Ok(limit_size(&self.entries[start..end.max(start)], max_bytes))
    }

    fn term(&self, index: LogIndex) -> Result<Term> {
        let offset = self.snapshot.metadata.index;
        if index == offset {
            return Ok(self.snapshot.metadata.term);
        }
        if index < offset {
            return Err(Error::Compacted { first_index: offset.next() });
        }
        let last = self.last_index_inner();
        if index > last {
            return Err(Error::Unavailable { index, last_index: last });
        }
        Ok(self.entries[(index.0 - offset.0 - 1) as usize].term)
    }

    fn first_index(&self) -> Result<LogIndex> {
        Ok(self.snapshot.metadata.index.next())
    }

    fn last_index(&self) -> Result<LogIndex> {
        Ok(self.last_index_inner())
    }

    fn snapshot(&self, request_index: LogIndex, _to: NodeId) -> Result<Snapshot> {
        if self.snapshot.metadata.index < request_index {
            return Err(Error::SnapshotTemporarilyUnavailable);
        }
        Ok(self.snapshot.clone())
    }
}

/// Returns the longest prefix of `entries` whose total size fits in `max_bytes`, but at least
/// one entry.
#[must_use]
pub fn limit_size(entries: &[Entry], max_bytes: Option<u64>) -> Vec<Entry> {
    let Some(limit) = max_bytes else { return entries.to_vec() };
    let mut total = 0u64;
    let count = entries
        .iter()
        .take_while(|entry| {
            total += entry.size_bytes();
            total <= limit
        })
        .count();
    entries[..count.max(1).min(entries.len())].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    #[test]
    fn append_replaces_a_conflicting_suffix() {
        let mut store = MemStorage::new(ConfState::with_voters([1]));
        store.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        store.append(&[entry(2, 2)]);
        assert_eq!(store.last_index().unwrap(), LogIndex(2));
        assert_eq!(store.term(LogIndex(2)).unwrap(), Term(2));
    }

    #[test]
    fn compaction_keeps_the_snapshot_term_and_reports_compacted_ranges() {
        let mut store = MemStorage::new(ConfState::with_voters([1]));
        store.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
        store.snapshot_and_compact(LogIndex(2), ConfState::with_voters([1]), Bytes::new()).unwrap();
        assert_eq!(store.first_index().unwrap(), LogIndex(3));
        assert_eq!(store.term(LogIndex(2)).unwrap(), Term(1));
        assert!(matches!(store.term(LogIndex(1)), Err(Error::Compacted { .. })));
        assert!(matches!(
            store.entries(LogIndex(1), LogIndex(4), None),
            Err(Error::Compacted { .. })
        ));
        assert!(matches!(store.term(LogIndex(4)), Err(Error::Unavailable { .. })));
        assert!(store.snapshot(LogIndex(3), crate::NodeId(2)).is_err(), "too old a snapshot");
    }

    #[test]
    fn applying_a_snapshot_keeps_a_matching_suffix() {
        let mut store = MemStorage::new(ConfState::with_voters([1]));
        store.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let mut snapshot = Snapshot::default();
        snapshot.metadata.index = LogIndex(2);
        snapshot.metadata.term = Term(1);
        store.apply_snapshot(snapshot).unwrap();
        assert_eq!(store.last_index().unwrap(), LogIndex(3));
        let mut other = Snapshot::default();
        other.metadata.index = LogIndex(3);
        other.metadata.term = Term(7);
        store.apply_snapshot(other).unwrap();
        assert_eq!(store.last_index().unwrap(), LogIndex(3));
        assert_eq!(store.term(LogIndex(3)).unwrap(), Term(7));
        assert!(store.all_entries().is_empty());
    }

    #[test]
    fn conf_change_round_trips_and_rejects_garbage() {
        for change in [
            crate::ConfChange::AddLearner(crate::NodeId(7)),
            crate::ConfChange::AddVoter(crate::NodeId(u64::MAX)),
            crate::ConfChange::RemoveNode(crate::NodeId(1)),
        ] {
            assert_eq!(crate::ConfChange::decode(&change.encode()).unwrap(), change);
        }
        assert!(crate::ConfChange::decode(b"").is_err());
        assert!(crate::ConfChange::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }
}
