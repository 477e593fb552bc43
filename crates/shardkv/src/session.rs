//! Client sessions: the highest sequence number applied per client and shard, so a retried
//! write is applied at most once (6.824 Lab 3), across leader changes and restarts.
//!
//! Sessions are bounded by a rule every replica applies alike, through the log: a shard keeps
//! at most [`SESSIONS_PER_SHARD_MAX`] sessions, and recording one more evicts the session least
//! recently written (smallest log index; ties by client id). No clock is involved. A write that
//! expects its session ([`crate::KvWrite::expects_session`]) and finds none is refused, not
//! applied: it may be the retry of a write applied before the eviction. A client's first write
//! to a shard cannot expect a session; a retry of it after an eviction between its attempts
//! (more than `SESSIONS_PER_SHARD_MAX` other clients writing the shard meanwhile) could still
//! apply twice (docs/raftstore.md).
//!
//! Invariant: `by_age[shard]` holds exactly `(last_index, client)` of every session of `shard`
//! in `sessions`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_engine::{ClientId, ShardId};
use mosaic_raft::LogIndex;

use crate::encoding::DecodeError;
use crate::version::Version;

/// Sessions kept per shard. Part of the replicated behaviour: every replica must use the same
/// value, so it changes only with the format version.
pub const SESSIONS_PER_SHARD_MAX: usize = 4096;

const SESSION_VERSION: u8 = 3;
const SESSION_BYTES: usize = 1 + 8 + 8 + 1 + 8 + 4;
const WRITTEN_TAG: u8 = 1;
const CONDITION_FAILED_TAG: u8 = 2;
const BATCH_CONDITION_FAILED_TAG: u8 = 3;

/// What a write did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    /// It took effect; the key's version after it (for a delete, the shard's revision after
    /// it: a read from then on sees the key absent).
    Written(Version),
    /// Its condition did not hold and nothing was written; the key's version then
    /// ([`Version::ABSENT`] for an absent key).
    ConditionFailed(Version),
    /// A batch's condition did not hold and nothing was written: the first that did not,
    /// by its place among the batch's conditions, and its key's version then.
    BatchConditionFailed {
        /// The condition's place among the batch's conditions (from 0).
        condition: u32,
        /// Its key's version when the batch was applied.
        version: Version,
    },
}

/// One client's session in one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// The highest sequence number applied.
    pub seq: u64,
    /// The log index of the last write recorded (the eviction order).
    pub last_index: LogIndex,
    /// What the write of `seq` did: a retry of it is answered with this, so a retried
    /// compare-and-set hears whether its first attempt took effect.
    pub effect: WriteEffect,
}

impl Session {
    /// Encodes the record: `version u8 (3) ‖ seq u64 ‖ last index u64 ‖ effect u8 (1 written,
    /// 2 condition failed, 3 a batch's condition failed) ‖ key version u64 ‖ condition u32`
    /// (the failed condition's place in its batch; 0 for the other effects).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(SESSION_BYTES);
        out.put_u8(SESSION_VERSION);
        out.put_u64(self.seq);
        out.put_u64(self.last_index.0);
        let (tag, version, condition) = match self.effect {
            WriteEffect::Written(version) => (WRITTEN_TAG, version, 0),
            WriteEffect::ConditionFailed(version) => (CONDITION_FAILED_TAG, version, 0),
            WriteEffect::BatchConditionFailed { condition, version } => {
                (BATCH_CONDITION_FAILED_TAG, version, condition)
            }
        };
        out.put_u8(tag);
        out.put_u64(version.0);
        out.put_u32(condition);
        out.freeze()
    }

    /// Decodes a record.
    ///
    /// # Errors
    /// [`DecodeError`] for a record of the wrong length, version or effect, or a condition
    /// place with an effect that has none.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let record: &[u8; SESSION_BYTES] = bytes
            .try_into()
            .map_err(|_| DecodeError(format!("session record of {} bytes", bytes.len())))?;
        if record[0] != SESSION_VERSION {
            return Err(DecodeError(format!("unknown session version {}", record[0])));
        }
        let u64_at = |at: usize| u64::from_be_bytes(record[at..at + 8].try_into().expect("8"));
        let version = Version(u64_at(18));
        let condition = u32::from_be_bytes(record[26..30].try_into().expect("4"));
        let effect = match (record[17], condition) {
            (WRITTEN_TAG, 0) => WriteEffect::Written(version),
            (CONDITION_FAILED_TAG, 0) => WriteEffect::ConditionFailed(version),
            (BATCH_CONDITION_FAILED_TAG, condition) => {
                WriteEffect::BatchConditionFailed { condition, version }
            }
            (WRITTEN_TAG | CONDITION_FAILED_TAG, condition) => {
                return Err(DecodeError(format!("condition {condition} of a single write")));
            }
            (tag, _) => return Err(DecodeError(format!("unknown write effect {tag}"))),
        };
        Ok(Self { seq: u64_at(1), last_index: LogIndex(u64_at(9)), effect })
    }
}

/// Every session of one group, in memory (and mirrored in the engine by the state machine).
#[derive(Debug, Default)]
pub struct SessionTable {
    sessions: BTreeMap<(ShardId, ClientId), Session>,
    by_age: BTreeMap<ShardId, BTreeSet<(LogIndex, ClientId)>>,
}

impl SessionTable {
    /// Returns the session of `client` in `shard`.
    #[must_use]
    pub fn get(&self, shard: ShardId, client: ClientId) -> Option<Session> {
        self.sessions.get(&(shard, client)).copied()
    }

    /// The number of sessions in `shard`.
    #[must_use]
    pub fn len(&self, shard: ShardId) -> usize {
        self.by_age.get(&shard).map_or(0, BTreeSet::len)
    }

    /// Returns true when no shard has a session.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Puts a session read from the engine back in the table (at load).
    pub fn insert(&mut self, shard: ShardId, client: ClientId, session: Session) {
        if let Some(old) = self.sessions.insert((shard, client), session) {
            self.by_age.entry(shard).or_default().remove(&(old.last_index, client));
        }
        self.by_age.entry(shard).or_default().insert((session.last_index, client));
    }

    /// Forgets every session of `shard` (the shard was handed to another group).
    pub fn remove_shard(&mut self, shard: ShardId) {
        for (_, client) in self.by_age.remove(&shard).unwrap_or_default() {
            self.sessions.remove(&(shard, client));
        }
    }

    /// Records `session` (a write of its client at its index); returns the clients evicted to
    /// keep the shard within [`SESSIONS_PER_SHARD_MAX`].
    pub fn record(&mut self, shard: ShardId, client: ClientId, session: Session) -> Vec<ClientId> {
        self.insert(shard, client, session);
        let ages = self.by_age.entry(shard).or_default();
        let mut evicted = Vec::new();
        while ages.len() > SESSIONS_PER_SHARD_MAX {
            let (_, oldest) = ages.pop_first().expect("over the limit, so not empty");
            self.sessions.remove(&(shard, oldest));
            evicted.push(oldest);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(seq: u64, index: u64) -> Session {
        Session { seq, last_index: LogIndex(index), effect: WriteEffect::Written(Version(index)) }
    }

    #[test]
    fn a_record_round_trips_and_garbage_is_refused() {
        let failed = WriteEffect::ConditionFailed(Version::ABSENT);
        let batch_failed = WriteEffect::BatchConditionFailed { condition: 3, version: Version(9) };
        for session in [
            session(7, 99),
            Session { effect: failed, ..session(8, 100) },
            Session { effect: batch_failed, ..session(9, 101) },
        ] {
            assert_eq!(Session::decode(&session.encode()), Ok(session));
        }
        let session = session(7, 99);
        assert!(Session::decode(&session.encode()[1..]).is_err());
        let mut other_version = session.encode().to_vec();
        other_version[0] = 1;
        assert!(Session::decode(&other_version).is_err());
        let mut unknown_effect = session.encode().to_vec();
        unknown_effect[17] = 4;
        assert!(Session::decode(&unknown_effect).is_err());
        let mut single_write_with_condition = session.encode().to_vec();
        single_write_with_condition[29] = 1;
        assert!(Session::decode(&single_write_with_condition).is_err());
    }

    #[test]
    fn the_least_recently_written_session_is_evicted() {
        let mut table = SessionTable::default();
        let shard = ShardId(3);
        for client in 0..SESSIONS_PER_SHARD_MAX as u64 {
            assert!(table.record(shard, ClientId(client), session(1, client + 1)).is_empty());
        }
        // Client 0 writes again: client 1 is now the least recently written.
        assert!(table.record(shard, ClientId(0), session(2, 10_000)).is_empty());
        let evicted = table.record(shard, ClientId(77_777), session(1, 10_001));
        assert_eq!(evicted, vec![ClientId(1)]);
        assert_eq!(table.len(shard), SESSIONS_PER_SHARD_MAX);
        assert_eq!(table.get(shard, ClientId(1)), None);
        assert_eq!(table.get(shard, ClientId(0)).map(|s| s.seq), Some(2));
        assert_eq!(table.len(ShardId(4)), 0, "other shards are not affected");
    }
}
