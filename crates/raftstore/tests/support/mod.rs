//! `Counters`: the smallest state machine that exercises the store. A group replicates a map
//! from names to `u64` counters: a proposal sets a counter or adds to it, applied into the
//! group's data through the write batch (each counter in a shard chosen by its name); a read
//! returns a counter. Its whole state is in the engine, so a snapshot carries it.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_engine::{Engine, GroupId, KvEngine, ShardId, WriteBatch};
use mosaic_raft::LogIndex;
use mosaic_raftstore::{Result, StateMachine};

/// A change to one counter.
#[derive(Clone, Debug)]
pub enum Command {
    /// Sets the counter `key` to `value`.
    Set { key: Bytes, value: u64 },
    /// Adds `amount` to the counter `key` (absent counts as 0).
    Add { key: Bytes, amount: u64 },
}

impl Command {
    pub fn set(key: &str, value: u64) -> Self {
        Self::Set { key: Bytes::copy_from_slice(key.as_bytes()), value }
    }

    pub fn add(key: &str, amount: u64) -> Self {
        Self::Add { key: Bytes::copy_from_slice(key.as_bytes()), amount }
    }

    /// A tag byte, the number (8 bytes, big-endian), then the key.
    fn encode(&self) -> Bytes {
        let (tag, key, number) = match self {
            Self::Set { key, value } => (SET, key, *value),
            Self::Add { key, amount } => (ADD, key, *amount),
        };
        let mut out = BytesMut::with_capacity(9 + key.len());
        out.put_u8(tag);
        out.put_u64(number);
        out.put_slice(key);
        out.freeze()
    }

    fn decode(data: &Bytes) -> Option<Self> {
        let number = u64::from_be_bytes(data.get(1..9)?.try_into().ok()?);
        let key = data.slice(9..);
        match data[0] {
            SET => Some(Self::Set { key, value: number }),
            ADD => Some(Self::Add { key, amount: number }),
            _ => None,
        }
    }
}

const SET: u8 = 1;
const ADD: u8 = 2;

/// The shard a counter lives in: several, so that snapshots and scans cross shards.
pub fn shard_of(key: &[u8]) -> ShardId {
    ShardId(key.iter().map(|byte| u32::from(*byte)).sum::<u32>() % 4)
}

/// A group's counters. See the module documentation.
pub struct Counters {
    group: GroupId,
    /// Counters written by entries applied into a batch not yet written (a later entry of the
    /// same batch must see them).
    pending: BTreeMap<Bytes, u64>,
}

impl Counters {
    fn value<K: KvEngine>(&self, engine: &Engine<K>, key: &Bytes) -> Result<Option<u64>> {
        if let Some(value) = self.pending.get(key) {
            return Ok(Some(*value));
        }
        let stored = engine.get_data(self.group, shard_of(key), key)?;
        Ok(stored.map(|bytes| decode_value(self.group, key, &bytes)))
    }
}

fn decode_value(group: GroupId, key: &[u8], bytes: &[u8]) -> u64 {
    let array = bytes.try_into().unwrap_or_else(|_| {
        panic!("group {group}: counter {key:?} holds {} bytes, not 8", bytes.len())
    });
    u64::from_be_bytes(array)
}

impl<K: KvEngine> StateMachine<K> for Counters {
    type Proposal = Command;
    /// A counter's name.
    type Query = Bytes;
    /// The counter's value after the command.
    type ApplyOutput = u64;
    type ReadOutput = Option<u64>;

    fn load(group: GroupId, _engine: &Engine<K>) -> Result<Self> {
        Ok(Self { group, pending: BTreeMap::new() })
    }

    fn check_proposal(&self, _proposal: &Command) -> Result<()> {
        Ok(())
    }

    fn encode(proposal: &Command) -> Bytes {
        proposal.encode()
    }

    /// # Panics
    /// On an entry this state machine did not encode (no test proposes one).
    fn apply(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        data: &Bytes,
    ) -> Result<u64> {
        let command = Command::decode(data).unwrap_or_else(|| {
            panic!("group {}: entry {index} is not a counter command", self.group)
        });
        let (key, value) = match command {
            Command::Set { key, value } => (key, value),
            Command::Add { key, amount } => {
                let value = self.value(engine, &key)?.unwrap_or(0).saturating_add(amount);
                (key, value)
            }
        };
        let stored = Bytes::copy_from_slice(&value.to_be_bytes());
        batch.put_data(self.group, shard_of(&key), key.clone(), stored);
        self.pending.insert(key, value);
        Ok(value)
    }

    fn batch_written(&mut self) {
        self.pending.clear();
    }

    fn read(&self, engine: &Engine<K>, key: &Bytes) -> Result<Option<u64>> {
        self.value(engine, key)
    }
}
