//! The hot path of the Raft core: a three-replica group in one thread, fully in memory.
//!
//! - `commit_round/N`: the leader proposes N entries of `PAYLOAD_BYTES`; every replica turns
//!   the inputs into `Ready`s, persists them to `MemStorage`, applies committed entries and
//!   advances, and messages are delivered until the group is quiet: the entries are committed
//!   and applied on all three replicas. Throughput counts entries.
//! - `follower_append/64`: a follower steps one Append of 64 entries (committing the previous
//!   Append's entries) and handles its `Ready`: persist 64, apply 64, answer.
//! - `leader_append_responses/N`: a leader with N replicated but uncommitted entries steps
//!   both followers' AppendResponses (the first one commits) and handles its `Ready`: apply N,
//!   send the new commit index.
//!
//! The state machine is a no-op (`black_box` over the committed entries), and every entry
//! shares one payload buffer: what is measured is the core and `MemStorage`, not the
//! application. Logs are compacted every `LOG_ENTRIES_MAX` entries to bound memory; that
//! cost is amortized into the numbers, as it would be in a real server.
//!
//! Run with `cargo bench -p mosaic-raft --bench ready_loop`.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mosaic_raft::{
    ConfState, Config, Entry, EntryKind, LogIndex, MemStorage, Message, MessageBody, NodeId,
    RawNode, Role, Term,
};

/// Bytes of each proposed command.
const PAYLOAD_BYTES: usize = 256;
/// Replicas in the group.
const GROUP_NODES: u64 = 3;
/// A replica's stored log is compacted once it holds more entries than this.
const LOG_ENTRIES_MAX: usize = 16_384;
/// `Ready`s plus deliveries one pump may take before the group must be quiet.
const PUMP_STEPS_MAX: usize = 10_000;
/// Leader ticks within which a heartbeat must have told every follower the commit index.
const HEARTBEAT_TICKS_MAX: usize = 10;
/// Entries per Append in the follower benchmark.
const FOLLOWER_APPEND_ENTRIES: u64 = 64;
/// Rounds prepared ahead of the measured ones in the leader benchmark; bounds the in-flight
/// appends and uncommitted entries the leader holds.
const LEADER_ROUNDS_PER_BATCH: u64 = 16;

/// Handles one `Ready` as the contract on `Ready` asks: send, persist, send what waited for
/// the persist, apply (a no-op state machine), advance. Returns the entries applied.
fn handle_ready(node: &mut RawNode<MemStorage>, outbox: &mut Vec<Message>) -> usize {
    let mut ready = node.ready();
    outbox.append(&mut ready.messages);
    let storage = node.storage_mut();
    if let Some(snapshot) = ready.snapshot.take() {
        storage.apply_snapshot(snapshot).expect("a snapshot from the leader applies");
    }
    storage.append(&ready.entries);
    if let Some(hard_state) = ready.hard_state {
        storage.set_hard_state(hard_state);
    }
    outbox.append(&mut ready.persisted_messages);
    // No membership changes happen here, so there is no ConfChange entry to apply.
    let applied = black_box(&ready.committed_entries).len();
    node.advance();
    applied
}

/// Compacts `node`'s stored log up to its applied index once it grows past
/// `LOG_ENTRIES_MAX`.
fn compact_if_long(node: &mut RawNode<MemStorage>) {
    if node.storage().all_entries().len() > LOG_ENTRIES_MAX {
        let status = node.status();
        node.storage_mut()
            .snapshot_and_compact(status.applied, status.conf_state, Bytes::new())
            .expect("snapshot at the applied index");
    }
}

fn payload() -> Bytes {
    Bytes::from(vec![0xAB; PAYLOAD_BYTES])
}

/// Three replicas and the messages between them; node ids are 1..=3, at `nodes[id - 1]`.
struct Group {
    nodes: Vec<RawNode<MemStorage>>,
    outbox: Vec<Message>,
}

impl Group {
    /// A group whose node 1 leads term 1 and has committed its no-op everywhere.
    fn with_leader() -> Self {
        let conf = ConfState::with_voters(1..=GROUP_NODES);
        let nodes = (1..=GROUP_NODES)
            .map(|id| {
                RawNode::new(Config::new(id), MemStorage::new(conf.clone())).expect("valid config")
            })
            .collect();
        let mut group = Self { nodes, outbox: Vec::new() };
        group.nodes[0].campaign();
        group.pump();
        assert_eq!(group.nodes[0].role(), Role::Leader, "node 1 won its election");
        // A follower may learn the no-op's commit only from a heartbeat: tick the leader (and
        // only it, so no follower campaigns) until every replica has applied the no-op.
        let committed = group.nodes[0].committed();
        for _ in 0..HEARTBEAT_TICKS_MAX {
            if group.nodes.iter().all(|node| node.status().applied == committed) {
                return group;
            }
            group.nodes[0].tick();
            group.pump();
        }
        panic!("the followers did not apply the leader's no-op");
    }

    fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        &mut self.nodes[(id.0 - 1) as usize]
    }

    /// Handles `Ready`s and delivers messages until the group is quiet; returns the entries
    /// applied across all replicas.
    fn pump(&mut self) -> usize {
        let mut applied = 0;
        for _ in 0..PUMP_STEPS_MAX {
            for node in &mut self.nodes {
                while node.has_ready() {
                    applied += handle_ready(node, &mut self.outbox);
                }
            }
            if self.outbox.is_empty() {
                return applied;
            }
            for message in std::mem::take(&mut self.outbox) {
                self.node_mut(message.to).step(message).expect("message for a group member");
            }
        }
        panic!("the group is not quiet after {PUMP_STEPS_MAX} steps");
    }

    /// Proposes `batch` entries and runs the group until all are applied on every replica.
    fn commit_round(&mut self, batch: &[Bytes]) {
        let last = self.nodes[0].propose_batch(batch.to_vec()).expect("node 1 leads");
        let applied = self.pump();
        assert_eq!(applied, batch.len() * self.nodes.len(), "every replica applied the batch");
        debug_assert!(self.nodes.iter().all(|node| node.status().applied == last));
        for node in &mut self.nodes {
            compact_if_long(node);
        }
    }
}

fn commit_round(c: &mut Criterion) {
    let mut bench_group = c.benchmark_group("commit_round");
    for batch_entries in [1_usize, 16, 256] {
        let batch = vec![payload(); batch_entries];
        let mut group = Group::with_leader();
        bench_group.throughput(Throughput::Elements(batch_entries as u64));
        bench_group.bench_with_input(
            BenchmarkId::from_parameter(batch_entries),
            &batch,
            |b, batch| b.iter(|| group.commit_round(batch)),
        );
    }
    bench_group.finish();
}

/// A follower (node 2 of three) that node 1 leads in term 1, fed Appends built ahead of time.
fn follower_append(c: &mut Criterion) {
    let leader = NodeId(1);
    let term = Term(1);
    let conf = ConfState::with_voters(1..=GROUP_NODES);
    let mut follower = RawNode::new(Config::new(2), MemStorage::new(conf)).expect("valid config");
    let mut outbox = Vec::new();
    let data = payload();
    // Index of the last entry sent so far: each Append carries the next 64 and commits the
    // previous ones, as a pipelining leader's would.
    let mut last_sent = LogIndex(0);
    let mut next_append = || {
        let prev_index = last_sent;
        let entries: Vec<Entry> = (1..=FOLLOWER_APPEND_ENTRIES)
            .map(|i| Entry {
                term,
                index: LogIndex(prev_index.0 + i),
                kind: EntryKind::Normal,
                data: data.clone(),
            })
            .collect();
        last_sent = LogIndex(prev_index.0 + FOLLOWER_APPEND_ENTRIES);
        let prev_term = if prev_index == LogIndex(0) { Term(0) } else { term };
        let body = MessageBody::Append { prev_index, prev_term, entries, commit: prev_index };
        Message { from: leader, to: NodeId(2), term, body }
    };
    let mut group = c.benchmark_group("follower_append");
    group.throughput(Throughput::Elements(FOLLOWER_APPEND_ENTRIES));
    group.bench_function(BenchmarkId::from_parameter(FOLLOWER_APPEND_ENTRIES), |b| {
        b.iter_batched(
            &mut next_append,
            |append| {
                follower.step(append).expect("an append for this follower");
                while follower.has_ready() {
                    handle_ready(&mut follower, &mut outbox);
                }
                assert_eq!(outbox.len(), 1, "one AppendResponse per Append");
                outbox.clear();
                compact_if_long(&mut follower);
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// A leader (node 1 of three) with rounds of `batch_entries` entries replicated to both
/// followers; the measured part steps the followers' acknowledgements of one round.
fn leader_append_responses(c: &mut Criterion) {
    let mut bench_group = c.benchmark_group("leader_append_responses");
    for batch_entries in [1_usize, 64] {
        let batch = vec![payload(); batch_entries];
        let mut group = Group::with_leader();
        // The followers' logs stay as they are: the leader only needs their answers.
        let leader = RefCell::new(group.nodes.swap_remove(0));
        let outbox = RefCell::new(Vec::new());
        // Proposes a round and sends its appends (dropped); returns the acknowledgements.
        let propose_round = || {
            let mut leader = leader.borrow_mut();
            let mut outbox = outbox.borrow_mut();
            let index = leader.propose_batch(batch.clone()).expect("node 1 leads");
            while leader.has_ready() {
                handle_ready(&mut leader, &mut outbox);
            }
            let sent = outbox.len();
            outbox.clear();
            assert_eq!(sent, 2, "one Append per follower");
            let term = leader.term();
            [NodeId(2), NodeId(3)].map(|from| Message {
                from,
                to: NodeId(1),
                term,
                body: MessageBody::AppendResponse { index, reject: None },
            })
        };
        bench_group.throughput(Throughput::Elements(batch_entries as u64));
        bench_group.bench_function(BenchmarkId::from_parameter(batch_entries), |b| {
            b.iter_batched(
                &propose_round,
                |responses| {
                    let mut leader = leader.borrow_mut();
                    let mut outbox = outbox.borrow_mut();
                    for response in responses {
                        leader.step(response).expect("a response for the leader");
                    }
                    let mut applied = 0;
                    while leader.has_ready() {
                        applied += handle_ready(&mut leader, &mut outbox);
                    }
                    assert_eq!(applied, batch_entries, "the round committed");
                    outbox.clear();
                    compact_if_long(&mut leader);
                },
                BatchSize::NumIterations(LEADER_ROUNDS_PER_BATCH),
            );
        });
    }
    bench_group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = commit_round, follower_append, leader_append_responses
}
criterion_main!(benches);
