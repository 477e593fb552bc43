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
//!   order); the cursor says where the next chunk starts.

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

/// One chunk of a shard scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardChunk {
    /// Records in scan order.
    pub records: Vec<ShardRecord>,
    /// Where the next chunk starts; `None` when the shard has been read to its end.
    pub next: Option<ShardCursor>,
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
        let shard_keys = keys::shard_range(group, shard);
        let mut records = Vec::new();
        let mut total_bytes = 0u64;
        let mut full = false;
        let mut admit = |record: ShardRecord, records: &mut Vec<ShardRecord>| {
            total_bytes += record.size_bytes();
            if !records.is_empty() && total_bytes > max_bytes {
                return false;
            }
            records.push(record);
            true
        };
        let data_start = match cursor {
            ShardCursor::Start | ShardCursor::AfterSession(_) => {
                let start = match cursor {
                    ShardCursor::AfterSession(client) => {
                        keys::key_successor(&keys::session_key(group, shard, *client))
                    }
                    _ => shard_keys.start.clone(),
                };
                let range = KeyRange { start, end: shard_keys.end.clone() };
                self.kv.scan(
                    ColumnFamily::Sessions,
                    &range,
                    Direction::Forward,
                    &mut |key, value| {
                        let client = keys::parse_session_key(key).ok_or_else(|| {
                            self.corruption(format!("sessions: malformed key {key:02x?}"))
                        })?;
                        let record = ShardRecord::Session { client, record: value.clone() };
                        full = !admit(record, &mut records);
                        Ok(!full)
                    },
                )?;
                shard_keys.start.clone()
            }
            ShardCursor::AfterData(after) => {
                keys::key_successor(&keys::data_key(group, shard, after))
            }
        };
        if !full {
            let range = KeyRange { start: data_start, end: shard_keys.end };
            self.kv.scan(ColumnFamily::Data, &range, Direction::Forward, &mut |key, value| {
                let user_key = Bytes::copy_from_slice(&key[keys::SHARD_PREFIX_BYTES..]);
                let record = ShardRecord::Data { key: user_key, value: value.clone() };
                full = !admit(record, &mut records);
                Ok(!full)
            })?;
        }
        let next = if full {
            match records.last() {
                Some(ShardRecord::Session { client, .. }) => {
                    Some(ShardCursor::AfterSession(*client))
                }
                Some(ShardRecord::Data { key, .. }) => Some(ShardCursor::AfterData(key.clone())),
                None => unreachable!("a full chunk holds at least one record"),
            }
        } else {
            None
        };
        Ok(ShardChunk { records, next })
    }
}
