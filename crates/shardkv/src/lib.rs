//! The storage group's state machine (6.824 Lab 4B's shardkv server, without the network):
//! the KV commands a group replicates, their encoding, key versions and shard revisions
//! ([`version`]) that conditional writes and atomic batches ([`KvBatch`]) compare, client
//! sessions that make a retried
//! write apply at most once, the shards a group owns and the migration steps that move them
//! between groups, and [`KvStateMachine`], which the node runtime (`mosaic-raftstore`) applies
//! committed entries through; [`plan`] decides what a group's leader does next to follow the
//! controller.
//!
//! Pure: no IO of its own, no clock, no randomness; every replica applying the same log writes
//! the same effects.
#![deny(missing_docs)]

mod batch;
mod command;
mod encoding;
pub mod migration;
pub mod ownership;
pub mod plan;
pub mod request;
mod scan;
mod session;
mod state_machine;
pub mod version;
pub mod watch;

pub use batch::{BATCH_ITEMS_MAX, BatchCondition, BatchWrite, KvBatch, batch_size_refusal};
pub use command::{KvCommand, KvWrite, WriteKind};
pub use encoding::{COMMAND_VERSION, DecodeError};
pub use migration::{MigrationCommand, MigrationOutcome};
pub use ownership::{METADATA_SHARD, Ownership, PlacedSince, ShardState};
pub use plan::{MigrationTask, TaskKey, plan};
pub use scan::{
    SCAN_ENTRY_OVERHEAD_BYTES, SCAN_KEYS_MAX, ScanEntry, ScanPage, ShardScan, scan_refusal,
};
pub use session::{SESSIONS_PER_SHARD_MAX, Session, SessionTable, WriteEffect};
pub use state_machine::{Applied, KvGet, KvQuery, KvReadOutput, KvStateMachine, WriteOutcome};
pub use version::{Version, Versioned};
