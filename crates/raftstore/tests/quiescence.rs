//! Quiescence on the deterministic in-memory cluster of `mosaic_raftstore::testing`: idle
//! groups stop their heartbeats, a request wakes a group and is served at once, and a leader
//! lost while its group was quiescent is replaced.
//!
//! Run with `cargo test -p mosaic-raftstore --features testing`.

#[allow(dead_code, reason = "the support module is shared: this test uses part of it")]
mod support;

use bytes::Bytes;
use mosaic_engine::GroupId;
use mosaic_raft::{ConfChange, NodeId, Role, Term};
use mosaic_raftstore::testing;
use mosaic_raftstore::{Consistency, StoreConfig, StoreMsg};
use support::{Command, Counters};

type Cluster = testing::Cluster<Counters>;

const GROUPS: u64 = 6;
const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

fn config() -> StoreConfig {
    StoreConfig { seed: 11, ..StoreConfig::default() }
}

/// Three nodes hosting `GROUPS` groups, idle long enough for every leadership to reach its
/// preferred voter and every group to quiesce.
fn idle_cluster() -> Cluster {
    let config = config();
    let mut cluster = Cluster::with_config(3, config.clone());
    for group in 1..=GROUPS {
        cluster.create_group(GroupId(group), &[1, 2, 3]);
    }
    for group in 1..=GROUPS {
        cluster.must_elect(GroupId(group));
    }
    for _ in 0..2 * config.leader_balance_ticks + 2 * config.quiesce_ticks {
        cluster.tick();
    }
    cluster
}

fn quiescent_replicas(cluster: &mut Cluster, group: GroupId) -> Vec<NodeId> {
    cluster
        .up_nodes()
        .into_iter()
        .filter(|node| cluster.store(*node).peer(group).is_some_and(|peer| peer.is_quiescent()))
        .collect()
}

fn messages_sent(cluster: &mut Cluster) -> u64 {
    cluster.up_nodes().into_iter().map(|node| cluster.store(node).stats().messages_sent).sum()
}

#[test]
fn idle_groups_quiesce_and_send_no_heartbeats() {
    let mut cluster = idle_cluster();
    for group in (1..=GROUPS).map(GroupId) {
        assert_eq!(quiescent_replicas(&mut cluster, group), NODES, "group {group}");
    }
    // A leader asleep rechecks with one heartbeat round every 30 election timeouts: over that
    // long, a heartbeat to each follower and its answer, then the quiescing round and its
    // answers (awake, the heartbeats alone would be 4 messages every 2 ticks per group).
    let recheck_ticks = 30 * config().election_ticks;
    let sent = messages_sent(&mut cluster);
    for _ in 0..recheck_ticks {
        cluster.tick();
    }
    let per_group = (messages_sent(&mut cluster) - sent) / GROUPS;
    assert!(per_group <= 8, "{per_group} messages per quiescent group in {recheck_ticks} ticks");
    for group in (1..=GROUPS).map(GroupId) {
        assert_eq!(quiescent_replicas(&mut cluster, group), NODES, "group {group} sleeps again");
    }
}

#[test]
fn a_request_wakes_a_quiescent_group_and_is_served_at_once() {
    let mut cluster = idle_cluster();
    let group = GroupId(2);
    let leader = cluster.leader(group).expect("a leader");
    let slot = cluster.propose(leader, group, Command::add("hits", 1));
    assert!(matches!(cluster.wait(&slot, 1), Some(Ok(_))), "the write committed within a tick");
    let slot = cluster.read(leader, group, Bytes::from_static(b"hits"), Consistency::Linearizable);
    match cluster.wait(&slot, 1) {
        Some(Ok(read)) => assert_eq!(read.output, Some(1)),
        other => panic!("a linearizable read answered {other:?}"),
    }
    assert!(quiescent_replicas(&mut cluster, group).is_empty(), "the group is awake");
    assert_eq!(quiescent_replicas(&mut cluster, GroupId(3)), NODES, "the others sleep on");
    for _ in 0..2 * config().quiesce_ticks {
        cluster.tick();
    }
    assert_eq!(quiescent_replicas(&mut cluster, group), NODES, "idle again, quiescent again");
}

/// A quiescent group sends nothing, but its nodes still hear each other (an empty batch every
/// `heartbeat_ticks` between every pair of nodes sharing a group): the followers of a leader
/// whose node went silent wake and elect another leader, with no request to wake them.
#[test]
fn a_quiescent_group_replaces_a_lost_leader_without_any_request() {
    let mut cluster = idle_cluster();
    let lost = cluster.leader(GroupId(1)).expect("a leader");
    let led_elsewhere: Vec<GroupId> =
        (1..=GROUPS).map(GroupId).filter(|group| cluster.leader(*group) != Some(lost)).collect();
    cluster.crash(lost, 0);
    let election_ticks = config().election_ticks;
    let mut ticks = 0;
    while cluster.leader(GroupId(1)).is_none_or(|leader| leader == lost) {
        cluster.tick();
        ticks += 1;
        // An election timeout of silence, a few ticks and a random timeout more, an election.
        assert!(ticks <= 4 * election_ticks, "no new leader {ticks} ticks after the crash");
    }
    let leader = cluster.leader(GroupId(1)).expect("elected");
    let slot = cluster.propose(leader, GroupId(1), Command::add("hits", 1));
    assert!(matches!(cluster.wait(&slot, 5), Some(Ok(_))), "the new leader takes writes");
    // Groups whose leaders live sleep on: a lost follower needs no one awake.
    for group in led_elsewhere {
        assert_eq!(quiescent_replicas(&mut cluster, group).len(), 2, "group {group}");
    }
}

/// A quiescent leader cut off from the other nodes stops hearing them and wakes, so its
/// CheckQuorum round steps it down as it would have awake: it does not go on answering for the
/// group (background reads of what leaders hold, such as the agents') while the others elect.
#[test]
fn a_quiescent_leader_cut_off_from_its_voters_steps_down() {
    let mut cluster = idle_cluster();
    let group = GroupId(2);
    let cut_off = cluster.leader(group).expect("a leader");
    cluster.isolate(cut_off);
    let election_ticks = config().election_ticks;
    let mut ticks = 0;
    loop {
        cluster.tick();
        ticks += 1;
        let role = cluster.store(cut_off).peer(group).expect("hosted").status().soft_state.role;
        if role != Role::Leader {
            break;
        }
        // An election timeout of silence, then one of CheckQuorum.
        assert!(ticks <= 3 * election_ticks, "still leading {ticks} ticks after the cut");
    }
    let others = cluster.leader(group).filter(|leader| *leader != cut_off);
    assert!(others.is_some(), "the others elected a leader meanwhile");
}

/// Found by review: the leader's node loses its disk and comes back at once (a replaced pod
/// with an empty volume, say), and gets a replica of a new group shared with the followers'
/// nodes before they noticed its silence. Its node was heard again, so the quiescent followers
/// of the lost leader never woke: no leader, nobody campaigning, for ever. A node heard says
/// nothing of the replica the followers wait for; every batch now carries the incarnation of
/// the sender's process, and a new one wakes the groups led from that node.
#[test]
fn a_leader_node_back_at_once_on_an_empty_disk_leaves_no_quiescent_group_leaderless() {
    let mut cluster = idle_cluster();
    let group = GroupId(1);
    assert_eq!(quiescent_replicas(&mut cluster, group), NODES, "the group sleeps");
    let lost = cluster.leader(group).expect("a leader");
    cluster.crash(lost, 0);
    cluster.wipe(lost);
    cluster.restart(lost);
    // A new group on the same three nodes (a shard created, or another group repaired): the
    // restarted node shares a group with the followers' nodes and heartbeats them.
    cluster.create_group(GroupId(100), &[1, 2, 3]);
    cluster.must_elect(GroupId(100));
    let election_ticks = config().election_ticks;
    let mut ticks = 0;
    while cluster.leader(group).is_none() {
        cluster.tick();
        ticks += 1;
        assert!(ticks <= 4 * election_ticks, "no leader {ticks} ticks after the restart");
    }
}

/// The nodes claiming to lead `group`, with their terms.
fn claimed_leaders(cluster: &mut Cluster, group: GroupId) -> Vec<(NodeId, Term)> {
    cluster
        .up_nodes()
        .into_iter()
        .filter_map(|node| {
            let status = cluster.store(node).peer(group)?.status();
            (status.soft_state.role == Role::Leader).then_some((node, status.hard_state.term))
        })
        .collect()
}

/// Found by review: a quiescent leader cut off from one follower only still hears a majority
/// of its voters' nodes; the cut-off follower wakes on its silence and, once the other
/// follower (woken by its pre-vote) stops honouring the sleeping leader's lease, is elected.
/// The old leader slept on in its old term: nothing of the group reached it, and once the new
/// leader removed its node, nothing ever would. Now the woken follower tells its leader, and a
/// quiescent leader rechecks with a heartbeat round every 30 election timeouts: once healed,
/// one leader is left. Over 200 store seeds, four groups (5 seeds were stale before).
#[test]
fn a_quiescent_leader_replaced_behind_a_one_sided_cut_does_not_lead_on() {
    let election_ticks = config().election_ticks;
    for seed in 0..200 {
        let config = StoreConfig { seed, ..config() };
        let mut cluster = Cluster::with_config(3, config.clone());
        let group = GroupId(1);
        for group in (1..=4).map(GroupId) {
            cluster.create_group(group, &[1, 2, 3]);
        }
        for group in (1..=4).map(GroupId) {
            cluster.must_elect(group);
        }
        for _ in 0..2 * config.leader_balance_ticks + 2 * config.quiesce_ticks {
            cluster.tick();
        }
        let old = cluster.leader(group).expect("a leader");
        let cut = NodeId(if old.0 == 3 { 2 } else { 3 });
        cluster.cut(old, cut);
        for _ in 0..10 * election_ticks {
            cluster.tick();
        }
        // Whoever leads now (the old leader, if it held on) removes the other side of the cut.
        let (leader, _) = claimed_leaders(&mut cluster, group)
            .into_iter()
            .max_by_key(|(_, term)| *term)
            .expect("a leader");
        let removed = if leader == old { cut } else { old };
        let (slot, callback) = testing::slot();
        let change = ConfChange::RemoveNode(removed);
        cluster.send(
            leader,
            StoreMsg::ChangeMembership { group, change, unchanged_since: None, callback },
        );
        assert!(matches!(cluster.wait(&slot, 50), Some(Ok(_))), "seed {seed}: the removal");
        cluster.heal();
        for _ in 0..35 * election_ticks {
            cluster.tick();
        }
        let claimed = claimed_leaders(&mut cluster, group);
        assert_eq!(claimed.len(), 1, "seed {seed}: leaders claimed after the heal: {claimed:?}");
    }
}
