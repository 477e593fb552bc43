//! A large shard moves between groups on disjoint nodes without being held in memory, and the
//! old owner gives its disk space back: the receiving nodes' peak resident memory grows by far
//! less than the shard, and the sending nodes' table files shrink once the shard has moved.
//! One shard holds all the data (a cluster of one shard), written as 1 MiB values, then moved
//! from group 1 (nodes 1-3) to group 2 (nodes 4-6); every value is checked afterwards.
//!
//! `MOSAIC_BIG_SHARD_MIB=N` sets the shard's size (default 16, which checks the mechanics:
//! many chunks, every value intact). The memory and disk bounds are asserted from 256 MiB on,
//! where they mean something next to a debug process's own footprint and RocksDB's memtables;
//! the test prints the numbers. Measured with 1024: see docs/benchmarks.md.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use mosaic_client::Consistency;
use support::{Processes, Role};

/// One value: the largest a node accepts by default.
const VALUE_BYTES: usize = 1 << 20;

/// The peak resident memory of process `pid` so far, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("VmHWM");
    let kib: u64 = line.split_whitespace().nth(1).expect("a number").parse().expect("kB");
    kib * 1024
}

/// The bytes of RocksDB's table files under `dir`, as the file system sees them.
fn table_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|entry| entry.unwrap())
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                table_bytes(&path)
            } else if path.extension().is_some_and(|ext| ext == "sst") {
                entry.metadata().map_or(0, |metadata| metadata.len())
            } else {
                0
            }
        })
        .sum()
}

/// Value `i`: bytes that do not compress, so the table files' sizes follow the data's.
fn value(i: usize) -> Vec<u8> {
    let mut state = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut value = Vec::with_capacity(VALUE_BYTES);
    while value.len() < VALUE_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        value.extend_from_slice(&state.to_le_bytes());
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_shard_moves_without_being_held_in_memory() {
    let mib: usize = std::env::var("MOSAIC_BIG_SHARD_MIB")
        .map(|value| value.parse().expect("MOSAIC_BIG_SHARD_MIB is a number of MiB"))
        .unwrap_or(16);
    let controllers = Processes::start_as(Role::Controllers(1), 3);
    let controller_addresses = controllers.addresses.values().cloned().collect();
    let nodes = Processes::start_as(Role::Following(controller_addresses), 6);
    controllers.wait_registered(6);
    controllers.admin(&["group", "add", "1", "--nodes", "1,2,3"]);
    controllers.admin(&["group", "add", "2", "--nodes", "4,5,6"]);
    controllers.admin(&["shard", "move", "0", "1"]);
    controllers.admin(&["wait", "--max-wait", "60"]);
    let client = controllers.routed_client_within(Duration::from_secs(120));
    for i in 0..mib {
        client.put(format!("big-{i}"), value(i)).await.unwrap();
    }

    let receivers = [4, 5, 6].map(|id| nodes.children[&id].id());
    let before: Vec<u64> = receivers.iter().map(|pid| peak_rss(*pid)).collect();
    let senders_disk =
        || -> Vec<u64> { [1, 2, 3].map(|id| table_bytes(&nodes.data_dir(id))).into() };
    let disk_before = senders_disk();
    controllers.admin(&["shard", "move", "0", "2"]);
    let wait_secs = (60 + mib / 4).to_string();
    controllers.admin(&["wait", "--max-wait", &wait_secs]);
    let after: Vec<u64> = receivers.iter().map(|pid| peak_rss(*pid)).collect();
    let growth = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).max().unwrap_or(0);
    eprintln!(
        "moved a {mib} MiB shard; receivers' peak RSS before {:?} MiB, after {:?} MiB, largest \
         growth {} MiB",
        before.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        after.iter().map(|a| a >> 20).collect::<Vec<_>>(),
        growth >> 20
    );
    for i in 0..mib {
        let read = client.get(format!("big-{i}"), Consistency::Linearizable).await.unwrap();
        assert!(read.as_deref() == Some(value(i).as_slice()), "value {i} did not arrive intact");
    }
    if mib >= 256 {
        // The growth is RocksDB's memtables and caches, about 200-230 MiB whatever the shard's
        // size (docs/benchmarks.md); a node holding the shard would grow by more than it.
        let bound = 320 << 20;
        assert!(growth < bound, "a receiver's peak RSS grew by {growth} bytes for {mib} MiB");
    }

    // The old owner deleted the shard once the new owner had it; the deleted range is
    // compacted in the background. A tenth of the shard is the bound: what is left is the
    // Raft log's own files, which shrink as RocksDB compacts them.
    let bound = (mib as u64 / 10) << 20;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut disk_after = senders_disk();
    while mib >= 256 && disk_after.iter().any(|bytes| *bytes > bound) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        disk_after = senders_disk();
    }
    eprintln!(
        "senders' table files before the move {:?} MiB, after {:?} MiB",
        disk_before.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        disk_after.iter().map(|b| b >> 20).collect::<Vec<_>>()
    );
    if mib >= 256 {
        assert!(
            disk_after.iter().all(|bytes| *bytes <= bound),
            "the old owner's table files are {disk_after:?} bytes after handing off {mib} MiB"
        );
    }
}
