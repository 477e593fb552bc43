//! The store tested through a small state machine of its own (`support::Counters`), on the
//! deterministic in-memory cluster of `mosaic_raftstore::testing`: group commit, proposals
//! answered whatever becomes of them, catch-up by snapshot, log compaction, recovery from a
//! crash of every node, and destroyed replicas.
//!
//! Run with `cargo test -p mosaic-raftstore --features testing`.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use mosaic_engine::{GroupCursor, GroupId, ShardId, ShardRecord};
use mosaic_raft::{LogIndex, NodeId, SplitMix64, Storage};
use mosaic_raftstore::testing::{self, Slot, take};
use mosaic_raftstore::{Consistency, Error, GroupStorage, ShownOut, StoreConfig, StoreMsg};
use support::{Command, Counters};

type Cluster = testing::Cluster<Counters>;

const GROUP: GroupId = GroupId(1);

fn key(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}

/// Proposes `command` once at the leader and waits for its answer; panics unless it was
/// applied. (Not retried: an `Add` retried after an unknown outcome could apply twice.)
fn must_apply(cluster: &mut Cluster, group: GroupId, command: Command) -> u64 {
    let leader = cluster.must_elect(group);
    let slot = cluster.propose(leader, group, command.clone());
    match cluster.wait(&slot, 50) {
        Some(Ok(value)) => value,
        other => panic!("group {group}: {command:?} at node {leader} answered {other:?}"),
    }
}

/// A linearizable read of the counter `name` at the leader, retried until answered.
fn must_get(cluster: &mut Cluster, group: GroupId, name: &str) -> Option<u64> {
    for _ in 0..20 {
        let leader = cluster.must_elect(group);
        let slot = cluster.read(leader, group, key(name), Consistency::Linearizable);
        if let Some(Ok(read)) = cluster.wait(&slot, 50) {
            return read.output;
        }
        cluster.tick();
    }
    panic!("group {group}: no read of {name} was answered");
}

/// What `node` has applied of the counter `name` (a stale read, answered at once).
fn applied_value(cluster: &mut Cluster, node: NodeId, group: GroupId, name: &str) -> Option<u64> {
    let slot = cluster.read(node, group, key(name), Consistency::Stale);
    match take(&slot) {
        Some(Ok(read)) => read.output,
        other => panic!("node {node}: a stale read of {group}/{name} answered {other:?}"),
    }
}

/// Every record of `group` in `node`'s engine, every shard, in scan order.
fn group_records(
    cluster: &mut Cluster,
    node: NodeId,
    group: GroupId,
) -> Vec<(ShardId, ShardRecord)> {
    let snapshot = cluster.store(node).engine().snapshot();
    let mut records = Vec::new();
    let mut cursor = GroupCursor::Start;
    loop {
        let chunk = snapshot
            .scan_group_chunk(group, &cursor, 1 << 20)
            .unwrap_or_else(|error| panic!("node {node}: scan {group}: {error}"));
        records.extend(chunk.records);
        match chunk.next {
            Some(next) => cursor = next,
            None => return records,
        }
    }
}

/// Compaction after few entries, so tests reach snapshots quickly.
fn compacting_config(seed: u64) -> StoreConfig {
    StoreConfig {
        seed,
        compact_log_after_entries: 20,
        compact_log_keep_entries: 5,
        ..StoreConfig::default()
    }
}

/// A member of `GROUP` (on nodes 1 to 3) other than `node`.
fn other_than(node: NodeId) -> NodeId {
    NodeId(if node.0 == 3 { 2 } else { 3 })
}

#[test]
fn busy_groups_on_one_node_share_one_synced_write() {
    let mut cluster = Cluster::new(1, 2);
    let node = NodeId(1);
    let groups: Vec<GroupId> = (1..=10).map(GroupId).collect();
    for group in &groups {
        cluster.create_group(*group, &[1]);
        cluster.must_elect(*group);
    }
    cluster.settle();
    let before = cluster.store(node).stats();
    let mut slots = Vec::new();
    for group in &groups {
        let (slot, callback) = testing::slot();
        let proposal = Command::add("hits", group.0);
        let propose = StoreMsg::Propose { group: *group, proposal, callback };
        cluster.store(node).handle(propose).expect("handle");
        slots.push((*group, slot));
    }
    cluster.store(node).process().expect("process");
    let after = cluster.store(node).stats();
    assert_eq!(after.synced_writes - before.synced_writes, 1, "{before:?} -> {after:?}");
    assert!(after.readies - before.readies >= 10, "every group was busy: {before:?} -> {after:?}");
    for (group, slot) in &slots {
        let answer = take(slot).unwrap_or_else(|| panic!("{group}: unanswered after process"));
        assert_eq!(answer, Ok(group.0), "{group}");
    }
}

#[test]
fn a_proposal_on_a_follower_is_refused_with_the_leader_hint() {
    let mut cluster = Cluster::new(3, 10);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let leader = cluster.must_elect(GROUP);
    cluster.tick();
    let follower = other_than(leader);
    let slot = cluster.propose(follower, GROUP, Command::set("x", 1));
    match take(&slot) {
        Some(Err(Error::NotLeader { group, leader: hint })) => {
            assert_eq!((group, hint), (GROUP, Some(leader)));
        }
        other => panic!("expected NotLeader at once, got {other:?}"),
    }
}

/// A leader cut off from its group holds proposals it cannot commit; once it steps down (it
/// loses its quorum, or hears of the new leader) each is answered with an error, and none is
/// applied: the new leader's entries replace them.
#[test]
fn proposals_at_a_leader_cut_off_are_answered_with_an_error_and_never_applied() {
    let mut cluster = Cluster::new(3, 21);
    cluster.create_group(GROUP, &[1, 2, 3]);
    must_apply(&mut cluster, GROUP, Command::set("x", 1));
    let old = cluster.must_elect(GROUP);
    cluster.isolate(old);
    let cut_off: Vec<Slot<u64>> =
        (0..3).map(|_| cluster.propose(old, GROUP, Command::add("x", 100))).collect();
    for _ in 0..40 {
        cluster.tick();
    }
    let new = cluster.must_elect(GROUP);
    assert_ne!(new, old);
    assert_eq!(must_apply(&mut cluster, GROUP, Command::add("x", 1)), 2);
    cluster.heal();
    for _ in 0..20 {
        cluster.tick();
    }
    for slot in &cut_off {
        match take(slot) {
            Some(Err(Error::ProposalAbandoned { .. } | Error::ProposalOverwritten { .. })) => {}
            other => panic!("a proposal of the cut-off leader was answered {other:?}"),
        }
    }
    assert_eq!(must_get(&mut cluster, GROUP, "x"), Some(2));
    for node in [1, 2, 3].map(NodeId) {
        assert_eq!(applied_value(&mut cluster, node, GROUP, "x"), Some(2), "node {node}");
    }
}

/// A read says whether its replica's own leadership confirmed and served it: the leader's
/// linearizable and lease reads name the term it leads in; a follower's linearizable read (a
/// ReadIndex the leader confirmed for it) and stale reads name none; a new leader's reads
/// name its own, later term.
#[test]
fn a_read_names_the_leadership_that_confirmed_and_served_it() {
    let mut cluster = Cluster::new(3, 23);
    cluster.create_group(GROUP, &[1, 2, 3]);
    must_apply(&mut cluster, GROUP, Command::set("x", 1));
    let led = |cluster: &mut Cluster, node: NodeId, consistency: Consistency| {
        let slot = cluster.read(node, GROUP, key("x"), consistency);
        match cluster.wait(&slot, 50) {
            Some(Ok(read)) => {
                assert_eq!(read.output, Some(1), "node {node}, {consistency:?}");
                read.served_by.led()
            }
            other => panic!("node {node}: a {consistency:?} read answered {other:?}"),
        }
    };
    let leader = cluster.must_elect(GROUP);
    let term = led(&mut cluster, leader, Consistency::Linearizable).expect("the leader's read");
    assert_eq!(led(&mut cluster, leader, Consistency::Lease), Some(term));
    assert_eq!(led(&mut cluster, leader, Consistency::Stale), None);
    let follower = [1, 2, 3].map(NodeId).into_iter().find(|node| *node != leader).unwrap();
    assert_eq!(led(&mut cluster, follower, Consistency::Linearizable), None);
    assert_eq!(led(&mut cluster, follower, Consistency::Stale), None);

    cluster.isolate(leader);
    for _ in 0..40 {
        cluster.tick();
    }
    let new = cluster.must_elect(GROUP);
    assert_ne!(new, leader);
    let later = led(&mut cluster, new, Consistency::Linearizable).expect("the new leader's read");
    assert!(later > term, "{later} after {term}");
}

#[test]
fn requests_waiting_at_a_node_that_crashes_are_answered_stopped() {
    let mut cluster = Cluster::new(3, 22);
    cluster.create_group(GROUP, &[1, 2, 3]);
    must_apply(&mut cluster, GROUP, Command::set("x", 1));
    let leader = cluster.must_elect(GROUP);
    cluster.isolate(leader);
    let proposal = cluster.propose(leader, GROUP, Command::add("x", 1));
    let read = cluster.read(leader, GROUP, key("x"), Consistency::Linearizable);
    cluster.settle();
    assert!(take(&proposal).is_none(), "a proposal was answered without a quorum");
    assert!(take(&read).is_none(), "a read was answered without a quorum");
    cluster.crash(leader, 0);
    assert!(matches!(take(&proposal), Some(Err(Error::Stopped))));
    assert!(matches!(take(&read), Some(Err(Error::Stopped))));
}

/// Seeds of [`fault_run`].
const FAULT_SEEDS: u64 = 8;

/// One seeded run: proposals of `Add(1)` to a counter of their own, at random nodes, while
/// nodes are cut off, crash (keeping a few unsynced writes) and restart; then, faults healed,
/// every proposal must have been answered, and its counter shows it applied at most once: 1
/// after an acknowledgement, nothing after a refusal that says it was not applied, 0 or 1
/// after an unknown outcome. Returns how many of each kind of answer came.
fn fault_run(seed: u64) -> [usize; 3] {
    let mut rng = SplitMix64::new(seed);
    let mut cluster = Cluster::new(3, seed);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let mut proposals: Vec<(String, Slot<u64>)> = Vec::new();
    for _ in 0..300 {
        let node = NodeId(1 + rng.below(3));
        match rng.below(10) {
            0..=3 if cluster.is_up(node) => {
                let name = format!("p{}", proposals.len());
                let slot = cluster.propose(node, GROUP, Command::add(&name, 1));
                proposals.push((name, slot));
            }
            4 => cluster.isolate(node),
            5 => cluster.heal(),
            6 if cluster.up_nodes().len() == 3 => cluster.crash(node, rng.below(3) as usize),
            7 if !cluster.is_up(node) => cluster.restart(node),
            _ => cluster.tick(),
        }
    }
    cluster.heal();
    for node in [1, 2, 3].map(NodeId) {
        if !cluster.is_up(node) {
            cluster.restart(node);
        }
    }
    for _ in 0..50 {
        cluster.tick();
    }
    let mut counts = [0; 3];
    for (name, slot) in &proposals {
        let context = format!("seed {seed}: the proposal to {name}");
        let answer = take(slot).unwrap_or_else(|| panic!("{context} was never answered"));
        let value = must_get(&mut cluster, GROUP, name);
        match answer {
            Ok(applied) => {
                assert_eq!((applied, value), (1, Some(1)), "{context} was acknowledged");
                counts[0] += 1;
            }
            Err(error) if error.is_definitely_not_applied() => {
                assert_eq!(value, None, "{context} was refused: {error}");
                counts[1] += 1;
            }
            Err(error) => {
                assert!(matches!(value, None | Some(1)), "{context} ({error}) left {value:?}");
                counts[2] += 1;
            }
        }
    }
    counts
}

#[test]
fn under_partitions_and_crashes_every_proposal_is_answered_and_applied_at_most_once() {
    let mut totals = [0; 3];
    for seed in 0..FAULT_SEEDS {
        let counts = fault_run(seed);
        for (total, count) in totals.iter_mut().zip(counts) {
            *total += count;
        }
    }
    // [acknowledged, refused as not applied, outcome unknown]: the runs reach every kind.
    assert!(totals.iter().all(|count| *count > 0), "answers by kind: {totals:?}");
}

#[test]
fn a_replica_that_missed_compacted_entries_catches_up_by_snapshot() {
    let mut cluster = Cluster::with_config(3, compacting_config(11));
    cluster.create_group(GROUP, &[1, 2, 3]);
    must_apply(&mut cluster, GROUP, Command::set("before", 1));
    let leader = cluster.must_elect(GROUP);
    let behind = other_than(leader);
    let missed_from = cluster.applied_index(behind, GROUP).next();
    cluster.crash(behind, 0);
    for i in 0..60 {
        must_apply(&mut cluster, GROUP, Command::add(&format!("k{}", i % 6), i));
    }
    let first = cluster.store(leader).peer(GROUP).expect("hosted").status().first_index;
    assert!(first > missed_from, "the leader's log starts at {first}, not past {missed_from}");
    cluster.restart(behind);
    for _ in 0..20 {
        cluster.tick();
    }
    assert!(cluster.store(behind).stats().snapshots_installed >= 1, "caught up by a snapshot");
    assert_eq!(cluster.applied_index(behind, GROUP), cluster.applied_index(leader, GROUP));
    let records = group_records(&mut cluster, leader, GROUP);
    assert_eq!(records.len(), 7, "{records:?}");
    assert_eq!(group_records(&mut cluster, behind, GROUP), records);
    // The reloaded state machine serves what was installed.
    for name in ["before", "k0", "k1", "k2", "k3", "k4", "k5"] {
        let expected = applied_value(&mut cluster, leader, GROUP, name);
        assert_eq!(applied_value(&mut cluster, behind, GROUP, name), expected, "{name}");
    }
}

#[test]
fn log_compaction_bounds_the_log_and_drops_the_entries_below_its_point() {
    let config = compacting_config(12);
    let bound = config.compact_log_after_entries + config.compact_log_keep_entries;
    let mut cluster = Cluster::with_config(3, config);
    cluster.create_group(GROUP, &[1, 2, 3]);
    for i in 0..200 {
        must_apply(&mut cluster, GROUP, Command::add(&format!("k{}", i % 10), 1));
    }
    cluster.tick();
    for node in [1, 2, 3].map(NodeId) {
        let store = cluster.store(node);
        assert!(store.stats().log_compactions > 0, "node {node} never compacted");
        let engine = Arc::clone(store.engine());
        let bounds = engine.log_bounds(GROUP).expect("log bounds");
        let kept = bounds.last_index.0 - bounds.snapshot_index.0;
        assert!(kept <= bound, "node {node} keeps {kept} entries: {bounds:?}");
        // Below the compaction point nothing is left, for the engine or for Raft.
        let first = bounds.first_index();
        assert!(first.0 > 150, "node {node}: {bounds:?}");
        let below = engine.entries(GROUP, LogIndex(2), first, None);
        assert!(matches!(below, Err(mosaic_engine::Error::Compacted { .. })), "{below:?}");
        let storage = GroupStorage::new(GROUP, engine);
        let below = storage.entries(bounds.snapshot_index, first, None);
        assert!(matches!(below, Err(mosaic_raft::Error::Compacted { .. })), "{below:?}");
        let status = store.peer(GROUP).expect("hosted").status();
        assert_eq!(status.first_index, first, "node {node}");
    }
    for k in 0..10 {
        assert_eq!(must_get(&mut cluster, GROUP, &format!("k{k}")), Some(20), "k{k}");
    }
}

/// A log of few large entries never reaches `compact_log_after_entries` (10,000 by default);
/// it is compacted by its bytes (an operator's group of 256 values of 1 MiB kept all of them).
#[test]
fn a_log_of_few_large_entries_is_compacted_by_its_bytes() {
    let config = StoreConfig {
        seed: 13,
        compact_log_after_bytes: 64 << 10,
        compact_log_keep_bytes: 16 << 10,
        ..StoreConfig::default()
    };
    let (after_bytes, keep_bytes) = (config.compact_log_after_bytes, config.compact_log_keep_bytes);
    let mut cluster = Cluster::with_config(3, config);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let name = |i: u64| format!("{i:03}{}", "x".repeat(4096));
    for i in 0..100 {
        must_apply(&mut cluster, GROUP, Command::set(&name(i), i));
    }
    cluster.tick();
    for node in [1, 2, 3].map(NodeId) {
        let store = cluster.store(node);
        assert!(store.stats().log_compactions > 1, "node {node} compacted by bytes");
        let engine = Arc::clone(store.engine());
        let bounds = engine.log_bounds(GROUP).expect("log bounds");
        let entries = engine
            .entries(GROUP, bounds.first_index(), bounds.last_index.next(), None)
            .expect("entries");
        let bytes: u64 = entries.iter().map(mosaic_raft::Entry::size_bytes).sum();
        // At most the bytes that trigger a compaction, and one more entry of the pass.
        assert!(bytes <= after_bytes + 4200, "node {node} keeps {bytes} bytes: {bounds:?}");
        // After the last compaction the entries to keep are kept (a follower lagging a little
        // catches up from the log).
        assert!(bytes + (4 << 10) >= keep_bytes / 2, "node {node} keeps {bytes} bytes");
    }
    for i in [0, 57, 99] {
        assert_eq!(must_get(&mut cluster, GROUP, &name(i)), Some(i), "{i}");
    }
}

#[test]
fn acknowledged_writes_survive_a_crash_of_every_node() {
    let mut cluster = Cluster::new(3, 5);
    cluster.create_group(GROUP, &[1, 2, 3]);
    for i in 0..20 {
        must_apply(&mut cluster, GROUP, Command::add(&format!("k{}", i % 5), 1));
    }
    // Every node crashes, each losing every unsynced write (apply batches included).
    for node in [1, 2, 3].map(NodeId) {
        cluster.crash(node, 0);
    }
    for node in [1, 2, 3].map(NodeId) {
        cluster.restart(node);
    }
    for k in 0..5 {
        assert_eq!(must_get(&mut cluster, GROUP, &format!("k{k}")), Some(4), "k{k}");
    }
    // The replicas applied the log again: every one holds every write, once.
    must_apply(&mut cluster, GROUP, Command::set("after", 1));
    for _ in 0..5 {
        cluster.tick();
    }
    for node in [1, 2, 3].map(NodeId) {
        for k in 0..5 {
            let value = applied_value(&mut cluster, node, GROUP, &format!("k{k}"));
            assert_eq!(value, Some(4), "node {node} k{k}");
        }
    }
}

/// A node's agent destroys a replica no longer placed on it once the group's leader showed
/// it out of the group; were it added back meanwhile, its log would have an entry past that
/// view in the leader's term (no leader sends entries to a node out of its membership), and
/// the store keeps the replica (found in review: a destroy decided on a stale "out" landed
/// after the leader had added the node back, leaving a learner, then a voter, without data).
#[test]
fn a_replica_added_back_after_the_view_that_showed_it_out_is_not_destroyed() {
    let mut cluster = Cluster::new(3, 7);
    cluster.create_group(GROUP, &[1, 2, 3]);
    must_apply(&mut cluster, GROUP, Command::set("k", 1));
    // Node 3 has every entry, the last of the leader's term (it appended one when elected).
    let status = cluster.store(NodeId(3)).peer(GROUP).expect("hosted").status();
    let (last_index, last_term) = (status.last_index, status.hard_state.term);
    let destroy = |cluster: &mut Cluster, shown_out| {
        let (destroyed, callback) = testing::slot();
        cluster.send(NodeId(3), StoreMsg::DestroyGroup { group: GROUP, shown_out, callback });
        take(&destroyed).expect("answered at once")
    };
    // Entries past the view, in its term: added back since.
    let before = ShownOut { term: last_term, last_index: LogIndex(last_index.0 - 1) };
    match destroy(&mut cluster, Some(before)) {
        Err(Error::InvalidArgument { reason }) => {
            assert!(reason.contains("added back"), "{reason}")
        }
        other => panic!("a replica added back must be kept, got {other:?}"),
    }
    assert!(cluster.store(NodeId(3)).peer(GROUP).is_some());
    // A later term, even with a shorter log (a leader of a later term added it back).
    let later = ShownOut {
        term: mosaic_raft::Term(last_term.0 - 1),
        last_index: LogIndex(last_index.0 + 10),
    };
    assert!(destroy(&mut cluster, Some(later)).is_err(), "added back in a later term");
    assert!(cluster.store(NodeId(3)).peer(GROUP).is_some());
    // Entries past the view only from an older term (left by an earlier leader): destroyed.
    let later_term = ShownOut { term: mosaic_raft::Term(last_term.0 + 1), last_index: LogIndex(0) };
    destroy(&mut cluster, Some(later_term)).expect("destroyed");
    assert!(cluster.store(NodeId(3)).peer(GROUP).is_none());
}

#[test]
fn a_destroyed_replica_leaves_nothing_behind_and_stays_gone_after_a_restart() {
    let mut cluster = Cluster::new(3, 17);
    let other = GroupId(2);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.create_group(other, &[1, 2, 3]);
    for i in 0..20 {
        must_apply(&mut cluster, GROUP, Command::set(&format!("k{i}"), i));
    }
    must_apply(&mut cluster, other, Command::set("kept", 1));
    let leader = cluster.must_elect(GROUP);
    // A request waiting at the replica when it is destroyed is answered, not dropped.
    let waiting = cluster.propose(leader, GROUP, Command::set("late", 1));
    for node in [1, 2, 3].map(NodeId) {
        let (destroyed, callback) = testing::slot();
        cluster.send(node, StoreMsg::DestroyGroup { group: GROUP, shown_out: None, callback });
        take(&destroyed).expect("answered at once").expect("destroyed");
        assert!(cluster.store(node).peer(GROUP).is_none(), "node {node}");
        let engine = Arc::clone(cluster.store(node).engine());
        assert_eq!(engine.group_ids().expect("group ids"), vec![other], "node {node}");
        assert_eq!(engine.log_bounds(GROUP).expect("bounds"), Default::default(), "node {node}");
        assert_eq!(engine.applied_index(GROUP).expect("applied"), LogIndex(0), "node {node}");
        let records = group_records(&mut cluster, node, GROUP);
        assert!(records.is_empty(), "node {node} kept {records:?}");
    }
    match take(&waiting) {
        Some(Err(Error::GroupNotFound { group })) => assert_eq!(group, GROUP),
        other => panic!("the waiting proposal must fail with GroupNotFound, got {other:?}"),
    }
    // Destroying again is a no-op; the other group serves on; a restart brings nothing back.
    let (again, callback) = testing::slot();
    cluster.send(NodeId(1), StoreMsg::DestroyGroup { group: GROUP, shown_out: None, callback });
    take(&again).expect("answered at once").expect("a no-op");
    cluster.crash(NodeId(1), 0);
    cluster.restart(NodeId(1));
    assert!(cluster.store(NodeId(1)).peer(GROUP).is_none());
    assert!(group_records(&mut cluster, NodeId(1), GROUP).is_empty());
    // The store remembers it destroyed the group (across the restart): creating it again
    // with its first members is refused (that replica may have voted); joining is not.
    let (created, callback) = testing::slot();
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    cluster.send(NodeId(1), StoreMsg::CreateGroup { group: GROUP, members, callback });
    match take(&created).expect("answered at once") {
        Err(Error::InvalidArgument { reason }) => assert!(reason.contains("destroyed"), "{reason}"),
        other => panic!("creating a destroyed group again must be refused, got {other:?}"),
    }
    assert!(cluster.store(NodeId(1)).peer(GROUP).is_none());
    assert_eq!(must_get(&mut cluster, other, "kept"), Some(1));
}

/// Found by review of the `node_requests` fuzz target: a replica joined at the largest term
/// (`JoinGroup` takes the leader's term from an operator) turns down a pre-vote at that term,
/// the candidate steps up to it, and its next campaign needed a term past the largest, which
/// overflowed in the Raft core. A node whose term is exhausted now stays a follower.
#[test]
fn a_term_at_the_largest_value_stops_campaigns_without_a_panic() {
    let mut cluster = Cluster::new(3, 1);
    let group = GroupId(5);
    let leader =
        Some(mosaic_raftstore::LeaderTerm { leader: NodeId(2), term: mosaic_raft::Term(u64::MAX) });
    let (joined, callback) = testing::slot();
    cluster.send(NodeId(1), StoreMsg::JoinGroup { group, leader, callback });
    assert!(matches!(take(&joined), Some(Ok(()))));
    let (created, callback) = testing::slot();
    let members = vec![NodeId(1), NodeId(2)];
    cluster.send(NodeId(2), StoreMsg::CreateGroup { group, members, callback });
    assert!(matches!(take(&created), Some(Ok(()))));
    cluster.settle();
    for _ in 0..200 {
        cluster.tick();
    }
    let (status, callback) = testing::slot();
    cluster.send(NodeId(2), StoreMsg::Status { group, confirm: false, callback });
    let status = take(&status).expect("answered at once").expect("node 2 hosts the group");
    assert_eq!(status.hard_state.term.0, u64::MAX, "node 2 stepped up to the largest term");
    assert_ne!(status.soft_state.role, mosaic_raft::Role::Leader, "with no term to lead in");
}

/// The value of the sample `series` among the metrics of `node`'s store, as Prometheus would
/// read them.
fn sample(cluster: &mut Cluster, node: u64, series: &str) -> f64 {
    let mut registry = prometheus_client::registry::Registry::with_prefix("mosaic");
    cluster.store(NodeId(node)).metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = text
        .lines()
        .find(|line| line.split_once(' ').is_some_and(|(name, _)| name == series))
        .unwrap_or_else(|| panic!("no {series} in {text}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[test]
fn the_metrics_count_elections_terms_proposals_and_the_groups_led() {
    let mut cluster = Cluster::new(3, 5);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let leader = cluster.must_elect(GROUP).0;
    // A group of one campaigns and leads at once, without a candidate's role change.
    let single = GroupId(2);
    cluster.create_group(single, &[1]);
    cluster.must_elect(single);
    for i in 0..5 {
        must_apply(&mut cluster, GROUP, Command::add("hits", i));
    }
    cluster.settle();
    assert!(sample(&mut cluster, leader, "mosaic_raft_proposals_total") >= 5.0);
    assert!(sample(&mut cluster, leader, "mosaic_raft_elections_total") >= 1.0);
    assert!(sample(&mut cluster, leader, "mosaic_raft_leaderships_total") >= 1.0);
    assert!(sample(&mut cluster, 1, "mosaic_raft_elections_total") >= 1.0, "group 2's election");
    assert_eq!(sample(&mut cluster, 1, "mosaic_store_groups"), 2.0);
    let led: f64 =
        (1..=3).map(|node| sample(&mut cluster, node, "mosaic_store_groups_leading")).sum();
    assert_eq!(led, 2.0, "one leader for each group");
    for node in 1..=3 {
        assert!(sample(&mut cluster, node, "mosaic_raft_term_changes_total") >= 1.0, "node {node}");
        assert!(
            sample(&mut cluster, node, "mosaic_raft_applied_entries_total") >= 5.0,
            "node {node}"
        );
        assert!(sample(&mut cluster, node, "mosaic_store_sync_write_seconds_count") >= 1.0);
    }
    for node in 2..=3 {
        assert_eq!(sample(&mut cluster, node, "mosaic_store_groups"), 1.0);
    }
    // The gauges are right again after a restart.
    cluster.crash(NodeId(1), usize::MAX);
    cluster.restart(NodeId(1));
    assert_eq!(sample(&mut cluster, 1, "mosaic_store_groups"), 2.0);
}
