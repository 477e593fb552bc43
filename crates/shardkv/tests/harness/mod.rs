//! A deterministic in-memory cluster of stores hosting KV groups: real `Store`, `Peer` and
//! `KvStateMachine` code over `MemKv`, a message queue for a network, ticks as messages.
//! Faults: partitions (blocked links), crash-restart (unsynced writes lost).

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mosaic_engine::{
    ClientId, ClusterId, Engine, EngineConfig, GroupId, MemKv, MemSnapshot, NodeIdentity, ShardId,
};
use mosaic_raft::{LogIndex, Message, NodeId, Role};
use mosaic_raftstore::{
    Callback, Consistency, Error, LeaderTerm, ManualClock, ReadOutput, SnapshotReader, Store,
    StoreConfig, StoreMsg, Transport,
};
use mosaic_shardkv::{
    Applied, KvGet, KvQuery, KvReadOutput, KvStateMachine, KvWrite, WriteKind, WriteOutcome,
};

pub type KvStore = Store<MemKv, KvStateMachine, QueueTransport>;
pub type Msg = StoreMsg<MemKv, KvStateMachine>;

/// What is in flight between two nodes.
enum Flight {
    Messages(Vec<(GroupId, Message)>),
    Snapshot { group: GroupId, message: Message, chunks: Vec<Bytes> },
}

/// A snapshot held back on its way (see [`Cluster::hold_snapshots_to`]).
#[derive(Clone)]
pub struct HeldSnapshot {
    pub from: NodeId,
    pub to: NodeId,
    pub group: GroupId,
    pub message: Message,
    pub chunks: Vec<Bytes>,
}

impl HeldSnapshot {
    /// The snapshot's index.
    pub fn index(&self) -> LogIndex {
        match &self.message.body {
            mosaic_raft::MessageBody::InstallSnapshot { snapshot } => snapshot.metadata.index,
            other => panic!("a held snapshot carries {other:?}"),
        }
    }
}

/// In flight: (from, to, what).
type Queue = Rc<RefCell<VecDeque<(NodeId, NodeId, Flight)>>>;

/// Puts every batch a store sends on the shared queue.
pub struct QueueTransport {
    from: NodeId,
    queue: Queue,
}

impl Transport<MemKv> for QueueTransport {
    fn send(&mut self, to: NodeId, messages: Vec<(GroupId, Message)>) {
        self.queue.borrow_mut().push_back((self.from, to, Flight::Messages(messages)));
    }

    fn send_snapshot(
        &mut self,
        to: NodeId,
        group: GroupId,
        message: Message,
        reader: SnapshotReader<MemSnapshot>,
    ) {
        let chunks = reader.read_all(SNAPSHOT_CHUNK_BYTES).expect("read snapshot");
        self.queue.borrow_mut().push_back((
            self.from,
            to,
            Flight::Snapshot { group, message, chunks },
        ));
    }
}

/// Small chunks, so that snapshots of a few keys take several.
const SNAPSHOT_CHUNK_BYTES: u64 = 64;

/// A slot a callback fills in.
pub type Slot<T> = Arc<Mutex<Option<Result<T, Error>>>>;

pub fn slot<T: Send + 'static>() -> (Slot<T>, Callback<T>) {
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let filled = Arc::clone(&slot);
    let callback: Callback<T> = Box::new(move |result| {
        let mut guard = filled.lock().unwrap();
        assert!(guard.is_none(), "a callback was called twice");
        *guard = Some(result);
    });
    (slot, callback)
}

pub fn take<T>(slot: &Slot<T>) -> Option<Result<T, Error>> {
    slot.lock().unwrap().take()
}

pub const CLUSTER: ClusterId = ClusterId(1);
/// Ticks to wait for an election before a helper gives up.
const ELECTION_TICKS_MAX: usize = 200;
/// Network rounds per tick before a helper gives up waiting for quiet.
const ROUNDS_MAX: usize = 10_000;

pub struct Cluster {
    pub stores: BTreeMap<NodeId, Option<KvStore>>,
    kvs: BTreeMap<NodeId, MemKv>,
    queue: Queue,
    /// Links (from, to) that drop everything.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose store thread is stalled: they get no ticks (their clock runs on).
    stalled: BTreeSet<NodeId>,
    /// Nodes whose incoming snapshots are held back (see [`Cluster::hold_snapshots_to`]).
    holding_snapshots: BTreeSet<NodeId>,
    held: Vec<HeldSnapshot>,
    config: StoreConfig,
    next_seq: u64,
    /// Every node's clock: [`Cluster::tick`] moves it by the tick interval.
    pub clock: ManualClock,
}

impl Cluster {
    /// `nodes` stores numbered 1..=nodes, nothing hosted yet.
    pub fn new(nodes: u64, seed: u64) -> Self {
        Self::with_config(nodes, StoreConfig { seed, ..StoreConfig::default() })
    }

    /// As [`Cluster::new`], with every store using `config`.
    pub fn with_config(nodes: u64, config: StoreConfig) -> Self {
        let queue: Queue = Rc::default();
        let mut cluster = Self {
            stores: BTreeMap::new(),
            kvs: BTreeMap::new(),
            queue,
            blocked: BTreeSet::new(),
            stalled: BTreeSet::new(),
            holding_snapshots: BTreeSet::new(),
            held: Vec::new(),
            config,
            next_seq: 1,
            clock: ManualClock::new(),
        };
        for id in 1..=nodes {
            let node = NodeId(id);
            cluster.kvs.insert(node, MemKv::new(&format!("node-{id}")));
            cluster.start(node);
        }
        cluster
    }

    fn start(&mut self, node: NodeId) {
        let kv = self.kvs.remove(&node).expect("a backend for every node");
        let identity = NodeIdentity { cluster_id: CLUSTER, node_id: node };
        let engine = Engine::open(kv, identity, &EngineConfig::default())
            .unwrap_or_else(|error| panic!("open node {node}: {error}"));
        let transport = QueueTransport { from: node, queue: Rc::clone(&self.queue) };
        let clock = Box::new(self.clock.clone());
        let store = Store::open(node, Arc::new(engine), self.config.clone(), transport, clock)
            .unwrap_or_else(|error| panic!("open store {node}: {error}"));
        self.stores.insert(node, Some(store));
    }

    pub fn store(&mut self, node: NodeId) -> &mut KvStore {
        self.stores
            .get_mut(&node)
            .and_then(Option::as_mut)
            .unwrap_or_else(|| panic!("node {node} is down"))
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        matches!(self.stores.get(&node), Some(Some(_)))
    }

    /// Hands `msg` to `node` and processes it.
    pub fn send(&mut self, node: NodeId, msg: Msg) {
        let store = self.store(node);
        store.handle(msg).unwrap_or_else(|error| panic!("node {node} handle: {error}"));
        store.process().unwrap_or_else(|error| panic!("node {node} process: {error}"));
    }

    /// Creates `group` on each of `members`.
    pub fn create_group(&mut self, group: GroupId, members: &[u64]) {
        let members: Vec<NodeId> = members.iter().copied().map(NodeId).collect();
        for member in &members {
            let (result, callback) = slot();
            self.send(*member, StoreMsg::CreateGroup { group, members: members.clone(), callback });
            take(&result).expect("answered at once").expect("group created");
        }
    }

    /// Creates `node`'s empty replica of `group` (`JoinGroup`), starting in `leader`'s term if
    /// given.
    pub fn join_group(&mut self, node: NodeId, group: GroupId, leader: Option<LeaderTerm>) {
        let (result, callback) = slot();
        self.send(node, StoreMsg::JoinGroup { group, leader, callback });
        take(&result).expect("answered at once").expect("joined");
    }

    /// Delivers queued messages (dropping those on blocked links or to down nodes) and runs
    /// every store until nothing is left to do.
    pub fn settle(&mut self) {
        for _ in 0..ROUNDS_MAX {
            let batch = self.queue.borrow_mut().pop_front();
            match batch {
                Some((from, to, flight)) => {
                    let delivered = !self.blocked.contains(&(from, to)) && self.is_up(to);
                    match flight {
                        Flight::Messages(messages) if delivered => {
                            self.send(to, StoreMsg::Raft { from, messages });
                        }
                        Flight::Messages(_) => {}
                        Flight::Snapshot { group, message, chunks }
                            if delivered && self.holding_snapshots.contains(&to) =>
                        {
                            self.held.push(HeldSnapshot { from, to, group, message, chunks });
                        }
                        Flight::Snapshot { group, message, chunks } => {
                            if delivered {
                                self.send(to, StoreMsg::Snapshot { from, group, message, chunks });
                            }
                            if self.is_up(from) {
                                let status = StoreMsg::SnapshotStatus { group, to, delivered };
                                self.send(from, status);
                            }
                        }
                    }
                }
                None => {
                    let busy: Vec<NodeId> = self
                        .stores
                        .iter()
                        .filter(|(_, store)| store.as_ref().is_some_and(Store::has_work))
                        .map(|(node, _)| *node)
                        .collect();
                    if busy.is_empty() {
                        return;
                    }
                    for node in busy {
                        self.store(node).process().expect("process");
                    }
                }
            }
        }
        panic!("the cluster did not settle in {ROUNDS_MAX} rounds");
    }

    /// Holds back the snapshots sent to `node` from now on: they are neither delivered nor
    /// reported to their sender until taken with [`Cluster::take_held_snapshots`].
    pub fn hold_snapshots_to(&mut self, node: NodeId) {
        self.holding_snapshots.insert(node);
    }

    /// The snapshots held back so far, oldest first.
    pub fn take_held_snapshots(&mut self) -> Vec<HeldSnapshot> {
        std::mem::take(&mut self.held)
    }

    /// Tells the sender of `snapshot` that it was not delivered (so it sends a new one).
    pub fn report_lost(&mut self, snapshot: &HeldSnapshot) {
        let status =
            StoreMsg::SnapshotStatus { group: snapshot.group, to: snapshot.to, delivered: false };
        self.send(snapshot.from, status);
    }

    /// Hands every snapshot of `snapshots` to its receiver in one inbox drain (one `handle`
    /// each, then one `process`), as a node's store thread takes what queued up meanwhile.
    pub fn deliver_in_one_drain(&mut self, node: NodeId, snapshots: Vec<HeldSnapshot>) {
        for snapshot in snapshots {
            assert_eq!(snapshot.to, node, "a snapshot for another node");
            let msg = StoreMsg::Snapshot {
                from: snapshot.from,
                group: snapshot.group,
                message: snapshot.message,
                chunks: snapshot.chunks,
            };
            self.store(node).handle(msg).unwrap_or_else(|error| panic!("handle: {error}"));
        }
        self.store(node).process().unwrap_or_else(|error| panic!("process: {error}"));
        self.settle();
    }

    /// Stalls `node`'s store as a SIGSTOP or a long fsync would: no ticks reach it until
    /// [`Cluster::resume`], while the clock runs on. (Cut it off too, or messages still reach
    /// it.)
    pub fn stall(&mut self, node: NodeId) {
        self.stalled.insert(node);
    }

    /// Ends a [`Cluster::stall`].
    pub fn resume(&mut self, node: NodeId) {
        self.stalled.remove(&node);
    }

    /// One tick on every live node that is not stalled (the clock moves by the tick interval
    /// first), then settle.
    pub fn tick(&mut self) {
        self.clock.advance(self.config.tick_interval);
        let up: Vec<NodeId> =
            self.up_nodes().into_iter().filter(|node| !self.stalled.contains(node)).collect();
        for node in up {
            self.send(node, StoreMsg::Tick);
        }
        self.settle();
    }

    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.stores.iter().filter(|(_, s)| s.is_some()).map(|(n, _)| *n).collect()
    }

    /// The live leader of `group` with the highest term, if any.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.stores
            .iter()
            .filter_map(|(node, store)| {
                let status = store.as_ref()?.peer(group)?.status();
                (status.soft_state.role == Role::Leader).then_some((status.hard_state.term, *node))
            })
            .max()
            .map(|(_, node)| node)
    }

    /// Ticks until `group` has a leader that a majority follows; returns it.
    pub fn must_elect(&mut self, group: GroupId) -> NodeId {
        for _ in 0..ELECTION_TICKS_MAX {
            if let Some(leader) = self.leader(group).filter(|leader| self.is_connected(*leader)) {
                return leader;
            }
            self.tick();
        }
        panic!("group {group}: no leader after {ELECTION_TICKS_MAX} ticks");
    }

    /// Returns true when `node` can send to a majority of the nodes (itself included).
    fn is_connected(&self, node: NodeId) -> bool {
        let reachable = self
            .stores
            .keys()
            .filter(|other| **other == node || !self.blocked.contains(&(node, **other)))
            .count();
        reachable * 2 > self.stores.len()
    }

    /// Proposes on `node` and returns the slot of the answer.
    pub fn propose(
        &mut self,
        node: NodeId,
        group: GroupId,
        write: KvWrite,
    ) -> Slot<mosaic_raftstore::Result<WriteOutcome>> {
        let (result, callback) = slot();
        let callback = Box::new(move |answer: mosaic_raftstore::Result<_>| {
            callback(answer.map(|applied: mosaic_raftstore::Result<Applied>| {
                applied.map(|applied| applied.into_write().expect("a write answers a write"))
            }));
        });
        self.send(node, StoreMsg::Propose { group, proposal: write.into(), callback });
        result
    }

    /// Reads on `node` and returns the slot of the answer.
    pub fn read(
        &mut self,
        node: NodeId,
        group: GroupId,
        key: &str,
        consistency: Consistency,
    ) -> Slot<ReadOutput<Option<Bytes>>> {
        let (result, callback) = slot();
        let callback = Box::new(
            move |answer: mosaic_raftstore::Result<ReadOutput<KvReadOutput<MemSnapshot>>>| {
                callback(answer.map(|read| ReadOutput {
                    output: read.output.into_value().expect("a get answers a value"),
                    applied_index: read.applied_index,
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

    /// Ticks until the slot is filled (at most `ticks`).
    pub fn wait<T>(&mut self, slot: &Slot<T>, ticks: usize) -> Option<Result<T, Error>> {
        self.settle();
        for _ in 0..ticks {
            if let Some(result) = take(slot) {
                return Some(result);
            }
            self.tick();
        }
        take(slot)
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
        }
    }

    /// Proposes `write` at the leader until it is applied (retrying through leader changes,
    /// as a client does); panics if it never is.
    pub fn must_write(&mut self, group: GroupId, write: KvWrite) -> WriteOutcome {
        for _ in 0..20 {
            let leader = self.must_elect(group);
            let result = self.propose(leader, group, write.clone());
            match self.wait(&result, 50) {
                Some(Ok(Ok(outcome))) => return outcome,
                Some(Ok(Err(refusal))) => panic!("group {group}: {write:?} refused: {refusal}"),
                Some(Err(_)) | None => {}
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
        for _ in 0..20 {
            let leader = self.must_elect(group);
            let result = self.read(leader, group, key, Consistency::Linearizable);
            if let Some(Ok(read)) = self.wait(&result, 50) {
                return read.output.map(|value| String::from_utf8(value.to_vec()).unwrap());
            }
        }
        panic!("group {group}: read of {key} never answered");
    }

    /// The value of `key` in `node`'s engine right now (what it has applied).
    pub fn applied_value(&mut self, node: NodeId, group: GroupId, key: &str) -> Option<String> {
        let engine = Arc::clone(self.store(node).engine());
        engine
            .get_data(group, shard_of(key), key.as_bytes())
            .unwrap()
            .map(|value| String::from_utf8(value.to_vec()).unwrap())
    }

    pub fn applied_index(&mut self, node: NodeId, group: GroupId) -> LogIndex {
        self.store(node).peer(group).expect("hosted").applied()
    }

    /// Stops `node` as a crash would: it keeps what it synced and the first
    /// `unsynced_writes_kept` later writes.
    pub fn crash(&mut self, node: NodeId, unsynced_writes_kept: usize) {
        let store = self.stores.insert(node, None).flatten().expect("node is up");
        let kv = store.engine().kv().crash(unsynced_writes_kept);
        drop(store);
        self.kvs.insert(node, kv);
    }

    /// Replaces the disk of `node` (down) with an empty one: it restarts hosting nothing.
    pub fn wipe(&mut self, node: NodeId) {
        assert!(!self.is_up(node), "node {node} is up");
        self.kvs.insert(node, MemKv::new(&format!("node-{}-wiped", node.0)));
    }

    pub fn restart(&mut self, node: NodeId) {
        assert!(!self.is_up(node), "node {node} is up");
        self.start(node);
        self.settle();
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: NodeId) {
        for other in self.stores.keys().copied().collect::<Vec<_>>() {
            if other != node {
                self.blocked.insert((node, other));
                self.blocked.insert((other, node));
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}

/// The shard a key goes to in these tests (any fixed function will do).
pub fn shard_of(key: &str) -> ShardId {
    ShardId(key.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 8)
}
