//! [`KvStateMachine`]: what a storage group applies: client writes to the keys of the shards
//! it serves, deduplicated by client session, and the steps of shard migrations
//! ([`crate::migration`]) that change which shards it serves ([`crate::ownership`]).
//!
//! Every effect of an entry goes into the store's apply batch together with the applied index
//! (the store adds it), so a crash never applies an entry twice or by half.
//!
//! Invariants:
//! - `pending` holds exactly the data writes handed to batches not yet written, and
//!   `deleted_shards` the shards whose data such a batch deletes, so a later entry of the same
//!   batch reads what the batch will leave: an append after a put of the same key reads the
//!   put, and an append to a key of a shard deleted (and perhaps installed again) earlier in
//!   the batch reads only what was written after the deletion, not the engine's older value
//!   (found by the simulator: a replica catching up a long log diverged).
//! - `ownership` is `None` exactly when the group's node does not follow a controller and no
//!   ownership record was ever written for the group; otherwise it equals the group's
//!   ownership record as of the last applied entry.
//! - `revisions` holds the revision ([`crate::version`]) of every shard whose revision record
//!   exists, as of the last applied entry; a shard without one has revision 0.
//! - `unpublished` holds, in apply order, the changes (and the ends of shards no longer
//!   served) of the batches not yet written; `feeds` ([`crate::watch`]) hold every change
//!   written since each feed was made, so a watcher never sees a change a crash could undo,
//!   and what a read registers it from is what the engine holds.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use mosaic_controller::ConfigNum;
use mosaic_engine::{
    ClientId, Engine, EngineSnapshot, GroupId, KvEngine, KvRead, ShardCursor, ShardId, ShardRecord,
    WriteBatch,
};
use mosaic_raft::LogIndex;
use mosaic_raftstore::{Error, Result, StateMachine};

use crate::batch::{KvBatch, batch_size_refusal};
use crate::command::{KvCommand, KvWrite, WriteKind};
use crate::encoding::DecodeError;
use crate::migration::{MigrationCommand, MigrationOutcome};
use crate::ownership::{
    METADATA_SHARD, NotApplied, OWNERSHIP_KEY, Ownership, PLACED_BY_CONTROLLER,
    PLACED_SINCE_RECORD, PLACEMENT_RECORD, PlacedSince, ShardState,
};
use crate::session::{Session, SessionTable, WriteEffect};
use crate::version::{REVISION_CLIENT, Version, Versioned, decode_revision, encode_revision};
use crate::watch::{Change, ShardFeed, ShardWatch, WatchEnd, WatchReceiver, WatchRefusal};

/// A read of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvGet {
    /// The shard the key hashes to.
    pub shard: ShardId,
    /// The user key.
    pub key: Bytes,
}

/// A read of a storage group's applied state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvQuery {
    /// The value of one key.
    Get(KvGet),
    /// A point-in-time view of the store in which the group serves `shard`, to scan it
    /// ([`crate::ShardScan::read`]) without holding up the store; a group placed by a
    /// controller refuses a client routing by another shard count than the cluster's.
    Shard {
        /// The shard.
        shard: ShardId,
        /// The shard count the client routes by.
        shard_count: u32,
    },
    /// Registers a watcher (its `from` unset: of the changes after the read), the shard
    /// checked as [`KvQuery::Shard`] checks it.
    Watch(ShardWatch),
    /// The group's shard ownership (`None` for a group that serves every shard).
    Ownership,
    /// A point-in-time view to stream `shard` from, which this group is sending to `to` in
    /// configuration `num`.
    Handoff {
        /// The configuration that moved the shard.
        num: ConfigNum,
        /// The shard.
        shard: ShardId,
        /// The group pulling it.
        to: GroupId,
    },
}

/// What a [`KvQuery`] answers.
pub enum KvReadOutput<S: KvRead> {
    /// The key's value and version, if it has a value.
    Value(Option<Versioned>),
    /// The group's shard ownership.
    Ownership(Option<Ownership>),
    /// A view of the store in which the shard is frozen (sending) and complete.
    Handoff(EngineSnapshot<S>),
    /// A view of the store in which the group serves the shard.
    Shard(EngineSnapshot<S>),
    /// The watcher, registered.
    Watch(WatchReceiver),
}

impl<S: KvRead> std::fmt::Debug for KvReadOutput<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(value) => f.debug_tuple("Value").field(value).finish(),
            Self::Ownership(ownership) => f.debug_tuple("Ownership").field(ownership).finish(),
            Self::Handoff(snapshot) => f.debug_tuple("Handoff").field(&snapshot.path()).finish(),
            Self::Shard(snapshot) => f.debug_tuple("Shard").field(&snapshot.path()).finish(),
            Self::Watch(watch) => f.debug_tuple("Watch").field(watch).finish(),
        }
    }
}

/// What an applied write answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The log index of the entry.
    pub index: LogIndex,
    /// True when the session had already applied this sequence number: the write was not
    /// applied again (6.824 "at most once").
    pub duplicate: bool,
    /// What the write did; for a duplicate, what its first application did. `None` only for
    /// a duplicate of a write older than the session's last (a late copy of a request its
    /// client no longer waits for): what that one did is not kept.
    pub effect: Option<WriteEffect>,
}

/// What an applied command answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A client write.
    Write(WriteOutcome),
    /// A migration step.
    Migration(MigrationOutcome),
}

/// The state machine of one storage group. See the module documentation.
#[derive(Debug)]
pub struct KvStateMachine {
    group: GroupId,
    sessions: SessionTable,
    ownership: Option<Ownership>,
    revisions: BTreeMap<ShardId, u64>,
    pending: BTreeMap<(ShardId, Bytes), Option<Bytes>>,
    deleted_shards: BTreeSet<ShardId>,
    unpublished: Vec<Unpublished>,
    /// Made when a shard is first changed or watched; a read registers watchers (hence the
    /// cell: reads take the state machine shared, and all of it stays on the store's thread).
    feeds: RefCell<BTreeMap<ShardId, ShardFeed>>,
}

/// What a written batch publishes to the feeds, in apply order.
#[derive(Debug)]
enum Unpublished {
    /// A change of a shard's key.
    Change(ShardId, Change),
    /// The shard is no longer served here: its watchers' end.
    Ended(ShardId, WatchEnd),
}

impl Drop for KvStateMachine {
    /// The replica's state is replaced (a snapshot installed) or gone (the group destroyed):
    /// its watchers resume elsewhere, or here from what the new state holds.
    fn drop(&mut self) {
        for (_, feed) in std::mem::take(self.feeds.get_mut()) {
            feed.end(WatchEnd::Reset);
        }
    }
}

impl KvStateMachine {
    /// The group.
    #[must_use]
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The session of `client` in `shard`.
    #[must_use]
    pub fn session(&self, shard: ShardId, client: ClientId) -> Option<Session> {
        self.sessions.get(shard, client)
    }

    /// The group's shard ownership; `None` when it serves every shard.
    #[must_use]
    pub fn ownership(&self) -> Option<&Ownership> {
        self.ownership.as_ref()
    }

    /// The revision of `shard` ([`crate::version`]): 0 for a shard never written here.
    #[must_use]
    pub fn revision(&self, shard: ShardId) -> u64 {
        self.revisions.get(&shard).copied().unwrap_or(0)
    }

    /// Marks a node's store as placed by a controller: its groups serve only the shards their
    /// configurations give them (written once, when a node first follows a controller), and
    /// [`PlacedSince::Pending`] until [`KvStateMachine::mark_placed_since`].
    pub fn mark_placed_by_controller(batch: &mut WriteBatch) {
        batch.put_node_metadata(
            Bytes::from_static(PLACEMENT_RECORD),
            Bytes::from_static(PLACED_BY_CONTROLLER),
        );
        batch.put_node_metadata(Bytes::from_static(PLACED_SINCE_RECORD), Bytes::new());
    }

    /// True when the node's store is placed by a controller.
    ///
    /// # Errors
    /// Engine errors.
    pub fn is_placed_by_controller<K: KvEngine>(engine: &Engine<K>) -> Result<bool> {
        Ok(engine.node_metadata(PLACEMENT_RECORD)?.as_deref() == Some(PLACED_BY_CONTROLLER))
    }

    /// Records that this store first followed the controller when `num` was its latest
    /// configuration (see [`PLACED_SINCE_RECORD`]).
    pub fn mark_placed_since(batch: &mut WriteBatch, num: ConfigNum) {
        let value = Bytes::copy_from_slice(&num.0.to_be_bytes());
        batch.put_node_metadata(Bytes::from_static(PLACED_SINCE_RECORD), value);
    }

    /// What the store records of when it first followed the controller.
    ///
    /// # Errors
    /// Engine errors; a record that is neither empty nor 8 bytes is corruption.
    pub fn placed_since<K: KvEngine>(engine: &Engine<K>) -> Result<PlacedSince> {
        let Some(value) = engine.node_metadata(PLACED_SINCE_RECORD)? else {
            return Ok(PlacedSince::Unrecorded);
        };
        if value.is_empty() {
            return Ok(PlacedSince::Pending);
        }
        let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| {
            Error::Engine(mosaic_engine::Error::Corruption {
                path: engine.path().to_path_buf(),
                reason: format!("placement record of {} bytes, expected 8", value.len()),
            })
        })?;
        Ok(PlacedSince::Config(ConfigNum(u64::from_be_bytes(bytes))))
    }

    /// Checks that the group serves `shard` now.
    fn check_serves(&self, shard: ShardId) -> Result<()> {
        if shard == METADATA_SHARD {
            return Err(Error::InvalidArgument {
                reason: format!("shard {shard} is reserved for the group's own records"),
            });
        }
        self.ownership.as_ref().map_or(Ok(()), |ownership| ownership.check_serves(shard))
    }

    /// Checks a read of a whole shard (a scan's view, a watch) by a client routing by
    /// `shard_count`: a group placed by a controller refuses another count (the client would
    /// read only some shards, or the wrong ones), then that the group serves `shard` now.
    fn check_shard_read(&self, shard: ShardId, shard_count: u32) -> Result<()> {
        if let Some(ownership) = &self.ownership {
            ownership.check_shard_count(shard, shard_count)?;
        }
        self.check_serves(shard)
    }

    /// Checks that `key` is in `shard`, then that the group serves `shard` now: for a request
    /// before it enters the log or is read. The key comes first: a client with the wrong
    /// shard count must hear so, not be sent to refresh a routing that will never send the
    /// key here under this shard.
    ///
    /// Applying does not check the key: the check depends on the shard count in the
    /// ownership record, which a replica of an older version does not keep, and every
    /// replica must apply the same log the same way (an entry refused by some replicas and
    /// applied by others would leave them with different data and sessions).
    fn check_request(&self, shard: ShardId, key: &[u8]) -> Result<()> {
        if let Some(ownership) = &self.ownership
            && shard != METADATA_SHARD
        {
            ownership.check_key(shard, key)?;
        }
        self.check_serves(shard)
    }

    /// Checks a write before it enters the log: its key, its shard, and its client id.
    fn check_write(&self, write: &KvWrite) -> Result<()> {
        check_client(write.client)?;
        self.check_request(write.shard, &write.key)
    }

    /// Checks a batch before it enters the log: its client id, its size
    /// ([`batch_size_refusal`]), and that every key is in its shard,
    /// which the group serves.
    fn check_batch(&self, batch: &KvBatch) -> Result<()> {
        check_client(batch.client)?;
        if let Some(reason) = batch_size_refusal(batch.conditions.len(), batch.writes.len()) {
            return Err(Error::InvalidArgument { reason });
        }
        batch.keys().try_for_each(|key| self.check_request(batch.shard, key))
    }

    /// The answer to a write of `client`'s session `seq` in `shard` that is decided before
    /// it is applied: refused (client id 0, a shard the group does not serve, a session that
    /// is gone although the write expects it), or a retry of the session's last write
    /// (answered with what it did) or of an older one. `None`: apply it.
    fn decided_before_applying(
        &self,
        shard: ShardId,
        client: ClientId,
        seq: u64,
        expects_session: bool,
        index: LogIndex,
    ) -> Result<Option<WriteOutcome>> {
        check_client(client)?;
        self.check_serves(shard)?;
        match self.sessions.get(shard, client) {
            Some(session) if seq == session.seq => {
                Ok(Some(WriteOutcome { index, duplicate: true, effect: Some(session.effect) }))
            }
            Some(session) if seq < session.seq => {
                Ok(Some(WriteOutcome { index, duplicate: true, effect: None }))
            }
            None if expects_session => Err(Error::SessionExpired { shard, client }),
            _ => Ok(None),
        }
    }

    /// Records that `client`'s write `seq`, applied at `index`, did `effect` (evicting the
    /// sessions over the limit), and answers it.
    fn answer(
        &mut self,
        batch: &mut WriteBatch,
        (shard, client, seq): (ShardId, ClientId, u64),
        index: LogIndex,
        effect: WriteEffect,
    ) -> WriteOutcome {
        let session = Session { seq, last_index: index, effect };
        let evicted = self.sessions.record(shard, client, session);
        batch.put_session(self.group, shard, client, session.encode());
        for client in evicted {
            batch.delete_session(self.group, shard, client);
        }
        WriteOutcome { index, duplicate: false, effect: Some(effect) }
    }

    /// The value and version of `key` as the entries applied so far leave it, the batch not
    /// yet written included.
    fn current_value<K: KvEngine>(
        &self,
        engine: &Engine<K>,
        shard: ShardId,
        key: &Bytes,
    ) -> Result<Option<Versioned>> {
        let stored = match self.pending.get(&(shard, key.clone())) {
            Some(pending) => pending.clone(),
            None if self.deleted_shards.contains(&shard) => None,
            None => engine.get_data(self.group, shard, key)?,
        };
        let value = stored.map(|stored| decode_stored(engine.path(), self.group, shard, &stored));
        Ok(value.transpose()?)
    }

    fn apply_write<K: KvEngine>(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        write: KvWrite,
    ) -> Result<WriteOutcome> {
        let (shard, client) = (write.shard, write.client);
        if let Some(outcome) =
            self.decided_before_applying(shard, client, write.seq, write.expects_session, index)?
        {
            return Ok(outcome);
        }
        // An unconditional put needs nothing of the key as it is: no read on its path.
        let current = if write.condition.is_none() && write.kind == WriteKind::Put {
            None
        } else {
            self.current_value(engine, write.shard, &write.key)?
        };
        let current_version = current.as_ref().map_or(Version::ABSENT, |stored| stored.version);
        let effect = match write.condition {
            Some(expected) if expected != current_version => {
                WriteEffect::ConditionFailed(current_version)
            }
            _ => {
                let version = self.next_version(shard);
                let changed = self.write_key(
                    batch,
                    (shard, write.key),
                    write.kind,
                    write.value,
                    current,
                    version,
                );
                self.written(batch, shard, changed)
            }
        };
        Ok(self.answer(batch, (shard, client, write.seq), index, effect))
    }

    /// Applies an atomic batch: every write at the shard's next revision if every condition
    /// holds (the revision stays if none changes anything: only deletes of keys without a
    /// value), nothing if one does not.
    fn apply_batch<K: KvEngine>(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        command: KvBatch,
    ) -> Result<WriteOutcome> {
        let (shard, client, seq) = (command.shard, command.client, command.seq);
        if let Some(outcome) =
            self.decided_before_applying(shard, client, seq, command.expects_session, index)?
        {
            return Ok(outcome);
        }
        let mut failed = None;
        for (place, condition) in (0_u32..).zip(&command.conditions) {
            let current = self.current_value(engine, shard, &condition.key)?;
            let version = current.map_or(Version::ABSENT, |stored| stored.version);
            if version != condition.version {
                failed = Some(WriteEffect::BatchConditionFailed { condition: place, version });
                break;
            }
        }
        let effect = match failed {
            Some(failed) => failed,
            None => {
                let version = self.next_version(shard);
                let mut changed = false;
                for write in command.writes {
                    // A later write of a key reads what an earlier one left (`pending`).
                    let current = match write.kind {
                        WriteKind::Put => None,
                        WriteKind::Append | WriteKind::Delete => {
                            self.current_value(engine, shard, &write.key)?
                        }
                    };
                    let key = (shard, write.key);
                    changed |=
                        self.write_key(batch, key, write.kind, write.value, current, version);
                }
                self.written(batch, shard, changed)
            }
        };
        Ok(self.answer(batch, (shard, client, seq), index, effect))
    }

    /// The version the next change of `shard` gives the keys it writes.
    fn next_version(&self, shard: ShardId) -> Version {
        Version(self.revision(shard) + 1)
    }

    /// Writes `kind` with `value` to `key` of `shard`, which holds `current`, at `version`;
    /// false, and nothing written, for the delete of a key that has no value.
    fn write_key(
        &mut self,
        batch: &mut WriteBatch,
        (shard, key): (ShardId, Bytes),
        kind: WriteKind,
        value: Bytes,
        current: Option<Versioned>,
        version: Version,
    ) -> bool {
        let existed = current.is_some();
        let value = written_value(kind, current, value);
        if value.is_none() && !existed {
            return false;
        }
        let stored = value.clone().map(|value| Versioned { value, version }.encode());
        match &stored {
            Some(stored) => batch.put_data(self.group, shard, key.clone(), stored.clone()),
            None => batch.delete_data(self.group, shard, key.clone()),
        }
        self.pending.insert((shard, key.clone()), stored);
        let change = Change { revision: version.0, key, value };
        self.unpublished.push(Unpublished::Change(shard, change));
        true
    }

    /// What writes at `shard`'s next version did: if one `changed` the shard, that version
    /// becomes its revision; otherwise the revision stays.
    fn written(&mut self, batch: &mut WriteBatch, shard: ShardId, changed: bool) -> WriteEffect {
        if !changed {
            return WriteEffect::Written(Version(self.revision(shard)));
        }
        let revision = self.next_version(shard);
        self.revisions.insert(shard, revision.0);
        batch.put_session(self.group, shard, REVISION_CLIENT, encode_revision(revision.0));
        WriteEffect::Written(revision)
    }

    /// Applies a migration step (the entry at `index`); `Err` only for a group that has no
    /// ownership (it serves every shard and takes part in no migration) and for a chunk with a
    /// malformed session.
    fn apply_migration(
        &mut self,
        batch: &mut WriteBatch,
        index: LogIndex,
        command: MigrationCommand,
    ) -> Result<MigrationOutcome> {
        let group = self.group;
        let Some(ownership) = self.ownership.as_mut() else {
            return Err(Error::InvalidArgument {
                reason: format!("group {group} is not placed by a controller; it migrates nothing"),
            });
        };
        let num_now = ownership.num;
        let stale = |what: String| Ok(MigrationOutcome::Stale(what));
        match command {
            MigrationCommand::Reconfigure { previous, next } => {
                match ownership.reconfigure(group, &previous, &next) {
                    Ok(next) => {
                        for (shard, state) in &ownership.shards {
                            let now = next.state(*shard);
                            if state.serves() && !now.is_some_and(ShardState::serves) {
                                let revision = self.revisions.get(shard).copied().unwrap_or(0);
                                // A shard given to no group is deleted: a group given it later
                                // starts it over empty, with revisions that are not these.
                                let end = match now {
                                    Some(ShardState::Sending { to: None }) => {
                                        WatchEnd::Unowned { revision }
                                    }
                                    _ => WatchEnd::Moved { revision },
                                };
                                self.unpublished.push(Unpublished::Ended(*shard, end));
                            }
                        }
                        *ownership = next;
                    }
                    Err(NotApplied::Stale(reason)) => return stale(reason),
                    Err(NotApplied::NotYet(reason)) => return Ok(MigrationOutcome::NotYet(reason)),
                }
            }
            MigrationCommand::InstallChunk { num, shard, from, mut records, last } => {
                if num != num_now
                    || !matches!(ownership.state(shard), Some(ShardState::Pulling { .. }))
                {
                    return stale(format!(
                        "shard {shard} is not being pulled in configuration {num}"
                    ));
                }
                if let Some(from) = &from
                    && *from != ownership.resume_point(shard)
                {
                    // Another pull (an earlier leader's, or a retry) got there first: the
                    // one that continues from where the shard is now will install it.
                    return stale(format!(
                        "shard {shard}: a chunk from {from:?}, but the pull is at {:?}",
                        ownership.resume_point(shard)
                    ));
                }
                // An imported session counts as written at this entry: the source group's
                // log indices mean nothing in this log's eviction order.
                let mut sessions = Vec::new();
                let mut revision = None;
                for record in &mut records {
                    if let ShardRecord::Session { client, record } = record {
                        let malformed = |DecodeError(reason)| Error::InvalidArgument {
                            reason: format!("shard {shard} client {client}: {reason}"),
                        };
                        if *client == REVISION_CLIENT {
                            revision = Some(decode_revision(record).map_err(malformed)?);
                            continue;
                        }
                        let session = Session::decode(record).map_err(malformed)?;
                        let session = Session { last_index: index, ..session };
                        *record = session.encode();
                        sessions.push((*client, session));
                    }
                }
                if last {
                    ownership.arrived(shard);
                } else if from.is_some()
                    && let Some(record) = records.last()
                {
                    ownership.installed(shard, ShardCursor::after(record));
                }
                batch.put_shard_records(group, shard, &records);
                for (client, session) in sessions {
                    self.sessions.insert(shard, client, session);
                }
                if let Some(revision) = revision {
                    self.revisions.insert(shard, revision);
                }
                for record in records {
                    if let ShardRecord::Data { key, value } = record {
                        self.pending.insert((shard, key), Some(value));
                    }
                }
            }
            MigrationCommand::DeleteShard { num, shard } => {
                if num > num_now {
                    return Ok(MigrationOutcome::NotYet(format!(
                        "at configuration {num_now}, before configuration {num}"
                    )));
                }
                if num < num_now
                    || !matches!(ownership.state(shard), Some(ShardState::Sending { .. }))
                {
                    return stale(format!(
                        "shard {shard} of configuration {num} is already deleted"
                    ));
                }
                ownership.handed_off(shard);
                batch.delete_shard(group, shard);
                self.sessions.remove_shard(shard);
                self.revisions.remove(&shard);
                self.pending.retain(|(pending_shard, _), _| *pending_shard != shard);
                self.deleted_shards.insert(shard);
            }
            MigrationCommand::ConfirmHandoff { num, shard } => {
                if num != num_now
                    || !matches!(ownership.state(shard), Some(ShardState::Confirming { .. }))
                {
                    return stale(format!(
                        "shard {shard} of configuration {num} is already confirmed"
                    ));
                }
                ownership.confirmed(shard);
            }
        }
        let record = ownership.encode();
        batch.put_data(group, METADATA_SHARD, Bytes::from_static(OWNERSHIP_KEY), record);
        Ok(MigrationOutcome::Done)
    }

    fn handoff<K: KvEngine>(
        &self,
        engine: &Engine<K>,
        num: ConfigNum,
        shard: ShardId,
        to: GroupId,
    ) -> Result<EngineSnapshot<K::Snapshot>> {
        let ownership = self.ownership.as_ref().ok_or_else(|| Error::InvalidArgument {
            reason: format!("group {} is not placed by a controller", self.group),
        })?;
        if num > ownership.num {
            return Err(Error::ShardNotReady);
        }
        if num < ownership.num
            || ownership.state(shard) != Some(ShardState::Sending { to: Some(to) })
        {
            return Err(Error::WrongGroup { config_num: ownership.num.0 });
        }
        Ok(engine.snapshot())
    }
}

impl<K: KvEngine> StateMachine<K> for KvStateMachine {
    type Proposal = KvCommand;
    type Query = KvQuery;
    type ApplyOutput = Result<Applied>;
    type ReadOutput = KvReadOutput<K::Snapshot>;

    fn load(group: GroupId, engine: &Engine<K>) -> Result<Self> {
        let corruption = |reason: String| {
            Error::Engine(mosaic_engine::Error::Corruption {
                path: engine.path().to_path_buf(),
                reason: format!("group {group} {reason}"),
            })
        };
        let mut sessions = SessionTable::default();
        let mut revisions = BTreeMap::new();
        let mut malformed = None;
        engine.scan_group_sessions(group, &mut |shard, client, record| {
            let loaded = if client == REVISION_CLIENT {
                decode_revision(record).map(|revision| {
                    revisions.insert(shard, revision);
                })
            } else {
                Session::decode(record).map(|session| sessions.insert(shard, client, session))
            };
            if let Err(error) = loaded {
                malformed = Some(format!("shard {shard} client {client}: {error}"));
                return Ok(false);
            }
            Ok(true)
        })?;
        if let Some(reason) = malformed {
            return Err(corruption(format!("session record: {reason}")));
        }
        let ownership = match engine.get_data(group, METADATA_SHARD, OWNERSHIP_KEY)? {
            Some(record) => Some(
                Ownership::decode(&record)
                    .map_err(|error| corruption(format!("ownership record: {error}")))?,
            ),
            None => Self::is_placed_by_controller(engine)?.then(Ownership::default),
        };
        Ok(Self {
            group,
            sessions,
            ownership,
            revisions,
            pending: BTreeMap::new(),
            deleted_shards: BTreeSet::new(),
            unpublished: Vec::new(),
            feeds: RefCell::new(BTreeMap::new()),
        })
    }

    fn check_proposal(&self, proposal: &KvCommand) -> Result<()> {
        match proposal {
            KvCommand::Write(write) => self.check_write(write),
            KvCommand::Batch(batch) => self.check_batch(batch),
            KvCommand::Migration(_) => Ok(()),
        }
    }

    fn encode(proposal: &KvCommand) -> Bytes {
        proposal.encode()
    }

    fn apply(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        data: &Bytes,
    ) -> Result<Result<Applied>> {
        let result = match KvCommand::decode(data) {
            Ok(KvCommand::Write(write)) => {
                self.apply_write(engine, batch, index, write).map(Applied::Write)
            }
            Ok(KvCommand::Batch(command)) => {
                self.apply_batch(engine, batch, index, command).map(Applied::Write)
            }
            Ok(KvCommand::Migration(command)) => {
                self.apply_migration(batch, index, command).map(Applied::Migration)
            }
            Err(error) => {
                tracing::warn!(group_id = %self.group, %index, %error,
                    "skipping an undecodable entry");
                return Ok(Err(Error::InvalidArgument {
                    reason: format!("entry {index}: {error}"),
                }));
            }
        };
        match result {
            Err(error @ Error::Engine(_)) => Err(error),
            other => Ok(other),
        }
    }

    fn batch_written(&mut self) {
        self.pending.clear();
        self.deleted_shards.clear();
        let feeds = self.feeds.get_mut();
        let mut unpublished = std::mem::take(&mut self.unpublished).into_iter().peekable();
        while let Some(next) = unpublished.next() {
            match next {
                Unpublished::Change(shard, change) => {
                    // The changes of one revision of a shard come together (one entry's).
                    let revision = change.revision;
                    let mut changes = vec![change];
                    let same_revision = |next: &Unpublished| {
                        matches!(next, Unpublished::Change(other, change)
                            if *other == shard && change.revision == revision)
                    };
                    while let Some(Unpublished::Change(_, change)) =
                        unpublished.next_if(same_revision)
                    {
                        changes.push(change);
                    }
                    // A shard's revision goes up by one with each changing entry: before this
                    // one, the shard was at the revision below.
                    let before = changes[0].revision - 1;
                    feeds.entry(shard).or_insert_with(|| ShardFeed::new(before)).publish(changes);
                }
                Unpublished::Ended(shard, end) => {
                    if let Some(feed) = feeds.remove(&shard) {
                        feed.end(end);
                    }
                }
            }
        }
    }

    fn read(&self, engine: &Engine<K>, query: &KvQuery) -> Result<KvReadOutput<K::Snapshot>> {
        match query {
            KvQuery::Get(get) => {
                self.check_request(get.shard, &get.key)?;
                let stored = engine.get_data(self.group, get.shard, &get.key)?;
                let value = stored
                    .map(|stored| decode_stored(engine.path(), self.group, get.shard, &stored))
                    .transpose()?;
                Ok(KvReadOutput::Value(value))
            }
            KvQuery::Shard { shard, shard_count } => {
                self.check_shard_read(*shard, *shard_count)?;
                Ok(KvReadOutput::Shard(engine.snapshot()))
            }
            KvQuery::Watch(ShardWatch { shard, shard_count, from, range }) => {
                self.check_shard_read(*shard, *shard_count)?;
                let mut feeds = self.feeds.borrow_mut();
                // Feeds of shards that kept nothing, once their watchers are gone, go: a group
                // serving every shard would otherwise keep one for each shard ever watched.
                feeds.retain(|_, feed| !feed.is_idle());
                let feed =
                    feeds.entry(*shard).or_insert_with(|| ShardFeed::new(self.revision(*shard)));
                match feed.subscribe(*from, range.clone()) {
                    Ok(watcher) => Ok(KvReadOutput::Watch(watcher)),
                    Err(WatchRefusal::Compacted { oldest }) => {
                        Err(Error::Compacted { oldest_revision: oldest })
                    }
                    Err(refusal @ WatchRefusal::TooManyWatchers) => {
                        Err(Error::ServerBusy { reason: format!("shard {shard}: {refusal}") })
                    }
                }
            }
            KvQuery::Ownership => Ok(KvReadOutput::Ownership(self.ownership.clone())),
            KvQuery::Handoff { num, shard, to } => {
                self.handoff(engine, *num, *shard, *to).map(KvReadOutput::Handoff)
            }
        }
    }
}

/// What a write of `kind` with `value` leaves of a key that holds `current`: `None` to delete.
fn written_value(kind: WriteKind, current: Option<Versioned>, value: Bytes) -> Option<Bytes> {
    match kind {
        WriteKind::Put => Some(value),
        WriteKind::Append => {
            let current = current.map(|stored| stored.value).unwrap_or_default();
            let mut joined = BytesMut::from(current.as_ref());
            joined.extend_from_slice(&value);
            Some(joined.freeze())
        }
        WriteKind::Delete => None,
    }
}

/// Refuses client id 0, which holds each shard's revision ([`REVISION_CLIENT`]).
fn check_client(client: ClientId) -> Result<()> {
    if client == REVISION_CLIENT {
        return Err(Error::InvalidArgument { reason: "client id 0 is reserved".into() });
    }
    Ok(())
}

/// Decodes a value of the `data` column family; one that does not decode is corruption.
pub(crate) fn decode_stored(
    path: &std::path::Path,
    group: GroupId,
    shard: ShardId,
    stored: &Bytes,
) -> mosaic_engine::Result<Versioned> {
    Versioned::decode(stored).map_err(|DecodeError(reason)| mosaic_engine::Error::Corruption {
        path: path.to_path_buf(),
        reason: format!("group {group} shard {shard}: {reason}"),
    })
}
