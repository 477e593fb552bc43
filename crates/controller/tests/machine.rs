//! `ControllerMachine` over `MemKv`: every applied entry writes exactly the records that make
//! `load` rebuild the same `ControllerState` (after each batch, over random request sequences
//! with retries and session eviction), the state travels in a raftstore group snapshot,
//! corrupt records are refused with an error, and a real single-node raftstore `Store` serves
//! the same view before and after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use mosaic_controller::{
    CONTROLLER_SHARD, Command, ConfigNum, ControllerMachine, ControllerQuery, ControllerState,
    ControllerView, DEFAULT_MAX_SESSIONS, DEFAULT_SHARD_COUNT, Error, Outcome, Request,
    bootstrap_batch,
};
use mosaic_engine::{
    BatchOp, ClientId, ClusterId, Engine, EngineConfig, GroupId, MemKv, MemSnapshot, NodeIdentity,
    ShardId, WriteBatch, WriteOptions,
};
use mosaic_raft::{LogIndex, Message, NodeId, Role};
use mosaic_raftstore::snapshot::decode_chunk;
use mosaic_raftstore::testing::{Slot, slot, take};
use mosaic_raftstore::{
    Consistency, ReadOutput, SnapshotReader, StateMachine, Store, StoreConfig, StoreMetrics,
    StoreMsg, Transport,
};
use proptest::prelude::*;

const GROUP: GroupId = GroupId(1);
const NODE: NodeId = NodeId(1);
const SHARDS: u32 = 6;

fn open_engine(kv: MemKv) -> Engine<MemKv> {
    let identity = NodeIdentity { cluster_id: ClusterId(1), node_id: NODE };
    Engine::open(kv, identity, &EngineConfig::default())
        .unwrap_or_else(|error| panic!("open engine: {error}"))
}

/// A new engine holding the meta record of a controller group (nothing else).
fn bootstrapped_engine(shard_count: u32, max_sessions: usize) -> Engine<MemKv> {
    let engine = open_engine(MemKv::new("controller"));
    let mut batch = WriteBatch::new();
    bootstrap_batch(&mut batch, GROUP, shard_count, max_sessions);
    engine.write(&batch, WriteOptions { sync: true }).expect("write the meta record");
    engine
}

fn try_load(engine: &Engine<MemKv>) -> mosaic_raftstore::Result<ControllerMachine> {
    <ControllerMachine as StateMachine<MemKv>>::load(GROUP, engine)
}

fn must_load(engine: &Engine<MemKv>) -> ControllerMachine {
    try_load(engine).unwrap_or_else(|error| panic!("load group {GROUP}: {error}"))
}

/// Applies `request` at `index` into `batch`, as the store would.
fn apply(
    machine: &mut ControllerMachine,
    engine: &Engine<MemKv>,
    batch: &mut WriteBatch,
    index: u64,
    request: &Request,
) -> mosaic_controller::Result<Outcome> {
    let data = <ControllerMachine as StateMachine<MemKv>>::encode(request);
    StateMachine::<MemKv>::apply(machine, engine, batch, LogIndex(index), &data)
        .unwrap_or_else(|error| panic!("apply {request:?}: {error}"))
}

fn write(engine: &Engine<MemKv>, batch: &WriteBatch) {
    engine.write(batch, WriteOptions::default()).expect("write the apply batch");
}

fn register(node: u64) -> Command {
    Command::RegisterNode { node: NodeId(node), address: format!("10.0.0.{node}:7000") }
}

fn add(group: u64, members: &[u64]) -> Command {
    let groups = [(GroupId(group), members.iter().copied().map(NodeId).collect())].into();
    Command::AddGroups { groups, max_moves: None }
}

fn replace(node: u64, with: u64, group: Option<u64>) -> Command {
    Command::ReplaceNode { node: NodeId(node), with: NodeId(with), group: group.map(GroupId) }
}

fn request(client: u64, seq: u64, command: Command) -> Request {
    Request { client: ClientId(client), seq, command }
}

/// Applies `requests` one batch each through a machine and, alongside, through a plain
/// `ControllerState`; checks that both answer alike and that the engine reloads the same
/// state after every batch.
fn apply_and_check_every_batch(
    engine: &Engine<MemKv>,
    reference: &mut ControllerState,
    requests: &[Request],
) -> ControllerMachine {
    let mut machine = must_load(engine);
    assert_eq!(machine.state(), reference, "the loaded state before any request");
    for (position, request) in requests.iter().enumerate() {
        let index = position as u64 + 1;
        let mut batch = WriteBatch::new();
        let answer = apply(&mut machine, engine, &mut batch, index, request);
        let expected = reference.apply(LogIndex(index), request.clone());
        assert_eq!(answer, expected, "request {position}: {request:?}");
        write(engine, &batch);
        assert_eq!(must_load(engine).state(), machine.state(), "after request {position}");
    }
    machine
}

#[test]
fn an_empty_engine_loads_the_default_state() {
    let engine = open_engine(MemKv::new("empty"));
    let machine = must_load(&engine);
    assert_eq!(*machine.state(), ControllerState::new(DEFAULT_SHARD_COUNT, DEFAULT_MAX_SESSIONS));
}

#[test]
fn a_bootstrapped_engine_loads_its_shard_count_and_session_limit() {
    let engine = bootstrapped_engine(SHARDS, 3);
    assert_eq!(*must_load(&engine).state(), ControllerState::new(SHARDS, 3));
}

#[test]
fn a_group_without_a_meta_record_writes_it_with_its_first_change() {
    let engine = open_engine(MemKv::new("no-meta"));
    let mut machine = must_load(&engine);
    let mut batch = WriteBatch::new();
    apply(&mut machine, &engine, &mut batch, 1, &request(1, 1, register(1))).expect("registered");
    write(&engine, &batch);
    let meta = engine.get_data(GROUP, CONTROLLER_SHARD, b"meta").expect("read");
    assert!(meta.is_some(), "the defaults are now stored: {:?}", batch.ops());
    let mut batch = WriteBatch::new();
    apply(&mut machine, &engine, &mut batch, 2, &request(1, 2, register(2))).expect("registered");
    let metas = batch.ops().iter().filter(|op| is_put_data(op, b"meta")).count();
    assert_eq!(metas, 0, "the meta record is written once: {:?}", batch.ops());
}

fn is_put_data(op: &BatchOp, wanted: &[u8]) -> bool {
    matches!(op, BatchOp::PutData { key, .. } if key.as_ref() == wanted)
}

fn config_key(num: u64) -> Vec<u8> {
    [&b"config/"[..], &num.to_be_bytes()].concat()
}

fn retired_key(group: u64) -> Vec<u8> {
    [b"retired/".as_slice(), &group.to_be_bytes()].concat()
}

fn node_key(node: u64) -> Vec<u8> {
    [&b"node/"[..], &node.to_be_bytes()].concat()
}

/// The ops of `batch`, named: `put config/1`, `put node/2`, `put session 7`,
/// `delete session 3`.
fn describe(batch: &WriteBatch) -> Vec<String> {
    batch
        .ops()
        .iter()
        .map(|op| match op {
            BatchOp::PutData { group, shard, key, .. } => {
                assert_eq!((*group, *shard), (GROUP, CONTROLLER_SHARD), "{op:?}");
                match key.split_at(key.len().saturating_sub(8)) {
                    (prefix, id) if id.len() == 8 => {
                        let id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
                        format!("put {}{id}", String::from_utf8_lossy(prefix))
                    }
                    _ => format!("put {}", String::from_utf8_lossy(key)),
                }
            }
            BatchOp::PutSession { group, shard, client, .. } => {
                assert_eq!((*group, *shard), (GROUP, CONTROLLER_SHARD), "{op:?}");
                format!("put session {client}")
            }
            BatchOp::DeleteSession { group, shard, client } => {
                assert_eq!((*group, *shard), (GROUP, CONTROLLER_SHARD), "{op:?}");
                format!("delete session {client}")
            }
            other => panic!("the machine wrote an unexpected op: {other:?}"),
        })
        .collect()
}

#[test]
fn each_entry_writes_only_the_records_it_changed() {
    let engine = bootstrapped_engine(SHARDS, 2);
    let mut machine = must_load(&engine);
    let mut index = 0;
    let mut step = |machine: &mut ControllerMachine, request: Request| {
        index += 1;
        let mut batch = WriteBatch::new();
        let answer = apply(machine, &engine, &mut batch, index, &request);
        write(&engine, &batch);
        (answer, describe(&batch))
    };
    let (_, ops) = step(&mut machine, request(1, 1, register(1)));
    assert_eq!(ops, ["put node/1", "put session 1"]);
    let (_, ops) = step(&mut machine, request(1, 2, register(1)));
    assert_eq!(ops, ["put session 1"], "the same address again changes no node");
    let (_, ops) = step(&mut machine, request(2, 1, add(7, &[1])));
    assert_eq!(ops, ["put config/1", "put session 2"]);
    let (answer, ops) = step(&mut machine, request(2, 1, add(7, &[1])));
    assert!(matches!(answer, Ok(Outcome::ConfigCreated { num: ConfigNum(1), .. })), "{answer:?}");
    assert_eq!(ops, ["put session 2"], "a duplicate only refreshes its session");
    let (answer, ops) = step(&mut machine, request(1, 1, register(1)));
    assert!(matches!(answer, Err(Error::StaleRequest { .. })), "{answer:?}");
    assert!(ops.is_empty(), "a stale request changes nothing: {ops:?}");
    let (answer, ops) = step(&mut machine, request(2, 2, add(8, &[9])));
    assert!(matches!(answer, Err(Error::UnregisteredMember { .. })), "{answer:?}");
    assert_eq!(ops, ["put session 2"], "a refusal is remembered for a retry");
    // A third client evicts client 1, the least recently applied.
    let (_, ops) = step(&mut machine, request(3, 1, Command::Rebalance { max_moves: None }));
    assert_eq!(ops, ["put session 3", "delete session 1"]);
    let (answer, ops) = step(&mut machine, request(3, 2, set_controller(4, "h:7004")));
    assert_eq!(answer, Ok(Outcome::ControllerAddressRecorded { replica: NodeId(4) }));
    assert_eq!(ops, ["put controller/4", "put session 3"]);
    let (answer, ops) = step(&mut machine, request(3, 3, set_controller(4, "h:7004")));
    assert!(matches!(answer, Ok(Outcome::Unchanged { .. })), "{answer:?}");
    assert_eq!(ops, ["put session 3"], "the same address again changes no record");
    let refusals = [
        (9, set_controller(0, "h:7000")),
        (10, set_controller(5, "no-port")),
        // Two processes must never answer as one replica: a recorded address never changes.
        (11, set_controller(4, "g:7004")),
    ];
    for (seq, refused) in refusals {
        let (answer, ops) = step(&mut machine, request(2, seq, refused));
        assert!(answer.is_err(), "{answer:?}");
        assert_eq!(ops, ["put session 2"], "a refusal changes no record");
    }
    let loaded = must_load(&engine);
    assert_eq!(loaded.state(), machine.state());
    assert_eq!(
        loaded.view(&ControllerQuery::default()).expect("the latest").controllers,
        BTreeMap::from([(NodeId(4), "h:7004".to_string())])
    );
}

fn set_controller(replica: u64, address: &str) -> Command {
    Command::SetControllerAddress { replica: NodeId(replica), address: address.into() }
}

#[test]
fn an_undecodable_entry_is_answered_with_an_error_and_changes_nothing() {
    let engine = bootstrapped_engine(SHARDS, 3);
    let mut machine = must_load(&engine);
    let before = machine.state().clone();
    for data in [&b""[..], b"\x01", b"\x02garbage", &[0xff; 40]] {
        let mut batch = WriteBatch::new();
        let answer = StateMachine::<MemKv>::apply(
            &mut machine,
            &engine,
            &mut batch,
            LogIndex(1),
            &Bytes::copy_from_slice(data),
        )
        .expect("not an engine error");
        assert!(matches!(answer, Err(Error::MalformedRequest { .. })), "{data:?}: {answer:?}");
        assert!(batch.is_empty(), "{data:?}: {:?}", batch.ops());
        assert_eq!(*machine.state(), before);
    }
}

#[test]
fn a_sequence_of_commands_reloads_as_the_same_state() {
    let engine = bootstrapped_engine(SHARDS, 3);
    let mut reference = ControllerState::new(SHARDS, 3);
    let mut requests = Vec::new();
    for node in 1..=4 {
        requests.push(request(1, node, register(node)));
    }
    requests.extend([
        request(1, 5, register(4)),
        request(1, 6, Command::RegisterNode { node: NodeId(4), address: "h:1".into() }),
        request(2, 1, add(1, &[1, 2])),
        request(2, 1, add(1, &[1, 2])),
        request(3, 1, add(2, &[3])),
        request(3, 2, Command::MoveShard { shard: ShardId(0), group: GroupId(2) }),
        request(3, 3, Command::MoveShard { shard: ShardId(SHARDS), group: GroupId(2) }),
        request(4, 1, add(3, &[4, 1])),
        request(6, 1, replace(1, 3, Some(3))),
        request(6, 1, replace(1, 3, Some(3))),
        request(6, 2, replace(2, 4, None)),
        request(6, 3, replace(4, 9, None)),
        request(6, 4, replace(4, 4, None)),
        request(4, 2, Command::RemoveGroups { groups: vec![GroupId(1)], max_moves: Some(1) }),
        request(2, 2, Command::Rebalance { max_moves: None }),
        request(1, 7, Command::RemoveGroups { groups: vec![GroupId(9)], max_moves: None }),
        request(
            5,
            1,
            Command::RemoveGroups { groups: vec![GroupId(2), GroupId(3)], max_moves: None },
        ),
        request(4, 1, add(3, &[4, 1])),
        request(5, 2, add(4, &[2])),
        request(5, 3, Command::RemoveGroups { groups: vec![GroupId(4)], max_moves: None }),
        request(5, 4, Command::RetireGroup { group: GroupId(4) }),
        request(5, 5, Command::RetireGroup { group: GroupId(4) }),
        request(5, 6, Command::RetireGroup { group: GroupId(3) }),
    ]);
    let machine = apply_and_check_every_batch(&engine, &mut reference, &requests);
    let latest = machine.state().latest().num;
    assert!(latest.0 >= 4, "the sequence created configurations: {latest}");
    let view = machine.view(&ControllerQuery { num: Some(ConfigNum(2)) }).expect("config 2");
    assert_eq!(view.config, *reference.config(Some(ConfigNum(2))).expect("config 2"));
    assert_eq!(view.latest, latest);
    assert_eq!(view.nodes, *reference.nodes());
    assert_eq!(view.lives, *reference.lives());
    assert!(view.lives[&GroupId(4)].retired && !view.lives[&GroupId(1)].retired);
    let past = ConfigNum(latest.0 + 1);
    assert_eq!(
        machine.view(&ControllerQuery { num: Some(past) }),
        Err(Error::UnknownConfig { num: past, latest })
    );
}

/// One step of a random workload.
#[derive(Clone, Debug)]
enum Step {
    /// A new request of `client` (its next sequence number, or one further on).
    New { client: u64, skip_seq: bool, command: Command },
    /// Sends again the request `back` requests before the last one (a retry when it is its
    /// client's latest, a delayed duplicate otherwise).
    Resend { back: usize },
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let node = 0u64..=5;
    let group = 0u64..=5;
    let max_moves = proptest::option::of(0u32..4);
    prop_oneof![
        (node.clone(), prop_oneof![3 => Just(true), 1 => Just(false)]).prop_map(|(node, valid)| {
            let address =
                if valid { format!("10.0.0.{}:7000", node % 3) } else { "no-port".into() };
            Command::RegisterNode { node: NodeId(node), address }
        }),
        (
            proptest::collection::btree_map(
                group.clone(),
                proptest::collection::vec(node.clone(), 0..3),
                0..3
            ),
            max_moves.clone()
        )
            .prop_map(|(groups, max_moves)| {
                let groups = groups
                    .into_iter()
                    .map(|(g, members)| (GroupId(g), members.into_iter().map(NodeId).collect()))
                    .collect();
                Command::AddGroups { groups, max_moves }
            }),
        (proptest::collection::vec(group.clone(), 0..3), max_moves.clone()).prop_map(
            |(groups, max_moves)| Command::RemoveGroups {
                groups: groups.into_iter().map(GroupId).collect(),
                max_moves
            }
        ),
        (0..=SHARDS, group)
            .prop_map(|(shard, g)| Command::MoveShard { shard: ShardId(shard), group: GroupId(g) }),
        max_moves.prop_map(|max_moves| Command::Rebalance { max_moves }),
        (0u64..=5).prop_map(|group| Command::RetireGroup { group: GroupId(group) }),
        (node.clone(), node.clone(), proptest::option::of(0u64..=5))
            .prop_map(|(node, with, group)| replace(node, with, group)),
        (node, prop_oneof![Just("10.0.0.1:7000"), Just("10.0.0.2:7000"), Just("no-port")])
            .prop_map(|(replica, address)| set_controller(replica, address)),
    ]
}

fn steps_strategy() -> impl Strategy<Value = Vec<(Step, bool)>> {
    let step = prop_oneof![
        4 => (1u64..=5, proptest::bool::weighted(0.1), command_strategy())
            .prop_map(|(client, skip_seq, command)| Step::New { client, skip_seq, command }),
        1 => (0usize..6).prop_map(|back| Step::Resend { back }),
    ];
    // The flag ends the write batch after the step.
    proptest::collection::vec((step, proptest::bool::weighted(0.6)), 1..60)
}

/// The requests of `steps`: nodes 1..=5 registered first, then the steps.
fn requests_of(steps: &[(Step, bool)]) -> Vec<(Request, bool)> {
    let mut requests: Vec<(Request, bool)> =
        (1..=5).map(|node| (request(9, node, register(node)), true)).collect();
    let mut next_seq: BTreeMap<u64, u64> = BTreeMap::new();
    for (step, ends_batch) in steps {
        let request = match step {
            Step::New { client, skip_seq, command } => {
                let seq = next_seq.entry(*client).or_insert(1);
                *seq += u64::from(*skip_seq);
                let request = request(*client, *seq, command.clone());
                *seq += 1;
                request
            }
            Step::Resend { back } => {
                let position = requests.len() - 1 - back % requests.len();
                requests[position].0.clone()
            }
        };
        requests.push((request, *ends_batch));
    }
    requests
}

proptest! {
    /// Random requests (with retries, delayed duplicates, refusals and eviction of sessions,
    /// several entries per batch): the machine answers as the plain state does, and after
    /// every written batch the engine reloads as exactly the machine's state.
    #[test]
    fn random_requests_reload_as_the_same_state(
        steps in steps_strategy(),
        max_sessions in 1usize..4,
    ) {
        let engine = bootstrapped_engine(SHARDS, max_sessions);
        let mut reference = ControllerState::new(SHARDS, max_sessions);
        let mut machine = must_load(&engine);
        let mut batch = WriteBatch::new();
        for (position, (request, ends_batch)) in requests_of(&steps).into_iter().enumerate() {
            let index = position as u64 + 1;
            let answer = apply(&mut machine, &engine, &mut batch, index, &request);
            let expected = reference.apply(LogIndex(index), request.clone());
            prop_assert_eq!(&answer, &expected, "request {}: {:?}", position, request);
            if ends_batch {
                write(&engine, &std::mem::take(&mut batch));
                StateMachine::<MemKv>::batch_written(&mut machine);
                let loaded = must_load(&engine);
                prop_assert_eq!(loaded.state(), machine.state());
            }
        }
        write(&engine, &batch);
        let loaded = must_load(&engine);
        prop_assert_eq!(loaded.state(), &reference);
    }
}

/// Copies `GROUP`'s data and sessions from `from` to `to` through the raftstore snapshot
/// encoding, as a follower installs a snapshot.
fn install_snapshot(from: &Engine<MemKv>, to: &Engine<MemKv>) {
    let mut reader = SnapshotReader::new(GROUP, from.snapshot());
    let mut batch = WriteBatch::new();
    batch.clear_group_data(GROUP);
    let mut chunks = 0;
    while let Some(chunk) = reader.next_chunk(64).expect("read a snapshot chunk") {
        chunks += 1;
        for (shard, record) in decode_chunk(&chunk).expect("decode a snapshot chunk") {
            batch.put_shard_records(GROUP, shard, &[record]);
        }
    }
    assert!(chunks > 1, "small chunks, so the state takes several");
    to.write(&batch, WriteOptions { sync: true }).expect("install the snapshot");
}

#[test]
fn the_state_travels_in_a_group_snapshot() {
    let leader = bootstrapped_engine(SHARDS, 2);
    let mut reference = ControllerState::new(SHARDS, 2);
    let requests = [
        request(1, 1, register(1)),
        request(1, 2, register(2)),
        request(2, 1, add(1, &[1])),
        request(3, 1, add(2, &[2, 1])),
        request(4, 1, Command::MoveShard { shard: ShardId(1), group: GroupId(1) }),
    ];
    let machine = apply_and_check_every_batch(&leader, &mut reference, &requests);

    // The follower holds another controller state, which the snapshot replaces whole.
    let follower = open_engine(MemKv::new("follower"));
    let mut follower_reference = ControllerState::new(DEFAULT_SHARD_COUNT, DEFAULT_MAX_SESSIONS);
    let stale = [request(7, 1, register(5)), request(8, 1, add(4, &[5]))];
    apply_and_check_every_batch(&follower, &mut follower_reference, &stale);

    install_snapshot(&leader, &follower);
    assert_eq!(must_load(&follower).state(), machine.state());
}

/// Writes `batch` over a store holding a few configurations and expects `load` to refuse it
/// with a corruption error that mentions `expected`.
fn assert_load_refuses(name: &str, corrupt: impl FnOnce(&mut WriteBatch), expected: &str) {
    let engine = bootstrapped_engine(SHARDS, 3);
    let requests = [
        request(1, 1, register(1)),
        request(1, 2, register(2)),
        request(2, 1, add(1, &[1])),
        request(2, 2, add(2, &[2])),
        request(3, 1, Command::MoveShard { shard: ShardId(0), group: GroupId(2) }),
    ];
    apply_and_check_every_batch(&engine, &mut ControllerState::new(SHARDS, 3), &requests);
    let mut batch = WriteBatch::new();
    corrupt(&mut batch);
    write(&engine, &batch);
    match try_load(&engine) {
        Err(mosaic_raftstore::Error::Engine(mosaic_engine::Error::Corruption {
            reason, ..
        })) => {
            assert!(reason.contains(expected), "{name}: {reason:?} should mention {expected:?}");
        }
        Err(other) => panic!("{name}: not a corruption error: {other}"),
        Ok(machine) => panic!("{name}: loaded {:?}", machine.state()),
    }
}

fn put(batch: &mut WriteBatch, key: &[u8], value: &[u8]) {
    let (key, value) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
    batch.put_data(GROUP, CONTROLLER_SHARD, key, value);
}

#[test]
fn corrupt_records_are_refused_at_load() {
    assert_load_refuses(
        "garbage configuration",
        |b| put(b, &config_key(2), b"\x01\x00"),
        "configuration 2",
    );
    assert_load_refuses(
        "configuration of another version",
        |b| put(b, &config_key(1), b"\x07"),
        "version",
    );
    assert_load_refuses(
        "missing configuration",
        |b| b.delete_data(GROUP, CONTROLLER_SHARD, Bytes::from(config_key(1))),
        "configuration 1 is missing",
    );
    assert_load_refuses(
        "a configuration stored under another number",
        |b| {
            let mut state = ControllerState::new(SHARDS, 3);
            state.apply(LogIndex(1), request(1, 1, register(1))).expect("register");
            state.apply(LogIndex(2), request(1, 2, add(1, &[1]))).expect("add");
            let config = mosaic_controller::codec::encode_configuration(state.latest());
            put(b, &config_key(3), &config);
        },
        "record of configuration 3 holds 1",
    );
    assert_load_refuses(
        "a shard count that differs from the configurations'",
        |b| bootstrap_batch(b, GROUP, SHARDS + 1, 3),
        "shards",
    );
    assert_load_refuses(
        "more sessions than the limit",
        |b| bootstrap_batch(b, GROUP, SHARDS, 1),
        "max_sessions",
    );
    assert_load_refuses(
        "garbage session",
        |b| b.put_session(GROUP, CONTROLLER_SHARD, ClientId(2), Bytes::from_static(b"\x01")),
        "session of client 2",
    );
    assert_load_refuses(
        "garbage node",
        |b| put(b, &node_key(2), b"\x01\x00\x00\x00\x09ab"),
        "node 2",
    );
    assert_load_refuses(
        "garbage controller replica",
        |b| put(b, &[&b"controller/"[..], &3u64.to_be_bytes()].concat(), b"\x01\x00"),
        "controller replica 3",
    );
    assert_load_refuses(
        "controller replica 0",
        |b| {
            put(b, &[&b"controller/"[..], &0u64.to_be_bytes()].concat(), b"\x01\x00\x00\x00\x03h:1")
        },
        "controller replica 0 has an address",
    );
    assert_load_refuses(
        "a retired group that was never removed",
        |b| put(b, &retired_key(1), b"\x01"),
        "group 1 is retired but was never removed",
    );
    assert_load_refuses(
        "garbage retired record",
        |b| put(b, &retired_key(1), b"\x01\x00"),
        "retired group 1",
    );
    assert_load_refuses("garbage meta", |b| put(b, b"meta", b"\x01\x02"), "meta record");
    assert_load_refuses("a short key", |b| put(b, b"config/\x01", b""), "malformed key");
    assert_load_refuses("an unknown record", |b| put(b, b"zebra", b"\x01"), "unknown record");
}

proptest! {
    /// Any bytes under any controller key make `load` answer (an error or a state), never
    /// panic.
    #[test]
    fn load_never_panics_on_random_records(
        key in prop_oneof![
            Just(b"meta".to_vec()),
            (0u64..4).prop_map(config_key),
            (0u64..4).prop_map(node_key),
            proptest::collection::vec(any::<u8>(), 0..12),
        ],
        value in proptest::collection::vec(any::<u8>(), 0..64),
        session in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
    ) {
        let engine = bootstrapped_engine(SHARDS, 3);
        let mut batch = WriteBatch::new();
        put(&mut batch, &key, &value);
        if let Some(record) = session {
            batch.put_session(GROUP, CONTROLLER_SHARD, ClientId(1), Bytes::from(record));
        }
        write(&engine, &batch);
        let _ = try_load(&engine);
    }
}

// --- A real single-node raftstore `Store` hosting the controller group. ---

type ControllerStore = Store<MemKv, ControllerMachine, NoTransport>;

/// A single-node group has no one to send to.
struct NoTransport;

impl Transport<MemKv> for NoTransport {
    fn send(&mut self, to: NodeId, messages: Vec<(GroupId, Message)>) {
        panic!("a single-node store sent {} messages to node {to}", messages.len());
    }

    fn send_snapshot(
        &mut self,
        to: NodeId,
        group: GroupId,
        _message: Message,
        _reader: SnapshotReader<MemSnapshot>,
    ) {
        panic!("a single-node store sent a snapshot of group {group} to node {to}");
    }
}

/// Ticks to wait for an answer or an election before giving up.
const TICKS_MAX: usize = 200;

fn open_store(kv: MemKv) -> ControllerStore {
    let engine = Arc::new(open_engine(kv));
    let clock = Box::new(mosaic_raftstore::ManualClock::new());
    Store::open(NODE, engine, StoreConfig::default(), NoTransport, clock, StoreMetrics::default())
        .unwrap_or_else(|error| panic!("open the store: {error}"))
}

fn send(store: &mut ControllerStore, msg: StoreMsg<MemKv, ControllerMachine>) {
    store.handle(msg).unwrap_or_else(|error| panic!("handle: {error}"));
    store.process().unwrap_or_else(|error| panic!("process: {error}"));
}

/// Processes and ticks until `slot` is filled.
fn wait<T>(store: &mut ControllerStore, slot: &Slot<T>) -> mosaic_raftstore::Result<T> {
    for _ in 0..TICKS_MAX {
        if let Some(result) = take(slot) {
            return result;
        }
        send(store, StoreMsg::Tick);
    }
    panic!("no answer after {TICKS_MAX} ticks");
}

fn must_elect(store: &mut ControllerStore) {
    for _ in 0..TICKS_MAX {
        let status = store.peer(GROUP).expect("the group is hosted").status();
        if status.soft_state.role == Role::Leader {
            return;
        }
        send(store, StoreMsg::Tick);
    }
    panic!("group {GROUP}: no leader after {TICKS_MAX} ticks");
}

fn must_propose(
    store: &mut ControllerStore,
    request: Request,
) -> mosaic_controller::Result<Outcome> {
    let (result, callback) = slot();
    send(store, StoreMsg::Propose { group: GROUP, proposal: request.clone(), callback });
    wait(store, &result).unwrap_or_else(|error| panic!("propose {request:?}: {error}"))
}

fn must_read(
    store: &mut ControllerStore,
    num: Option<ConfigNum>,
    consistency: Consistency,
) -> ReadOutput<mosaic_controller::Result<ControllerView>> {
    let (result, callback) = slot();
    let query = ControllerQuery { num };
    send(store, StoreMsg::Read { group: GROUP, query, consistency, callback });
    wait(store, &result).unwrap_or_else(|error| panic!("read {num:?}: {error}"))
}

#[test]
fn a_single_node_store_serves_the_same_view_after_a_restart_and_a_crash() {
    let engine = bootstrapped_engine(SHARDS, 10);
    let kv = engine.into_kv();
    let mut store = open_store(kv);
    let (created, callback) = slot();
    send(&mut store, StoreMsg::CreateGroup { group: GROUP, members: vec![NODE], callback });
    wait(&mut store, &created).expect("group created");
    must_elect(&mut store);

    for node in 1..=3 {
        let outcome = must_propose(&mut store, request(1, node, register(node)));
        assert_eq!(outcome, Ok(Outcome::NodeRegistered { node: NodeId(node) }));
    }
    let first_join = must_propose(&mut store, request(2, 1, add(1, &[1, 2])));
    let created = matches!(first_join, Ok(Outcome::ConfigCreated { num: ConfigNum(1), .. }));
    assert!(created, "{first_join:?}");
    let second = must_propose(&mut store, request(2, 2, add(2, &[3])));
    assert!(matches!(second, Ok(Outcome::ConfigCreated { num: ConfigNum(2), .. })), "{second:?}");
    let refused = must_propose(&mut store, request(3, 1, add(3, &[4])));
    assert!(matches!(refused, Err(Error::UnregisteredMember { .. })), "{refused:?}");

    let latest = must_read(&mut store, None, Consistency::Linearizable).output.expect("latest");
    assert_eq!(latest.latest, ConfigNum(2));
    assert_eq!(latest.config.groups.len(), 2);
    assert_eq!(latest.nodes.len(), 3);
    let first = must_read(&mut store, Some(ConfigNum(1)), Consistency::Linearizable).output;
    let past = must_read(&mut store, Some(ConfigNum(3)), Consistency::Linearizable).output;
    assert_eq!(past, Err(Error::UnknownConfig { num: ConfigNum(3), latest: ConfigNum(2) }));
    let state = store.peer(GROUP).expect("hosted").state_machine().state().clone();

    // A clean restart: every write kept.
    let kv = store.engine().kv().reopen();
    drop(store);
    let mut store = open_store(kv);
    let stale = must_read(&mut store, None, Consistency::Stale);
    assert_eq!(stale.output.as_ref(), Ok(&latest), "read before any election");
    must_elect(&mut store);
    assert_eq!(must_read(&mut store, None, Consistency::Linearizable).output, Ok(latest.clone()));
    assert_eq!(must_read(&mut store, Some(ConfigNum(1)), Consistency::Linearizable).output, first);
    assert_eq!(*store.peer(GROUP).expect("hosted").state_machine().state(), state);
    // The session survived: a retry answers the first result without applying again, and an
    // older request is refused.
    assert_eq!(must_propose(&mut store, request(2, 2, add(2, &[3]))), second);
    let stale = must_propose(&mut store, request(2, 1, add(1, &[1, 2])));
    assert_eq!(stale, Err(Error::StaleRequest { client: ClientId(2), seq: 1, latest: 2 }));

    // A crash that loses every unsynced write (the apply batches): the log is replayed.
    let state = store.peer(GROUP).expect("hosted").state_machine().state().clone();
    let kv = store.engine().kv().crash(0);
    drop(store);
    let mut store = open_store(kv);
    must_elect(&mut store);
    assert_eq!(must_read(&mut store, None, Consistency::Linearizable).output, Ok(latest));
    assert_eq!(*store.peer(GROUP).expect("hosted").state_machine().state(), state);
}
