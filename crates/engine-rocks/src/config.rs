//! [`RocksConfig`]: the RocksDB settings of a storage node, with defaults sized for a node of
//! 2 cores and 24 GiB of memory (docs/storage.md explains each choice).

use mosaic_engine::{EngineConfig, Error, Result};

/// How blocks are compressed on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: fast, moderate ratio.
    Lz4,
    /// Zstandard: slower, better ratio.
    Zstd,
}

impl Compression {
    pub(crate) fn to_rocksdb(self) -> rocksdb::DBCompressionType {
        match self {
            Self::None => rocksdb::DBCompressionType::None,
            Self::Lz4 => rocksdb::DBCompressionType::Lz4,
            Self::Zstd => rocksdb::DBCompressionType::Zstd,
        }
    }
}

/// What a write asking for `sync` does to the write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalSyncPolicy {
    /// A synced write fsyncs the WAL before it returns (the only safe choice for Raft).
    AsRequested,
    /// Never fsync: a synced write is only as durable as an unsynced one. A machine crash can
    /// then lose acknowledged Raft state, so this is only for throwaway stores (benchmarks of
    /// everything but the disk); the engine logs a warning when a store is opened with it.
    NeverUnsafe,
}

/// RocksDB settings. Every size is in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocksConfig {
    /// The engine layer's settings (entry cache bound).
    pub engine: EngineConfig,
    /// Shared LRU block cache for all column families. Default: 4 GiB (a sixth of 24 GiB,
    /// leaving the rest to memtables, the entry cache, the page cache and the process).
    pub block_cache_bytes: usize,
    /// Memtable size per column family. Default: 64 MiB.
    pub write_buffer_bytes: usize,
    /// Memtables per column family (one active, the rest being flushed). Default: 4.
    pub max_write_buffers: i32,
    /// Compression of every level but the last. Default: LZ4.
    pub compression: Compression,
    /// Compression of the last level (most of the data). Default: Zstandard.
    pub bottommost_compression: Compression,
    /// What `sync` means. Default: [`WalSyncPolicy::AsRequested`].
    pub wal_sync: WalSyncPolicy,
    /// Background flush and compaction threads. Default: 2 (one per core).
    pub background_jobs: i32,
    /// Once the write-ahead logs exceed this, the column families holding the oldest log are
    /// flushed, so a rarely written column family cannot pin old logs: it bounds the WAL on
    /// disk and what a restart replays. Default: 256 MiB (four write buffers: the two column
    /// families written all the time, the Raft log and the data, flush as their buffers fill
    /// well before it).
    pub max_total_wal_bytes: u64,
}

impl Default for RocksConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            block_cache_bytes: 4 << 30,
            write_buffer_bytes: 64 << 20,
            max_write_buffers: 4,
            compression: Compression::Lz4,
            bottommost_compression: Compression::Zstd,
            wal_sync: WalSyncPolicy::AsRequested,
            background_jobs: 2,
            max_total_wal_bytes: 256 << 20,
        }
    }
}

impl RocksConfig {
    /// A configuration with small caches and buffers, for tests that open many stores.
    #[must_use]
    pub fn small() -> Self {
        Self {
            engine: EngineConfig { entry_cache_bytes_max: 4 << 20 },
            block_cache_bytes: 8 << 20,
            write_buffer_bytes: 4 << 20,
            max_write_buffers: 2,
            background_jobs: 1,
            max_total_wal_bytes: 64 << 20,
            ..Self::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        self.engine.validate()?;
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if self.block_cache_bytes < 1 << 20 {
            return invalid(format!("block_cache_bytes {} is below 1 MiB", self.block_cache_bytes));
        }
        if self.write_buffer_bytes < 1 << 20 {
            return invalid(format!(
                "write_buffer_bytes {} is below 1 MiB",
                self.write_buffer_bytes
            ));
        }
        if !(2..=64).contains(&self.max_write_buffers) {
            return invalid(format!(
                "max_write_buffers {} is not in 2..=64",
                self.max_write_buffers
            ));
        }
        if !(1..=64).contains(&self.background_jobs) {
            return invalid(format!("background_jobs {} is not in 1..=64", self.background_jobs));
        }
        if self.max_total_wal_bytes < self.write_buffer_bytes as u64 {
            return invalid(format!(
                "max_total_wal_bytes {} is below write_buffer_bytes {}",
                self.max_total_wal_bytes, self.write_buffer_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_small_config_are_valid_and_bad_values_are_named() {
        RocksConfig::default().validate().unwrap();
        RocksConfig::small().validate().unwrap();
        let bad = RocksConfig { max_write_buffers: 1, ..RocksConfig::default() };
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("max_write_buffers 1"), "{error}");
        let bad = RocksConfig { max_total_wal_bytes: 1, ..RocksConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("max_total_wal_bytes"));
    }
}
