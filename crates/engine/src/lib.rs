//! Mosaic's storage layer: everything a process stores (the Raft logs and states of all its
//! groups, shard data, client sessions, node metadata) behind interfaces that never mention
//! RocksDB.
//!
//! The layers, bottom up:
//! - [`KvEngine`] ([`kv`]): what a backend implements: ordered column families, atomic write
//!   batches, snapshots. [`MemKv`] ([`memory`]) is the in-memory one; `mosaic-engine-rocks`
//!   provides RocksDB.
//! - [`keys`] and [`codec`]: the key layout and value encodings every backend stores.
//! - [`Engine`] ([`engine`]): the Raft log store with its [`EntryCache`], raft state, shard data,
//!   sessions and metadata, written through [`WriteBatch`]es that span any number of groups.
//! - [`EngineSnapshot`] ([`snapshot`]): point-in-time reads and chunked shard scans.
//! - [`conformance`]: the behaviour every backend must show, run by each backend's tests.
//!
//! docs/storage.md describes the on-disk format and the durability argument.
#![deny(missing_docs)]

pub mod batch;
pub mod cache;
pub mod codec;
pub mod conformance;
pub mod engine;
pub mod error;
pub mod ids;
pub mod keys;
pub mod kv;
pub mod memory;
pub mod snapshot;

pub use batch::{BatchOp, WriteBatch};
pub use cache::EntryCache;
pub use engine::{Engine, EngineConfig, LogBounds, StoreState, check_identity};
pub use error::{Error, Result};
pub use ids::{ClientId, ClusterId, GroupId, NodeIdentity, ShardId};
pub use keys::ColumnFamily;
pub use kv::{Direction, KvEngine, KvRead, RawOp, WriteOptions};
pub use memory::{MemKv, MemSnapshot};
pub use snapshot::{EngineSnapshot, GroupChunk, GroupCursor, ShardChunk, ShardCursor, ShardRecord};
