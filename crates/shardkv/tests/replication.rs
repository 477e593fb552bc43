//! KV groups replicated by the node runtime: several stores over in-memory engines, a
//! deterministic network, ticks as messages. Checks failover, restart recovery, at-most-once
//! writes (sessions across leader changes and snapshots), the three read levels and
//! membership changes. The store's own mechanics (group commit, every proposal answered, log
//! compaction, a crash of every node, destroyed replicas) are tested in
//! `crates/raftstore/tests/store.rs`.

mod harness;

use harness::{Cluster, take};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use mosaic_raftstore::membership::{LeaderView, MembershipJob, MembershipStep};
use mosaic_raftstore::{Consistency, Error};
use mosaic_shardkv::WriteKind;

const GROUP: GroupId = GroupId(1);

#[test]
fn a_group_elects_a_leader_and_serves_writes_and_reads() {
    let mut cluster = Cluster::new(3, 1);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "apple", "red");
    cluster.must_put(GROUP, "pear", "green");
    assert_eq!(cluster.must_get(GROUP, "apple").as_deref(), Some("red"));
    assert_eq!(cluster.must_get(GROUP, "plum"), None);
    // Every replica applies every write.
    cluster.tick();
    for node in 1..=3 {
        assert_eq!(cluster.applied_value(NodeId(node), GROUP, "pear").as_deref(), Some("green"));
    }
}

#[test]
fn a_retried_append_is_applied_once_even_across_a_leader_change() {
    let mut cluster = Cluster::new(3, 3);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let first = cluster.write(WriteKind::Append, 9, "log", "a");
    let outcome = cluster.must_write(GROUP, first.clone());
    assert!(!outcome.duplicate);
    // The client retries the same (client, seq): applied once.
    assert!(cluster.must_write(GROUP, first.clone()).duplicate);
    let old_leader = cluster.must_elect(GROUP);
    cluster.isolate(old_leader);
    for _ in 0..40 {
        cluster.tick();
    }
    let new_leader = cluster.must_elect(GROUP);
    assert_ne!(new_leader, old_leader);
    assert!(cluster.must_write(GROUP, first).duplicate, "the session moved with the log");
    let second = cluster.write(WriteKind::Append, 9, "log", "b");
    cluster.must_write(GROUP, second);
    cluster.heal();
    assert_eq!(cluster.must_get(GROUP, "log").as_deref(), Some("ab"));
}

#[test]
fn an_older_sequence_number_is_never_applied_after_a_newer_one() {
    let mut cluster = Cluster::new(3, 4);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let older = cluster.write(WriteKind::Put, 5, "k", "old");
    let newer = cluster.write(WriteKind::Put, 5, "k", "new");
    cluster.must_write(GROUP, newer);
    assert!(cluster.must_write(GROUP, older).duplicate);
    assert_eq!(cluster.must_get(GROUP, "k").as_deref(), Some("new"));
}

#[test]
fn a_crashed_leader_is_replaced_and_catches_up_after_restart() {
    let mut cluster = Cluster::new(3, 6);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "a", "1");
    let leader = cluster.must_elect(GROUP);
    cluster.crash(leader, 0);
    cluster.must_put(GROUP, "b", "2");
    let new_leader = cluster.must_elect(GROUP);
    assert_ne!(new_leader, leader);
    cluster.restart(leader);
    for _ in 0..10 {
        cluster.tick();
    }
    assert_eq!(cluster.applied_value(leader, GROUP, "b").as_deref(), Some("2"));
    assert_eq!(cluster.applied_index(leader, GROUP), cluster.applied_index(new_leader, GROUP));
}

#[test]
fn a_deposed_leader_does_not_serve_linearizable_reads() {
    let mut cluster = Cluster::new(3, 7);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "x", "1");
    let old = cluster.must_elect(GROUP);
    cluster.isolate(old);
    let stale_attempt = cluster.read(old, GROUP, "x", Consistency::Linearizable);
    for _ in 0..40 {
        cluster.tick();
    }
    let new = cluster.must_elect(GROUP);
    assert_ne!(new, old);
    cluster.must_put(GROUP, "x", "2");
    // The cut-off leader never confirms its leadership: its read fails (dropped when it steps
    // down, or timed out), it does not answer "1".
    match take(&stale_attempt) {
        None | Some(Err(Error::NotLeader { .. } | Error::Timeout)) => {}
        Some(other) => panic!("the deposed leader answered {other:?}"),
    }
    assert_eq!(cluster.must_get(GROUP, "x").as_deref(), Some("2"));
    // Its stale read answers what it had applied, and says how far that is.
    let stale = cluster.read(old, GROUP, "x", Consistency::Stale);
    let stale = take(&stale).expect("stale reads are answered at once").unwrap();
    assert_eq!(stale.output.map(|stored| stored.value).as_deref(), Some(&b"1"[..]));
    assert!(stale.applied_index < cluster.applied_index(new, GROUP));
}

#[test]
fn lease_reads_are_served_by_the_leader_without_a_round_trip() {
    let mut cluster = Cluster::new(3, 8);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "k", "v");
    let leader = cluster.must_elect(GROUP);
    // A heartbeat round acknowledged by a majority starts the lease.
    for _ in 0..3 {
        cluster.tick();
    }
    let read = cluster.read(leader, GROUP, "k", Consistency::Lease);
    let answer = take(&read).expect("a lease read is answered without a network round").unwrap();
    assert_eq!(answer.output.map(|stored| stored.value).as_deref(), Some(&b"v"[..]));
    let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
    let refused = cluster.read(follower, GROUP, "k", Consistency::Lease);
    // A follower has no lease: it sends the client to the leader.
    match take(&refused) {
        Some(Err(Error::NotLeader { leader: hint, .. })) => assert_eq!(hint, Some(leader)),
        other => panic!("a follower answered a lease read with {other:?}"),
    }
}

/// Issue: the lease was timed in ticks, so a leader whose store thread stalled while it was cut
/// off woke up with a tick count that had barely moved and served lease reads of values a new
/// leader had already overwritten. The lease is now timed with the clock.
#[test]
fn a_leader_that_stalled_while_cut_off_serves_no_stale_lease_read() {
    let mut cluster = Cluster::new(3, 37);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "k", "old");
    let old = cluster.must_elect(GROUP);
    for _ in 0..3 {
        cluster.tick();
    }
    let read = cluster.read(old, GROUP, "k", Consistency::Lease);
    assert_eq!(
        take(&read)
            .expect("served under the lease")
            .unwrap()
            .output
            .map(|stored| stored.value)
            .as_deref(),
        Some(&b"old"[..])
    );

    cluster.stall(old);
    cluster.isolate(old);
    for _ in 0..40 {
        cluster.tick();
    }
    let new = cluster.must_elect(GROUP);
    assert_ne!(new, old);
    cluster.must_put(GROUP, "k", "new");
    // The old leader wakes up, still cut off, and is asked before its first tick.
    cluster.resume(old);
    let read = cluster.read(old, GROUP, "k", Consistency::Lease);
    match take(&read) {
        None | Some(Err(Error::NotLeader { .. } | Error::Timeout)) => {}
        Some(other) => panic!("the stalled leader answered a lease read with {other:?}"),
    }
}

#[test]
fn requests_for_a_group_not_hosted_are_refused() {
    let mut cluster = Cluster::new(1, 9);
    let write = cluster.write(WriteKind::Put, 1, "k", "v");
    let result = cluster.propose(NodeId(1), GroupId(42), write);
    assert!(matches!(take(&result), Some(Err(Error::GroupNotFound { group: GroupId(42) }))));
    let read = cluster.read(NodeId(1), GroupId(42), "k", Consistency::Stale);
    assert!(matches!(take(&read), Some(Err(Error::GroupNotFound { .. }))));
}

#[test]
fn read_leaders_answers_for_the_groups_led_here_only() {
    let mut cluster = Cluster::new(3, 12);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let other = GroupId(GROUP.0 + 1);
    cluster.create_group(other, &[1, 2, 3]);
    let leader = cluster.must_elect(GROUP);
    cluster.must_elect(other);
    cluster.tick();
    for node in [1, 2, 3].map(NodeId) {
        let (answers, callback) = harness::slot();
        let query = mosaic_shardkv::KvQuery::Ownership;
        cluster.send(node, mosaic_raftstore::StoreMsg::ReadLeaders { query, callback });
        let answers = take(&answers).expect("answered at once").expect("no refusal");
        let led: Vec<GroupId> = answers.iter().map(|(group, _)| *group).collect();
        let expected: Vec<GroupId> = [GROUP, other]
            .into_iter()
            .filter(|group| {
                let status = cluster.store(node).peer(*group).expect("hosted").status();
                status.soft_state.role == mosaic_raft::Role::Leader
            })
            .collect();
        assert_eq!(led, expected, "node {node}");
        if node == leader {
            assert!(led.contains(&GROUP));
        }
        for (group, answer) in answers {
            // A static group has no ownership.
            let output = &answer.output;
            assert!(matches!(output, Ok(mosaic_shardkv::KvReadOutput::Ownership(None))), "{group}");
            // With the membership the leader applied.
            let voters: Vec<u64> = answer.conf_state.voters.iter().map(|node| node.0).collect();
            assert_eq!((voters, answer.conf_state.learners.len()), (vec![1, 2, 3], 0), "{group}");
        }
    }
}

/// Compaction after few entries, so tests reach snapshots quickly.
fn compacting_config(seed: u64) -> mosaic_raftstore::StoreConfig {
    mosaic_raftstore::StoreConfig {
        seed,
        compact_log_after_entries: 20,
        compact_log_keep_entries: 5,
        ..Default::default()
    }
}

#[test]
fn a_replica_that_missed_compacted_entries_catches_up_by_snapshot() {
    let mut cluster = Cluster::with_config(3, compacting_config(11));
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "before", "1");
    let leader = cluster.must_elect(GROUP);
    let behind = NodeId(if leader.0 == 3 { 2 } else { 3 });
    cluster.crash(behind, 0);
    for i in 0..60 {
        let write = cluster.write(WriteKind::Append, 7, &format!("k{}", i % 4), &format!("{i},"));
        cluster.must_write(GROUP, write);
    }
    assert!(cluster.store(leader).stats().log_compactions > 0, "the leader compacted its log");
    cluster.restart(behind);
    for _ in 0..20 {
        cluster.tick();
    }
    assert!(cluster.store(behind).stats().snapshots_installed >= 1, "caught up by a snapshot");
    assert_eq!(cluster.applied_index(behind, GROUP), cluster.applied_index(leader, GROUP));
    for key in ["before", "k0", "k1", "k2", "k3"] {
        assert_eq!(
            cluster.applied_versioned(behind, GROUP, key),
            cluster.applied_versioned(leader, GROUP, key),
            "{key}: the snapshot carries values and versions"
        );
    }
    // The sessions came with the snapshot: a retry of an old write is still a duplicate.
    let retry = mosaic_shardkv::KvWrite {
        kind: WriteKind::Append,
        client: mosaic_engine::ClientId(7),
        seq: 3,
        shard: harness::shard_of("k1"),
        key: bytes::Bytes::from_static(b"k1"),
        value: bytes::Bytes::from_static(b"1,"),
        expects_session: true,
        condition: None,
    };
    // Make the caught-up node the leader, then retry through it.
    cluster.crash(leader, 0);
    let outcome = cluster.must_write(GROUP, retry);
    assert!(outcome.duplicate, "a retried write after a snapshot install must not apply again");
    assert_eq!(outcome.effect, None, "client 7 wrote the shard since: what seq 3 did is not kept");
    // The shard's revision came with it: the next write's version is past every one before.
    let (_, before) = cluster.must_get_versioned(GROUP, "k1").expect("written");
    let outcome = cluster.must_put(GROUP, "k1", "after");
    let Some(mosaic_shardkv::WriteEffect::Written(version)) = outcome.effect else {
        panic!("a put takes effect: {outcome:?}");
    };
    assert!(version > before, "version {version} after {before}");
}

/// Issue: the state of a received snapshot was kept in one slot before Raft decided on it, so
/// an accepted snapshot followed in the same inbox drain by an older one (which Raft refuses)
/// had its state overwritten, and the install panicked ("snapshot state and metadata differ").
/// Here both come twice, reordered, and the newer once more in a later drain.
#[test]
fn duplicated_and_reordered_snapshots_in_one_drain_install_the_newest_once() {
    let mut cluster = Cluster::with_config(3, compacting_config(29));
    cluster.create_group(GROUP, &[1, 2, 3]);
    let leader = cluster.must_elect(GROUP);
    let behind = NodeId(if leader.0 == 3 { 2 } else { 3 });
    cluster.crash(behind, 0);
    let write_some = |cluster: &mut Cluster, from: usize| {
        for i in from..from + 30 {
            cluster.must_put(GROUP, &format!("k{}", i % 5), &format!("{i}"));
        }
    };
    write_some(&mut cluster, 0);
    cluster.hold_snapshots_to(behind);
    cluster.restart(behind);
    for _ in 0..10 {
        cluster.tick();
    }
    let mut older = cluster.take_held_snapshots();
    assert_eq!(older.len(), 1, "one snapshot sent");
    let older = older.pop().unwrap();
    cluster.report_lost(&older);
    write_some(&mut cluster, 30);
    for _ in 0..10 {
        cluster.tick();
    }
    let mut newer = cluster.take_held_snapshots();
    assert_eq!(newer.len(), 1, "a second snapshot sent");
    let newer = newer.pop().unwrap();
    assert!(newer.index() > older.index(), "{} > {}", newer.index(), older.index());
    // Raft installs the newer and refuses every other.
    let late_duplicate = newer.clone();
    let drain = vec![newer.clone(), older.clone(), older.clone(), newer.clone(), older, newer];
    cluster.deliver_in_one_drain(behind, drain);
    assert_eq!(cluster.store(behind).stats().snapshots_installed, 1);
    cluster.deliver_in_one_drain(behind, vec![late_duplicate]);
    assert_eq!(cluster.store(behind).stats().snapshots_installed, 1);
    for _ in 0..10 {
        cluster.tick();
    }
    for key in ["k0", "k1", "k2", "k3", "k4"] {
        assert_eq!(
            cluster.applied_value(behind, GROUP, key),
            cluster.applied_value(leader, GROUP, key),
            "{key}"
        );
    }
}

/// Issue: a read a follower forwarded to its leader waited for ever when the answer was lost.
#[test]
fn a_forwarded_read_whose_answer_is_lost_times_out() {
    let mut cluster = Cluster::new(3, 31);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "x", "1");
    let leader = cluster.must_elect(GROUP);
    let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
    // The leader hears the follower, the follower does not hear the leader.
    cluster.blocked.insert((leader, follower));
    let read = cluster.read(follower, GROUP, "x", Consistency::Linearizable);
    for _ in 0..5 {
        cluster.tick();
    }
    assert!(take(&read).is_none(), "answered before its deadline");
    for _ in 0..30 {
        cluster.tick();
    }
    match take(&read) {
        Some(Err(Error::Timeout | Error::NotLeader { .. })) => {}
        other => panic!("the forwarded read must fail, got {other:?}"),
    }
    cluster.heal();
    assert_eq!(cluster.must_get(GROUP, "x").as_deref(), Some("1"));
}

/// Proposes a membership change at `node` (refused if the membership changed after
/// `unchanged_since`) and waits for its answer.
fn change_membership(
    cluster: &mut Cluster,
    node: NodeId,
    change: mosaic_raft::ConfChange,
    unchanged_since: Option<mosaic_raft::LogIndex>,
) -> Result<mosaic_raft::ConfState, Error> {
    let (result, callback) = harness::slot();
    cluster.send(
        node,
        mosaic_raftstore::StoreMsg::ChangeMembership {
            group: GROUP,
            change,
            unchanged_since,
            callback,
        },
    );
    cluster.wait(&result, 100).expect("answered")
}

#[test]
fn a_joined_node_catches_up_by_snapshot_as_a_learner_then_votes() {
    use mosaic_raft::ConfChange;
    let mut cluster = Cluster::with_config(4, compacting_config(12));
    cluster.create_group(GROUP, &[1, 2, 3]);
    for i in 0..40 {
        cluster.must_put(GROUP, &format!("k{i}"), &format!("v{i}"));
    }
    let new = NodeId(4);
    cluster.join_group(new, GROUP, None);
    // An empty replica with no membership waits: it neither campaigns nor disturbs the group.
    for _ in 0..50 {
        cluster.tick();
    }
    assert_eq!(cluster.store(new).peer(GROUP).unwrap().status().soft_state.leader, None);

    let leader = cluster.must_elect(GROUP);
    let follower = NodeId(if leader.0 == 1 { 2 } else { 1 });
    match change_membership(&mut cluster, follower, ConfChange::AddLearner(new), None) {
        Err(Error::NotLeader { leader: hint, .. }) => assert_eq!(hint, Some(leader)),
        other => panic!("a follower must refuse with the leader's id, got {other:?}"),
    }
    let conf = change_membership(&mut cluster, leader, ConfChange::AddLearner(new), None).unwrap();
    assert!(conf.learners.contains(&new), "{conf:?}");
    for _ in 0..50 {
        cluster.tick();
    }
    assert_eq!(cluster.applied_value(new, GROUP, "k0").as_deref(), Some("v0"));
    let first = cluster.store(new).peer(GROUP).unwrap().status().first_index;
    assert!(first.0 > 1, "the learner started from a snapshot, its log begins at {first}");

    let conf = change_membership(&mut cluster, leader, ConfChange::AddVoter(new), None).unwrap();
    assert!(conf.voters.contains(&new) && conf.learners.is_empty(), "{conf:?}");
    // Four voters: with one old member down, a write needs the new one's acknowledgement.
    let down = NodeId(if leader.0 == 3 { 2 } else { 3 });
    cluster.crash(down, 0);
    cluster.must_put(GROUP, "after", "four voters");
    assert_eq!(cluster.applied_value(new, GROUP, "after").as_deref(), Some("four voters"));
}

/// Issue: a replica that joined a young group (log never compacted, the store's default
/// compaction threshold) caught up from index 1, applied `AddLearner` to its empty membership
/// and ended as the only voter of its own configuration: isolated, it elected itself alone and
/// acknowledged writes alone. The initial membership is now a bootstrap snapshot at index 1,
/// so the joined replica gets a snapshot and the same membership as every other member.
#[test]
fn a_node_joining_a_young_group_learns_the_whole_membership_and_cannot_win_alone() {
    use mosaic_raft::ConfChange;
    let mut cluster = Cluster::new(4, 23);
    cluster.create_group(GROUP, &[1, 2, 3]);
    for i in 0..5 {
        cluster.must_put(GROUP, &format!("k{i}"), &format!("v{i}"));
    }
    let new = NodeId(4);
    cluster.join_group(new, GROUP, None);
    let leader = cluster.must_elect(GROUP);
    change_membership(&mut cluster, leader, ConfChange::AddLearner(new), None).unwrap();
    for _ in 0..20 {
        cluster.tick();
    }
    let conf = change_membership(&mut cluster, leader, ConfChange::AddVoter(new), None).unwrap();
    let all: std::collections::BTreeSet<NodeId> = (1..=4).map(NodeId).collect();
    assert_eq!(conf.voters, all, "the leader's membership");
    cluster.tick();
    let status = cluster.store(new).peer(GROUP).unwrap().status();
    assert_eq!(status.conf_state.voters, all, "the joined replica's membership");
    assert!(
        status.first_index.0 > 1,
        "it started from a snapshot: log begins at {}",
        status.first_index
    );
    assert_eq!(cluster.applied_value(new, GROUP, "k4").as_deref(), Some("v4"));

    // Cut off, the new member can never gather a majority of four by itself.
    cluster.isolate(new);
    for _ in 0..200 {
        cluster.tick();
        let status = cluster.store(new).peer(GROUP).unwrap().status();
        assert_ne!(
            status.soft_state.role,
            mosaic_raft::Role::Leader,
            "node 4 elected itself alone"
        );
    }
    cluster.must_put(GROUP, "after", "the partition");
    cluster.heal();
    for _ in 0..50 {
        cluster.tick();
    }
    assert_eq!(cluster.applied_value(new, GROUP, "after").as_deref(), Some("the partition"));
}

/// What `NodeAdmin.GroupStatus` with `confirm_leadership` answers: `node`'s view as leader,
/// once a ReadIndex round of its term confirmed the leadership within `ticks`.
fn confirmed_view(cluster: &mut Cluster, node: NodeId, ticks: usize) -> Option<LeaderView> {
    let (result, callback) = harness::slot();
    cluster
        .send(node, mosaic_raftstore::StoreMsg::Status { group: GROUP, confirm: true, callback });
    LeaderView::of_leader(&cluster.wait(&result, ticks)?.ok()?)
}

/// Runs `job` to its end through whichever node leads, as the node agent and the CLI do: read
/// the leader's confirmed view, do the step the planner names, again.
fn run_membership_job(cluster: &mut Cluster, mut job: MembershipJob) {
    for _ in 0..500 {
        let leader = cluster.must_elect(GROUP);
        let Some(view) = confirmed_view(cluster, leader, 20) else {
            cluster.tick();
            continue;
        };
        match job.next(&view) {
            MembershipStep::Join { node, leader } => {
                cluster.join_group(node, GROUP, Some(leader));
                job.joined(node);
            }
            MembershipStep::Change { change, unchanged_since } => {
                change_membership(cluster, view.leader, change, Some(unchanged_since))
                    .expect("changed");
            }
            MembershipStep::Wait => cluster.tick(),
            MembershipStep::Done => return,
        }
    }
    panic!("the membership job did not finish: {job:?}");
}

/// Issue: a member whose disk was replaced came back as a voter with an empty log and no
/// memory of its votes, voted for a lagging member, and an acknowledged write was gone. A
/// member that lost its data now hosts nothing until the group has removed it; it then joins
/// in the leader's term like a new node, catches up by snapshot and is promoted
/// (`membership::MembershipJob::lost`).
#[test]
fn a_member_that_lost_its_disk_counts_in_no_quorum_until_removed_and_joined_again() {
    let mut cluster = Cluster::new(3, 31);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "x", "before");
    let leader = cluster.must_elect(GROUP);
    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|node| *node != leader).collect();
    let (lost, lagging) = (others[0], others[1]);
    cluster.isolate(lagging);
    // Acknowledged by the leader and the member that will lose its disk.
    cluster.must_put(GROUP, "x", "acknowledged");
    cluster.crash(lost, 0);
    cluster.wipe(lost);
    cluster.restart(lost);
    assert!(cluster.store(lost).peer(GROUP).is_none(), "a wiped node hosts nothing");

    // The leader is cut off and the lagging member is back: with the wiped member's vote it
    // would win without the acknowledged write. It cannot win alone.
    cluster.heal();
    cluster.isolate(leader);
    for _ in 0..300 {
        cluster.tick();
        let role = cluster.store(lagging).peer(GROUP).unwrap().status().soft_state.role;
        assert_ne!(role, mosaic_raft::Role::Leader, "the lagging member won");
    }

    cluster.heal();
    run_membership_job(&mut cluster, MembershipJob::add(lost).lost(lost));
    let status = cluster.store(lost).peer(GROUP).unwrap().status();
    assert!(status.conf_state.voters.contains(&lost), "{status:?}");
    assert!(status.first_index.0 > 1, "it caught up from a snapshot: {status:?}");
    assert_eq!(cluster.must_get(GROUP, "x").as_deref(), Some("acknowledged"));
    assert_eq!(cluster.applied_value(lost, GROUP, "x").as_deref(), Some("acknowledged"));

    // A working voter again: with the lagging member down, it forms the majority.
    cluster.crash(lagging, 0);
    cluster.must_put(GROUP, "x", "after");
    assert_eq!(cluster.applied_value(lost, GROUP, "x").as_deref(), Some("after"));
}

/// A replica joined in the leader's term starts there, having voted for that leader: it
/// refuses every earlier term (a deposed leader that still counts this node as a voter) and
/// votes for no one else in that term, also after a restart.
#[test]
fn a_replica_joined_in_the_leaders_term_starts_there_having_voted_for_it() {
    let mut cluster = Cluster::new(4, 37);
    cluster.create_group(GROUP, &[1, 2, 3]);
    let leader = cluster.must_elect(GROUP);
    let term = cluster.store(leader).peer(GROUP).unwrap().status().hard_state.term;
    let new = NodeId(4);
    cluster.join_group(new, GROUP, Some(mosaic_raftstore::LeaderTerm { leader, term }));
    cluster.crash(new, 0);
    cluster.restart(new);
    let hard_state = cluster.store(new).peer(GROUP).unwrap().status().hard_state;
    assert_eq!((hard_state.term, hard_state.vote), (term, Some(leader)));
}

/// Blocks every link between a node of `a` and a node of `b`, both ways.
fn cut(cluster: &mut Cluster, a: &[NodeId], b: &[NodeId]) {
    for x in a {
        for y in b {
            cluster.blocked.insert((*x, *y));
            cluster.blocked.insert((*y, *x));
        }
    }
}

/// Found in review: a deposed leader's applied membership can show as removed a member that a
/// later leader added back. A rejoin that planned from it joined the lost member without
/// removing it from the real membership, and a deposed leader then confirmed a ReadIndex read
/// with the empty replica's acknowledgement and served a value older than an acknowledged
/// write. Views are now confirmed by a quorum round first, which a deposed leader cannot get.
///
/// Five voters; V, S, R lead terms a < s < r; C loses its disk: V removes C and stalls cut off;
/// S adds C back and stalls cut off; C and two others elect R, which acknowledges "new" with
/// C's help; C's disk is replaced and it reaches only V (woken) and S (stalled).
#[test]
fn a_deposed_leader_that_shows_a_lost_member_removed_gives_no_view_to_rejoin_from() {
    use mosaic_raft::ConfChange;
    let mut cluster = Cluster::new(5, 43);
    cluster.create_group(GROUP, &[1, 2, 3, 4, 5]);
    cluster.must_put(GROUP, "x", "old");
    let v = cluster.must_elect(GROUP);
    let c = (1..=5).map(NodeId).find(|node| *node != v).unwrap();
    change_membership(&mut cluster, v, ConfChange::RemoveNode(c), None).expect("C removed");
    for _ in 0..3 {
        cluster.tick();
    }
    cluster.stall(v);
    cluster.isolate(v);

    let s = cluster.must_elect(GROUP);
    change_membership(&mut cluster, s, ConfChange::AddLearner(c), None).expect("C a learner");
    for _ in 0..100 {
        let status = cluster.store(s).peer(GROUP).unwrap().status();
        if status.progress.get(&c).is_some_and(|p| p.match_index >= status.hard_state.commit) {
            break;
        }
        cluster.tick();
    }
    change_membership(&mut cluster, s, ConfChange::AddVoter(c), None).expect("C a voter");
    for _ in 0..3 {
        cluster.tick();
    }
    cluster.stall(s);
    cluster.isolate(s);

    let r = cluster.must_elect(GROUP);
    assert!(r != v && r != s && r != c);
    cluster.must_put(GROUP, "x", "new");
    let others: Vec<NodeId> = (1..=5).map(NodeId).filter(|n| ![v, s, c].contains(n)).collect();

    cluster.crash(c, 0);
    cluster.wipe(c);
    cluster.restart(c);
    cluster.heal();
    cut(&mut cluster, &[v, s, c], &others);
    cluster.resume(v);
    let stale = cluster.store(v).peer(GROUP).unwrap().status();
    assert!(!stale.conf_state.voters.contains(&c), "V's applied membership shows C out");
    assert_eq!(confirmed_view(&mut cluster, v, 30), None, "V confirmed a leadership it lost");

    // Healed, the rejoin plans from R's confirmed view: C is removed, then joins again.
    cluster.heal();
    cluster.resume(s);
    run_membership_job(&mut cluster, MembershipJob::add(c).lost(c));
    assert_eq!(cluster.must_get(GROUP, "x").as_deref(), Some("new"));
    assert_eq!(cluster.applied_value(c, GROUP, "x").as_deref(), Some("new"));
}

/// A removal planned before a member lost its disk and was brought back arrives only after
/// that (an operator's `remove-replica` whose request was held up, or whose job was given up
/// while the request travelled): planned from a membership that has changed since, it is
/// refused, and the member brought back stays. Without the condition the late request would
/// undo the rejoin after its job had ended.
#[test]
fn a_removal_planned_before_a_rejoin_cannot_undo_it_when_it_arrives_late() {
    let mut cluster = Cluster::new(3, 47);
    cluster.create_group(GROUP, &[1, 2, 3]);
    cluster.must_put(GROUP, "x", "before");
    let leader = cluster.must_elect(GROUP);
    let member = (1..=3).map(NodeId).find(|node| *node != leader).unwrap();
    let view = confirmed_view(&mut cluster, leader, 30).expect("a confirmed view");
    let MembershipStep::Change { change, unchanged_since } =
        MembershipJob::remove(member).next(&view)
    else {
        panic!("the job does not remove {member}");
    };

    cluster.crash(member, 0);
    cluster.wipe(member);
    cluster.restart(member);
    run_membership_job(&mut cluster, MembershipJob::add(member).lost(member));

    let leader = cluster.must_elect(GROUP);
    let late = change_membership(&mut cluster, leader, change, Some(unchanged_since));
    assert!(
        matches!(late, Err(Error::Raft(mosaic_raft::Error::ConfChangeRefused { .. }))),
        "{late:?}"
    );
    let voters = cluster.store(leader).peer(GROUP).unwrap().status().conf_state.voters;
    assert!(voters.contains(&member), "the late removal undid the rejoin: {voters:?}");
    cluster.must_put(GROUP, "x", "after");
    assert_eq!(cluster.applied_value(member, GROUP, "x").as_deref(), Some("after"));
}
