//! Deleting a shard gives its disk space back: the range delete is followed by a background
//! compaction of the range ([`mosaic_engine::KvEngine::reclaim`]), so the table files shrink to
//! what the other shards hold, without waiting for RocksDB to get to the range by itself.
//! The test prints the numbers (`--nocapture`). A store closed on purpose leaves no
//! write-ahead log behind.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mosaic_engine::conformance::IDENTITY;
use mosaic_engine::{GroupId, ShardId, WriteBatch, WriteOptions};
use mosaic_engine_rocks::{RocksConfig, RocksEngine, open};

const GROUP: GroupId = GroupId(1);
const DOOMED: ShardId = ShardId(1);
const KEPT: ShardId = ShardId(2);
const VALUE_BYTES: usize = 64 << 10;
const MIB: u64 = 1 << 20;

/// Values that do not compress, so file sizes follow the bytes written.
fn value(shard: ShardId, i: u64) -> Bytes {
    let mut state = (u64::from(shard.0) << 32 | i) ^ 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(VALUE_BYTES);
    while bytes.len() < VALUE_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(bytes)
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:06}"))
}

fn fill(engine: &RocksEngine, shard: ShardId, mib: u64) {
    let per_batch = MIB / VALUE_BYTES as u64;
    for first in (0..mib * per_batch).step_by(per_batch as usize) {
        let mut batch = WriteBatch::new();
        for i in first..first + per_batch {
            batch.put_data(GROUP, shard, key(i), value(shard, i));
        }
        engine.write(&batch, WriteOptions { sync: false }).unwrap();
    }
}

/// The bytes of the files in `dir` whose extension is `ext` (`None`: every file), as the file
/// system sees them.
fn bytes_on_disk(dir: &Path, ext: Option<&str>) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| ext.is_none_or(|ext| entry.path().extension().is_some_and(|e| e == ext)))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

/// A store in `dir` with one write to a rarely written column family (`meta`), which pins
/// every write-ahead log file after it, then `mib` MiB of `shard`; returns it and the bytes of
/// its write-ahead log, at least three quarters of the fill.
fn pinned_and_filled(dir: &Path, shard: ShardId, mib: u64) -> (RocksEngine, u64) {
    let engine = open(dir, IDENTITY, &RocksConfig::small()).unwrap();
    let mut pin = WriteBatch::new();
    pin.put_node_metadata(Bytes::from_static(b"a-rarely-written-key"), Bytes::from_static(b"1"));
    engine.write(&pin, WriteOptions { sync: true }).unwrap();
    fill(&engine, shard, mib);
    let wal = bytes_on_disk(dir, Some("log"));
    assert!(wal >= mib * MIB * 3 / 4, "the WAL holds only {wal} bytes: nothing pinned it");
    (engine, wal)
}

/// Polls `measure` until it is at most `bound`, for up to `timeout`; returns the last reading.
fn settle(timeout: Duration, bound: u64, mut measure: impl FnMut() -> u64) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let reading = measure();
        if reading <= bound || Instant::now() >= deadline {
            return reading;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deleting_a_shard_gives_its_disk_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), IDENTITY, &RocksConfig::small()).unwrap();
    fill(&engine, DOOMED, 48);
    fill(&engine, KEPT, 2);
    // The memtables (4 MiB each) flush as they fill: most of the 50 MiB is in table files.
    let before = engine.kv().live_sst_bytes().unwrap();
    assert!(before >= 40 * MIB, "only {before} bytes reached the table files");

    let mut batch = WriteBatch::new();
    batch.delete_shard(GROUP, DOOMED);
    engine.write(&batch, WriteOptions { sync: true }).unwrap();
    assert!(engine.kv().wait_reclaimed(Duration::from_secs(120)), "reclaim did not finish");
    let after = engine.kv().live_sst_bytes().unwrap();
    // RocksDB deletes a compacted file once nothing reads it: give it a moment.
    let on_disk =
        settle(Duration::from_secs(10), 8 * MIB, || bytes_on_disk(dir.path(), Some("sst")));
    eprintln!(
        "table files: {} MiB before deleting a 48 MiB shard, {} MiB after ({} MiB on disk); \
         reclaim {:?}",
        before / MIB,
        after / MIB,
        on_disk / MIB,
        engine.kv().reclaim_stats()
    );
    assert!(after <= 8 * MIB, "{after} bytes of table files left after the delete");
    assert!(on_disk <= 8 * MIB, "{on_disk} bytes of table files left on disk");
    assert!(engine.kv().reclaim_stats().completed >= 1);

    for i in 0..(2 * MIB / VALUE_BYTES as u64) {
        let read = engine.get_data(GROUP, KEPT, &key(i)).unwrap();
        assert_eq!(read, Some(value(KEPT, i)), "kept shard's key {i}");
    }
    assert_eq!(engine.get_data(GROUP, DOOMED, &key(0)).unwrap(), None);
}

/// Found by an operator's trial (a group holding 256 MiB gave its shards away and left, and
/// its nodes kept 538 MB of write-ahead log): RocksDB keeps a WAL file while any column
/// family holds a write of it in a memtable, so one small write to a rarely written column
/// family pinned every WAL file written after it, deleted data and all, up to the WAL limit.
/// After a bulk delete is reclaimed, every column family is flushed, so the WAL the deleted
/// data filled goes too, and the whole directory, not only its table files, shrinks.
#[test]
fn deleting_a_shard_gives_its_write_ahead_log_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, wal_before) = pinned_and_filled(dir.path(), DOOMED, 40);

    let mut batch = WriteBatch::new();
    batch.delete_shard(GROUP, DOOMED);
    engine.write(&batch, WriteOptions { sync: true }).unwrap();
    assert!(engine.kv().wait_reclaimed(Duration::from_secs(120)), "reclaim did not finish");
    let wal = settle(Duration::from_secs(10), 8 * MIB, || bytes_on_disk(dir.path(), Some("log")));
    let all = settle(Duration::from_secs(10), 16 * MIB, || bytes_on_disk(dir.path(), None));
    eprintln!(
        "write-ahead log: {} MiB before deleting a 40 MiB shard, {} MiB after; the whole \
         directory {} MiB after",
        wal_before / MIB,
        wal / MIB,
        all / MIB
    );
    assert!(wal <= 8 * MIB, "{wal} bytes of write-ahead log left after the delete");
    assert!(all <= 16 * MIB, "{all} bytes left in the directory after the delete");
    assert_eq!(engine.node_metadata(b"a-rarely-written-key").unwrap().as_deref(), Some(&b"1"[..]));
}

/// A store closed on purpose (the engine dropped: a node stopping) flushes its memtables, so its
/// write-ahead log is gone and the next open replays nothing: a restart after heavy writes took
/// 3.6-5.2 s to open, replaying the log (docs/benchmarks.md "Restarting a cluster").
#[test]
fn a_closed_store_leaves_no_write_ahead_log_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, wal_open) = pinned_and_filled(dir.path(), KEPT, 24);
    drop(engine);
    let wal_closed = bytes_on_disk(dir.path(), Some("log"));
    eprintln!("write-ahead log: {} MiB open, {} KiB once closed", wal_open / MIB, wal_closed >> 10);
    assert!(wal_closed < MIB, "{wal_closed} bytes of write-ahead log left after closing");
    let engine = open(dir.path(), IDENTITY, &RocksConfig::small()).unwrap();
    assert_eq!(engine.node_metadata(b"a-rarely-written-key").unwrap().as_deref(), Some(&b"1"[..]));
    let tables = engine.kv().live_sst_bytes().unwrap();
    assert!(tables >= 20 * MIB, "only {tables} bytes of table files: the data is not in tables");
}

/// A snapshot taken before the delete (a migration's pull still reading the shard) reads every
/// value while and after the range is compacted.
#[test]
fn a_snapshot_reads_the_deleted_shard_through_the_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), IDENTITY, &RocksConfig::small()).unwrap();
    fill(&engine, DOOMED, 12);
    let snapshot = engine.snapshot();
    let mut batch = WriteBatch::new();
    batch.delete_shard(GROUP, DOOMED);
    engine.write(&batch, WriteOptions { sync: true }).unwrap();
    assert!(engine.kv().wait_reclaimed(Duration::from_secs(60)), "reclaim did not finish");
    for i in 0..(12 * MIB / VALUE_BYTES as u64) {
        let read = snapshot.get_data(GROUP, DOOMED, &key(i)).unwrap();
        assert_eq!(read, Some(value(DOOMED, i)), "key {i} through the snapshot");
    }
    assert_eq!(engine.get_data(GROUP, DOOMED, &key(0)).unwrap(), None);
}
