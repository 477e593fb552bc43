//! Membership changes under faults at the store level: randomized runs of real stores with
//! joins, learners, promotions and removals (removed replicas keep running), crashes that lose
//! unsynced writes, disks replaced (a member restarted on an empty engine, brought back by the
//! membership planner as a node does, `raftstore::membership`), stalls and partitions, checking
//! that no read (lease or ReadIndex) returns a value older than one acknowledged before the
//! read was issued.
//!
//! `MOSAIC_KV_MEMBERSHIP_SEEDS=N` runs N seeds (default 50) from
//! `MOSAIC_KV_MEMBERSHIP_FIRST_SEED`; a failure names its seeds.

mod harness;

use std::collections::BTreeMap;

use harness::{Cluster, Slot, take};
use mosaic_engine::GroupId;
use mosaic_raft::{ConfChange, ConfState, NodeId, SplitMix64};
use mosaic_raftstore::membership::{LeaderView, MembershipJob, MembershipStep};
use mosaic_raftstore::{Consistency, ReadOutput, StoreConfig, StoreMsg};
use mosaic_shardkv::WriteKind;

const GROUP: GroupId = GroupId(1);
const KEYS: [&str; 3] = ["a", "b", "c"];

/// True with a chance of `per_mille` in 1,000.
fn chance(rng: &mut SplitMix64, per_mille: u64) -> bool {
    rng.below(1000) < per_mille
}

type WriteSlot = Slot<mosaic_raftstore::Result<mosaic_shardkv::WriteOutcome>>;
type ReadSlot = Slot<ReadOutput<Option<mosaic_shardkv::Versioned>>>;
type ConfSlot = Slot<ConfState>;

fn run(seed: u64) {
    let config = StoreConfig {
        seed,
        compact_log_after_entries: 10 + seed % 20,
        compact_log_keep_entries: 2 + seed % 5,
        ..StoreConfig::default()
    };
    let mut cluster = Cluster::with_config(5, config);
    let mut rng = SplitMix64::new(seed.wrapping_mul(7919));
    cluster.create_group(GROUP, &[1, 2, 3]);
    let mut next_value: u64 = 1;
    let mut acked: BTreeMap<&str, u64> = BTreeMap::new();
    let mut writes: Vec<(&str, u64, WriteSlot)> = Vec::new();
    let mut reads: Vec<(&str, u64, NodeId, Consistency, ReadSlot)> = Vec::new();
    let mut changes: Vec<ConfSlot> = Vec::new();
    let mut joined: Vec<NodeId> = Vec::new();
    let mut down: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut stalled: BTreeMap<NodeId, u64> = BTreeMap::new();
    // The member whose disk was replaced, and the job bringing it back (one at a time).
    let mut rejoin: Option<(NodeId, MembershipJob)> = None;
    let (mut wiped, mut rejoined) = (0, 0);
    let mut served = 0;
    for step in 0..600u64 {
        // Restarts and resumes due.
        down.retain(|node, at| {
            let due = *at <= step;
            if due {
                cluster.restart(*node);
            }
            !due
        });
        stalled.retain(|node, at| {
            let due = *at <= step;
            if due {
                cluster.resume(*node);
            }
            !due
        });
        let leader = cluster.leader(GROUP);
        if let Some(leader) = leader
            && chance(&mut rng, 400)
        {
            let key = KEYS[rng.below(3) as usize];
            let value = next_value;
            next_value += 1;
            let write = cluster.write(WriteKind::Put, 1 + rng.below(3), key, &value.to_string());
            writes.push((key, value, cluster.propose(leader, GROUP, write)));
        }
        if chance(&mut rng, 500) {
            let up = cluster.up_nodes();
            let node = match leader {
                Some(leader) if chance(&mut rng, 700) && cluster.is_up(leader) => leader,
                _ => up[rng.below(up.len() as u64) as usize],
            };
            if cluster.store(node).peer(GROUP).is_some() {
                let key = KEYS[rng.below(3) as usize];
                let consistency = if chance(&mut rng, 600) {
                    Consistency::Lease
                } else {
                    Consistency::Linearizable
                };
                let floor = acked.get(key).copied().unwrap_or(0);
                reads.push((
                    key,
                    floor,
                    node,
                    consistency,
                    cluster.read(node, GROUP, key, consistency),
                ));
            }
        }
        if let Some(leader) = leader
            && rejoin.is_none()
            && chance(&mut rng, 15)
        {
            let conf = cluster.store(leader).peer(GROUP).unwrap().status().conf_state;
            let members: Vec<NodeId> = conf
                .voters
                .iter()
                .chain(&conf.learners)
                .copied()
                .filter(|node| {
                    *node != leader && cluster.is_up(*node) && !stalled.contains_key(node)
                })
                .collect();
            if !members.is_empty() {
                let node = members[rng.below(members.len() as u64) as usize];
                cluster.crash(node, 0);
                cluster.wipe(node);
                cluster.restart(node);
                wiped += 1;
                rejoin = Some((node, MembershipJob::add(node).lost(node)));
            }
        }
        if let Some(leader) = leader
            && let Some((_, job)) = rejoin.as_mut()
            && chance(&mut rng, 300)
            && cluster.is_up(leader)
        {
            let status = cluster.store(leader).peer(GROUP).unwrap().status();
            if let Some(view) = LeaderView::of_leader(&status) {
                match job.next(&view) {
                    MembershipStep::Join { node: joining, leader } if cluster.is_up(joining) => {
                        cluster.join_group(joining, GROUP, Some(leader));
                        job.joined(joining);
                    }
                    MembershipStep::Join { .. } | MembershipStep::Wait => {}
                    MembershipStep::Change { change, unchanged_since } => {
                        let (result, callback) = harness::slot();
                        let unchanged_since = Some(unchanged_since);
                        let change = StoreMsg::ChangeMembership {
                            group: GROUP,
                            change,
                            unchanged_since,
                            callback,
                        };
                        cluster.send(leader, change);
                        changes.push(result);
                    }
                    MembershipStep::Done => {
                        rejoin = None;
                        rejoined += 1;
                    }
                }
            }
        }
        if let Some(leader) = leader
            && rejoin.is_none()
            && chance(&mut rng, 40)
        {
            let conf = cluster.store(leader).peer(GROUP).unwrap().status().conf_state;
            let change = match rng.below(3) {
                0 if joined.len() < 2 => {
                    let node = NodeId(4 + joined.len() as u64);
                    if cluster.is_up(node) {
                        cluster.join_group(node, GROUP, None);
                        joined.push(node);
                        Some(ConfChange::AddLearner(node))
                    } else {
                        None
                    }
                }
                1 if !conf.learners.is_empty() => {
                    let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
                    Some(ConfChange::AddVoter(learners[rng.below(learners.len() as u64) as usize]))
                }
                2 if conf.voters.len() > 3 => {
                    let voters: Vec<NodeId> = conf.voters.iter().copied().collect();
                    Some(ConfChange::RemoveNode(voters[rng.below(voters.len() as u64) as usize]))
                }
                _ => None,
            };
            if let Some(change) = change {
                let (result, callback) = harness::slot();
                let unchanged_since = None;
                let change =
                    StoreMsg::ChangeMembership { group: GROUP, change, unchanged_since, callback };
                cluster.send(leader, change);
                changes.push(result);
            }
        }
        if chance(&mut rng, 25) {
            let up = cluster.up_nodes();
            if up.len() > 3 {
                let node = up[rng.below(up.len() as u64) as usize];
                cluster.crash(node, rng.below(3) as usize);
                down.insert(node, step + 1 + rng.below(30));
            }
        }
        if chance(&mut rng, 20) {
            let up = cluster.up_nodes();
            let node = up[rng.below(up.len() as u64) as usize];
            if let std::collections::btree_map::Entry::Vacant(entry) = stalled.entry(node) {
                cluster.stall(node);
                if chance(&mut rng, 500) {
                    cluster.isolate(node);
                }
                entry.insert(step + 1 + rng.below(40));
            }
        }
        if chance(&mut rng, 25) {
            let node = NodeId(1 + rng.below(5));
            cluster.isolate(node);
        }
        if chance(&mut rng, 40) {
            cluster.heal();
        }
        cluster.tick();
        // Answers.
        writes.retain(|(key, value, slot)| match take(slot) {
            Some(Ok(Ok(_))) => {
                let entry = acked.entry(key).or_default();
                *entry = (*entry).max(*value);
                false
            }
            Some(_) => false,
            None => true,
        });
        reads.retain(|(key, floor, node, consistency, slot)| match take(slot) {
            Some(Ok(read)) => {
                let value: u64 = read
                    .output
                    .map_or(0, |v| String::from_utf8(v.value.to_vec()).unwrap().parse().unwrap());
                assert!(
                    value >= *floor,
                    "seed {seed} step {step}: {consistency:?} read of {key} on {node} returned \
                     {value}, but {floor} was acknowledged before the read was issued"
                );
                served += 1;
                false
            }
            Some(Err(_)) => false,
            None => true,
        });
        changes.retain(|slot| take(slot).is_none());
    }
    // Liveness: heal, restart everything, and a write must go through.
    cluster.heal();
    for node in stalled.keys().copied().collect::<Vec<_>>() {
        cluster.resume(node);
    }
    for node in down.keys().copied().collect::<Vec<_>>() {
        cluster.restart(node);
    }
    cluster.must_put(GROUP, "final", "1");
    let value = cluster.must_get(GROUP, "final");
    assert_eq!(value.as_deref(), Some("1"), "seed {seed}");
    eprintln!(
        "seed {seed}: reads served {served}, joined {joined:?}, disks replaced {wiped} \
         (rejoined {rejoined}), acked {acked:?}"
    );
}

#[test]
fn membership_changes_crashes_replaced_disks_and_stalls_serve_no_stale_read() {
    let seeds: u64 =
        std::env::var("MOSAIC_KV_MEMBERSHIP_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let first: u64 = std::env::var("MOSAIC_KV_MEMBERSHIP_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut failures = Vec::new();
    for seed in first..first + seeds {
        if std::panic::catch_unwind(|| run(seed)).is_err() {
            failures.push(seed);
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}
