//! The RocksDB storage engine: every group of a process in one RocksDB instance, one column
//! family per kind of record ([`mosaic_engine::ColumnFamily`]), one shared write-ahead log.
//!
//! This is the only crate that links RocksDB. It implements the backend interface
//! ([`mosaic_engine::KvEngine`]) in [`RocksKv`]; everything Mosaic-specific lives in
//! [`mosaic_engine::Engine`], which [`open`] wraps around it. docs/storage.md describes the
//! on-disk format, the defaults and the durability argument.
#![deny(missing_docs)]

mod config;
mod kv;
mod reclaim;

pub use config::{Compression, RocksConfig, WalSyncPolicy};
pub use kv::{RocksKv, RocksSnapshot};
pub use reclaim::ReclaimStats;

use std::path::Path;

use mosaic_engine::{Engine, NodeIdentity, Result};

/// The engine over RocksDB.
pub type RocksEngine = Engine<RocksKv>;

/// Opens (or creates) the store at `path` for `identity`. See [`RocksKv::open`] for what is
/// checked before anything is written.
///
/// # Errors
/// As [`RocksKv::open`] and [`Engine::open`].
pub fn open(path: &Path, identity: NodeIdentity, config: &RocksConfig) -> Result<RocksEngine> {
    let kv = RocksKv::open(path, identity, config)?;
    Engine::open(kv, identity, &config.engine)
}
