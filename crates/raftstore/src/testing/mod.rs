//! A deterministic in-memory cluster of stores, for the tests of this crate and of the state
//! machines it hosts (compiled with the `testing` feature only).
//!
//! [`Cluster`] runs the real [`Store`] and [`crate::Peer`] code of several nodes in one thread,
//! each over its own [`MemKv`], with any [`StateMachine`]: a queue for a network (messages and
//! snapshots delivered in send order), ticks as messages and one [`ManualClock`] that every
//! tick moves by the tick interval. Nothing is random but the seed in the [`StoreConfig`], so a
//! test replays exactly.
//!
//! Faults: links that drop everything ([`Cluster::blocked`], [`Cluster::isolate`]), stalled
//! store threads ([`Cluster::stall`]), snapshots held back and delivered later
//! ([`Cluster::hold_snapshots_to`]), crashes that keep only what was synced and some unsynced
//! writes ([`Cluster::crash`]), and lost disks ([`Cluster::wipe`]).
//!
//! Requests are answered into a [`Slot`]: [`take`] it, or [`Cluster::wait`] for it.
//!
//! Every helper panics with the node and group it was working on; every waiting loop has a
//! bound.

mod network;

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use mosaic_engine::{ClusterId, Engine, EngineConfig, GroupId, MemKv, NodeIdentity};
use mosaic_raft::{LogIndex, NodeId, Role};

pub use network::{HeldSnapshot, QueueTransport};

use crate::clock::ManualClock;
use crate::config::StoreConfig;
use crate::error::Result;
use crate::msg::{Callback, Consistency, LeaderTerm, ReadOutput, StoreMsg};
use crate::state_machine::StateMachine;
use crate::store::Store;
use network::{Flight, Queue};

/// The store of one node of a test cluster.
pub type TestStore<SM> = Store<MemKv, SM, QueueTransport>;

/// Where a request's answer lands: empty until its callback is called.
pub type Slot<T> = Arc<Mutex<Option<Result<T>>>>;

/// A slot and the callback that fills it.
///
/// A [`Callback`] is `FnOnce`: the store answers a request at most once by its type, and a
/// test shows that it answered at least once by finding the slot filled.
#[must_use]
pub fn slot<T: Send + 'static>() -> (Slot<T>, Callback<T>) {
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let filled = Arc::clone(&slot);
    let callback: Callback<T> = Box::new(move |result| {
        let mut guard = filled.lock().expect("a slot's lock is never poisoned");
        assert!(guard.is_none(), "a callback was called twice");
        *guard = Some(result);
    });
    (slot, callback)
}

/// Takes the answer out of `slot`, if it came.
#[must_use]
pub fn take<T>(slot: &Slot<T>) -> Option<Result<T>> {
    slot.lock().expect("a slot's lock is never poisoned").take()
}

/// The cluster id of every node.
pub const CLUSTER: ClusterId = ClusterId(1);
/// Ticks to wait for an election before a helper gives up.
const ELECTION_TICKS_MAX: usize = 200;
/// Deliveries and `process` rounds before [`Cluster::settle`] gives up waiting for quiet.
const ROUNDS_MAX: usize = 10_000;

/// Stores numbered from 1, each over its own in-memory engine, hosting groups whose state
/// machine is `SM`. See the module documentation.
pub struct Cluster<SM: StateMachine<MemKv>> {
    /// Every node: its store while it is up, `None` while it is down.
    stores: BTreeMap<NodeId, Option<TestStore<SM>>>,
    /// The engines of the nodes that are down.
    kvs: BTreeMap<NodeId, MemKv>,
    /// How many times each node's store was started (its incarnation).
    starts: BTreeMap<NodeId, u64>,
    queue: Queue,
    /// Links (from, to) that drop everything.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose store thread is stalled: they get no ticks (their clock runs on).
    stalled: BTreeSet<NodeId>,
    /// Nodes whose incoming snapshots are held back (see [`Cluster::hold_snapshots_to`]).
    holding_snapshots: BTreeSet<NodeId>,
    held: Vec<HeldSnapshot>,
    config: StoreConfig,
    /// Every node's clock: [`Cluster::tick`] moves it by the tick interval.
    clock: ManualClock,
}

impl<SM: StateMachine<MemKv>> Cluster<SM> {
    /// `nodes` stores numbered 1..=nodes with the default config and `seed`, nothing hosted
    /// yet.
    #[must_use]
    pub fn new(nodes: u64, seed: u64) -> Self {
        Self::with_config(nodes, StoreConfig { seed, ..StoreConfig::default() })
    }

    /// As [`Cluster::new`], with every store using `config`.
    ///
    /// # Panics
    /// If a store does not open (an invalid `config`).
    #[must_use]
    pub fn with_config(nodes: u64, config: StoreConfig) -> Self {
        let mut cluster = Self {
            stores: BTreeMap::new(),
            kvs: BTreeMap::new(),
            starts: BTreeMap::new(),
            queue: Rc::default(),
            blocked: BTreeSet::new(),
            stalled: BTreeSet::new(),
            holding_snapshots: BTreeSet::new(),
            held: Vec::new(),
            config,
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
        let incarnation = self.starts.entry(node).or_default();
        *incarnation += 1;
        let transport = QueueTransport::new(node, *incarnation, Rc::clone(&self.queue));
        let clock = Box::new(self.clock.clone());
        let store = Store::open(
            node,
            Arc::new(engine),
            self.config.clone(),
            transport,
            clock,
            crate::StoreMetrics::default(),
        )
        .unwrap_or_else(|error| panic!("open store {node}: {error}"));
        self.stores.insert(node, Some(store));
    }

    /// The store of `node`.
    ///
    /// # Panics
    /// If `node` is down.
    pub fn store(&mut self, node: NodeId) -> &mut TestStore<SM> {
        self.stores
            .get_mut(&node)
            .and_then(Option::as_mut)
            .unwrap_or_else(|| panic!("node {node} is down"))
    }

    /// Returns true if `node` is up.
    #[must_use]
    pub fn is_up(&self, node: NodeId) -> bool {
        matches!(self.stores.get(&node), Some(Some(_)))
    }

    /// The nodes that are up, in id order.
    #[must_use]
    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.stores.iter().filter(|(_, store)| store.is_some()).map(|(node, _)| *node).collect()
    }

    /// Hands `msg` to `node` and processes it (nothing is delivered: see [`Cluster::settle`]).
    ///
    /// # Panics
    /// If `node` is down, or its store fails (an engine error).
    pub fn send(&mut self, node: NodeId, msg: StoreMsg<MemKv, SM>) {
        let store = self.store(node);
        // One thread runs every store: each call is in its own store's span.
        let _node = store.span().clone().entered();
        store.handle(msg).unwrap_or_else(|error| panic!("node {node} handle: {error}"));
        store.process().unwrap_or_else(|error| panic!("node {node} process: {error}"));
    }

    /// Creates `group` on each of `members`.
    ///
    /// # Panics
    /// If a member refuses.
    pub fn create_group(&mut self, group: GroupId, members: &[u64]) {
        let members: Vec<NodeId> = members.iter().copied().map(NodeId).collect();
        for member in &members {
            let (result, callback) = slot();
            self.send(*member, StoreMsg::CreateGroup { group, members: members.clone(), callback });
            take(&result)
                .expect("answered at once")
                .unwrap_or_else(|error| panic!("node {member}: create {group}: {error}"));
        }
    }

    /// Creates `node`'s empty replica of `group` (`JoinGroup`), starting in `leader`'s term if
    /// given.
    ///
    /// # Panics
    /// If `node` refuses.
    pub fn join_group(&mut self, node: NodeId, group: GroupId, leader: Option<LeaderTerm>) {
        let (result, callback) = slot();
        self.send(node, StoreMsg::JoinGroup { group, leader, callback });
        take(&result)
            .expect("answered at once")
            .unwrap_or_else(|error| panic!("node {node}: join {group}: {error}"));
    }

    /// Proposes `proposal` to `group` on `node`; returns the slot of the answer.
    pub fn propose(
        &mut self,
        node: NodeId,
        group: GroupId,
        proposal: SM::Proposal,
    ) -> Slot<SM::ApplyOutput> {
        let (result, callback) = slot();
        self.send(node, StoreMsg::Propose { group, proposal, callback });
        result
    }

    /// Reads `query` from `group` on `node`; returns the slot of the answer.
    pub fn read(
        &mut self,
        node: NodeId,
        group: GroupId,
        query: SM::Query,
        consistency: Consistency,
    ) -> Slot<ReadOutput<SM::ReadOutput>> {
        let (result, callback) = slot();
        self.send(node, StoreMsg::Read { group, query, consistency, callback });
        result
    }

    /// Delivers queued messages (dropping those on blocked links or to down nodes) and runs
    /// every store until nothing is left to do.
    ///
    /// # Panics
    /// If the cluster is still busy after a bounded number of rounds.
    pub fn settle(&mut self) {
        for _ in 0..ROUNDS_MAX {
            let batch = self.queue.borrow_mut().pop_front();
            match batch {
                Some((from, to, flight)) => self.deliver(from, to, flight),
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
                        let store = self.store(node);
                        let _node = store.span().clone().entered();
                        store
                            .process()
                            .unwrap_or_else(|error| panic!("node {node} process: {error}"));
                    }
                }
            }
        }
        panic!("the cluster did not settle in {ROUNDS_MAX} rounds");
    }

    /// Delivers one flight from the queue; a snapshot's delivery is reported to its sender.
    fn deliver(&mut self, from: NodeId, to: NodeId, flight: Flight) {
        let delivered = !self.blocked.contains(&(from, to)) && self.is_up(to);
        match flight {
            Flight::Messages(incarnation, messages) if delivered => {
                self.send(to, StoreMsg::Raft { from, incarnation, messages });
            }
            Flight::Messages(..) => {}
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
                    self.send(from, StoreMsg::SnapshotStatus { group, to, delivered });
                }
            }
        }
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
    /// each, then one `process`), as a node's store thread takes what queued up meanwhile;
    /// then settles.
    ///
    /// # Panics
    /// If a snapshot is for another node than `node`.
    pub fn deliver_in_one_drain(&mut self, node: NodeId, snapshots: Vec<HeldSnapshot>) {
        for snapshot in snapshots {
            assert_eq!(snapshot.to, node, "a snapshot for node {} handed to {node}", snapshot.to);
            let msg = StoreMsg::Snapshot {
                from: snapshot.from,
                group: snapshot.group,
                message: snapshot.message,
                chunks: snapshot.chunks,
            };
            let store = self.store(node);
            let _node = store.span().clone().entered();
            store.handle(msg).unwrap_or_else(|error| panic!("node {node} handle: {error}"));
        }
        {
            let store = self.store(node);
            let _node = store.span().clone().entered();
            store.process().unwrap_or_else(|error| panic!("node {node} process: {error}"));
        }
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
        let ticking: Vec<NodeId> =
            self.up_nodes().into_iter().filter(|node| !self.stalled.contains(node)).collect();
        for node in ticking {
            self.send(node, StoreMsg::Tick);
        }
        self.settle();
    }

    /// The live leader of `group` with the highest term, if any.
    #[must_use]
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

    /// Ticks until `group` has a leader that can reach a majority of the nodes; returns it.
    ///
    /// # Panics
    /// If there is none after a bounded number of ticks.
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

    /// Settles, then ticks until the slot is filled (at most `ticks`); returns its answer.
    pub fn wait<T>(&mut self, slot: &Slot<T>, ticks: usize) -> Option<Result<T>> {
        self.settle();
        for _ in 0..ticks {
            if let Some(result) = take(slot) {
                return Some(result);
            }
            self.tick();
        }
        take(slot)
    }

    /// The index `node`'s replica of `group` has applied.
    ///
    /// # Panics
    /// If `node` is down or does not host `group`.
    pub fn applied_index(&mut self, node: NodeId, group: GroupId) -> LogIndex {
        self.store(node)
            .peer(group)
            .unwrap_or_else(|| panic!("node {node} does not host {group}"))
            .applied()
    }

    /// Stops `node` as a crash would: it keeps what it synced and the first
    /// `unsynced_writes_kept` later writes. Requests waiting on it are answered
    /// [`crate::Error::Stopped`].
    ///
    /// # Panics
    /// If `node` is down.
    pub fn crash(&mut self, node: NodeId, unsynced_writes_kept: usize) {
        let store = self
            .stores
            .insert(node, None)
            .flatten()
            .unwrap_or_else(|| panic!("node {node} is down"));
        let kv = store.engine().kv().crash(unsynced_writes_kept);
        drop(store);
        self.kvs.insert(node, kv);
    }

    /// Replaces the disk of `node` (down) with an empty one: it restarts hosting nothing.
    ///
    /// # Panics
    /// If `node` is up.
    pub fn wipe(&mut self, node: NodeId) {
        assert!(!self.is_up(node), "node {node} is up");
        self.kvs.insert(node, MemKv::new(&format!("node-{}-wiped", node.0)));
    }

    /// Starts `node` (down) again from its engine, then settles.
    ///
    /// # Panics
    /// If `node` is up.
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

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Unblocks every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
