//! Storage engine benchmarks: synced group commit across 1, 10 and 100 groups next to the raw
//! fsync rate of the same disk, cached log reads, and a chunked shard scan.
//!
//! Run: `cargo bench -p mosaic-engine-rocks --bench engine` (docs/benchmarks.md has results).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mosaic_engine::conformance::IDENTITY;
use mosaic_engine::{GroupId, ShardCursor, ShardId, WriteBatch, WriteOptions};
use mosaic_engine_rocks::{RocksConfig, open};
use mosaic_raft::{Entry, EntryKind, LogIndex, Term};

const ENTRY_DATA_BYTES: usize = 256;

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::from(vec![0xab; ENTRY_DATA_BYTES]),
    }
}

fn configure(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("engine");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group
}

/// 4 KiB written and fdatasync'ed per iteration, on a file in the store's file system.
fn raw_fsync(c: &mut Criterion) {
    let directory = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(directory.path().join("fsync-probe")).unwrap();
    let block = vec![0u8; 4096];
    let mut group = configure(c);
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_fsync_4KiB", |b| {
        b.iter(|| {
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
        });
    });
}

/// One synced batch appending one 256-byte entry to each of `groups` groups per iteration.
fn group_commit(c: &mut Criterion) {
    let directory = tempfile::tempdir().unwrap();
    let engine = open(&directory.path().join("store"), IDENTITY, &RocksConfig::default()).unwrap();
    let mut group = configure(c);
    for groups in [1u64, 10, 100] {
        group.throughput(Throughput::Elements(groups));
        let mut next_index = vec![1u64; groups as usize];
        group.bench_with_input(
            BenchmarkId::new("synced_group_commit_groups", groups),
            &groups,
            |b, _| {
                b.iter(|| {
                    let mut batch = WriteBatch::new();
                    for (group_id, index) in next_index.iter_mut().enumerate() {
                        batch.append(GroupId(1000 * groups + group_id as u64), vec![entry(*index)]);
                        *index += 1;
                    }
                    engine.write(&batch, WriteOptions { sync: true }).unwrap();
                });
            },
        );
    }
}

/// Reading the 64 most recent entries of a group (entry cache hits), and a 16 MiB shard scan
/// in 1 MiB chunks from a snapshot.
fn reads(c: &mut Criterion) {
    let directory = tempfile::tempdir().unwrap();
    let engine = open(&directory.path().join("store"), IDENTITY, &RocksConfig::default()).unwrap();
    let group_id = GroupId(1);
    let mut batch = WriteBatch::new();
    batch.append(group_id, (1..=1024).map(entry).collect());
    let value = Bytes::from(vec![0xcd; 1024]);
    let keys = 16 * 1024;
    for key in 0..keys {
        batch.put_data(
            group_id,
            ShardId(0),
            Bytes::from(format!("user-key-{key:08}")),
            value.clone(),
        );
    }
    engine.write(&batch, WriteOptions { sync: true }).unwrap();
    let mut group = configure(c);
    let read_bytes = 64 * entry(1).size_bytes();
    group.throughput(Throughput::Bytes(read_bytes));
    group.bench_function("read_64_recent_entries", |b| {
        b.iter(|| engine.entries(group_id, LogIndex(961), LogIndex(1025), None).unwrap());
    });
    let shard_bytes = keys * (value.len() as u64 + 17);
    group.throughput(Throughput::Bytes(shard_bytes));
    group.bench_function("shard_scan_16MiB_in_1MiB_chunks", |b| {
        b.iter(|| {
            let snapshot = engine.snapshot();
            let mut cursor = ShardCursor::Start;
            let mut records = 0;
            loop {
                let chunk =
                    snapshot.scan_shard_chunk(group_id, ShardId(0), &cursor, 1 << 20).unwrap();
                records += chunk.records.len();
                match chunk.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            assert_eq!(records as u64, keys);
        });
    });
}

criterion_group!(benches, raw_fsync, group_commit, reads);
criterion_main!(benches);
