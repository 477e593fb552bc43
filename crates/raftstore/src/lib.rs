//! Mosaic's multi-raft node core: many Raft groups on one node over one storage engine.
//!
//! A [`Store`] holds this node's replica ([`Peer`]) of every group it hosts. It is a plain
//! struct with no clock, no threads and no sockets: a runner hands it inbox messages
//! ([`StoreMsg`]: Raft messages, proposals, reads, ticks) with [`Store::handle`] and calls
//! [`Store::process`], which persists the work of every busy group in one synced write (group
//! commit), sends Raft messages batched per destination node through a [`Transport`], applies
//! committed entries through the group's [`StateMachine`] and answers the waiting requests.
//! Production runs it on a thread fed by the gRPC services; the simulator runs many stores in
//! one thread from a seed. docs/raftstore.md describes the design.
//!
//! Log lines: the runner enters the store's `node` span ([`Store::span`], `node_id`) around
//! its loop; each replica's work is in its `group` span (`group_id`, `term`), so that the Raft
//! core's lines, which know no group, say theirs. Group spans are at DEBUG level, off by
//! default: `MOSAIC_LOG=info,mosaic_raftstore::span=debug` turns them on alone.
#![deny(missing_docs)]

mod clock;
mod config;
mod error;
mod leader_balance;
mod log_compaction;
pub mod membership;
pub mod membership_run;
mod metrics;
mod msg;
mod nodes_heard;
mod peer;
pub mod snapshot;
mod span;
mod state_machine;
mod storage;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{Clock, ManualClock};
pub use config::StoreConfig;
pub use error::{Error, Result};
pub use leader_balance::Handover;
pub use metrics::StoreMetrics;
pub use msg::{
    Callback, Consistency, LeaderRead, LeaderTerm, ReadOutput, ServedBy, ShownOut, StoreMsg,
    Transport,
};
pub use peer::Peer;
pub use snapshot::SnapshotReader;
pub use state_machine::StateMachine;
pub use storage::{BOOTSTRAP_INDEX, GroupStorage, initial_conf_state};
pub use store::{Store, StoreStats};
