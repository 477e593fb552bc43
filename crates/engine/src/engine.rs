//! [`Engine`]: everything one process stores, on top of any [`KvEngine`] backend: the Raft logs
//! and states of all its groups, shard data, client sessions and node metadata.
//!
//! Invariants:
//! - One [`Engine::write`] is one atomic backend write, whatever it spans (group commit).
//! - A group's log is the compaction point `snapshot_index` followed by consecutive entries
//!   `snapshot_index + 1 ..= last_index`; a write that would break this (a gap, an overwrite of
//!   compacted entries, compacting past the end) is refused before anything is written.
//! - Writes that change any log are serialized with each other and with log reads by one
//!   lock held across the backend write and the update of the in-memory log state (bounds and
//!   [`EntryCache`]), so that state always mirrors what is stored. Writes that touch no log
//!   (the apply path) do not take it.
//! - Once written, a bulk deletion of user data (a shard deleted, a group's data cleared or
//!   removed) is handed to the backend to reclaim ([`KvEngine::reclaim`]), so a shard handed
//!   off frees its disk space soon, not at some later compaction.
//! - Bytes read back are decoded and checked (index in the value equals index in the key,
//!   no missing index); anything else is [`Error::Corruption`], never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use mosaic_raft::{ConfState, Entry, HardState, LogIndex, SnapshotMetadata, Term};

use crate::batch::{BatchOp, WriteBatch};
use crate::cache::EntryCache;
use crate::codec;
use crate::error::{Error, Result};
use crate::ids::{ClientId, GroupId, NodeIdentity, ShardId};
use crate::keys::{self, ColumnFamily, KeyRange, StateTag};
use crate::kv::{Direction, KvEngine, KvRead, RawOp, WriteOptions};
use crate::snapshot::EngineSnapshot;

/// Settings of the engine layer shared by every backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Bound of the [`EntryCache`] across all groups, in bytes of [`Entry::size_bytes`].
    /// 0 disables the cache. Default: 64 MiB.
    pub entry_cache_bytes_max: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { entry_cache_bytes_max: 64 << 20 }
    }
}

impl EngineConfig {
    /// The largest entry cache accepted (a larger value is taken for a unit mistake).
    pub const ENTRY_CACHE_BYTES_LIMIT: u64 = 1 << 40;

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.entry_cache_bytes_max > Self::ENTRY_CACHE_BYTES_LIMIT {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "entry_cache_bytes_max is {} bytes; at most {} (1 TiB) is accepted",
                    self.entry_cache_bytes_max,
                    Self::ENTRY_CACHE_BYTES_LIMIT
                ),
            });
        }
        Ok(())
    }
}

/// Where a group's log starts and ends.
///
/// Invariant: `snapshot_index <= last_index`; entries `snapshot_index + 1 ..= last_index` are
/// stored and nothing else is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogBounds {
    /// The compaction point: the last index no longer stored (0 when nothing was compacted).
    pub snapshot_index: LogIndex,
    /// The term of the entry at `snapshot_index`.
    pub snapshot_term: Term,
    /// The last index in the log (`snapshot_index` when no entry is stored).
    pub last_index: LogIndex,
}

impl LogBounds {
    /// The first index still stored (Raft's `first_index`).
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }
}

/// What the engine keeps in memory about the logs, guarded by one lock.
#[derive(Debug)]
struct LogState {
    /// Bounds of every group read or written since open; dropped when a group is removed.
    bounds: BTreeMap<GroupId, LogBounds>,
    cache: EntryCache,
}

/// What one store holds, for every group of the process. See the module documentation.
pub struct Engine<K: KvEngine> {
    kv: K,
    path: PathBuf,
    identity: NodeIdentity,
    log: RwLock<LogState>,
}

impl<K: KvEngine> std::fmt::Debug for Engine<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("identity", &self.identity)
            .finish()
    }
}

/// What [`check_identity`] found in a store's `meta` column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreState {
    /// The store holds nothing at all: a new store, or one whose creation was interrupted
    /// before its identity was written.
    Empty,
    /// The format version and the identity match.
    Matches,
}

fn corruption(path: &Path, reason: String) -> Error {
    Error::Corruption { path: path.to_path_buf(), reason }
}

/// Checks the format version and the identity recorded in a store against this build and
/// `identity`, without writing anything. Backends call it on a read-only view before opening a
/// store for writing; [`Engine::open`] calls it again on the open store.
///
/// # Errors
/// [`Error::FormatVersion`], [`Error::WrongNode`], or [`Error::Corruption`] when the records
/// are missing (in a store that holds other data) or do not decode.
pub fn check_identity<R: KvRead>(
    read: &R,
    path: &Path,
    identity: NodeIdentity,
) -> Result<StoreState> {
    let version = read.get(ColumnFamily::Meta, keys::META_FORMAT_VERSION)?;
    let recorded = read.get(ColumnFamily::Meta, keys::META_IDENTITY)?;
    let (version, recorded) = match (version, recorded) {
        (Some(version), Some(recorded)) => (version, recorded),
        (None, None) if store_is_empty(read)? => return Ok(StoreState::Empty),
        (version, _) => {
            let missing = if version.is_none() { "format version" } else { "node identity" };
            return Err(corruption(path, format!("the store holds data but no {missing} record")));
        }
    };
    let found = codec::decode_format_version(&version)
        .map_err(|error| corruption(path, format!("meta: {error}")))?;
    if found != codec::FORMAT_VERSION {
        return Err(Error::FormatVersion {
            path: path.to_path_buf(),
            found,
            expected: codec::FORMAT_VERSION,
        });
    }
    let found = codec::decode_identity(&recorded)
        .map_err(|error| corruption(path, format!("meta: {error}")))?;
    if found != identity {
        return Err(Error::WrongNode { path: path.to_path_buf(), found, expected: identity });
    }
    Ok(StoreState::Matches)
}

fn store_is_empty<R: KvRead>(read: &R) -> Result<bool> {
    let everything = KeyRange { start: Vec::new(), end: vec![0xff; 64] };
    for cf in ColumnFamily::ALL {
        let mut empty = true;
        read.scan(cf, &everything, Direction::Forward, &mut |_, _| {
            empty = false;
            Ok(false)
        })?;
        if !empty {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Returns an error for the reserved group id.
fn check_group(group: GroupId) -> Result<()> {
    if group == GroupId::RESERVED {
        return Err(Error::InvalidArgument { reason: format!("group id {group} is reserved") });
    }
    Ok(())
}

impl<K: KvEngine> Engine<K> {
    /// Opens the engine over `kv`: a store the backend just created (or one left entirely empty
    /// by an interrupted creation) gets the format version and `identity` written with a synced
    /// write; any other store must already carry both.
    ///
    /// # Errors
    /// As [`check_identity`]; [`Error::InvalidConfig`]; [`Error::Io`] when writing the identity
    /// of a new store fails.
    pub fn open(kv: K, identity: NodeIdentity, config: &EngineConfig) -> Result<Self> {
        config.validate()?;
        let path = kv.path().to_path_buf();
        match check_identity(&kv, &path, identity)? {
            StoreState::Matches => {}
            StoreState::Empty => {
                tracing::info!(path = %path.display(), %identity, created = kv.created_new(),
                    "initializing empty store");
                let ops = [
                    RawOp::Put {
                        cf: ColumnFamily::Meta,
                        key: keys::META_FORMAT_VERSION.to_vec(),
                        value: codec::encode_format_version(codec::FORMAT_VERSION).into(),
                    },
                    RawOp::Put {
                        cf: ColumnFamily::Meta,
                        key: keys::META_IDENTITY.to_vec(),
                        value: codec::encode_identity(&identity).into(),
                    },
                ];
                kv.write(&ops, WriteOptions { sync: true })?;
            }
        }
        let log = LogState {
            bounds: BTreeMap::new(),
            cache: EntryCache::new(config.entry_cache_bytes_max),
        };
        Ok(Self { kv, path, identity, log: RwLock::new(log) })
    }

    /// Closes the engine and returns its backend (to reopen it, or to crash it in a test).
    #[must_use]
    pub fn into_kv(self) -> K {
        self.kv
    }

    /// The backend.
    #[must_use]
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The store's location.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity the store belongs to.
    #[must_use]
    pub fn identity(&self) -> NodeIdentity {
        self.identity
    }

    /// Bytes currently held by the entry cache.
    #[must_use]
    pub fn entry_cache_bytes(&self) -> u64 {
        self.read_log().cache.bytes()
    }

    fn read_log(&self) -> RwLockReadGuard<'_, LogState> {
        self.log.read().expect("engine log lock poisoned by a panic")
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, LogState> {
        self.log.write().expect("engine log lock poisoned by a panic")
    }

    fn corruption(&self, reason: String) -> Error {
        corruption(&self.path, reason)
    }

    /// Applies `batch` atomically as one backend write: with `sync`, one fsync covers every
    /// group in it. Nothing is written when the batch is invalid.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a batch that would break a log's invariants or names the
    /// reserved group; [`Error::Io`] when the write fails (then none of it happened);
    /// [`Error::Corruption`] when a log's stored bounds cannot be read.
    pub fn write(&self, batch: &WriteBatch, options: WriteOptions) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let touches_log = batch.ops().iter().any(|op| {
            matches!(
                op,
                BatchOp::Append { .. }
                    | BatchOp::CompactLog { .. }
                    | BatchOp::ResetLog { .. }
                    | BatchOp::RemoveGroup { .. }
            )
        });
        if !touches_log {
            let mut raw = Vec::with_capacity(batch.ops().len());
            for op in batch.ops() {
                self.translate_non_log(op, &mut raw)?;
            }
            self.kv.write(&raw, options)?;
            self.reclaim_deleted(&raw);
            return Ok(());
        }
        let mut log = self.write_log();
        let mut pending: BTreeMap<GroupId, Option<LogBounds>> = BTreeMap::new();
        let mut raw = Vec::with_capacity(batch.ops().len() * 2);
        for op in batch.ops() {
            self.translate_log(&log, &mut pending, op, &mut raw)?;
        }
        self.kv.write(&raw, options)?;
        self.reclaim_deleted(&raw);
        let log = &mut *log;
        for op in batch.ops() {
            match op {
                BatchOp::Append { group, entries } => log.cache.append(*group, entries),
                BatchOp::CompactLog { group, metadata } => {
                    log.cache.compact(*group, metadata.index)
                }
                BatchOp::ResetLog { group, .. } | BatchOp::RemoveGroup { group } => {
                    log.cache.remove_group(*group);
                }
                _ => {}
            }
        }
        for (group, bounds) in pending {
            match bounds {
                Some(bounds) => log.bounds.insert(group, bounds),
                None => log.bounds.remove(&group),
            };
        }
        Ok(())
    }

    /// Hands the backend every bulk deletion of user data in `raw` (a shard deleted, a group's
    /// data cleared or removed: the only range deletes of these column families) to reclaim.
    /// Range deletes of Raft logs are left to the backend: logs are truncated all the time,
    /// a little at a time.
    fn reclaim_deleted(&self, raw: &[RawOp]) {
        for op in raw {
            if let RawOp::DeleteRange {
                cf: cf @ (ColumnFamily::Data | ColumnFamily::Sessions),
                range,
            } = op
            {
                self.kv.reclaim(*cf, range);
            }
        }
    }

    /// The bounds of `group` as of the ops translated so far in this batch.
    fn pending_bounds(
        &self,
        log: &LogState,
        pending: &mut BTreeMap<GroupId, Option<LogBounds>>,
        group: GroupId,
    ) -> Result<LogBounds> {
        if let Some(bounds) = pending.get(&group) {
            return Ok(bounds.unwrap_or_default());
        }
        match log.bounds.get(&group) {
            Some(bounds) => Ok(*bounds),
            None => self.load_bounds(group),
        }
    }

    fn translate_log(
        &self,
        log: &LogState,
        pending: &mut BTreeMap<GroupId, Option<LogBounds>>,
        op: &BatchOp,
        raw: &mut Vec<RawOp>,
    ) -> Result<()> {
        let invalid = |reason: String| Error::InvalidArgument { reason };
        match op {
            BatchOp::Append { group, entries } => {
                check_group(*group)?;
                let mut bounds = self.pending_bounds(log, pending, *group)?;
                let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                    return Ok(());
                };
                for pair in entries.windows(2) {
                    if pair[1].index != pair[0].index.next() {
                        return Err(invalid(format!(
                            "group {group}: entries not consecutive ({} then {})",
                            pair[0].index, pair[1].index
                        )));
                    }
                }
                if first.index <= bounds.snapshot_index {
                    return Err(invalid(format!(
                        "group {group}: append at {} overwrites compacted entries (compacted \
                         through {})",
                        first.index, bounds.snapshot_index
                    )));
                }
                if first.index > bounds.last_index.next() {
                    return Err(invalid(format!(
                        "group {group}: append at {} leaves a gap after last index {}",
                        first.index, bounds.last_index
                    )));
                }
                if last.index.0 == u64::MAX {
                    return Err(invalid(format!(
                        "group {group}: index {} is reserved",
                        last.index
                    )));
                }
                for entry in entries {
                    raw.push(RawOp::Put {
                        cf: ColumnFamily::RaftLog,
                        key: keys::raft_log_key(*group, entry.index),
                        value: codec::encode_entry(entry).into(),
                    });
                }
                if bounds.last_index > last.index {
                    // Raft §5.3: the stored suffix past the new entries conflicts; delete it.
                    raw.push(RawOp::DeleteRange {
                        cf: ColumnFamily::RaftLog,
                        range: keys::raft_log_range(
                            *group,
                            last.index.next(),
                            bounds.last_index.next(),
                        ),
                    });
                }
                bounds.last_index = last.index;
                pending.insert(*group, Some(bounds));
            }
            BatchOp::CompactLog { group, metadata } => {
                check_group(*group)?;
                let mut bounds = self.pending_bounds(log, pending, *group)?;
                if metadata.index < bounds.snapshot_index || metadata.index > bounds.last_index {
                    return Err(invalid(format!(
                        "group {group}: compaction point {} outside the log [{}, {}]",
                        metadata.index, bounds.snapshot_index, bounds.last_index
                    )));
                }
                raw.push(RawOp::DeleteRange {
                    cf: ColumnFamily::RaftLog,
                    range: keys::raft_log_range(*group, LogIndex(0), metadata.index.next()),
                });
                raw.push(self.put_snapshot_metadata(*group, metadata));
                bounds.snapshot_index = metadata.index;
                bounds.snapshot_term = metadata.term;
                pending.insert(*group, Some(bounds));
            }
            BatchOp::ResetLog { group, metadata } => {
                check_group(*group)?;
                let bounds = self.pending_bounds(log, pending, *group)?;
                if metadata.index < bounds.snapshot_index || metadata.index.0 == u64::MAX {
                    return Err(invalid(format!(
                        "group {group}: snapshot at {} is older than the compaction point {}",
                        metadata.index, bounds.snapshot_index
                    )));
                }
                raw.push(RawOp::DeleteRange {
                    cf: ColumnFamily::RaftLog,
                    range: keys::group_range(*group),
                });
                raw.push(self.put_snapshot_metadata(*group, metadata));
                pending.insert(
                    *group,
                    Some(LogBounds {
                        snapshot_index: metadata.index,
                        snapshot_term: metadata.term,
                        last_index: metadata.index,
                    }),
                );
            }
            BatchOp::RemoveGroup { group } => {
                check_group(*group)?;
                for cf in [
                    ColumnFamily::RaftLog,
                    ColumnFamily::RaftState,
                    ColumnFamily::Data,
                    ColumnFamily::Sessions,
                ] {
                    raw.push(RawOp::DeleteRange { cf, range: keys::group_range(*group) });
                }
                pending.insert(*group, None);
            }
            other => self.translate_non_log(other, raw)?,
        }
        Ok(())
    }

    fn put_snapshot_metadata(&self, group: GroupId, metadata: &SnapshotMetadata) -> RawOp {
        RawOp::Put {
            cf: ColumnFamily::RaftState,
            key: keys::raft_state_key(group, StateTag::SnapshotMetadata),
            value: codec::encode_snapshot_metadata(metadata).into(),
        }
    }

    fn translate_non_log(&self, op: &BatchOp, raw: &mut Vec<RawOp>) -> Result<()> {
        let state = |group: GroupId, tag: StateTag, value: Vec<u8>| RawOp::Put {
            cf: ColumnFamily::RaftState,
            key: keys::raft_state_key(group, tag),
            value: value.into(),
        };
        match op {
            BatchOp::SetHardState { group, hard_state } => {
                check_group(*group)?;
                raw.push(state(*group, StateTag::HardState, codec::encode_hard_state(hard_state)));
            }
            BatchOp::SetConfState { group, conf_state } => {
                check_group(*group)?;
                if let Some(both) = conf_state.voters.intersection(&conf_state.learners).next() {
                    return Err(Error::InvalidArgument {
                        reason: format!("group {group}: node {both} is both voter and learner"),
                    });
                }
                raw.push(state(*group, StateTag::ConfState, codec::encode_conf_state(conf_state)));
            }
            BatchOp::SetAppliedIndex { group, index } => {
                check_group(*group)?;
                raw.push(state(
                    *group,
                    StateTag::AppliedIndex,
                    codec::encode_applied_index(*index),
                ));
            }
            BatchOp::PutData { group, shard, key, value } => {
                check_group(*group)?;
                raw.push(RawOp::Put {
                    cf: ColumnFamily::Data,
                    key: keys::data_key(*group, *shard, key),
                    value: value.clone(),
                });
            }
            BatchOp::DeleteData { group, shard, key } => {
                check_group(*group)?;
                raw.push(RawOp::Delete {
                    cf: ColumnFamily::Data,
                    key: keys::data_key(*group, *shard, key),
                });
            }
            BatchOp::PutSession { group, shard, client, record } => {
                check_group(*group)?;
                raw.push(RawOp::Put {
                    cf: ColumnFamily::Sessions,
                    key: keys::session_key(*group, *shard, *client),
                    value: record.clone(),
                });
            }
            BatchOp::DeleteSession { group, shard, client } => {
                check_group(*group)?;
                raw.push(RawOp::Delete {
                    cf: ColumnFamily::Sessions,
                    key: keys::session_key(*group, *shard, *client),
                });
            }
            BatchOp::DeleteShard { group, shard } => {
                check_group(*group)?;
                for cf in [ColumnFamily::Data, ColumnFamily::Sessions] {
                    raw.push(RawOp::DeleteRange { cf, range: keys::shard_range(*group, *shard) });
                }
            }
            BatchOp::ClearGroupData { group } => {
                check_group(*group)?;
                for cf in [ColumnFamily::Data, ColumnFamily::Sessions] {
                    raw.push(RawOp::DeleteRange { cf, range: keys::group_range(*group) });
                }
            }
            BatchOp::PutNodeMetadata { name, value } => raw.push(RawOp::Put {
                cf: ColumnFamily::Meta,
                key: keys::node_metadata_key(name),
                value: value.clone(),
            }),
            BatchOp::DeleteNodeMetadata { name } => raw
                .push(RawOp::Delete { cf: ColumnFamily::Meta, key: keys::node_metadata_key(name) }),
            BatchOp::Append { .. }
            | BatchOp::CompactLog { .. }
            | BatchOp::ResetLog { .. }
            | BatchOp::RemoveGroup { .. } => {
                unreachable!("log operations are translated under the log lock")
            }
        }
        Ok(())
    }

    /// Reads a group's bounds from the store, checking that its first stored entry follows the
    /// compaction point.
    fn load_bounds(&self, group: GroupId) -> Result<LogBounds> {
        let metadata = self.snapshot_metadata(group)?;
        let all = keys::raft_log_range(group, LogIndex(0), LogIndex(u64::MAX));
        let edge = |direction| -> Result<Option<LogIndex>> {
            let mut found = None;
            self.kv.scan(ColumnFamily::RaftLog, &all, direction, &mut |key, _| {
                found = Some(keys::parse_raft_log_key(group, key).ok_or_else(|| {
                    self.corruption(format!("raft_log: malformed key {key:02x?}"))
                })?);
                Ok(false)
            })?;
            Ok(found)
        };
        let first = edge(Direction::Forward)?;
        let last = edge(Direction::Reverse)?;
        if let Some(first) = first
            && first != metadata.index.next()
        {
            return Err(self.corruption(format!(
                "group {group}: first stored entry is {first} but the log is compacted through {}",
                metadata.index
            )));
        }
        Ok(LogBounds {
            snapshot_index: metadata.index,
            snapshot_term: metadata.term,
            last_index: last.unwrap_or(metadata.index),
        })
    }

    /// Runs `read` with the group's bounds and the log state, loading the bounds once if they
    /// are not known yet.
    fn with_log<R>(
        &self,
        group: GroupId,
        read: impl FnOnce(&LogState, LogBounds) -> Result<R>,
    ) -> Result<R> {
        {
            let log = self.read_log();
            if let Some(bounds) = log.bounds.get(&group).copied() {
                return read(&log, bounds);
            }
        }
        let mut log = self.write_log();
        let bounds = match log.bounds.get(&group) {
            Some(bounds) => *bounds,
            None => {
                let bounds = self.load_bounds(group)?;
                log.bounds.insert(group, bounds);
                bounds
            }
        };
        read(&log, bounds)
    }

    /// Returns the group's log bounds (compaction point and last index).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Corruption`] when they cannot be read.
    pub fn log_bounds(&self, group: GroupId) -> Result<LogBounds> {
        self.with_log(group, |_, bounds| Ok(bounds))
    }

    /// Returns the first index still stored (the compaction point plus one; Raft's
    /// `first_index`).
    ///
    /// # Errors
    /// As [`Engine::log_bounds`].
    pub fn first_index(&self, group: GroupId) -> Result<LogIndex> {
        Ok(self.log_bounds(group)?.first_index())
    }

    /// Returns the last index in the group's log (the compaction point when no entry is
    /// stored; 0 for a group that has no log).
    ///
    /// # Errors
    /// As [`Engine::log_bounds`].
    pub fn last_index(&self, group: GroupId) -> Result<LogIndex> {
        Ok(self.log_bounds(group)?.last_index)
    }

    /// Returns the entries of `group` in `[low, high)`, stopping once their total
    /// [`Entry::size_bytes`] would exceed `max_bytes`, but always returning at least one entry
    /// when the range is not empty. Recent entries come from the entry cache.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `low` is at or below the compaction point;
    /// [`Error::Unavailable`] when `high` is past the last index plus one;
    /// [`Error::InvalidArgument`] when `low > high`; [`Error::Corruption`] when a stored entry
    /// is missing or does not decode.
    pub fn entries(
        &self,
        group: GroupId,
        low: LogIndex,
        high: LogIndex,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>> {
        if low > high {
            return Err(Error::InvalidArgument {
                reason: format!("group {group}: entries [{low}, {high}) is not a range"),
            });
        }
        self.with_log(group, |log, bounds| {
            if low <= bounds.snapshot_index {
                return Err(Error::Compacted { group, first_index: bounds.first_index() });
            }
            if high > bounds.last_index.next() {
                return Err(Error::Unavailable {
                    group,
                    index: high.prev(),
                    last_index: bounds.last_index,
                });
            }
            let cached_from = log.cache.first_index(group).filter(|first| *first < high);
            let store_high = cached_from.map_or(high, |first| first.max(low));
            let mut out = Vec::new();
            let mut total_bytes = 0u64;
            let mut fits = |entry: &Entry, count: usize| {
                total_bytes += entry.size_bytes();
                count == 0 || max_bytes.is_none_or(|limit| total_bytes <= limit)
            };
            let complete = self.read_stored_entries(group, low, store_high, &mut out, &mut fits)?;
            // Only a range that reaches the cache reads it (one that ends below the first
            // cached entry is all in the store).
            if complete && cached_from.is_some() {
                for entry in log.cache.entries(group, store_high, high) {
                    if !fits(entry, out.len()) {
                        break;
                    }
                    out.push(entry.clone());
                }
            }
            Ok(out)
        })
    }

    /// Reads stored entries `[low, high)` into `out` while `fits(entry, entries so far)`;
    /// returns true when it read the whole range.
    fn read_stored_entries(
        &self,
        group: GroupId,
        low: LogIndex,
        high: LogIndex,
        out: &mut Vec<Entry>,
        fits: &mut dyn FnMut(&Entry, usize) -> bool,
    ) -> Result<bool> {
        if low >= high {
            return Ok(true);
        }
        let mut expected = low;
        let mut complete = true;
        let range = keys::raft_log_range(group, low, high);
        self.kv.scan(ColumnFamily::RaftLog, &range, Direction::Forward, &mut |key, value| {
            let entry = self.decode_entry_at(group, expected, key, value)?;
            if !fits(&entry, out.len()) {
                complete = false;
                return Ok(false);
            }
            out.push(entry);
            expected = expected.next();
            Ok(true)
        })?;
        if complete && expected != high {
            return Err(self.corruption(format!(
                "group {group}: log entry {expected} is missing (last index at least {})",
                high.prev()
            )));
        }
        Ok(complete)
    }

    fn decode_entry_at(
        &self,
        group: GroupId,
        expected: LogIndex,
        key: &[u8],
        value: &Bytes,
    ) -> Result<Entry> {
        let index = keys::parse_raft_log_key(group, key)
            .ok_or_else(|| self.corruption(format!("raft_log: malformed key {key:02x?}")))?;
        if index != expected {
            return Err(self.corruption(format!(
                "group {group}: log entry {expected} is missing (next stored is {index})"
            )));
        }
        let entry = codec::decode_entry(value)
            .map_err(|error| self.corruption(format!("group {group} entry {index}: {error}")))?;
        if entry.index != index {
            return Err(self.corruption(format!(
                "group {group}: entry stored under index {index} says index {}",
                entry.index
            )));
        }
        Ok(entry)
    }

    /// Returns the term of `group`'s entry at `index`, for `snapshot_index <= index <=
    /// last_index`.
    ///
    /// # Errors
    /// [`Error::Compacted`] or [`Error::Unavailable`] outside that range;
    /// [`Error::Corruption`] when the entry is missing or does not decode.
    pub fn term(&self, group: GroupId, index: LogIndex) -> Result<Term> {
        self.with_log(group, |log, bounds| {
            if index == bounds.snapshot_index {
                return Ok(bounds.snapshot_term);
            }
            if index < bounds.snapshot_index {
                return Err(Error::Compacted { group, first_index: bounds.first_index() });
            }
            if index > bounds.last_index {
                return Err(Error::Unavailable { group, index, last_index: bounds.last_index });
            }
            if let Some(term) = log.cache.term(group, index) {
                return Ok(term);
            }
            let key = keys::raft_log_key(group, index);
            let value = self.kv.get(ColumnFamily::RaftLog, &key)?.ok_or_else(|| {
                self.corruption(format!("group {group}: log entry {index} is missing"))
            })?;
            Ok(self.decode_entry_at(group, index, &key, &value)?.term)
        })
    }

    fn get_state<T>(
        &self,
        group: GroupId,
        tag: StateTag,
        decode: fn(&[u8]) -> std::result::Result<T, codec::DecodeError>,
    ) -> Result<Option<T>> {
        let Some(value) =
            self.kv.get(ColumnFamily::RaftState, &keys::raft_state_key(group, tag))?
        else {
            return Ok(None);
        };
        decode(&value)
            .map(Some)
            .map_err(|error| self.corruption(format!("group {group} raft state: {error}")))
    }

    /// Returns the group's hard state (the default one when none was written).
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Corruption`] when the stored value does not decode.
    pub fn hard_state(&self, group: GroupId) -> Result<HardState> {
        Ok(self
            .get_state(group, StateTag::HardState, codec::decode_hard_state)?
            .unwrap_or_default())
    }

    /// Returns the group's membership (empty when none was written).
    ///
    /// # Errors
    /// As [`Engine::hard_state`].
    pub fn conf_state(&self, group: GroupId) -> Result<ConfState> {
        Ok(self
            .get_state(group, StateTag::ConfState, codec::decode_conf_state)?
            .unwrap_or_default())
    }

    /// Returns the index of the last entry applied to the group's state machine (0 when none).
    ///
    /// # Errors
    /// As [`Engine::hard_state`].
    pub fn applied_index(&self, group: GroupId) -> Result<LogIndex> {
        Ok(self
            .get_state(group, StateTag::AppliedIndex, codec::decode_applied_index)?
            .unwrap_or_default())
    }

    /// Returns the group's last compaction point (index 0 when its log was never compacted).
    ///
    /// # Errors
    /// As [`Engine::hard_state`].
    pub fn snapshot_metadata(&self, group: GroupId) -> Result<SnapshotMetadata> {
        Ok(self
            .get_state(group, StateTag::SnapshotMetadata, codec::decode_snapshot_metadata)?
            .unwrap_or_default())
    }

    /// Returns every group that has raft state in the store, in id order: what a restarting
    /// node recovers.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Corruption`] for a malformed key.
    pub fn group_ids(&self) -> Result<Vec<GroupId>> {
        let all = KeyRange { start: Vec::new(), end: GroupId::RESERVED.0.to_be_bytes().to_vec() };
        let mut groups: Vec<GroupId> = Vec::new();
        self.kv.scan(ColumnFamily::RaftState, &all, Direction::Forward, &mut |key, _| {
            let group = keys::parse_raft_state_key(key)
                .ok_or_else(|| self.corruption(format!("raft_state: malformed key {key:02x?}")))?;
            if groups.last() != Some(&group) {
                groups.push(group);
            }
            Ok(true)
        })?;
        Ok(groups)
    }

    /// Returns the value of a user key in a shard, as of now.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn get_data(&self, group: GroupId, shard: ShardId, key: &[u8]) -> Result<Option<Bytes>> {
        self.kv.get(ColumnFamily::Data, &keys::data_key(group, shard, key))
    }

    /// Returns a client's session record in a shard, as of now.
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

    /// Calls `visit(shard, client, record)` for every client session of `group`, in shard and
    /// client order, until `visit` returns `Ok(false)`: what a group's state machine loads when
    /// it starts.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Corruption`] for a malformed session key; the first error
    /// `visit` returns.
    pub fn scan_group_sessions(
        &self,
        group: GroupId,
        visit: &mut dyn FnMut(ShardId, ClientId, &Bytes) -> Result<bool>,
    ) -> Result<()> {
        check_group(group)?;
        let range = keys::group_range(group);
        self.kv.scan(ColumnFamily::Sessions, &range, Direction::Forward, &mut |key, value| {
            let (shard, client) = keys::parse_session_key(key)
                .and_then(|client| Some((keys::parse_shard(key)?, client)))
                .ok_or_else(|| self.corruption(format!("sessions: malformed key {key:02x?}")))?;
            visit(shard, client, value)
        })
    }

    /// Returns a named node metadata record.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn node_metadata(&self, name: &[u8]) -> Result<Option<Bytes>> {
        self.kv.get(ColumnFamily::Meta, &keys::node_metadata_key(name))
    }

    /// Returns a point-in-time view of the whole store, for shard and group snapshots.
    #[must_use]
    pub fn snapshot(&self) -> EngineSnapshot<K::Snapshot> {
        EngineSnapshot::new(self.kv.snapshot(), self.path.clone())
    }
}
