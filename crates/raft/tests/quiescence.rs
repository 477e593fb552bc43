//! Quiescence (docs/raft.md "Quiescence"): an idle group stops ticking and sending heartbeats,
//! wakes on any message or request, and never lets a quiescent replica vote inside a lease.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use mosaic_raft::{Config, LogIndex, Message, MessageBody, NodeId, Role, Term};

fn election_ticks() -> u64 {
    u64::from(Config::new(1).election_ticks)
}

/// A group of three with a committed write, applied and reported everywhere; its leader.
fn settled(seed: u64) -> (Cluster, NodeId) {
    let mut cluster = Cluster::new(3, seed);
    cluster.one(b"w", 3, true);
    let leader = cluster.check_one_leader();
    // A few heartbeat rounds carry every follower's applied index to the leader.
    cluster.run_ticks(6);
    (cluster, leader)
}

fn quiescent(cluster: &Cluster) -> Vec<NodeId> {
    cluster.replicas.iter().filter(|(_, r)| r.node.is_quiescent()).map(|(id, _)| *id).collect()
}

/// Quiesces the leader of a settled group and delivers its last round.
fn quiesce(cluster: &mut Cluster, leader: NodeId) {
    assert!(cluster.with_node(leader, |n| n.quiesce()), "a settled leader quiesces");
    cluster.deliver();
    assert_eq!(quiescent(cluster), cluster.ids, "every replica quiesced");
}

#[test]
fn an_idle_group_quiesces_and_sends_nothing_until_something_wakes_it() {
    let (mut cluster, leader) = settled(1);
    let term = cluster.check_terms();
    quiesce(&mut cluster, leader);
    let sent = cluster.messages_sent;
    cluster.run_ticks(20 * election_ticks());
    assert_eq!(cluster.messages_sent, sent, "a quiescent group sends nothing");
    assert_eq!(cluster.check_terms(), term, "and nobody campaigns");
    assert_eq!(quiescent(&cluster), cluster.ids);

    // A write wakes it and commits everywhere; it can quiesce again once settled.
    let index = cluster.one(b"after", 3, false);
    assert!(index > LogIndex(0));
    assert!(quiescent(&cluster).is_empty(), "the write woke every replica");
    assert_eq!(cluster.check_one_leader(), leader);
    cluster.run_ticks(6);
    quiesce(&mut cluster, leader);
}

#[test]
fn a_leader_quiesces_only_when_every_peer_holds_and_applied_everything() {
    let (mut cluster, leader) = settled(2);
    let follower = cluster.ids.iter().copied().find(|id| *id != leader).expect("a follower");
    cluster.disconnect(follower);
    cluster.one(b"without", 2, false);
    cluster.run_ticks(6);
    assert!(!cluster.with_node(leader, |n| n.quiesce()), "a peer misses an entry");
    cluster.connect(follower);
    cluster.run_ticks(6);
    quiesce(&mut cluster, leader);

    // A proposal not yet committed keeps it awake, as does a pending read.
    cluster.run_ticks(1);
    cluster.with_node(leader, |n| n.propose(Bytes::from_static(b"p"))).expect("proposed");
    assert!(!cluster.with_node(leader, |n| n.quiesce()), "an uncommitted proposal");
    cluster.run_ticks(6);
    cluster.with_node(leader, |n| n.read_index(Bytes::from_static(b"r"))).expect("queued");
    assert!(!cluster.with_node(leader, |n| n.quiesce()), "a pending read");
}

#[test]
fn a_follower_quiesces_only_on_its_leaders_newest_round() {
    let (mut cluster, leader) = settled(3);
    let follower = cluster.ids.iter().copied().find(|id| *id != leader).expect("a follower");
    let term = cluster.replica(follower).node.term();
    let commit = cluster.replica(follower).node.committed();
    let heartbeat = |round, quiesce| Message {
        from: leader,
        to: follower,
        term,
        body: MessageBody::Heartbeat { commit, round, quiesce },
    };
    // A quiescing round older than one already heard arrived out of order: ignored.
    cluster.with_node(follower, |n| n.step(heartbeat(1_000, false))).expect("stepped");
    cluster.with_node(follower, |n| n.step(heartbeat(999, true))).expect("stepped");
    assert!(!cluster.replica(follower).node.is_quiescent());
    cluster.with_node(follower, |n| n.step(heartbeat(1_001, true))).expect("stepped");
    assert!(cluster.replica(follower).node.is_quiescent());
    // Any other message of the leader wakes it.
    cluster.with_node(follower, |n| n.step(heartbeat(1_002, false))).expect("stepped");
    assert!(!cluster.replica(follower).node.is_quiescent());
    // A follower whose log does not end at the leader's commit index stays awake.
    let ahead = Message {
        body: MessageBody::Heartbeat {
            commit: LogIndex(commit.0 - 1),
            round: 1_003,
            quiesce: true,
        },
        ..heartbeat(0, true)
    };
    cluster.with_node(follower, |n| n.step(ahead)).expect("stepped");
    assert!(!cluster.replica(follower).node.is_quiescent());
    assert_eq!(cluster.replica(follower).node.term(), Term(term.0));
}

/// The cost of quiescence: a lost leader goes unnoticed until something wakes the group, and
/// a request to a follower does.
#[test]
fn a_request_to_a_follower_elects_a_new_leader_after_a_quiescent_leader_is_lost() {
    for seed in 0..300 {
        let (mut cluster, leader) = settled(100 + seed);
        quiesce(&mut cluster, leader);
        cluster.crash(leader);
        cluster.run_ticks(10 * election_ticks());
        assert!(cluster.leaders().is_empty(), "nobody noticed: no election (seed {seed})");
        let follower = cluster.ids.iter().copied().find(|id| *id != leader).expect("a follower");
        // The client's write is refused (the follower does not lead), and wakes it.
        let refused = cluster.with_node(follower, |n| n.propose(Bytes::from_static(b"x")));
        assert!(refused.is_err());
        // The woken follower campaigns within an election timeout and a few ticks; the other
        // follower, woken by it, ignores it for those few ticks and may campaign itself; a
        // split vote costs one more timeout (the worst of these seeds: 31 ticks).
        let context = format!("after the request, seed {seed}");
        cluster.ticks_until_a_leader(4 * election_ticks(), &context);
    }
}

/// A node restarted while its groups were quiescent hears no leader and campaigns: the
/// leader, woken by its pre-vote, heartbeats before the quiescent follower (woken by the same
/// pre-vote) grants it, so the restart moves no leadership.
#[test]
fn a_restarted_follower_does_not_take_over_a_quiescent_group() {
    for seed in 0..30 {
        let (mut cluster, leader) = settled(400 + seed);
        quiesce(&mut cluster, leader);
        cluster.run_ticks(10 * election_ticks());
        let term = cluster.check_terms();
        let follower = cluster.ids.iter().copied().find(|id| *id != leader).expect("a follower");
        cluster.restart(follower);
        cluster.run_ticks(5 * election_ticks());
        assert_eq!(cluster.check_one_leader(), leader, "seed {seed}");
        assert_eq!(cluster.check_terms(), term, "nobody raised the term (seed {seed})");
    }
}

/// A leader restarted while its group was quiescent campaigns after its quiet period, and its
/// followers, which heard nothing since, vote for it at once: it no longer leads their term.
#[test]
fn a_restarted_leader_of_a_quiescent_group_is_elected_within_its_first_timeout() {
    for seed in 0..30 {
        let (mut cluster, leader) = settled(200 + seed);
        quiesce(&mut cluster, leader);
        cluster.restart(leader);
        let context = format!("after the restart, seed {seed}");
        cluster.ticks_until_a_leader(2 * election_ticks(), &context);
    }
}

/// A follower that acknowledged the leader's rounds and then quiesced still ignores other
/// candidates for an election timeout of its own ticks, counted before and after quiescence:
/// the leader's lease (taken from those rounds) always ends before anyone else is elected.
#[test]
fn a_quiescent_leaders_lease_ends_before_anyone_else_is_elected() {
    for seed in 0..40 {
        let (mut cluster, leader) = settled(300 + seed);
        let pause = cluster.rng.below(3);
        cluster.run_ticks(pause);
        quiesce(&mut cluster, leader);
        // The leader is cut off; a request wakes one follower, which campaigns.
        cluster.disconnect(leader);
        let follower = cluster.ids.iter().copied().find(|id| *id != leader).expect("a follower");
        let _ = cluster.with_node(follower, |n| n.read_index(Bytes::from_static(b"r")));
        cluster.tick_checking_lease(leader, 6 * election_ticks(), &format!("seed {seed}"));
        assert!(cluster.another_leads(leader), "the others elected a leader (seed {seed})");
    }
}

#[test]
fn a_quiescent_leader_ignores_its_last_rounds_answers_but_wakes_for_anything_else() {
    let (mut cluster, leader) = settled(4);
    quiesce(&mut cluster, leader);
    let follower = cluster.ids.iter().copied().find(|id| *id != leader).expect("a follower");
    let term = cluster.replica(leader).node.term();
    let answer = Message {
        from: follower,
        to: leader,
        term,
        body: MessageBody::HeartbeatResponse { round: 1, applied: LogIndex(1) },
    };
    cluster.with_node(leader, |n| n.step(answer)).expect("stepped");
    assert!(cluster.replica(leader).node.is_quiescent());
    // A pre-vote from a node that restarted and heard nothing wakes it, and it heartbeats.
    let pre_vote = Message {
        from: follower,
        to: leader,
        term: Term(term.0 + 1),
        body: MessageBody::RequestVote {
            pre_vote: true,
            last_index: LogIndex(0),
            last_term: Term(0),
            leader_transfer: false,
        },
    };
    cluster.with_node(leader, |n| n.step(pre_vote)).expect("stepped");
    assert!(!cluster.replica(leader).node.is_quiescent());
    assert_eq!(cluster.replica(leader).node.role(), Role::Leader);
}
