//! [`RocksKv`]: the [`KvEngine`] backend over one RocksDB instance.
//!
//! Invariants:
//! - An existing store is checked before it is opened for writing: its column families are
//!   listed and it is opened read-only (which writes no file) to check the format version and
//!   the identity. Only a store that passes is opened read-write; a failure leaves every file
//!   as it was.
//! - Every RocksDB error becomes an [`Error`] naming the path; a write that fails did not
//!   happen (RocksDB applies a batch atomically or not at all).
//! - A [`RocksSnapshot`] owns a reference to the database, so it stays valid however long it is
//!   held, even after the [`RocksKv`] is dropped.
//! - Ranges handed to [`KvEngine::reclaim`] are compacted by the store's [`Reclaimer`] thread,
//!   which is joined when the [`RocksKv`] is dropped.
//! - Dropping a [`RocksKv`] flushes every column family's memtable first, so that the next
//!   open has no write-ahead log to replay (a crash skips this: its next open replays the log,
//!   at most `max_total_wal_bytes` of it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mosaic_engine::keys::KeyRange;
use mosaic_engine::{
    ColumnFamily, Direction, Error, KvEngine, KvRead, NodeIdentity, RawOp, Result, WriteOptions,
    check_identity,
};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBRawIteratorWithThreadMode,
    DBRecoveryMode, Options, ReadOptions,
};

use crate::config::{RocksConfig, WalSyncPolicy};
use crate::reclaim::{ReclaimStats, Reclaimer, flush_all};

/// RocksDB's default column family: it always exists; Mosaic keeps nothing in it.
const DEFAULT_CF: &str = "default";

type DbSnapshot<'db> = rocksdb::SnapshotWithThreadMode<'db, DB>;

self_cell::self_cell!(
    /// A RocksDB snapshot together with the database it borrows from.
    struct SnapshotCell {
        owner: Arc<DB>,
        #[covariant]
        dependent: DbSnapshot,
    }
);

fn io_error(path: &Path, error: &rocksdb::Error) -> Error {
    match error.kind() {
        rocksdb::ErrorKind::Corruption => {
            Error::Corruption { path: path.to_path_buf(), reason: error.to_string() }
        }
        _ => Error::Io { path: path.to_path_buf(), message: error.to_string() },
    }
}

/// The live RocksDB store.
pub struct RocksKv {
    db: Arc<DB>,
    path: PathBuf,
    created_new: bool,
    sync_writes: bool,
    reclaimer: Reclaimer,
}

impl Drop for RocksKv {
    /// Flushes every memtable, so that a node stopped on purpose (an upgrade, a rolling
    /// restart) opens again in tens of milliseconds rather than replaying its write-ahead log
    /// for seconds (docs/benchmarks.md "Restarting a cluster").
    fn drop(&mut self) {
        flush_all(&self.db, &self.path);
    }
}

impl std::fmt::Debug for RocksKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKv").field("path", &self.path).finish()
    }
}

/// A point-in-time view of a [`RocksKv`].
pub struct RocksSnapshot {
    cell: SnapshotCell,
    path: PathBuf,
}

impl std::fmt::Debug for RocksSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksSnapshot").field("path", &self.path).finish()
    }
}

/// What is at a path about to be opened.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing, or an empty directory: create a store.
    Nothing,
    /// A RocksDB store (it has a CURRENT file).
    Store,
}

fn inspect(path: &Path) -> Result<Found> {
    let io =
        |error: std::io::Error| Error::Io { path: path.to_path_buf(), message: error.to_string() };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(error) => return Err(io(error)),
    };
    if !metadata.is_dir() {
        return Err(Error::NotAStore {
            path: path.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    if path.join("CURRENT").exists() {
        return Ok(Found::Store);
    }
    if std::fs::read_dir(path).map_err(io)?.next().is_some() {
        return Err(Error::NotAStore {
            path: path.to_path_buf(),
            reason: "the directory holds files but no RocksDB store (no CURRENT file)".into(),
        });
    }
    Ok(Found::Nothing)
}

fn db_options(config: &RocksConfig, create: bool) -> Options {
    let mut options = Options::default();
    options.create_if_missing(create);
    options.create_missing_column_families(create);
    options.set_max_background_jobs(config.background_jobs);
    options.set_max_total_wal_size(config.max_total_wal_bytes);
    // Replay the write-ahead log up to its first damaged record: after a crash the unsynced
    // tail may be torn, and what survives must be a prefix of the writes (docs/storage.md).
    options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    options.set_paranoid_checks(true);
    options.set_keep_log_file_num(10);
    options.set_max_log_file_size(16 << 20);
    options
}

fn cf_options(config: &RocksConfig, cache: &Cache, cf: ColumnFamily) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if matches!(cf, ColumnFamily::Data | ColumnFamily::Sessions) {
        // Point reads of user keys skip files that cannot hold the key.
        table.set_bloom_filter(10.0, false);
    }
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options.set_write_buffer_size(config.write_buffer_bytes);
    options.set_max_write_buffer_number(config.max_write_buffers);
    options.set_compression_type(config.compression.to_rocksdb());
    options.set_bottommost_compression_type(config.bottommost_compression.to_rocksdb());
    options
}

fn expected_cf_names() -> Vec<&'static str> {
    std::iter::once(DEFAULT_CF).chain(ColumnFamily::ALL.iter().map(|cf| cf.name())).collect()
}

/// Reads through a database opened read-only, to check an existing store before writing.
struct ReadOnlyStore<'db> {
    db: &'db DB,
    path: &'db Path,
}

impl KvRead for ReadOnlyStore<'_> {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Bytes>> {
        db_get(self.db, self.path, cf, key)
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        range: &KeyRange,
        direction: Direction,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()> {
        let handle = cf_handle(self.db, self.path, cf)?;
        scan_iterator(
            self.db.raw_iterator_cf_opt(handle, bounded(range)),
            self.path,
            range,
            direction,
            visit,
        )
    }
}

fn cf_handle<'db>(
    db: &'db DB,
    path: &Path,
    cf: ColumnFamily,
) -> Result<&'db rocksdb::ColumnFamily> {
    db.cf_handle(cf.name()).ok_or_else(|| Error::Corruption {
        path: path.to_path_buf(),
        reason: format!("column family {} is missing", cf.name()),
    })
}

fn db_get(db: &DB, path: &Path, cf: ColumnFamily, key: &[u8]) -> Result<Option<Bytes>> {
    let handle = cf_handle(db, path, cf)?;
    let value = db.get_pinned_cf(handle, key).map_err(|error| io_error(path, &error))?;
    Ok(value.map(|value| Bytes::copy_from_slice(&value)))
}

fn bounded(range: &KeyRange) -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_iterate_lower_bound(range.start.clone());
    options.set_iterate_upper_bound(range.end.clone());
    options
}

fn scan_iterator(
    mut iterator: DBRawIteratorWithThreadMode<'_, DB>,
    path: &Path,
    range: &KeyRange,
    direction: Direction,
    visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
) -> Result<()> {
    if range.start >= range.end {
        return Ok(());
    }
    match direction {
        Direction::Forward => iterator.seek_to_first(),
        Direction::Reverse => iterator.seek_to_last(),
    }
    while let (Some(key), Some(value)) = (iterator.key(), iterator.value()) {
        if !visit(key, &Bytes::copy_from_slice(value))? {
            return Ok(());
        }
        match direction {
            Direction::Forward => iterator.next(),
            Direction::Reverse => iterator.prev(),
        }
    }
    iterator.status().map_err(|error| io_error(path, &error))
}

impl RocksKv {
    /// Opens the store at `path`, creating it when `path` does not exist or is an empty
    /// directory. An existing store must have exactly Mosaic's column families, and its format
    /// version and identity must match this build and `identity`; these are checked on a
    /// read-only open first, so a store that fails any check is left byte-for-byte untouched.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; [`Error::NotAStore`] for a file or a non-empty directory that
    /// holds no store; [`Error::Corruption`], [`Error::FormatVersion`], [`Error::WrongNode`]
    /// from the checks; [`Error::Io`] when RocksDB cannot open it (lock held by another
    /// process, permissions, disk full).
    pub fn open(path: &Path, identity: NodeIdentity, config: &RocksConfig) -> Result<Self> {
        config.validate()?;
        let create = match inspect(path)? {
            Found::Nothing => true,
            Found::Store => {
                check_existing(path, identity, config)?;
                false
            }
        };
        if config.wal_sync == WalSyncPolicy::NeverUnsafe {
            tracing::warn!(path = %path.display(), "WAL sync disabled: synced writes are not durable");
        }
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let descriptors: Vec<ColumnFamilyDescriptor> = ColumnFamily::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(config, &cache, *cf)))
            .collect();
        let db = DB::open_cf_descriptors(&db_options(config, create), path, descriptors)
            .map_err(|error| io_error(path, &error))?;
        let db = Arc::new(db);
        let reclaimer = Reclaimer::start(Arc::clone(&db), path)?;
        tracing::info!(path = %path.display(), created = create, "opened RocksDB store");
        Ok(Self {
            db,
            path: path.to_path_buf(),
            created_new: create,
            sync_writes: config.wal_sync == WalSyncPolicy::AsRequested,
            reclaimer,
        })
    }

    /// The bytes of the table files that hold the store's current data, over every column
    /// family (RocksDB's `live-sst-files-size`; the write-ahead log and memtables are not
    /// counted).
    ///
    /// # Errors
    /// [`Error::Io`] when RocksDB cannot report it.
    pub fn live_sst_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for cf in ColumnFamily::ALL {
            let value = self
                .db
                .property_int_value_cf(self.handle(cf)?, rocksdb::properties::LIVE_SST_FILES_SIZE)
                .map_err(|error| io_error(&self.path, &error))?;
            total += value.unwrap_or(0);
        }
        Ok(total)
    }

    /// What the background reclaimer has done and has left to do.
    #[must_use]
    pub fn reclaim_stats(&self) -> ReclaimStats {
        self.reclaimer.stats()
    }

    /// Waits until every range handed to [`KvEngine::reclaim`] so far is compacted, for at most
    /// `timeout`; returns whether that happened.
    #[must_use]
    pub fn wait_reclaimed(&self, timeout: Duration) -> bool {
        self.reclaimer.wait_idle(timeout)
    }

    fn handle(&self, cf: ColumnFamily) -> Result<&rocksdb::ColumnFamily> {
        cf_handle(&self.db, &self.path, cf)
    }
}

/// Checks an existing store without writing to it: column families, then (read-only) format
/// version and identity.
fn check_existing(path: &Path, identity: NodeIdentity, config: &RocksConfig) -> Result<()> {
    let options = db_options(config, false);
    let mut found = DB::list_cf(&options, path).map_err(|error| io_error(path, &error))?;
    found.sort();
    let mut expected: Vec<String> = expected_cf_names().into_iter().map(String::from).collect();
    expected.sort();
    if found != expected {
        return Err(Error::Corruption {
            path: path.to_path_buf(),
            reason: format!("column families are {found:?}; expected {expected:?}"),
        });
    }
    let names = ColumnFamily::ALL.iter().map(|cf| cf.name());
    let db = DB::open_cf_for_read_only(&options, path, names, false)
        .map_err(|error| io_error(path, &error))?;
    check_identity(&ReadOnlyStore { db: &db, path }, path, identity)?;
    Ok(())
}

impl KvRead for RocksKv {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Bytes>> {
        db_get(&self.db, &self.path, cf, key)
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        range: &KeyRange,
        direction: Direction,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()> {
        let iterator = self.db.raw_iterator_cf_opt(self.handle(cf)?, bounded(range));
        scan_iterator(iterator, &self.path, range, direction, visit)
    }
}

impl KvEngine for RocksKv {
    type Snapshot = RocksSnapshot;

    fn write(&self, ops: &[RawOp], options: WriteOptions) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for op in ops {
            match op {
                RawOp::Put { cf, key, value } => batch.put_cf(self.handle(*cf)?, key, value),
                RawOp::Delete { cf, key } => batch.delete_cf(self.handle(*cf)?, key),
                RawOp::DeleteRange { cf, range } => {
                    batch.delete_range_cf(self.handle(*cf)?, &range.start, &range.end);
                }
            }
        }
        let mut write_options = rocksdb::WriteOptions::default();
        write_options.set_sync(options.sync && self.sync_writes);
        self.db.write_opt(batch, &write_options).map_err(|error| io_error(&self.path, &error))
    }

    fn snapshot(&self) -> RocksSnapshot {
        RocksSnapshot {
            cell: SnapshotCell::new(Arc::clone(&self.db), |db| db.snapshot()),
            path: self.path.clone(),
        }
    }

    fn reclaim(&self, cf: ColumnFamily, range: &KeyRange) {
        self.reclaimer.push(cf, range);
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn created_new(&self) -> bool {
        self.created_new
    }
}

impl KvRead for RocksSnapshot {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Bytes>> {
        let db = self.cell.borrow_owner();
        let handle = cf_handle(db, &self.path, cf)?;
        let value = self
            .cell
            .borrow_dependent()
            .get_pinned_cf(handle, key)
            .map_err(|error| io_error(&self.path, &error))?;
        Ok(value.map(|value| Bytes::copy_from_slice(&value)))
    }

    fn scan(
        &self,
        cf: ColumnFamily,
        range: &KeyRange,
        direction: Direction,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> Result<bool>,
    ) -> Result<()> {
        let db = self.cell.borrow_owner();
        let handle = cf_handle(db, &self.path, cf)?;
        let iterator = self.cell.borrow_dependent().raw_iterator_cf_opt(handle, bounded(range));
        scan_iterator(iterator, &self.path, range, direction, visit)
    }
}
