//! One simulated node process: a real `Store` over a `MemKv`, and what a crash (or a lost data
//! directory) does to it.
//!
//! The store's transport puts what it sends into the node's outbox, which the world routes
//! through the network after every step. A crash keeps what the engine synced plus a random
//! prefix of its later, unsynced writes (`MemKv::crash`), drops the store (failing its
//! waiting requests, whose answers the world then discards) and bumps the incarnation; a
//! restart opens engine and store again from what survived.
//!
//! Invariant: `incarnation` changes exactly when the process dies, so an answer or a
//! snapshot report tagged with an older incarnation belongs to a process that is gone.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use mosaic_engine::{ClusterId, Engine, EngineConfig, GroupId, MemKv, MemSnapshot, NodeIdentity};
use mosaic_raft::{Message, NodeId};
use mosaic_raftstore::{
    ManualClock, SnapshotReader, StateMachine, Store, StoreConfig, StoreMetrics, StoreMsg,
    StoreStats, Transport,
};

/// The simulated cluster's id.
const CLUSTER: ClusterId = ClusterId(1);
/// Bytes per snapshot chunk (small, so that a snapshot of a few keys takes several).
const SNAPSHOT_CHUNK_BYTES_MAX: u64 = 256;
/// `Store::process` calls after one input, at most, before the store must be idle.
const PROCESS_CALLS_MAX: usize = 64;

/// What a store sent, waiting to enter the network.
pub(crate) enum Outgoing {
    /// Raft messages for node `to`.
    Raft {
        /// The receiver.
        to: NodeId,
        /// The messages.
        messages: Vec<(GroupId, Message)>,
    },
    /// A snapshot of `group` for node `to`.
    Snapshot {
        /// The receiver.
        to: NodeId,
        /// The group.
        group: GroupId,
        /// The `InstallSnapshot` message.
        message: Message,
        /// The encoded chunks.
        chunks: Vec<Bytes>,
    },
}

/// The transport of a simulated store: everything goes to the node's outbox.
pub(crate) struct SimTransport {
    outbox: Rc<RefCell<Vec<Outgoing>>>,
}

impl Transport<MemKv> for SimTransport {
    fn send(&mut self, to: NodeId, messages: Vec<(GroupId, Message)>) {
        self.outbox.borrow_mut().push(Outgoing::Raft { to, messages });
    }

    fn send_snapshot(
        &mut self,
        to: NodeId,
        group: GroupId,
        message: Message,
        reader: SnapshotReader<MemSnapshot>,
    ) {
        let chunks = reader
            .read_all(SNAPSHOT_CHUNK_BYTES_MAX)
            .unwrap_or_else(|error| panic!("reading a snapshot of group {group}: {error}"));
        self.outbox.borrow_mut().push(Outgoing::Snapshot { to, group, message, chunks });
    }
}

/// A store of state machine `SM` on the simulated transport.
pub(crate) type SimStore<SM> = Store<MemKv, SM, SimTransport>;

enum Process<SM: StateMachine<MemKv>> {
    Up(SimStore<SM>),
    Down(MemKv),
}

/// One node. See the module documentation.
pub(crate) struct SimNode<SM: StateMachine<MemKv>> {
    id: NodeId,
    config: StoreConfig,
    /// The world's clock, which every incarnation's store reads.
    clock: ManualClock,
    incarnation: u64,
    process: Process<SM>,
    outbox: Rc<RefCell<Vec<Outgoing>>>,
    /// What the stores of earlier incarnations did.
    earlier_stats: StoreStats,
}

impl<SM: StateMachine<MemKv>> SimNode<SM> {
    /// A node over a new, empty engine, which `prepare` may write to (synced) before the
    /// store opens: the controller's bootstrap record, or a storage node's placement mark.
    pub(crate) fn start(
        id: NodeId,
        config: StoreConfig,
        clock: ManualClock,
        prepare: impl FnOnce(&Engine<MemKv>),
    ) -> Self {
        let engine = open_engine(id, MemKv::new(&format!("node-{id}")));
        prepare(&engine);
        let outbox = Rc::default();
        let store = open_store(id, engine, &config, &clock, &outbox);
        Self {
            id,
            config,
            clock,
            incarnation: 0,
            process: Process::Up(store),
            outbox,
            earlier_stats: StoreStats::default(),
        }
    }

    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.process, Process::Up(_))
    }

    /// The running store, if the node is up.
    pub(crate) fn store(&self) -> Option<&SimStore<SM>> {
        match &self.process {
            Process::Up(store) => Some(store),
            Process::Down(_) => None,
        }
    }

    /// Hands `msg` to the store and runs it until it is idle; a message for a crashed node is
    /// refused (its callback, if any, answers into a dead incarnation).
    ///
    /// # Panics
    /// If the store fails (the in-memory engine never does) or never becomes idle.
    pub(crate) fn handle(&mut self, msg: StoreMsg<MemKv, SM>) {
        let Process::Up(store) = &mut self.process else {
            msg.refuse(mosaic_raftstore::Error::Stopped);
            return;
        };
        let node = self.id;
        // One thread runs every node: each call is in its own store's span.
        let _node = store.span().clone().entered();
        store.handle(msg).unwrap_or_else(|error| panic!("node {node}: store failed: {error}"));
        for _ in 0..PROCESS_CALLS_MAX {
            if !store.has_work() {
                return;
            }
            store.process().unwrap_or_else(|error| panic!("node {node}: store failed: {error}"));
        }
        panic!("node {node}: the store still has work after {PROCESS_CALLS_MAX} process calls");
    }

    /// What the store sent since the last call.
    pub(crate) fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut *self.outbox.borrow_mut())
    }

    /// Kills the process: the engine keeps its synced writes and the first
    /// `unsynced_writes_kept` later ones. Returns false if it was down already.
    pub(crate) fn crash(&mut self, unsynced_writes_kept: usize) -> bool {
        let Process::Up(store) = &self.process else {
            return false;
        };
        let survived = store.engine().kv().crash(unsynced_writes_kept);
        self.earlier_stats = add_stats(self.earlier_stats, store.stats());
        // Dropping the store fails its waiting requests; their answers carry the old
        // incarnation and are discarded.
        self.process = Process::Down(survived);
        self.incarnation += 1;
        self.outbox.borrow_mut().clear();
        true
    }

    /// What the node's stores did, over every incarnation.
    pub(crate) fn stats(&self) -> StoreStats {
        match self.store() {
            Some(store) => add_stats(self.earlier_stats, store.stats()),
            None => self.earlier_stats,
        }
    }

    /// How many unsynced writes a crash now could lose.
    pub(crate) fn unsynced_writes(&self) -> usize {
        self.store().map_or(0, |store| store.engine().kv().unsynced_writes())
    }

    /// Replaces the engine of the crashed node with a new, empty one (a lost data directory),
    /// which `prepare` writes to (synced) as at the first start. Returns false if it was up.
    pub(crate) fn lose_data(&mut self, prepare: impl FnOnce(&Engine<MemKv>)) -> bool {
        if self.is_up() {
            return false;
        }
        let engine = open_engine(self.id, MemKv::new(&format!("node-{}", self.id)));
        prepare(&engine);
        self.process = Process::Down(engine.kv().crash(0));
        true
    }

    /// Starts the process again over what its engine kept. Returns false if it was up.
    pub(crate) fn restart(&mut self) -> bool {
        let Process::Down(kv) = &self.process else {
            return false;
        };
        let engine = open_engine(self.id, kv.reopen());
        let store = open_store(self.id, engine, &self.config, &self.clock, &self.outbox);
        self.process = Process::Up(store);
        true
    }
}

fn open_engine(node: NodeId, kv: MemKv) -> Engine<MemKv> {
    let identity = NodeIdentity { cluster_id: CLUSTER, node_id: node };
    Engine::open(kv, identity, &EngineConfig::default())
        .unwrap_or_else(|error| panic!("node {node}: opening the engine: {error}"))
}

fn open_store<SM: StateMachine<MemKv>>(
    node: NodeId,
    engine: Engine<MemKv>,
    config: &StoreConfig,
    clock: &ManualClock,
    outbox: &Rc<RefCell<Vec<Outgoing>>>,
) -> SimStore<SM> {
    let transport = SimTransport { outbox: Rc::clone(outbox) };
    let clock = Box::new(clock.clone());
    Store::open(node, Arc::new(engine), config.clone(), transport, clock, StoreMetrics::default())
        .unwrap_or_else(|error| panic!("node {node}: opening the store: {error}"))
}

/// The sum of two stores' counters.
pub(crate) fn add_stats(a: StoreStats, b: StoreStats) -> StoreStats {
    StoreStats {
        ready_passes: a.ready_passes + b.ready_passes,
        readies: a.readies + b.readies,
        synced_writes: a.synced_writes + b.synced_writes,
        unsynced_writes: a.unsynced_writes + b.unsynced_writes,
        messages_sent: a.messages_sent + b.messages_sent,
        messages_dropped: a.messages_dropped + b.messages_dropped,
        snapshots_sent: a.snapshots_sent + b.snapshots_sent,
        snapshots_installed: a.snapshots_installed + b.snapshots_installed,
        log_compactions: a.log_compactions + b.log_compactions,
        leader_transfers: a.leader_transfers + b.leader_transfers,
        quiescences: a.quiescences + b.quiescences,
    }
}
