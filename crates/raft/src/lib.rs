//! Mosaic's Raft core: a deterministic state machine with no IO, no clock of its own and no
//! threads.
//!
//! Every Raft group in Mosaic (the controller group and every storage group) runs on this
//! core. It does nothing by itself: the application feeds it inputs and carries out what it
//! asks for.
//!
//! - Inputs: [`RawNode::tick`] (the logical clock), [`RawNode::set_clock`] (the application's
//!   monotonic clock, which times lease reads), [`RawNode::step`] (a message from a peer),
//!   [`RawNode::propose`], [`RawNode::read_index`], [`RawNode::lease_read`],
//!   [`RawNode::propose_conf_change`], [`RawNode::transfer_leader`], [`RawNode::campaign`].
//! - Output: a [`Ready`] that says what to persist, what to send (and which messages must wait
//!   until the persist is done), which committed entries to apply and which reads to serve.
//!   The application then calls [`RawNode::advance`].
//!
//! # The Ready loop
//!
//! ```
//! use mosaic_raft::{Config, ConfState, MemStorage, RawNode};
//!
//! // A group of one: it elects itself and commits alone.
//! let storage = MemStorage::new(ConfState::with_voters([1]));
//! let mut node = RawNode::new(Config::new(1), storage).unwrap();
//! node.campaign();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..10 {
//!     if node.has_ready() {
//!         let ready = node.ready();
//!         // 1. Messages in ready.messages could be sent now (none: no peers).
//!         // 2. Persist entries and hard state, in one synced write.
//!         let store = node.storage_mut();
//!         if let Some(snapshot) = ready.snapshot.clone() {
//!             store.apply_snapshot(snapshot).unwrap();
//!         }
//!         store.append(&ready.entries);
//!         if let Some(hard_state) = ready.hard_state {
//!             store.set_hard_state(hard_state);
//!         }
//!         // 3. Then ready.persisted_messages may go out. 4. Apply committed entries.
//!         applied.extend(ready.committed_entries.iter().filter(|e| !e.data.is_empty()).cloned());
//!         node.advance();
//!     }
//!     if !proposed && node.leader() == Some(node.id()) {
//!         node.propose(bytes::Bytes::from_static(b"hello")).unwrap();
//!         proposed = true;
//!     }
//! }
//! assert_eq!(applied.len(), 1);
//! assert_eq!(&applied[0].data[..], b"hello");
//! ```
//!
//! # What it implements
//!
//! Leader election with randomized timeouts from a seeded generator, PreVote and
//! CheckQuorum; log replication with fast conflict backtracking, pipelining and flow control;
//! commitment only by counting entries of the current term, after a no-op on election;
//! snapshots; ReadIndex and lease reads; leadership transfer; single-node membership changes
//! with learners. `docs/raft.md` maps each part and each test to the Raft paper.
#![deny(missing_docs)]

mod config;
mod error;
mod log;
mod message;
mod raft;
mod raw_node;
mod read_only;
mod rng;
mod storage;
mod tracker;
mod types;

pub use config::Config;
pub use error::{Error, Result};
pub use message::{Message, MessageBody, RejectHint};
pub use raw_node::{PeerStatus, RawNode, Ready, Status};
pub use rng::SplitMix64;
pub use storage::{MemStorage, RaftState, Storage, limit_size};
pub use tracker::ProgressState;
pub use types::{
    ConfChange, ConfState, ENTRY_OVERHEAD_BYTES, Entry, EntryKind, HardState, LogIndex, NodeId,
    ReadState, Role, Snapshot, SnapshotMetadata, SoftState, Term,
};
