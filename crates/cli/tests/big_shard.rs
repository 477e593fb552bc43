//! A large shard moves between groups on disjoint nodes without being held in memory: the
//! receiving nodes' peak resident memory grows by far less than the shard. One shard holds
//! all the data (a cluster of one shard), written as 1 MiB values, then moved from group 1
//! (nodes 1-3) to group 2 (nodes 4-6); every value is checked afterwards.
//!
//! `MOSAIC_BIG_SHARD_MIB=N` sets the shard's size (default 16, which checks the mechanics:
//! many chunks, every value intact). The memory bound is asserted from 256 MiB on, where it
//! means something next to a debug process's own footprint; the test prints the numbers.
//! Measured with 1024: see docs/benchmarks.md.

mod support;

use std::time::Duration;

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

fn value(i: usize) -> Vec<u8> {
    let mut value = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
    value[..8].copy_from_slice(&(i as u64).to_be_bytes());
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
        let bound = (mib as u64 / 2) << 20;
        assert!(growth < bound, "a receiver's peak RSS grew by {growth} bytes for {mib} MiB");
    }
}
