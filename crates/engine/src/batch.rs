//! [`WriteBatch`]: the engine-independent list of changes that one [`crate::Engine::write`]
//! applies atomically, across any number of groups.
//!
//! A batch only records what the caller asked for; [`crate::Engine::write`] validates it against
//! the stored logs and turns it into column-family operations. Operations apply in the order
//! they were added.

use bytes::Bytes;
use mosaic_raft::{ConfState, Entry, HardState, LogIndex, SnapshotMetadata};

use crate::ids::{ClientId, GroupId, ShardId};
use crate::snapshot::ShardRecord;

/// One change in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Appends entries to a group's log, first discarding any stored entry at or after the first
    /// new index (Raft §5.3: a conflicting suffix is replaced).
    Append {
        /// The group.
        group: GroupId,
        /// Consecutive entries, the first one at most one past the current last index.
        entries: Vec<Entry>,
    },
    /// Sets a group's hard state.
    SetHardState {
        /// The group.
        group: GroupId,
        /// The new hard state.
        hard_state: HardState,
    },
    /// Sets a group's membership.
    SetConfState {
        /// The group.
        group: GroupId,
        /// The new membership.
        conf_state: ConfState,
    },
    /// Sets the index of the last entry applied to the group's state machine.
    SetAppliedIndex {
        /// The group.
        group: GroupId,
        /// The applied index.
        index: LogIndex,
    },
    /// Records a compaction point and deletes the entries at or below it; later entries stay.
    CompactLog {
        /// The group.
        group: GroupId,
        /// The new compaction point: `metadata.index` must be a stored index (or the current
        /// compaction point), and `metadata.term` its term.
        metadata: SnapshotMetadata,
    },
    /// Deletes every entry of the group's log and records `metadata` as its compaction point:
    /// installing a snapshot that the log does not match (Raft §7).
    ResetLog {
        /// The group.
        group: GroupId,
        /// The snapshot's position and membership.
        metadata: SnapshotMetadata,
    },
    /// Sets a user key in a shard.
    PutData {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// The user key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Removes a user key from a shard.
    DeleteData {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// The user key.
        key: Bytes,
    },
    /// Sets a client's session record in a shard.
    PutSession {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// The client.
        client: ClientId,
        /// The session record (opaque to the engine).
        record: Bytes,
    },
    /// Removes a client's session record from a shard.
    DeleteSession {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// The client.
        client: ClientId,
    },
    /// Removes a whole shard of a group: its data and its sessions (two range deletes).
    DeleteShard {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
    },
    /// Removes every data key and session of a group, in all its shards (two range deletes);
    /// its log and Raft state stay: installing a group snapshot replaces the data this way.
    ClearGroupData {
        /// The group.
        group: GroupId,
    },
    /// Removes every key of a group: log, state, data, sessions.
    RemoveGroup {
        /// The group.
        group: GroupId,
    },
    /// Sets a named node metadata record.
    PutNodeMetadata {
        /// The record's name.
        name: Bytes,
        /// Its value.
        value: Bytes,
    },
    /// Removes a named node metadata record.
    DeleteNodeMetadata {
        /// The record's name.
        name: Bytes,
    },
}

/// Changes to apply atomically in one write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The operations, in the order they apply.
    #[must_use]
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Returns true when the batch holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds any operation.
    pub fn push(&mut self, op: BatchOp) {
        self.ops.push(op);
    }

    /// See [`BatchOp::Append`]. An empty `entries` adds nothing.
    pub fn append(&mut self, group: GroupId, entries: Vec<Entry>) {
        if !entries.is_empty() {
            self.ops.push(BatchOp::Append { group, entries });
        }
    }

    /// See [`BatchOp::SetHardState`].
    pub fn set_hard_state(&mut self, group: GroupId, hard_state: HardState) {
        self.ops.push(BatchOp::SetHardState { group, hard_state });
    }

    /// See [`BatchOp::SetConfState`].
    pub fn set_conf_state(&mut self, group: GroupId, conf_state: ConfState) {
        self.ops.push(BatchOp::SetConfState { group, conf_state });
    }

    /// See [`BatchOp::SetAppliedIndex`].
    pub fn set_applied_index(&mut self, group: GroupId, index: LogIndex) {
        self.ops.push(BatchOp::SetAppliedIndex { group, index });
    }

    /// See [`BatchOp::CompactLog`].
    pub fn compact_log(&mut self, group: GroupId, metadata: SnapshotMetadata) {
        self.ops.push(BatchOp::CompactLog { group, metadata });
    }

    /// See [`BatchOp::ResetLog`].
    pub fn reset_log(&mut self, group: GroupId, metadata: SnapshotMetadata) {
        self.ops.push(BatchOp::ResetLog { group, metadata });
    }

    /// See [`BatchOp::PutData`].
    pub fn put_data(&mut self, group: GroupId, shard: ShardId, key: Bytes, value: Bytes) {
        self.ops.push(BatchOp::PutData { group, shard, key, value });
    }

    /// See [`BatchOp::DeleteData`].
    pub fn delete_data(&mut self, group: GroupId, shard: ShardId, key: Bytes) {
        self.ops.push(BatchOp::DeleteData { group, shard, key });
    }

    /// See [`BatchOp::PutSession`].
    pub fn put_session(&mut self, group: GroupId, shard: ShardId, client: ClientId, record: Bytes) {
        self.ops.push(BatchOp::PutSession { group, shard, client, record });
    }

    /// See [`BatchOp::DeleteSession`].
    pub fn delete_session(&mut self, group: GroupId, shard: ShardId, client: ClientId) {
        self.ops.push(BatchOp::DeleteSession { group, shard, client });
    }

    /// See [`BatchOp::DeleteShard`].
    pub fn delete_shard(&mut self, group: GroupId, shard: ShardId) {
        self.ops.push(BatchOp::DeleteShard { group, shard });
    }

    /// Writes the records of a chunk that [`crate::EngineSnapshot::scan_shard_chunk`] read
    /// (possibly on another node, possibly for another group) into `group`'s `shard`.
    pub fn put_shard_records(&mut self, group: GroupId, shard: ShardId, records: &[ShardRecord]) {
        for record in records {
            match record {
                ShardRecord::Session { client, record } => {
                    self.put_session(group, shard, *client, record.clone());
                }
                ShardRecord::Data { key, value } => {
                    self.put_data(group, shard, key.clone(), value.clone());
                }
            }
        }
    }

    /// See [`BatchOp::ClearGroupData`].
    pub fn clear_group_data(&mut self, group: GroupId) {
        self.ops.push(BatchOp::ClearGroupData { group });
    }

    /// See [`BatchOp::RemoveGroup`].
    pub fn remove_group(&mut self, group: GroupId) {
        self.ops.push(BatchOp::RemoveGroup { group });
    }

    /// See [`BatchOp::PutNodeMetadata`].
    pub fn put_node_metadata(&mut self, name: Bytes, value: Bytes) {
        self.ops.push(BatchOp::PutNodeMetadata { name, value });
    }

    /// See [`BatchOp::DeleteNodeMetadata`].
    pub fn delete_node_metadata(&mut self, name: Bytes) {
        self.ops.push(BatchOp::DeleteNodeMetadata { name });
    }
}
