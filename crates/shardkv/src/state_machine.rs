//! [`KvStateMachine`]: what a storage group applies: client writes to the keys of its shards,
//! deduplicated by client session.
//!
//! Every effect of an entry goes into the store's apply batch together with the applied index
//! (the store adds it), so a crash never applies an entry twice or by half. Shard ownership
//! (which shards a group serves in which configuration) comes with configurations and
//! migration; until then a group serves every shard it is asked about.
//!
//! Invariant: `pending` holds exactly the data writes handed to batches not yet written, so a
//! later entry of the same batch (an append after a put of the same key) reads them.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use mosaic_engine::{ClientId, Engine, GroupId, KvEngine, ShardId, WriteBatch};
use mosaic_raft::LogIndex;
use mosaic_raftstore::{Error, Result, StateMachine};

use crate::command::{KvWrite, WriteKind};
use crate::session::{Session, SessionTable};

/// A read of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvGet {
    /// The shard the key hashes to.
    pub shard: ShardId,
    /// The user key.
    pub key: Bytes,
}

/// What an applied write answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The log index of the entry.
    pub index: LogIndex,
    /// True when the session had already applied this sequence number: the write was not
    /// applied again (6.824 "at most once").
    pub duplicate: bool,
}

/// The state machine of one storage group. See the module documentation.
#[derive(Debug)]
pub struct KvStateMachine {
    group: GroupId,
    sessions: SessionTable,
    pending: BTreeMap<(ShardId, Bytes), Option<Bytes>>,
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

    fn current_value<K: KvEngine>(
        &self,
        engine: &Engine<K>,
        shard: ShardId,
        key: &Bytes,
    ) -> Result<Option<Bytes>> {
        if let Some(pending) = self.pending.get(&(shard, key.clone())) {
            return Ok(pending.clone());
        }
        Ok(engine.get_data(self.group, shard, key)?)
    }

    fn apply_write<K: KvEngine>(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        write: KvWrite,
    ) -> Result<WriteOutcome> {
        let group = self.group;
        if self.sessions.get(write.shard, write.client).is_some_and(|s| write.seq <= s.seq) {
            return Ok(WriteOutcome { index, duplicate: true });
        }
        let new_value = match write.kind {
            WriteKind::Put => Some(write.value),
            WriteKind::Append => {
                let current = self.current_value(engine, write.shard, &write.key)?;
                let mut joined = BytesMut::from(current.as_deref().unwrap_or_default());
                joined.extend_from_slice(&write.value);
                Some(joined.freeze())
            }
            WriteKind::Delete => None,
        };
        match &new_value {
            Some(value) => batch.put_data(group, write.shard, write.key.clone(), value.clone()),
            None => batch.delete_data(group, write.shard, write.key.clone()),
        }
        self.pending.insert((write.shard, write.key), new_value);
        let evicted = self.sessions.record(write.shard, write.client, write.seq, index);
        let session = Session { seq: write.seq, last_index: index };
        batch.put_session(group, write.shard, write.client, session.encode());
        for client in evicted {
            batch.delete_session(group, write.shard, client);
        }
        Ok(WriteOutcome { index, duplicate: false })
    }
}

impl<K: KvEngine> StateMachine<K> for KvStateMachine {
    type Proposal = KvWrite;
    type Query = KvGet;
    type ApplyOutput = Result<WriteOutcome>;
    type ReadOutput = Option<Bytes>;

    fn load(group: GroupId, engine: &Engine<K>) -> Result<Self> {
        let mut sessions = SessionTable::default();
        let mut malformed = None;
        engine.scan_group_sessions(group, &mut |shard, client, record| {
            match Session::decode(record) {
                Ok(session) => sessions.insert(shard, client, session),
                Err(error) => {
                    malformed = Some(format!("shard {shard} client {client}: {error}"));
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if let Some(reason) = malformed {
            return Err(Error::Engine(mosaic_engine::Error::Corruption {
                path: engine.path().to_path_buf(),
                reason: format!("group {group} session record: {reason}"),
            }));
        }
        Ok(Self { group, sessions, pending: BTreeMap::new() })
    }

    fn check_proposal(&self, _proposal: &KvWrite) -> Result<()> {
        Ok(())
    }

    fn encode(proposal: &KvWrite) -> Bytes {
        proposal.encode()
    }

    fn apply(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        data: &Bytes,
    ) -> Result<Result<WriteOutcome>> {
        match KvWrite::decode(data) {
            Ok(write) => match self.apply_write(engine, batch, index, write) {
                Ok(outcome) => Ok(Ok(outcome)),
                Err(error @ Error::Engine(_)) => Err(error),
                Err(refusal) => Ok(Err(refusal)),
            },
            Err(error) => {
                tracing::warn!(group = %self.group, %index, %error, "skipping an undecodable entry");
                Ok(Err(Error::InvalidArgument { reason: format!("entry {index}: {error}") }))
            }
        }
    }

    fn batch_written(&mut self) {
        self.pending.clear();
    }

    fn read(&self, engine: &Engine<K>, query: &KvGet) -> Result<Option<Bytes>> {
        Ok(engine.get_data(self.group, query.shard, &query.key)?)
    }
}
