//! A storage node's `Kv` and `NodeAdmin` services given arbitrary requests: each request's
//! protobuf body is checked as the service checks it (`mosaic_proto::node`) and what passes
//! goes to the real store of one of three nodes (`mosaic_raftstore::testing`, in memory,
//! hosting `KvStateMachine` groups) as the service would send it, among ticks of the clock
//! and crash-restarts. Frames as in `mosaic_fuzz::frames`. No request makes a node fail (a
//! panic, or an engine error, which stops a real node), and every node reloads what it
//! stored. Watchers stay registered across frames (the latest [`WATCHERS_MAX`]), and each
//! gives whole revisions in increasing order, and nothing after its end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_engine::{EngineSnapshot, GroupId, MemSnapshot};
use mosaic_fuzz::{crash_restart, frames, restart_all, tick};
use mosaic_proto::node::{self, SizeLimits};
use mosaic_proto::pb;
use mosaic_raft::NodeId;
use mosaic_raftstore::testing::{Cluster, slot};
use mosaic_raftstore::{Callback, Consistency, ReadOutput, StoreMsg};
use mosaic_shardkv::request::{propose_write, read_ownership, read_shard, read_value, watch};
use mosaic_shardkv::watch::{WatchEvent, WatchReceiver};
use mosaic_shardkv::{KvStateMachine, WriteKind};
use prost::Message;
use std::sync::{Arc, Mutex};

const NODES: u64 = 3;
const GROUP: GroupId = GroupId(1);
const LIMITS: SizeLimits = SizeLimits { key_bytes_max: 64, value_bytes_max: 128 };
/// Watchers kept registered, at most (the oldest is dropped for a new one).
const WATCHERS_MAX: usize = 8;

/// A registered watcher and the last revision it gave.
struct Watcher {
    receiver: WatchReceiver,
    last: u64,
}

/// Takes what every watcher has queued: whole revisions, each after the one before, and
/// nothing after an end (a watcher that ended is dropped).
fn drain(watchers: &Mutex<Vec<Watcher>>) {
    let mut watchers = watchers.lock().expect("one thread");
    watchers.retain_mut(|watcher| {
        while let Ok(event) = watcher.receiver.try_recv() {
            match event {
                WatchEvent::Changes(changes) => {
                    let revision = changes.first().expect("a revision has a change").revision;
                    assert!(
                        changes.iter().all(|change| change.revision == revision),
                        "one event, one revision: {changes:?}"
                    );
                    assert!(revision > watcher.last, "revision {revision} after {}", watcher.last);
                    watcher.last = revision;
                }
                WatchEvent::End(_) => {
                    assert!(watcher.receiver.try_recv().is_err(), "an event after the end");
                    return false;
                }
            }
        }
        true
    });
}

fuzz_target!(|data: &[u8]| {
    let mut cluster = Cluster::<KvStateMachine>::new(NODES, 1);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_elect(GROUP);
    let watchers: Arc<Mutex<Vec<Watcher>>> = Arc::default();
    for frame in frames(data, NODES) {
        let node = NodeId(frame.node);
        let body = frame.body;
        let write = |kind| {
            let request = pb::WriteRequest::decode(body).ok()?;
            let (group, write) = node::write_from_pb(kind, request, LIMITS).ok()?;
            Some(propose_write(group, write, slot().1))
        };
        let msg = match frame.kind {
            0 => write(WriteKind::Put),
            1 => write(WriteKind::Append),
            2 => write(WriteKind::Delete),
            3 => pb::GetRequest::decode(body).ok().and_then(|request| {
                let (group, get, consistency) = node::get_from_pb(request, LIMITS).ok()?;
                Some(read_value(group, get, consistency, slot().1))
            }),
            4 => pb::CreateGroupRequest::decode(body).ok().and_then(|request| {
                let (group, members) = node::create_group_from_pb(request).ok()?;
                Some(StoreMsg::CreateGroup { group, members, callback: slot().1 })
            }),
            5 => pb::JoinGroupRequest::decode(body).ok().and_then(|request| {
                let (group, leader) = node::join_group_from_pb(request).ok()?;
                Some(StoreMsg::JoinGroup { group, leader, callback: slot().1 })
            }),
            6 => pb::ChangeMembershipRequest::decode(body).ok().and_then(|request| {
                let (group, change, unchanged_since) =
                    node::change_membership_from_pb(request).ok()?;
                let callback = slot().1;
                Some(StoreMsg::ChangeMembership { group, change, unchanged_since, callback })
            }),
            7 => pb::GroupStatusRequest::decode(body).ok().map(|request| {
                let group = GroupId(request.group_id);
                let confirm = request.confirm_leadership;
                cluster.send(node, StoreMsg::Status { group, confirm, callback: slot().1 });
                read_ownership(group, Consistency::Stale, slot().1)
            }),
            8 => {
                tick(&mut cluster, body);
                None
            }
            9 => {
                crash_restart(&mut cluster, node, body);
                None
            }
            10 => pb::BatchRequest::decode(body).ok().and_then(|request| {
                let (group, batch) = node::batch_from_pb(request, LIMITS).ok()?;
                Some(propose_write(group, batch, slot().1))
            }),
            // The page is read from the view as the service reads it, off the store.
            11 => pb::ScanRequest::decode(body).ok().and_then(|request| {
                let (group, scan, consistency) = node::scan_from_pb(request, LIMITS).ok()?;
                let (shard, shard_count) = (scan.shard, scan.shard_count);
                let read_page: Callback<ReadOutput<EngineSnapshot<MemSnapshot>>> =
                    Box::new(move |answer| {
                        if let Ok(read) = answer {
                            scan.read(group, &read.output).expect("a page reads from its view");
                        }
                    });
                Some(read_shard(group, shard, shard_count, consistency, read_page))
            }),
            // Registered as the service registers it; kept for the frames after.
            12 => pb::WatchRequest::decode(body).ok().and_then(|request| {
                let (group, shard_watch, consistency) =
                    node::watch_from_pb(request, LIMITS).ok()?;
                let watchers = Arc::clone(&watchers);
                let register: Callback<ReadOutput<WatchReceiver>> = Box::new(move |answer| {
                    if let Ok(read) = answer {
                        let mut watchers = watchers.lock().expect("one thread");
                        if watchers.len() == WATCHERS_MAX {
                            watchers.remove(0);
                        }
                        let last = read.output.from - 1;
                        watchers.push(Watcher { receiver: read.output, last });
                    }
                });
                Some(watch(group, shard_watch, consistency, register))
            }),
            13 => pb::TransferLeaderRequest::decode(body).ok().and_then(|request| {
                let (group, to) = node::transfer_leader_from_pb(&request).ok()?;
                Some(StoreMsg::TransferLeader { group, to, callback: slot().1 })
            }),
            _ => None,
        };
        if let Some(msg) = msg {
            cluster.send(node, msg);
        }
        cluster.settle();
        drain(&watchers);
    }
    restart_all(&mut cluster, NODES);
});
