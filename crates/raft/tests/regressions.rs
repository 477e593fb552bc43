//! Deterministic reproductions of bugs the randomized simulator (`tests/simulation.rs`) found,
//! each cut down to the few steps that trigger it. Each test names the seed that found it.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use mosaic_raft::{Config, LogIndex, NodeId};

fn without_pre_vote_or_check_quorum(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

fn others(cluster: &Cluster, id: NodeId) -> (NodeId, NodeId) {
    let rest: Vec<NodeId> = cluster.ids.iter().copied().filter(|other| *other != id).collect();
    (rest[0], rest[1])
}

/// Simulator seed 13. A new leader does not know the commit index of its predecessor until
/// an entry of its own term commits (Raft dissertation §6.4, step 1), so a read queued before
/// then must not be stamped with the commit index by the periodic heartbeat round.
#[test]
fn read_queued_before_the_leaders_first_commit_waits_for_it() {
    let mut cluster = Cluster::with_config(3, 13, without_pre_vote_or_check_quorum);
    let old_leader = cluster.check_one_leader();
    cluster.one(b"before", 3, false);
    let (new_leader, lagging) = others(&cluster, old_leader);

    // The old leader commits and applies `x` with the new leader's acknowledgement alone,
    // and is cut off before anyone learns that `x` committed.
    cluster.partition(&[&[old_leader.0, new_leader.0], &[lagging.0]]);
    let index = cluster.propose(old_leader, b"x").expect("the leader accepts");
    assert!(cluster.deliver_round(), "the append goes out");
    assert!(cluster.deliver_round(), "the acknowledgement comes back");
    assert_eq!(cluster.max_applied(), index, "the old leader applied x");
    assert!(cluster.replica(new_leader).node.committed() < index);
    cluster.connect_all();
    cluster.disconnect(old_leader);

    // The new leader wins with the lagging node's vote, whose log lacks `x`: its first append
    // is rejected, but heartbeats are acknowledged.
    cluster.with_node(new_leader, |node| node.campaign());
    assert!(cluster.deliver_round(), "the vote request goes out");
    assert!(cluster.deliver_round(), "the vote comes back");
    assert!(cluster.replica(new_leader).node.leader() == Some(new_leader), "elected");
    cluster
        .with_node(new_leader, |node| node.read_index(Bytes::from_static(b"read")))
        .expect("a leader accepts reads");
    for _ in 0..Config::new(1).heartbeat_ticks {
        cluster.with_node(new_leader, |node| node.tick());
    }
    cluster.deliver();
    cluster.run_ticks(5);

    let reads = &cluster.replica(new_leader).read_states;
    assert_eq!(reads.len(), 1, "the read is answered once the leader commits: {reads:?}");
    assert!(
        reads[0].index >= index,
        "read index {} misses {index}, applied before the read was issued",
        reads[0].index
    );
}

fn two_appends_in_flight(config: &mut Config) {
    config.inflight_messages_max = 2;
}

/// Proposes `count` entries one at a time (one append each) while `follower` is cut off,
/// reconnects it, and returns the last index.
fn propose_while_cut_off(cluster: &mut Cluster, follower: NodeId, count: u8) -> LogIndex {
    let leader = cluster.check_one_leader();
    cluster.one(b"warm-up", 3, false);
    cluster.disconnect(follower);
    let mut index = LogIndex(0);
    for i in 0..count {
        index = cluster.propose(leader, &[b'p', i]).expect("the leader accepts");
        cluster.deliver();
    }
    cluster.connect(follower);
    index
}

/// Simulator seed 71. A follower in replicate state whose whole in-flight window was lost gets
/// nothing more: the window stays full, and the heartbeat responses that say it lags must
/// reopen it (etcd frees one slot), or replication to it stalls for good.
#[test]
fn follower_whose_in_flight_appends_were_lost_catches_up() {
    let mut cluster = Cluster::with_config(3, 71, two_appends_in_flight);
    let leader = cluster.check_one_leader();
    let (follower, _) = others(&cluster, leader);
    let index = propose_while_cut_off(&mut cluster, follower, 4);
    cluster.run_ticks(50);
    assert_eq!(cluster.n_committed(index).0, 3, "the follower applied everything");
}

/// Found while analysing seed 71 (the same heartbeat-response path). With room in the window,
/// the last append lost and no later proposal,
/// the leader must still send the lagging follower an append when its heartbeat response
/// shows it lags (Raft Figure 2: the leader retries AppendEntries until the follower has
/// every entry), even though it has no new entries for it.
#[test]
fn follower_that_missed_the_last_append_catches_up_without_new_proposals() {
    let mut cluster = Cluster::new(3, 72);
    let leader = cluster.check_one_leader();
    let (follower, _) = others(&cluster, leader);
    let index = propose_while_cut_off(&mut cluster, follower, 1);
    cluster.run_ticks(50);
    assert_eq!(cluster.n_committed(index).0, 3, "the follower applied the entry");
}
