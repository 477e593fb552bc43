//! A controller replica's `Controller` service given arbitrary requests (with an admin's
//! rights: every command is allowed): an `Execute` body is converted as the service converts
//! it (`mosaic_proto::controller::request_from_pb`) and proposed to the controller group of
//! three in-memory replicas (`mosaic_raftstore::testing`, the real store and
//! `ControllerMachine`), a `Query` read at the linearizable level, among ticks of the clock
//! and crash-restarts. Frames as in `mosaic_fuzz::frames`. No request makes a replica fail,
//! and every replica reloads what it applied (loading checks every invariant of the
//! controller's state).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_controller::{ControllerMachine, ControllerQuery};
use mosaic_fuzz::{crash_restart, frames, restart_all, tick};
use mosaic_proto::controller as convert;
use mosaic_proto::pb;
use mosaic_raft::NodeId;
use mosaic_raftstore::testing::{Cluster, slot};
use mosaic_raftstore::{Consistency, StoreMsg};
use mosaic_types::CONTROLLER_GROUP;
use prost::Message;

const NODES: u64 = 3;

fuzz_target!(|data: &[u8]| {
    let mut cluster = Cluster::<ControllerMachine>::new(NODES, 1);
    let group = CONTROLLER_GROUP;
    cluster.create_group(group, &[1, 2, 3]);
    cluster.must_elect(group);
    for frame in frames(data, NODES) {
        let node = NodeId(frame.node);
        let body = frame.body;
        let msg = match frame.kind % 4 {
            0 => pb::ExecuteRequest::decode(body).ok().and_then(|request| {
                let proposal = convert::request_from_pb(request).ok()?;
                Some(StoreMsg::Propose { group, proposal, callback: slot().1 })
            }),
            1 => pb::QueryRequest::decode(body).ok().map(|request| {
                let query = ControllerQuery { num: convert::query_request_from_pb(request).0 };
                let consistency = Consistency::Linearizable;
                StoreMsg::Read { group, query, consistency, callback: slot().1 }
            }),
            2 => {
                tick(&mut cluster, body);
                None
            }
            _ => {
                crash_restart(&mut cluster, node, body);
                None
            }
        };
        if let Some(msg) = msg {
            cluster.send(node, msg);
        }
        cluster.settle();
    }
    restart_all(&mut cluster, NODES);
});
