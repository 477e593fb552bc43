//! The storage engine a node runs on, named once for every module of the node.

use mosaic_engine_rocks::RocksKv;

/// The storage engine backend of a node.
pub type NodeEngine = RocksKv;
/// A point-in-time view of a node's engine.
pub type NodeSnapshot = <RocksKv as mosaic_engine::KvEngine>::Snapshot;
