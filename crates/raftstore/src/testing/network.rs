//! The network of a test cluster: one queue of everything in flight, in send order, which
//! [`super::Cluster::settle`] delivers (or drops, on a blocked link or to a node that is down).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use mosaic_engine::{GroupId, MemKv, MemSnapshot};
use mosaic_raft::{LogIndex, Message, MessageBody, NodeId};

use crate::msg::Transport;
use crate::snapshot::SnapshotReader;

/// Small chunks, so that snapshots of a few keys take several.
const SNAPSHOT_CHUNK_BYTES: u64 = 64;

/// What is in flight between two nodes.
pub(super) enum Flight {
    /// A batch of Raft messages from the sender's incarnation.
    Messages(u64, Vec<(GroupId, Message)>),
    /// A snapshot: its `InstallSnapshot` message and every chunk of the state.
    Snapshot { group: GroupId, message: Message, chunks: Vec<Bytes> },
}

/// Everything in flight: (from, to, what), oldest first.
pub(super) type Queue = Rc<RefCell<VecDeque<(NodeId, NodeId, Flight)>>>;

/// A store's transport: puts every batch and snapshot it sends on the cluster's queue.
pub struct QueueTransport {
    from: NodeId,
    /// Which start of the node this store is.
    incarnation: u64,
    queue: Queue,
}

impl QueueTransport {
    /// The transport of node `from`'s start `incarnation`, sending onto `queue`.
    pub(super) fn new(from: NodeId, incarnation: u64, queue: Queue) -> Self {
        Self { from, incarnation, queue }
    }
}

impl Transport<MemKv> for QueueTransport {
    fn send(&mut self, to: NodeId, messages: Vec<(GroupId, Message)>) {
        let flight = Flight::Messages(self.incarnation, messages);
        self.queue.borrow_mut().push_back((self.from, to, flight));
    }

    /// Reads the whole snapshot at once, in chunks of 64 bytes (so a few keys take several).
    ///
    /// # Panics
    /// If the engine snapshot cannot be read (an in-memory engine always can).
    fn send_snapshot(
        &mut self,
        to: NodeId,
        group: GroupId,
        message: Message,
        reader: SnapshotReader<MemSnapshot>,
    ) {
        let chunks = reader.read_all(SNAPSHOT_CHUNK_BYTES).unwrap_or_else(|error| {
            panic!("node {}: read a snapshot of {group}: {error}", self.from)
        });
        self.queue.borrow_mut().push_back((
            self.from,
            to,
            Flight::Snapshot { group, message, chunks },
        ));
    }
}

/// A snapshot held back on its way (see [`super::Cluster::hold_snapshots_to`]).
#[derive(Clone)]
pub struct HeldSnapshot {
    /// The sending node.
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
    /// The group.
    pub group: GroupId,
    /// The `InstallSnapshot` message.
    pub message: Message,
    /// The encoded chunks of the state, in order.
    pub chunks: Vec<Bytes>,
}

impl HeldSnapshot {
    /// The snapshot's index.
    ///
    /// # Panics
    /// If the message is not an `InstallSnapshot` (the cluster holds nothing else).
    #[must_use]
    pub fn index(&self) -> LogIndex {
        match &self.message.body {
            MessageBody::InstallSnapshot { snapshot } => snapshot.metadata.index,
            other => panic!("a held snapshot carries {other:?}"),
        }
    }
}
