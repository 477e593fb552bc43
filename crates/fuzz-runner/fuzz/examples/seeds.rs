//! Writes the committed seed corpus, `fuzz/corpus/TARGET/*`: records made by the real
//! encoders, so that the fuzzer starts past the version headers and length checks.
//! `cargo run --manifest-path crates/fuzz-runner/fuzz/Cargo.toml --example seeds` (overwrites
//! the seeds it writes).

use std::path::Path;

use bytes::Bytes;
use mosaic_controller::{Command, Configuration, Outcome, Request, codec};
use mosaic_engine::{ClientId, GroupId, ShardId, ShardRecord, keys};
use mosaic_raft::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};
use mosaic_shardkv::{KvCommand, KvWrite, Ownership, Session, WriteKind};

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
    };
    write("shardkv_records", "write", &KvCommand::Write(put).encode());
    let session = Session { seq: 4, last_index: LogIndex(12) };
    write("shardkv_records", "session", &session.encode());
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
}
