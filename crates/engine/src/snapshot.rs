//! [`EngineSnapshot`]: a point-in-time view of a store, and the chunked scan of one shard that
//! shard migration and group snapshots stream from it.
//!
//! Invariants:
//! - Every read through one snapshot sees the same instant, however long it is held: a shard
//!   streamed in many chunks is exactly the shard as of [`crate::Engine::snapshot`], and its
//!   applied index read from the same snapshot is the log position that state corresponds to.
//! - A chunk holds at most `max_bytes` of records (keys plus values), except that it always
//!   holds at least one record when any is left, so a scan always progresses.
//! - A shard scan yields the shard's client sessions (in client order) then its data (in key
//!   order); a group scan yields all the group's sessions then all its data, each in shard
//!   order; the cursor says where the next chunk starts.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use mosaic_raft::LogIndex;

use crate::codec;
use crate::error::{Error, Result};
use crate::ids::{ClientId, GroupId, ShardId};
use crate::keys::{self, ColumnFamily, KeyRange, StateTag};
use crate::kv::{Direction, KvRead};

/// One record of a shard: a client session or a user key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardRecord {
    /// A client's session record.
    Session {
        /// The client.
        client: ClientId,
        /// The record, opaque to the engine.
        record: Bytes,
    },
    /// A user key and its value.
    Data {
        /// The user key (without the group and shard prefix).
        key: Bytes,
        /// The value.
        value: Bytes,
    },
}

impl ShardRecord {
    /// The bytes this record counts against a chunk's limit (key or client id, plus value).
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        match self {
            Self::Session { record, .. } => 8 + record.len() as u64,
            Self::Data { key, value } => (key.len() + value.len()) as u64,
        }
    }
}

/// Where a shard scan resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ShardCursor {
    /// At the beginning of the shard.
    #[default]
    Start,
    /// After the session of this client.
    AfterSession(ClientId),
    /// After this user key (every session has been read).
    AfterData(Bytes),
}

impl ShardCursor {
    /// Where a scan resumes after reading `record`.
    #[must_use]
    pub fn after(record: &ShardRecord) -> Self {
        match record {
            ShardRecord::Session { client, .. } => Self::AfterSession(*client),
            ShardRecord::Data { key, .. } => Self::AfterData(key.clone()),
        }
    }
}

/// One chunk of a shard scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardChunk {
    /// Records in scan order.
    pub records: Vec<ShardRecord>,
    /// Where the next chunk starts; `None` when the shard has been read to its end.
    pub next: Option<ShardCursor>,
}

/// Where a group scan resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GroupCursor {
    /// At the beginning of the group.
    #[default]
    Start,
    /// After this client's session in this shard.
    AfterSession(ShardId, ClientId),
    /// After this user key of this shard (every session has been read).
    AfterData(ShardId, Bytes),
}

/// One chunk of a group scan: records with the shard each belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupChunk {
    /// Records in scan order.
    pub records: Vec<(ShardId, ShardRecord)>,
    /// Where the next chunk starts; `None` when the group has been read to its end.
    pub next: Option<GroupCursor>,
}

/// Where a scan resumes: within the sessions, from this key, or within the data.
enum Resume {
    Sessions(Vec<u8>),
    Data(Vec<u8>),
}

/// A point-in-time view of a store.
pub struct EngineSnapshot<S: KvRead> {
    kv: S,
    path: PathBuf,
}

impl<S: KvRead> std::fmt::Debug for EngineSnapshot<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSnapshot").field("path", &self.path).finish()
    }
}

impl<S: KvRead> EngineSnapshot<S> {
    /// Wraps a backend snapshot of the store at `path`.
    #[must_use]
    pub fn new(kv: S, path: PathBuf) -> Self {
        Self { kv, path }
    }

    /// The store's location.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corruption(&self, reason: String) -> Error {
        Error::Corruption { path: self.path.clone(), reason }
    }

    /// Returns the value of a user key in a shard, as of the snapshot.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn get_data(&self, group: GroupId, shard: ShardId, key: &[u8]) -> Result<Option<Bytes>> {
        self.kv.get(ColumnFamily::Data, &keys::data_key(group, shard, key))
    }

    /// Returns a client's session record in a shard, as of the snapshot.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn session(
        &self,
        group: GroupId,
        shard: ShardId,
        client: ClientId,
    ) -> Result<Option<Bytes>> {
        self.kv.get(ColumnFamily::Sessions, &keys::session_key(group, shard, client))
    }

    /// Returns the group's applied index as of the snapshot (0 when none was written): the log
    /// position the snapshot's data of that group corresponds to.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Corruption`] when the value does not decode.
    pub fn applied_index(&self, group: GroupId) -> Result<LogIndex> {
        let key = keys::raft_state_key(group, StateTag::AppliedIndex);
        let Some(value) = self.kv.get(ColumnFamily::RaftState, &key)? else {
            return Ok(LogIndex(0));
        };
        codec::decode_applied_index(&value)
            .map_err(|error| self.corruption(format!("group {group} raft state: {error}")))
    }

    /// Calls `visit(key, value)` for the user keys of a shard from `start` (included) to `end`
    /// (excluded; `None`: to the shard's last key), in key order, until `visit` returns
    /// `Ok(false)`: what a client's scan of the shard reads.
    ///
    /// # Errors
    /// [`Error::Io`]; the first error `visit` returns.
    pub fn scan_data(
        &self,
        group: GroupId,
        shard: ShardId,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()> {
        let range = KeyRange {
            start: keys::data_key(group, shard, start),
            end: end.map_or_else(
                || keys::shard_range(group, shard).end,
                |end| keys::data_key(group, shard, end),
            ),
        };
        if range.start >= range.end {
            return Ok(());
        }
        self.kv.scan(ColumnFamily::Data, &range, Direction::Forward, &mut |key, value| {
            visit(&key[keys::SHARD_PREFIX_BYTES..], value)
        })
    }

    /// Reads the next chunk of a shard from `cursor`: sessions first, then data, at most
    /// `max_bytes` of records but at least one when any is left.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Corruption`] for a malformed session key.
    pub fn scan_shard_chunk(
        &self,
        group: GroupId,
        shard: ShardId,
        cursor: &ShardCursor,
        max_bytes: u64,
    ) -> Result<ShardChunk> {
        let resume = match cursor {
            ShardCursor::Start => Resume::Sessions(keys::shard_range(group, shard).start),
            ShardCursor::AfterSession(client) => {
                Resume::Sessions(keys::key_successor(&keys::session_key(group, shard, *client)))
            }
            ShardCursor::AfterData(key) => {
                Resume::Data(keys::key_successor(&keys::data_key(group, shard, key)))
            }
        };
        let (records, full) =
            self.scan_chunk(&keys::shard_range(group, shard), resume, max_bytes)?;
        let next = full.then(|| match records.last() {
            Some((_, record)) => ShardCursor::after(record),
            None => unreachable!("a full chunk holds at least one record"),
        });
        Ok(ShardChunk { records: records.into_iter().map(|(_, record)| record).collect(), next })
    }

    /// Reads the next chunk of every shard of a group from `cursor`: all its sessions (in shard
    /// and client order), then all its data (in shard and key order), at most `max_bytes` of
    /// records but at least one when any is left. What a group snapshot streams.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Corruption`] for a malformed key.
    pub fn scan_group_chunk(
        &self,
        group: GroupId,
        cursor: &GroupCursor,
        max_bytes: u64,
    ) -> Result<GroupChunk> {
        let resume = match cursor {
            GroupCursor::Start => Resume::Sessions(keys::group_range(group).start),
            GroupCursor::AfterSession(shard, client) => {
                Resume::Sessions(keys::key_successor(&keys::session_key(group, *shard, *client)))
            }
            GroupCursor::AfterData(shard, key) => {
                Resume::Data(keys::key_successor(&keys::data_key(group, *shard, key)))
            }
        };
        let (records, full) = self.scan_chunk(&keys::group_range(group), resume, max_bytes)?;
        let next = full.then(|| match records.last() {
            Some((shard, ShardRecord::Session { client, .. })) => {
                GroupCursor::AfterSession(*shard, *client)
            }
            Some((shard, ShardRecord::Data { key, .. })) => {
                GroupCursor::AfterData(*shard, key.clone())
            }
            None => unreachable!("a full chunk holds at least one record"),
        });
        Ok(GroupChunk { records, next })
    }

    /// Scans the sessions then the data of `range` from `resume`, admitting records while
    /// they fit in `max_bytes` (always at least one); returns them and whether the chunk
    /// filled up before the range ended.
    fn scan_chunk(
        &self,
        range: &KeyRange,
        resume: Resume,
        max_bytes: u64,
    ) -> Result<(Vec<(ShardId, ShardRecord)>, bool)> {
        let mut records = Vec::new();
        let mut total_bytes = 0u64;
        let mut full = false;
        let mut admit = |shard: ShardId, record: ShardRecord, records: &mut Vec<_>| {
            total_bytes += record.size_bytes();
            if !records.is_empty() && total_bytes > max_bytes {
                return false;
            }
            records.push((shard, record));
            true
        };
        let data_start = match resume {
            Resume::Sessions(start) => {
                let sessions = KeyRange { start, end: range.end.clone() };
                self.kv.scan(
                    ColumnFamily::Sessions,
                    &sessions,
                    Direction::Forward,
                    &mut |key, value| {
                        let (shard, client) =
                            keys::parse_shard(key).zip(keys::parse_session_key(key)).ok_or_else(
                                || self.corruption(format!("sessions: malformed key {key:02x?}")),
                            )?;
                        let record = ShardRecord::Session { client, record: value.clone() };
                        full = !admit(shard, record, &mut records);
                        Ok(!full)
                    },
                )?;
                range.start.clone()
            }
            Resume::Data(start) => start,
        };
        if !full {
            let data = KeyRange { start: data_start, end: range.end.clone() };
            self.kv.scan(ColumnFamily::Data, &data, Direction::Forward, &mut |key, value| {
                let shard = keys::parse_shard(key)
                    .ok_or_else(|| self.corruption(format!("data: malformed key {key:02x?}")))?;
                let user_key = Bytes::copy_from_slice(&key[keys::SHARD_PREFIX_BYTES..]);
                full = !admit(
                    shard,
                    ShardRecord::Data { key: user_key, value: value.clone() },
                    &mut records,
                );
                Ok(!full)
            })?;
        }
        Ok((records, full))
    }
}
