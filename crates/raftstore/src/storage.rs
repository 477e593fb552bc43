//! [`GroupStorage`]: one group's Raft log as the Raft core reads it, over the node's engine.
//!
//! The core only reads through this; the store writes the log (appends, hard state, membership)
//! in its group-commit batch, so what this returns is always what is durable.

use std::sync::Arc;

use mosaic_engine::{Engine, GroupId, KvEngine, WriteBatch};
use mosaic_raft::{
    ConfState, Entry, Error as RaftError, HardState, LogIndex, NodeId, RaftState, Snapshot,
    SnapshotMetadata, Storage, Term,
};

/// A group's persisted log, hard state and membership, read from the shared engine.
pub struct GroupStorage<K: KvEngine> {
    group: GroupId,
    engine: Arc<Engine<K>>,
}

impl<K: KvEngine> GroupStorage<K> {
    /// The storage of `group` in `engine`.
    #[must_use]
    pub fn new(group: GroupId, engine: Arc<Engine<K>>) -> Self {
        Self { group, engine }
    }

    /// The group.
    #[must_use]
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine<K>> {
        &self.engine
    }

    /// The snapshot metadata of the group's applied state: the applied index, its term and the
    /// membership persisted with it.
    fn applied_metadata(&self) -> Result<SnapshotMetadata, RaftError> {
        let index = self.engine.applied_index(self.group)?;
        let term = self.engine.term(self.group, index)?;
        let conf_state = self.engine.conf_state(self.group)?;
        Ok(SnapshotMetadata { index, term, conf_state })
    }
}

impl<K: KvEngine> Storage for GroupStorage<K> {
    fn initial_state(&self) -> Result<RaftState, RaftError> {
        Ok(RaftState {
            hard_state: self.engine.hard_state(self.group)?,
            conf_state: self.engine.conf_state(self.group)?,
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>, RaftError> {
        Ok(self.engine.entries(self.group, low, high, max_bytes)?)
    }

    fn term(&self, index: LogIndex) -> Result<Term, RaftError> {
        Ok(self.engine.term(self.group, index)?)
    }

    fn first_index(&self) -> Result<LogIndex, RaftError> {
        Ok(self.engine.first_index(self.group)?)
    }

    fn last_index(&self) -> Result<LogIndex, RaftError> {
        Ok(self.engine.last_index(self.group)?)
    }

    /// Returns the metadata of the group's applied state with empty data: the state itself is
    /// streamed by the transport from a point-in-time engine snapshot taken when the store
    /// sends the message (the store applies entries on the thread that calls this, so the
    /// engine holds exactly the state up to the applied index at that moment).
    fn snapshot(&self, request_index: LogIndex, to: NodeId) -> Result<Snapshot, RaftError> {
        let metadata = self.applied_metadata()?;
        if metadata.index < request_index {
            tracing::debug!(group_id = %self.group, peer = %to, applied_index = %metadata.index,
                %request_index, "snapshot requested past the applied index");
            return Err(RaftError::SnapshotTemporarilyUnavailable);
        }
        Ok(Snapshot { metadata, data: bytes::Bytes::new() })
    }
}

/// The node metadata record that says this store destroyed its replica of `group`: the
/// name's prefix, then the group id (big-endian). The record outlives the replica.
fn destroyed_record(group: GroupId) -> Vec<u8> {
    let mut name = b"destroyed-group/".to_vec();
    name.extend_from_slice(&group.0.to_be_bytes());
    name
}

/// Adds to `batch` the record that this store destroyed its replica of `group` (written in
/// the batch that removes the replica, so neither happens without the other).
pub(crate) fn mark_destroyed(batch: &mut WriteBatch, group: GroupId) {
    batch.put_node_metadata(bytes::Bytes::from(destroyed_record(group)), bytes::Bytes::new());
}

/// True when this store once destroyed a replica of `group` ([`mark_destroyed`]).
///
/// # Errors
/// Engine errors.
pub(crate) fn was_destroyed<K: KvEngine>(
    engine: &Engine<K>,
    group: GroupId,
) -> mosaic_engine::Result<bool> {
    Ok(engine.node_metadata(&destroyed_record(group))?.is_some())
}

/// The membership a new group starts with: every member a voter.
#[must_use]
pub fn initial_conf_state(members: &[NodeId]) -> ConfState {
    ConfState { voters: members.iter().copied().collect(), learners: Default::default() }
}

/// The position of every group's bootstrap snapshot: a new group's log starts compacted at
/// index 1 of term 1, and that compaction point carries the initial membership.
pub const BOOTSTRAP_INDEX: LogIndex = LogIndex(1);
/// The term of [`BOOTSTRAP_INDEX`].
pub const BOOTSTRAP_TERM: Term = Term(1);

/// Adds to `batch` the state every initial member of a new group starts from: the log
/// compacted at [`BOOTSTRAP_INDEX`] with `conf_state` as its membership, applied and committed
/// there, term [`BOOTSTRAP_TERM`], no vote.
///
/// This puts the initial membership in the replicated history (as etcd's and raft-rs's
/// bootstrap do): no log holds an entry at index 1, so a replica that needs it, a replica that
/// joined with no membership above all, is sent a snapshot, which carries the membership. Were
/// the log to start at index 1 instead, a joined replica catching up from the log would apply
/// the group's membership changes to an empty membership and could elect itself alone.
pub(crate) fn bootstrap_batch(batch: &mut WriteBatch, group: GroupId, conf_state: ConfState) {
    let metadata = SnapshotMetadata {
        index: BOOTSTRAP_INDEX,
        term: BOOTSTRAP_TERM,
        conf_state: conf_state.clone(),
    };
    batch.reset_log(group, metadata);
    batch.set_conf_state(group, conf_state);
    batch.set_hard_state(
        group,
        HardState { term: BOOTSTRAP_TERM, vote: None, commit: BOOTSTRAP_INDEX },
    );
    batch.set_applied_index(group, BOOTSTRAP_INDEX);
}
