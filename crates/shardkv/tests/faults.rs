//! Randomized fault runs of replicated KV groups: clients append unique tokens while nodes
//! are partitioned, crash (losing unsynced writes) and restart. Afterwards, with faults
//! healed, every key's value is checked:
//! - a token whose append was acknowledged appears exactly once;
//! - a token whose append was refused as definitely not applied does not appear;
//! - any other token (outcome unknown, retried with the same session sequence) appears at most
//!   once;
//! - if append A was acknowledged before append B was first sent, A's token comes first
//!   (appends to one key are linearizable);
//! - every replica has applied the same value.
//!
//! Logs compact every few dozen entries, so lagging replicas catch up by snapshots.
//!
//! `MOSAIC_KV_FAULT_SEEDS=N` runs N seeds (default 24), `MOSAIC_KV_FAULT_SEED=S` replays seed S.

mod harness;

use std::collections::BTreeMap;

use harness::{Cluster, Slot, take};
use mosaic_engine::{ClientId, GroupId};
use mosaic_raft::{NodeId, SplitMix64};
use mosaic_raftstore::{Consistency, Error, StoreConfig};
use mosaic_shardkv::{KvWrite, WriteKind, WriteOutcome};

const NODES: u64 = 5;
const GROUPS: [(GroupId, [u64; 3]); 2] = [(GroupId(1), [1, 2, 3]), (GroupId(2), [3, 4, 5])];
const KEYS: [&str; 3] = ["a", "b", "c"];
const STEPS: usize = 400;
const RETRIES_MAX: u32 = 6;
const LIVENESS_TICKS_MAX: usize = 300;

/// What is known about one append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    InFlight,
    Acknowledged { at_step: usize },
    NotApplied,
    Unknown,
}

struct Op {
    group: GroupId,
    write: KvWrite,
    token: String,
    sent_at_step: usize,
    outcome: Outcome,
    retries: u32,
    slot: Option<Slot<mosaic_raftstore::Result<WriteOutcome>>>,
}

fn run(seed: u64) {
    let mut rng = SplitMix64::new(seed);
    // Logs compact often, so replicas that were down or cut off catch up by snapshots.
    let config = StoreConfig {
        seed,
        compact_log_after_entries: 30,
        compact_log_keep_entries: 10,
        ..StoreConfig::default()
    };
    let mut cluster = Cluster::with_config(NODES, config);
    for (group, members) in GROUPS {
        cluster.create_group(group, &members);
    }
    let mut ops: Vec<Op> = Vec::new();
    for step in 0..STEPS {
        match rng.below(20) {
            0..=7 => {
                let (group, members) = GROUPS[rng.below(2) as usize];
                let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                let token = format!("[{}]", ops.len());
                let write = KvWrite {
                    kind: WriteKind::Append,
                    client: ClientId(ops.len() as u64 + 1),
                    seq: 1,
                    shard: harness::shard_of(key),
                    key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                    value: bytes::Bytes::copy_from_slice(token.as_bytes()),
                    expects_session: false,
                    condition: None,
                };
                let node = NodeId(members[rng.below(3) as usize]);
                let mut op = Op {
                    group,
                    write,
                    token,
                    sent_at_step: step,
                    outcome: Outcome::InFlight,
                    retries: 0,
                    slot: None,
                };
                send(&mut cluster, &mut op, node);
                ops.push(op);
            }
            8..=13 => cluster.tick(),
            14 => {
                let node = NodeId(rng.below(NODES) + 1);
                cluster.isolate(node);
            }
            15 => cluster.heal(),
            16 => {
                let node = NodeId(rng.below(NODES) + 1);
                if cluster.is_up(node) && cluster.up_nodes().len() > 3 {
                    let kept = rng.below(4) as usize;
                    cluster.crash(node, kept);
                }
            }
            _ => {
                let down: Vec<NodeId> =
                    (1..=NODES).map(NodeId).filter(|n| !cluster.is_up(*n)).collect();
                if !down.is_empty() {
                    let node = down[rng.below(down.len() as u64) as usize];
                    cluster.restart(node);
                }
            }
        }
        collect(&mut cluster, &mut ops, step, &mut rng, RETRIES_MAX);
    }
    // Liveness: with every fault healed, every append must complete (retried with its session
    // sequence, so it still applies at most once).
    cluster.heal();
    for node in 1..=NODES {
        if !cluster.is_up(NodeId(node)) {
            cluster.restart(NodeId(node));
        }
    }
    for op in &mut ops {
        if op.slot.is_none() && !matches!(op.outcome, Outcome::Acknowledged { .. }) {
            let (_, members) = GROUPS.iter().find(|(g, _)| *g == op.group).expect("known");
            send(&mut cluster, op, NodeId(members[0]));
        }
    }
    for round in 0..LIVENESS_TICKS_MAX {
        cluster.tick();
        collect(&mut cluster, &mut ops, STEPS + round, &mut rng, u32::MAX);
        if ops.iter().all(|op| matches!(op.outcome, Outcome::Acknowledged { .. })) {
            break;
        }
    }
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|op| f(&op.outcome)).count();
    let acknowledged = count(|o| matches!(o, Outcome::Acknowledged { .. }));
    let unknown = count(|o| matches!(o, Outcome::Unknown | Outcome::InFlight));
    let snapshots: u64 =
        (1..=NODES).map(|n| cluster.store(NodeId(n)).stats().snapshots_installed).sum();
    eprintln!(
        "seed {seed}: {} appends: {acknowledged} acknowledged, {} refused, {unknown} unknown; \
         {snapshots} snapshots installed",
        ops.len(),
        count(|o| *o == Outcome::NotApplied),
    );
    assert_eq!(acknowledged, ops.len(), "seed {seed}: every append completes once faults stop");
    check(seed, &mut cluster, &ops);
}

/// Sends (or re-sends, with the same session sequence) an append to `node`.
fn send(cluster: &mut Cluster, op: &mut Op, node: NodeId) {
    if cluster.is_up(node) {
        op.slot = Some(cluster.propose(node, op.group, op.write.clone()));
    } else {
        op.slot = None;
        op.outcome = merge(op.outcome, Outcome::InFlight);
    }
}

fn merge(old: Outcome, new: Outcome) -> Outcome {
    match (old, new) {
        // Once something may have been applied, a later refusal does not undo it.
        (Outcome::Unknown, Outcome::NotApplied | Outcome::InFlight) => Outcome::Unknown,
        (_, new) => new,
    }
}

/// Takes answers; retries appends that were refused or abandoned, at the hinted leader.
fn collect(
    cluster: &mut Cluster,
    ops: &mut [Op],
    step: usize,
    rng: &mut SplitMix64,
    retries_max: u32,
) {
    for op in ops.iter_mut() {
        let answer = match &op.slot {
            Some(slot) => take(slot),
            None if op.outcome == Outcome::InFlight || op.outcome == Outcome::Unknown => {
                // The node it was sent to went down: the outcome is unknown; retry.
                Some(Err(Error::Stopped))
            }
            None => continue,
        };
        let Some(answer) = answer else { continue };
        op.slot = None;
        let hint = match answer {
            Ok(Ok(_)) => {
                op.outcome = Outcome::Acknowledged { at_step: step };
                continue;
            }
            Ok(Err(refusal)) => panic!("an append was refused by the state machine: {refusal}"),
            Err(Error::NotLeader { leader, .. }) => {
                op.outcome = merge(op.outcome, Outcome::NotApplied);
                leader
            }
            Err(error) if error.is_definitely_not_applied() => {
                op.outcome = merge(op.outcome, Outcome::NotApplied);
                None
            }
            Err(_) => {
                op.outcome = Outcome::Unknown;
                None
            }
        };
        if op.retries < retries_max {
            op.retries += 1;
            let members = GROUPS.iter().find(|(g, _)| *g == op.group).expect("known").1;
            let node = hint.unwrap_or_else(|| NodeId(members[rng.below(3) as usize]));
            send(cluster, op, node);
        }
    }
}

fn check(seed: u64, cluster: &mut Cluster, ops: &[Op]) {
    let context = format!("seed {seed} (replay: MOSAIC_KV_FAULT_SEED={seed})");
    for (group, members) in GROUPS {
        for key in KEYS {
            let value = read_until_answered(cluster, group, key, &context).unwrap_or_default();
            let mut positions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for op in ops.iter().filter(|op| op.group == group && op.write.key == key.as_bytes()) {
                let found: Vec<usize> = value.match_indices(&op.token).map(|(i, _)| i).collect();
                match op.outcome {
                    Outcome::Acknowledged { .. } => assert_eq!(
                        found.len(),
                        1,
                        "{context}: acknowledged {} appears {} times in {group}/{key} = {value}",
                        op.token,
                        found.len()
                    ),
                    Outcome::NotApplied => assert!(
                        found.is_empty(),
                        "{context}: {} was refused but appears in {group}/{key} = {value}",
                        op.token
                    ),
                    Outcome::Unknown | Outcome::InFlight => assert!(
                        found.len() <= 1,
                        "{context}: {} appears {} times in {group}/{key} = {value}",
                        op.token,
                        found.len()
                    ),
                }
                positions.insert(&op.token, found);
            }
            check_real_time_order(ops, group, key, &positions, &context);
            for _ in 0..10 {
                cluster.tick();
            }
            for member in members {
                let applied = cluster.applied_value(NodeId(member), group, key).unwrap_or_default();
                assert_eq!(applied, value, "{context}: node {member} {group}/{key}");
            }
        }
    }
}

fn check_real_time_order(
    ops: &[Op],
    group: GroupId,
    key: &str,
    positions: &BTreeMap<&str, Vec<usize>>,
    context: &str,
) {
    let acknowledged: Vec<(&Op, usize, usize)> = ops
        .iter()
        .filter(|op| op.group == group && op.write.key == key.as_bytes())
        .filter_map(|op| match op.outcome {
            Outcome::Acknowledged { at_step } => Some((op, at_step, positions[&op.token[..]][0])),
            _ => None,
        })
        .collect();
    for (a, a_acked, a_position) in &acknowledged {
        for (b, _, b_position) in &acknowledged {
            if *a_acked < b.sent_at_step {
                assert!(
                    a_position < b_position,
                    "{context}: {} was acknowledged before {} was sent, but comes after it",
                    a.token,
                    b.token
                );
            }
        }
    }
}

fn read_until_answered(
    cluster: &mut Cluster,
    group: GroupId,
    key: &str,
    context: &str,
) -> Option<String> {
    for _ in 0..50 {
        let leader = cluster.must_elect(group);
        let slot = cluster.read(leader, group, key, Consistency::Linearizable);
        if let Some(Ok(read)) = cluster.wait(&slot, 20) {
            return read
                .output
                .map(|stored| String::from_utf8(stored.value.to_vec()).expect("tokens are text"));
        }
    }
    panic!("{context}: no linearizable read of {group}/{key} was answered");
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("MOSAIC_KV_FAULT_SEED") {
        return vec![seed.parse().expect("MOSAIC_KV_FAULT_SEED is a number")];
    }
    let count = std::env::var("MOSAIC_KV_FAULT_SEEDS")
        .map(|n| n.parse().expect("MOSAIC_KV_FAULT_SEEDS is a number"))
        .unwrap_or(24);
    (0..count).collect()
}

#[test]
fn appends_under_partitions_and_crashes_stay_linearizable_and_at_most_once() {
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| run(seed));
        if let Err(panic) = result {
            eprintln!("fault run failed: seed {seed}; replay with MOSAIC_KV_FAULT_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}
