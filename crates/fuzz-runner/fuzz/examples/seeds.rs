//! Writes the committed seed corpus, `fuzz/corpus/TARGET/*`: records made by the real
//! encoders, so that the fuzzer starts past the version headers and length checks.
//! `cargo run --manifest-path crates/fuzz-runner/fuzz/Cargo.toml --example seeds` (overwrites
//! the seeds it writes).

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use mosaic_controller::{
    Command, ConfigNum, Configuration, NodeLiveness, Outcome, Request, ShardMove, codec,
};
use mosaic_engine::{ClientId, GroupId, ShardCursor, ShardId, ShardRecord, keys};
use mosaic_fuzz::frame;
use mosaic_proto::controller as convert;
use mosaic_proto::{message_to_pb, migration, pb};
use mosaic_raft::{Entry, EntryKind, HardState, LogIndex, Message, MessageBody, NodeId, Term};
use mosaic_shardkv::version::encode_revision;
use mosaic_shardkv::{
    BatchCondition, BatchWrite, KvBatch, KvCommand, KvWrite, Ownership, Session, Version,
    Versioned, WriteEffect, WriteKind,
};
use prost::Message as _;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let request = |command| Request { client: ClientId(7), seq: 3, command };
    let register = Command::RegisterNode { node: NodeId(4), address: "10.0.0.4:7100".into() };
    write("controller_records", "request-register", &codec::encode_request(&request(register)));
    let rebalance = Command::Rebalance { max_moves: Some(2) };
    write("controller_records", "request-rebalance", &codec::encode_request(&request(rebalance)));
    let config = Configuration::initial(8);
    write("controller_records", "configuration", &codec::encode_configuration(&config));
    let result = Ok(Outcome::NodeRegistered { node: NodeId(4) });
    write("controller_records", "result", &codec::encode_result(&result));

    let put = KvWrite {
        kind: WriteKind::Put,
        client: ClientId(9),
        seq: 1,
        shard: ShardId(2),
        key: Bytes::from_static(b"key"),
        value: Bytes::from_static(b"value"),
        expects_session: false,
        condition: None,
    };
    write("shardkv_records", "write", &KvCommand::Write(put.clone()).encode());
    let cas = KvWrite { condition: Some(Version(3)), ..put };
    write("shardkv_records", "conditional-write", &KvCommand::Write(cas).encode());
    let batch = KvBatch {
        client: ClientId(9),
        seq: 2,
        shard: ShardId(2),
        expects_session: false,
        conditions: vec![BatchCondition { key: Bytes::from_static(b"key"), version: Version(5) }],
        writes: vec![BatchWrite {
            kind: WriteKind::Put,
            key: Bytes::from_static(b"key"),
            value: Bytes::from_static(b"value"),
        }],
    };
    write("shardkv_records", "batch", &KvCommand::Batch(batch).encode());
    let effect = WriteEffect::BatchConditionFailed { condition: 1, version: Version(7) };
    let session = Session { seq: 4, last_index: LogIndex(12), effect };
    write("shardkv_records", "session", &session.encode());
    let stored = Versioned { value: Bytes::from_static(b"value"), version: Version(5) };
    write("shardkv_records", "stored-value", &stored.encode());
    write("shardkv_records", "revision", &encode_revision(5));
    write("shardkv_records", "ownership", &Ownership::default().encode());

    let entry = Entry {
        term: Term(2),
        index: LogIndex(5),
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"data"),
    };
    write("engine_records", "entry", &mosaic_engine::codec::encode_entry(&entry));
    let state = HardState { term: Term(3), vote: Some(NodeId(1)), commit: LogIndex(5) };
    write("engine_records", "hard-state", &mosaic_engine::codec::encode_hard_state(&state));
    let log_key = keys::raft_log_key(GroupId(7), LogIndex(5));
    write("engine_records", "log-key", &log_key);
    let session_key = keys::session_key(GroupId(7), ShardId(2), ClientId(9));
    write("engine_records", "session-key", &session_key);
    let record =
        ShardRecord::Data { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") };
    let chunk = mosaic_raftstore::snapshot::encode_chunk(&[(ShardId(1), record)]);
    write("engine_records", "snapshot-chunk", &chunk);

    proto_seeds(&entry, session);
    node_seeds();
    controller_seeds();
}

/// One wire message of each kind `proto_messages` converts, behind its selector byte.
fn proto_seeds(entry: &Entry, session: Session) {
    let selected = |selector: u8, message: &dyn Fn() -> Vec<u8>| {
        let mut bytes = vec![selector];
        bytes.extend(message());
        bytes
    };
    let append = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(2),
        body: MessageBody::Append {
            prev_index: LogIndex(4),
            prev_term: Term(1),
            entries: vec![entry.clone()],
            commit: LogIndex(4),
        },
    };
    let raft = selected(0, &|| message_to_pb(&append).encode_to_vec());
    write("proto_messages", "raft-append", &raft);
    let groups = [(GroupId(100), vec![NodeId(1), NodeId(2), NodeId(3)])].into();
    let add = Request {
        client: ClientId(7),
        seq: 1,
        command: Command::AddGroups { groups, max_moves: None },
    };
    let execute = selected(1, &|| convert::request_to_pb(&add).encode_to_vec());
    write("proto_messages", "execute-add-groups", &execute);
    let outcome = Ok(Outcome::NodeRegistered { node: NodeId(4) });
    let response = selected(2, &|| convert::execute_response_to_pb(&outcome).encode_to_vec());
    write("proto_messages", "execute-response", &response);
    let config = Configuration::initial(4);
    let configuration = selected(3, &|| convert::configuration_to_pb(&config).encode_to_vec());
    write("proto_messages", "configuration", &configuration);
    let nodes: std::collections::BTreeMap<NodeId, String> =
        [(NodeId(1), "127.0.0.1:7001".to_string())].into();
    let query = selected(4, &|| {
        let liveness =
            [(NodeId(1), NodeLiveness::Up { last_heard: std::time::Duration::from_millis(40) })]
                .into();
        convert::QueryAnswer {
            config: config.clone(),
            latest: ConfigNum(0),
            nodes: nodes.clone(),
            liveness,
            node_states: Default::default(),
            leader: NodeId(1),
            lives: Default::default(),
            controllers: Default::default(),
        }
        .to_pb()
        .encode_to_vec()
    });
    write("proto_messages", "query-response", &query);
    let shard_move = ShardMove { shard: ShardId(2), from: None, to: Some(GroupId(100)) };
    let moved = selected(5, &|| convert::shard_move_to_pb(&shard_move).encode_to_vec());
    write("proto_messages", "shard-move", &moved);
    let chunk = selected(6, &|| {
        let records = vec![
            ShardRecord::Session { client: ClientId(9), record: session.encode() },
            ShardRecord::Data { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") },
        ];
        let records = records.into_iter().map(migration::record_to_pb).collect();
        pb::ShardChunk { records, last: true }.encode_to_vec()
    });
    write("proto_messages", "shard-chunk", &chunk);
    let pull = selected(7, &|| {
        let resume = migration::position_to_pb(&ShardCursor::AfterData(Bytes::from_static(b"k")));
        pb::PullShardRequest { from_group: 1, to_group: 2, shard_id: 3, config_num: 4, resume }
            .encode_to_vec()
    });
    write("proto_messages", "pull-request", &pull);
}

/// Requests to each node of `node_requests` (the leader answers; the others refuse): writes
/// and reads of group 1; watches, batches and scans of a hash tag's keys; a new group,
/// leadership transfers and a membership change, ticks, a crash.
fn node_seeds() {
    let mut requests = Vec::new();
    for node in 1..=3 {
        for (kind, value) in [(0, &b"v"[..]), (1, b"w"), (2, b"")] {
            let write = pb::WriteRequest {
                group_id: 1,
                shard_id: 0,
                key: Bytes::from_static(b"key"),
                value: Bytes::copy_from_slice(value),
                client_id: 9,
                seq: u64::from(kind) + 1,
                ..pb::WriteRequest::default()
            };
            requests.extend(frame(node, kind, &write.encode_to_vec()));
        }
        let get = pb::GetRequest {
            group_id: 1,
            key: Bytes::from_static(b"key"),
            ..pb::GetRequest::default()
        };
        requests.extend(frame(node, 3, &get.encode_to_vec()));
        let status = pb::GroupStatusRequest { group_id: 1, confirm_leadership: true };
        requests.extend(frame(node, 7, &status.encode_to_vec()));
    }
    write("node_requests", "writes-and-reads", &requests);

    let mut batches_and_scans = Vec::new();
    for node in 1..=3 {
        let watch = pb::WatchRequest {
            group_id: 1,
            start: Bytes::from_static(b"{t}"),
            end: Some(Bytes::from_static(b"{t}z")),
            from_revision: (node > 1).then_some(1),
            shard_count: 1,
            ..pb::WatchRequest::default()
        };
        batches_and_scans.extend(frame(node, 12, &watch.encode_to_vec()));
    }
    for node in 1..=3 {
        let batch = pb::BatchRequest {
            group_id: 1,
            client_id: 9,
            seq: 10 + node,
            conditions: vec![pb::BatchCondition { key: Bytes::from_static(b"{t}a"), version: 0 }],
            writes: vec![pb::BatchWrite {
                op: pb::BatchOp::Put as i32,
                key: Bytes::from_static(b"{t}b"),
                value: Bytes::from_static(b"v"),
            }],
            ..pb::BatchRequest::default()
        };
        batches_and_scans.extend(frame(node, 10, &batch.encode_to_vec()));
        let scan = pb::ScanRequest {
            group_id: 1,
            start: Bytes::from_static(b"{t}"),
            limit: 2,
            limit_bytes: 64,
            shard_count: 1,
            ..pb::ScanRequest::default()
        };
        batches_and_scans.extend(frame(node, 11, &scan.encode_to_vec()));
    }
    write("node_requests", "batches-scans-and-watches", &batches_and_scans);

    let mut admin = Vec::new();
    for node in 1..=3 {
        let create = pb::CreateGroupRequest { group_id: 2, members: vec![1, 2, 3] };
        admin.extend(frame(node, 4, &create.encode_to_vec()));
    }
    admin.extend(frame(1, 8, &[20]));
    admin.extend(frame(
        3,
        5,
        &pb::JoinGroupRequest { group_id: 3, ..Default::default() }.encode_to_vec(),
    ));
    for (node, to) in [(1, None), (2, Some(3)), (3, Some(2))] {
        let transfer = pb::TransferLeaderRequest { group_id: 1, to };
        admin.extend(frame(node, 13, &transfer.encode_to_vec()));
        admin.extend(frame(1, 8, &[4]));
    }
    for node in 1..=3 {
        let change = pb::ChangeMembershipRequest {
            group_id: 1,
            change: pb::MembershipChange::Remove as i32,
            node_id: 3,
            unchanged_since: None,
        };
        admin.extend(frame(node, 6, &change.encode_to_vec()));
    }
    admin.extend(frame(2, 9, &[1]));
    admin.extend(frame(1, 8, &[20]));
    write("node_requests", "admin-and-faults", &admin);
}

/// Commands and queries to each replica of `controller_requests` (the leader answers):
/// nodes registered, a group added, a shard moved, a rebalance, a node replaced, then
/// decommissioned and retired, the group removed and retired, a query; ticks, a crash.
fn controller_seeds() {
    let commands = [
        Command::RegisterNode { node: NodeId(4), address: "10.0.0.4:7100".into() },
        Command::AddGroups { groups: [(GroupId(100), vec![NodeId(4)])].into(), max_moves: None },
        Command::MoveShard { shard: ShardId(1), group: GroupId(100) },
        Command::Rebalance { max_moves: Some(1) },
        Command::RegisterNode { node: NodeId(5), address: "10.0.0.5:7100".into() },
        Command::ReplaceNode { node: NodeId(4), with: NodeId(5), group: Some(GroupId(100)) },
        Command::DecommissionNode { node: NodeId(4), avoid: BTreeSet::new() },
        Command::DecommissionNode { node: NodeId(4), avoid: BTreeSet::from([NodeId(2)]) },
        Command::RetireNode { node: NodeId(4) },
        Command::RemoveGroups { groups: vec![GroupId(100)], max_moves: None },
        Command::RetireGroup { group: GroupId(100) },
    ];
    let mut requests = Vec::new();
    for (seq, command) in (1..).zip(commands) {
        let request = Request { client: ClientId(7), seq, command };
        for node in 1..=3 {
            requests.extend(frame(node, 0, &convert::request_to_pb(&request).encode_to_vec()));
        }
    }
    for node in 1..=3 {
        requests.extend(frame(
            node,
            1,
            &pb::QueryRequest { num: Some(1), node_id: 2 }.encode_to_vec(),
        ));
    }
    requests.extend(frame(1, 3, &[1]));
    requests.extend(frame(2, 2, &[20]));
    write("controller_requests", "commands", &requests);
}
