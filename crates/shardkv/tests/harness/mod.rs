//! The KV side of the deterministic in-memory cluster: `mosaic_raftstore::testing::Cluster`
//! (real `Store` and `Peer` code over `MemKv`, a message queue for a network, ticks as
//! messages, partitions, stalls, crash-restart that keeps only what was synced) hosting
//! `KvStateMachine` groups, with KV writes and gets on top. Everything else derefs to the
//! generic cluster.

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::Bytes;
use mosaic_engine::{ClientId, GroupId, MemSnapshot, ShardId};
use mosaic_raft::NodeId;
use mosaic_raftstore::testing;
use mosaic_raftstore::{Consistency, ReadOutput, StoreConfig, StoreMsg};
use mosaic_shardkv::{
    Applied, KvGet, KvQuery, KvReadOutput, KvStateMachine, KvWrite, Version, Versioned, WriteKind,
    WriteOutcome,
};

pub use mosaic_raftstore::testing::{Slot, slot, take};

/// A cluster of stores hosting KV groups. See the module documentation.
pub struct Cluster {
    inner: testing::Cluster<KvStateMachine>,
    /// The session sequence of the next [`Cluster::write`].
    next_seq: u64,
}

impl Deref for Cluster {
    type Target = testing::Cluster<KvStateMachine>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Cluster {
    /// `nodes` stores numbered 1..=nodes, nothing hosted yet.
    pub fn new(nodes: u64, seed: u64) -> Self {
        Self { inner: testing::Cluster::new(nodes, seed), next_seq: 1 }
    }

    /// As [`Cluster::new`], with every store using `config`.
    pub fn with_config(nodes: u64, config: StoreConfig) -> Self {
        Self { inner: testing::Cluster::with_config(nodes, config), next_seq: 1 }
    }

    /// Proposes `write` on `node` and returns the slot of the answer: the write's outcome, or
    /// the state machine's refusal.
    pub fn propose(
        &mut self,
        node: NodeId,
        group: GroupId,
        write: KvWrite,
    ) -> Slot<mosaic_raftstore::Result<WriteOutcome>> {
        let (result, callback) = slot();
        let callback = Box::new(move |answer: mosaic_raftstore::Result<_>| {
            callback(answer.map(|applied: mosaic_raftstore::Result<Applied>| {
                applied.map(|applied| match applied {
                    Applied::Write(outcome) => outcome,
                    other => panic!("a write was answered with {other:?}"),
                })
            }));
        });
        self.send(node, StoreMsg::Propose { group, proposal: write.into(), callback });
        result
    }

    /// Reads `key` on `node` and returns the slot of the answer.
    pub fn read(
        &mut self,
        node: NodeId,
        group: GroupId,
        key: &str,
        consistency: Consistency,
    ) -> Slot<ReadOutput<Option<Versioned>>> {
        let (result, callback) = slot();
        let callback = Box::new(
            move |answer: mosaic_raftstore::Result<ReadOutput<KvReadOutput<MemSnapshot>>>| {
                callback(answer.map(|read| {
                    read.map(|output| match output {
                        KvReadOutput::Value(value) => value,
                        other => panic!("a get was answered with {other:?}"),
                    })
                }));
            },
        );
        let query = KvGet { shard: shard_of(key), key: Bytes::copy_from_slice(key.as_bytes()) };
        self.send(
            node,
            StoreMsg::Read { group, query: KvQuery::Get(query), consistency, callback },
        );
        result
    }

    /// A write with a fresh session sequence of `client`.
    pub fn write(&mut self, kind: WriteKind, client: u64, key: &str, value: &str) -> KvWrite {
        let seq = self.next_seq;
        self.next_seq += 1;
        KvWrite {
            kind,
            client: ClientId(client),
            seq,
            shard: shard_of(key),
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            expects_session: false,
            condition: None,
        }
    }

    /// Proposes `write` at the leader until it is applied (retrying through leader changes a
    /// tick later, as a client backs off: a leader handing over refuses at once); panics if it
    /// never is.
    pub fn must_write(&mut self, group: GroupId, write: KvWrite) -> WriteOutcome {
        for _ in 0..20 {
            let leader = self.must_elect(group);
            let result = self.propose(leader, group, write.clone());
            match self.wait(&result, 50) {
                Some(Ok(Ok(outcome))) => return outcome,
                Some(Ok(Err(refusal))) => panic!("group {group}: {write:?} refused: {refusal}"),
                Some(Err(_)) | None => self.tick(),
            }
        }
        panic!("group {group}: {write:?} was never applied");
    }

    pub fn must_put(&mut self, group: GroupId, key: &str, value: &str) -> WriteOutcome {
        let write = self.write(WriteKind::Put, 1, key, value);
        self.must_write(group, write)
    }

    /// A linearizable read at the leader; panics if none is answered.
    pub fn must_get(&mut self, group: GroupId, key: &str) -> Option<String> {
        self.must_get_versioned(group, key).map(|(value, _)| value)
    }

    /// A linearizable read at the leader, with the key's version; panics if none is answered.
    pub fn must_get_versioned(&mut self, group: GroupId, key: &str) -> Option<(String, Version)> {
        for _ in 0..20 {
            let leader = self.must_elect(group);
            let result = self.read(leader, group, key, Consistency::Linearizable);
            if let Some(Ok(read)) = self.wait(&result, 50) {
                return read.output.map(|stored| (utf8(&stored.value), stored.version));
            }
            self.tick();
        }
        panic!("group {group}: read of {key} never answered");
    }

    /// The value of `key` in `node`'s engine right now (what it has applied).
    pub fn applied_value(&mut self, node: NodeId, group: GroupId, key: &str) -> Option<String> {
        self.applied_versioned(node, group, key).map(|(value, _)| value)
    }

    /// The value of `key` in `node`'s engine right now (what it has applied), with its
    /// version.
    pub fn applied_versioned(
        &mut self,
        node: NodeId,
        group: GroupId,
        key: &str,
    ) -> Option<(String, Version)> {
        let engine = Arc::clone(self.store(node).engine());
        engine.get_data(group, shard_of(key), key.as_bytes()).unwrap().map(|stored| {
            let stored = Versioned::decode(&stored).expect("a stored value decodes");
            (utf8(&stored.value), stored.version)
        })
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The shard a key goes to in these tests (any fixed function will do).
pub fn shard_of(key: &str) -> ShardId {
    ShardId(key.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 8)
}
