//! The small interface a storage backend implements: ordered column families of byte keys,
//! atomic multi-column-family write batches, and point-in-time snapshots.
//!
//! Everything Mosaic-specific (key layouts, encodings, the Raft log logic, the entry cache) is
//! built once on top of this in [`crate::Engine`], so every backend behaves the same and one
//! conformance suite ([`crate::conformance`]) checks them all.
//!
//! Invariants every backend keeps:
//! - [`KvEngine::write`] applies all of a batch's operations or none, in order, as one write.
//! - Writes are totally ordered; after a crash, what is left is a prefix of that order that
//!   includes every write acknowledged with `sync: true`.
//! - Scans visit keys in byte order (or reverse byte order) and see one point in time.

use std::path::Path;

use bytes::Bytes;

use crate::error::Result;
use crate::keys::{ColumnFamily, KeyRange};

/// One low-level operation of a write batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawOp {
    /// Sets `key` to `value`.
    Put {
        /// Where.
        cf: ColumnFamily,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Bytes,
    },
    /// Removes `key` (no error when absent).
    Delete {
        /// Where.
        cf: ColumnFamily,
        /// The key.
        key: Vec<u8>,
    },
    /// Removes every key in `range`.
    DeleteRange {
        /// Where.
        cf: ColumnFamily,
        /// The keys to remove.
        range: KeyRange,
    },
}

/// How durable a write must be before [`KvEngine::write`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `true`: the write, and every write before it, is on stable storage when `write` returns
    /// (one fsync of the shared write-ahead log). `false`: it survives a process crash but may
    /// be lost, with every later write, in a machine crash.
    pub sync: bool,
}

/// The direction of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Increasing key order.
    Forward,
    /// Decreasing key order.
    Reverse,
}

/// Read access to one consistent view of a store (the live store, or a snapshot of it).
pub trait KvRead {
    /// Returns the value of `key`, if present.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the read fails.
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Bytes>>;

    /// Calls `visit(key, value)` for the keys in `range`, in `direction`, until `visit` returns
    /// `Ok(false)`, returns an error, or the range ends. The keys visited are those of one point
    /// in time.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the read fails, or the first error `visit` returns.
    fn scan(
        &self,
        cf: ColumnFamily,
        range: &KeyRange,
        direction: Direction,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()>;
}

/// A storage backend: the live store.
pub trait KvEngine: KvRead + Send + Sync + 'static {
    /// A point-in-time view; holding it keeps what it sees readable.
    type Snapshot: KvRead + Send + Sync + 'static;

    /// Applies `ops` atomically as one write.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the write fails (disk full included); then none of it happened.
    fn write(&self, ops: &[RawOp], options: WriteOptions) -> Result<()>;

    /// Returns a point-in-time view of the whole store.
    fn snapshot(&self) -> Self::Snapshot;

    /// Hints that the keys of `range` in `cf` were just deleted in bulk (a shard handed off, a
    /// group's data cleared or removed), so their space should go back to the file system soon
    /// rather than whenever the backend would get to it. Returns at once: the work, if any,
    /// happens in the background, and never changes what any read returns (a hint over live
    /// keys keeps them). A backend that frees space as it deletes does nothing.
    fn reclaim(&self, cf: ColumnFamily, range: &KeyRange);

    /// The store's location, named in every error.
    fn path(&self) -> &Path;

    /// Returns true when this backend created a new, empty store when it was opened (so the
    /// engine writes the format version and identity instead of checking them).
    fn created_new(&self) -> bool;
}
