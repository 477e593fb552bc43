//! The key layout shared by every engine: which column family holds what, and how keys are
//! built from ids.
//!
//! Invariants (docs/storage.md describes the layout byte by byte):
//! - Ids are fixed-width big-endian, so byte order is id order, and a group's log, a group's
//!   state, a group's data and one shard's data are each one contiguous key range.
//! - Every range built here is half-open `[start, end)` and never empty.

use mosaic_raft::LogIndex;

use crate::ids::{ClientId, GroupId, ShardId};

/// The column families of a store. Each engine keeps them apart (RocksDB column families; one
/// ordered map each in memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnFamily {
    /// Raft log entries: `group ‖ index`.
    RaftLog,
    /// Raft state per group: `group ‖ tag` (hard state, conf state, applied index, snapshot
    /// metadata).
    RaftState,
    /// Shard data: `group ‖ shard ‖ user key`.
    Data,
    /// Client sessions: `group ‖ shard ‖ client`.
    Sessions,
    /// Node metadata: format version, identity, and named records.
    Meta,
}

impl ColumnFamily {
    /// Every column family, in a fixed order.
    pub const ALL: [Self; 5] =
        [Self::RaftLog, Self::RaftState, Self::Data, Self::Sessions, Self::Meta];

    /// The column family's name on disk.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::RaftLog => "raft_log",
            Self::RaftState => "raft_state",
            Self::Data => "data",
            Self::Sessions => "sessions",
            Self::Meta => "meta",
        }
    }
}

/// A half-open key range `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key in the range.
    pub start: Vec<u8>,
    /// The first key past the range.
    pub end: Vec<u8>,
}

/// Which record of a group's raft state a `raft_state` key names (the key's last byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StateTag {
    /// The group's [`mosaic_raft::HardState`].
    HardState = 1,
    /// The group's [`mosaic_raft::ConfState`].
    ConfState = 2,
    /// The index of the last entry applied to the state machine.
    AppliedIndex = 3,
    /// The [`mosaic_raft::SnapshotMetadata`] of the last compaction point.
    SnapshotMetadata = 4,
}

/// Length of a `raft_log` key.
pub const RAFT_LOG_KEY_BYTES: usize = 16;
/// Length of a `raft_state` key.
pub const RAFT_STATE_KEY_BYTES: usize = 9;
/// Length of the `group ‖ shard` prefix of `data` and `sessions` keys.
pub const SHARD_PREFIX_BYTES: usize = 12;
/// Length of a `sessions` key.
pub const SESSION_KEY_BYTES: usize = 20;

/// `meta` key of the store's format version.
pub const META_FORMAT_VERSION: &[u8] = b"\x01format-version";
/// `meta` key of the store's [`crate::NodeIdentity`].
pub const META_IDENTITY: &[u8] = b"\x01identity";
/// Prefix of the `meta` keys holding named node metadata records.
pub const META_NODE_PREFIX: &[u8] = b"\x02node/";

/// The `raft_log` key of one entry.
#[must_use]
pub fn raft_log_key(group: GroupId, index: LogIndex) -> Vec<u8> {
    let mut key = Vec::with_capacity(RAFT_LOG_KEY_BYTES);
    key.extend_from_slice(&group.0.to_be_bytes());
    key.extend_from_slice(&index.0.to_be_bytes());
    key
}

/// The index in a `raft_log` key of `group`, or `None` when the key is not one.
#[must_use]
pub fn parse_raft_log_key(group: GroupId, key: &[u8]) -> Option<LogIndex> {
    if key.len() != RAFT_LOG_KEY_BYTES || key[..8] != group.0.to_be_bytes() {
        return None;
    }
    Some(LogIndex(u64::from_be_bytes(key[8..].try_into().ok()?)))
}

/// The `raft_log` keys of `group` with index in `[low, high)`.
#[must_use]
pub fn raft_log_range(group: GroupId, low: LogIndex, high: LogIndex) -> KeyRange {
    KeyRange { start: raft_log_key(group, low), end: raft_log_key(group, high) }
}

/// The `raft_state` key of one of a group's state records.
#[must_use]
pub fn raft_state_key(group: GroupId, tag: StateTag) -> Vec<u8> {
    let mut key = Vec::with_capacity(RAFT_STATE_KEY_BYTES);
    key.extend_from_slice(&group.0.to_be_bytes());
    key.push(tag as u8);
    key
}

/// The group a `raft_state` key belongs to, or `None` when the key is malformed.
#[must_use]
pub fn parse_raft_state_key(key: &[u8]) -> Option<GroupId> {
    if key.len() != RAFT_STATE_KEY_BYTES {
        return None;
    }
    Some(GroupId(u64::from_be_bytes(key[..8].try_into().ok()?)))
}

/// Every key of `group` in any of the group-prefixed column families.
///
/// # Panics
/// For [`GroupId::RESERVED`], whose range has no end; callers refuse it first.
#[must_use]
pub fn group_range(group: GroupId) -> KeyRange {
    assert_ne!(group, GroupId::RESERVED, "group id {group} is reserved");
    KeyRange { start: group.0.to_be_bytes().to_vec(), end: (group.0 + 1).to_be_bytes().to_vec() }
}

/// The `group ‖ shard` prefix of `data` and `sessions` keys.
#[must_use]
pub fn shard_prefix(group: GroupId, shard: ShardId) -> [u8; SHARD_PREFIX_BYTES] {
    let mut prefix = [0u8; SHARD_PREFIX_BYTES];
    prefix[..8].copy_from_slice(&group.0.to_be_bytes());
    prefix[8..].copy_from_slice(&shard.0.to_be_bytes());
    prefix
}

/// Every `data` or `sessions` key of one shard of `group`.
///
/// # Panics
/// For [`GroupId::RESERVED`] (see [`group_range`]).
#[must_use]
pub fn shard_range(group: GroupId, shard: ShardId) -> KeyRange {
    assert_ne!(group, GroupId::RESERVED, "group id {group} is reserved");
    let start = shard_prefix(group, shard).to_vec();
    // The prefix as a 96-bit big-endian number plus one; it cannot overflow because the group
    // is not the reserved all-ones id.
    let end = match shard.0.checked_add(1) {
        Some(next_shard) => shard_prefix(group, ShardId(next_shard)).to_vec(),
        None => shard_prefix(GroupId(group.0 + 1), ShardId(0)).to_vec(),
    };
    KeyRange { start, end }
}

/// The `data` key of a user key in a shard.
#[must_use]
pub fn data_key(group: GroupId, shard: ShardId, user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(SHARD_PREFIX_BYTES + user_key.len());
    key.extend_from_slice(&shard_prefix(group, shard));
    key.extend_from_slice(user_key);
    key
}

/// The `sessions` key of a client's session in a shard.
#[must_use]
pub fn session_key(group: GroupId, shard: ShardId, client: ClientId) -> Vec<u8> {
    let mut key = Vec::with_capacity(SESSION_KEY_BYTES);
    key.extend_from_slice(&shard_prefix(group, shard));
    key.extend_from_slice(&client.0.to_be_bytes());
    key
}

/// The client in a `sessions` key, or `None` when the key is malformed.
#[must_use]
pub fn parse_session_key(key: &[u8]) -> Option<ClientId> {
    if key.len() != SESSION_KEY_BYTES {
        return None;
    }
    Some(ClientId(u64::from_be_bytes(key[SHARD_PREFIX_BYTES..].try_into().ok()?)))
}

/// The shard in a `data` or `sessions` key, or `None` when the key is too short.
#[must_use]
pub fn parse_shard(key: &[u8]) -> Option<ShardId> {
    let bytes = key.get(8..SHARD_PREFIX_BYTES)?;
    Some(ShardId(u32::from_be_bytes(bytes.try_into().ok()?)))
}

/// The `meta` key of a named node metadata record.
#[must_use]
pub fn node_metadata_key(name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(META_NODE_PREFIX.len() + name.len());
    key.extend_from_slice(META_NODE_PREFIX);
    key.extend_from_slice(name);
    key
}

/// The smallest key strictly greater than `key` (used to resume a scan after a key).
#[must_use]
pub fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_log_keys_sort_by_group_then_index() {
        let a = raft_log_key(GroupId(1), LogIndex(u64::MAX));
        let b = raft_log_key(GroupId(2), LogIndex(0));
        let c = raft_log_key(GroupId(2), LogIndex(256));
        assert!(a < b && b < c);
        assert_eq!(parse_raft_log_key(GroupId(2), &c), Some(LogIndex(256)));
        assert_eq!(parse_raft_log_key(GroupId(1), &c), None);
    }

    #[test]
    fn shard_range_covers_exactly_one_shard_even_at_the_last_shard_id() {
        let range = shard_range(GroupId(7), ShardId(u32::MAX));
        let inside = data_key(GroupId(7), ShardId(u32::MAX), &[0xff; 40]);
        let next_group = data_key(GroupId(8), ShardId(0), b"");
        let previous_shard = data_key(GroupId(7), ShardId(u32::MAX - 1), &[0xff; 40]);
        assert!(range.start <= inside && inside < range.end);
        assert!(next_group >= range.end);
        assert!(previous_shard < range.start);
    }

    #[test]
    fn group_range_contains_every_column_family_key_of_the_group() {
        let range = group_range(GroupId(3));
        for key in [
            raft_log_key(GroupId(3), LogIndex(u64::MAX)),
            raft_state_key(GroupId(3), StateTag::SnapshotMetadata),
            data_key(GroupId(3), ShardId(u32::MAX), &[0xff; 8]),
            session_key(GroupId(3), ShardId(9), ClientId(u64::MAX)),
        ] {
            assert!(range.start <= key && key < range.end, "{key:?} outside {range:?}");
        }
        assert!(raft_log_key(GroupId(4), LogIndex(0)) >= range.end);
    }
}
