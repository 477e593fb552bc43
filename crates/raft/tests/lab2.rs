//! The cases that MIT 6.824 Lab 2 (2A election, 2B agreement, 2C persistence, 2D snapshots)
//! checks, run against the Raft core in the deterministic harness. Times are in ticks: an
//! election timeout is 10 to 20 ticks, a heartbeat 2 ticks.

mod harness;

use harness::{Cluster, Faults, node};
use mosaic_raft::{LogIndex, NodeId};

// ---- 2A: leader election --------------------------------------------------------------------

#[test]
fn initial_election_elects_one_leader_and_keeps_it() {
    let mut cluster = Cluster::new(3, 1);
    cluster.check_one_leader();
    let term = cluster.check_terms();
    cluster.run_ticks(100);
    assert_eq!(cluster.check_terms(), term, "term changed without failures");
    cluster.check_one_leader();
}

#[test]
fn re_election_after_the_leader_is_cut_off() {
    let mut cluster = Cluster::new(3, 2);
    let leader1 = cluster.check_one_leader();
    cluster.disconnect(leader1);
    let leader2 = cluster.check_one_leader();
    assert_ne!(leader1, leader2);
    // The old leader rejoins: still one leader.
    cluster.connect(leader1);
    let leader3 = cluster.check_one_leader();
    // No quorum: no leader.
    cluster.disconnect(leader3);
    let other = cluster.ids.iter().copied().find(|id| *id != leader3).expect("another");
    cluster.disconnect(other);
    cluster.run_ticks(60);
    cluster.check_no_leader();
    // Quorum back: a leader.
    cluster.connect(other);
    cluster.check_one_leader();
    cluster.connect(leader3);
    cluster.check_one_leader();
}

#[test]
fn many_elections_with_seven_peers_and_random_disconnects() {
    let mut cluster = Cluster::new(7, 3);
    cluster.check_one_leader();
    for _ in 0..10 {
        let picks: Vec<u64> = (0..3).map(|_| 1 + cluster.rng.below(7)).collect();
        for id in &picks {
            cluster.disconnect(node(*id));
        }
        // Either the current leader survived or a new one is elected among the connected.
        cluster.check_one_leader();
        for id in &picks {
            cluster.connect(node(*id));
        }
    }
    cluster.check_one_leader();
}

// ---- 2B: log agreement ----------------------------------------------------------------------

#[test]
fn basic_agreement_commits_on_every_replica_in_order() {
    let mut cluster = Cluster::new(3, 10);
    cluster.check_one_leader();
    let mut last = LogIndex(0);
    for i in 0..5u8 {
        let index = cluster.one(&[b'a', i], 3, false);
        assert!(index > last, "indexes must grow: {index} after {last}");
        last = index;
    }
}

#[test]
fn agreement_despite_a_disconnected_follower() {
    let mut cluster = Cluster::new(3, 11);
    cluster.one(b"101", 3, false);
    let leader = cluster.check_one_leader();
    let follower = other_than(&cluster, &[leader]);
    cluster.disconnect(follower);
    cluster.one(b"102", 2, false);
    cluster.run_ticks(30);
    cluster.one(b"103", 2, false);
    // The follower rejoins and gets everything.
    cluster.connect(follower);
    cluster.one(b"104", 3, true);
    cluster.run_ticks(30);
    let index = cluster.one(b"105", 3, true);
    assert_eq!(cluster.n_committed(index).0, 3);
}

#[test]
fn no_agreement_without_a_majority() {
    let mut cluster = Cluster::new(5, 12);
    cluster.one(b"10", 5, false);
    let leader = cluster.check_one_leader();
    let followers: Vec<NodeId> = cluster.ids.iter().copied().filter(|id| *id != leader).collect();
    for id in &followers[..3] {
        cluster.disconnect(*id);
    }
    let index = cluster.propose(leader, b"20").expect("the leader accepts");
    cluster.run_ticks(40);
    assert_eq!(cluster.n_committed(index).0, 0, "committed without a majority");
    for id in &followers[..3] {
        cluster.connect(*id);
    }
    // The disconnected majority may have elected a new leader that overwrote index; either
    // way agreement resumes.
    cluster.one(b"30", 5, true);
    cluster.one(b"1000", 5, true);
}

#[test]
fn leader_failure_stops_agreement_until_a_majority_returns() {
    let mut cluster = Cluster::new(3, 13);
    cluster.one(b"101", 3, false);
    let leader1 = cluster.check_one_leader();
    cluster.disconnect(leader1);
    cluster.one(b"102", 2, false);
    let leader2 = cluster.check_one_leader();
    cluster.disconnect(leader2);
    let index = cluster.ids.iter().find_map(|id| cluster.replicas.get(id).map(|_| *id));
    let last = other_than(&cluster, &[leader1, leader2]);
    let proposed = cluster.propose(last, b"104");
    cluster.run_ticks(40);
    if let Some(i) = proposed {
        assert_eq!(cluster.n_committed(i).0, 0, "a lone replica committed");
    }
    let _ = index;
}

#[test]
fn concurrent_proposals_all_commit() {
    let mut cluster = Cluster::new(3, 14);
    let leader = cluster.check_one_leader();
    let term = cluster.replica(leader).node.term();
    let indexes: Vec<LogIndex> =
        (0..50u8).map(|i| cluster.propose(leader, &[b'c', i]).expect("accepted")).collect();
    cluster.run_ticks(20);
    assert_eq!(cluster.replica(leader).node.term(), term, "leadership changed");
    for (i, index) in indexes.iter().enumerate() {
        let command = cluster.wait(*index, 3, 20).expect("committed");
        assert_eq!(&command[..], &[b'c', i as u8]);
    }
}

#[test]
fn partitioned_leader_rejoins_and_its_stale_entries_are_replaced() {
    let mut cluster = Cluster::new(3, 15);
    cluster.one(b"101", 3, true);
    let leader1 = cluster.check_one_leader();
    cluster.disconnect(leader1);
    // The old leader accepts entries it can never commit.
    for command in [b"102", b"103", b"104"] {
        cluster.propose(leader1, command);
    }
    cluster.one(b"103", 2, true);
    let leader2 = cluster.check_one_leader();
    cluster.disconnect(leader2);
    cluster.connect(leader1);
    cluster.one(b"104", 2, true);
    cluster.connect(leader2);
    cluster.one(b"105", 3, true);
    cluster.check_log_matching();
}

#[test]
fn leader_backs_up_quickly_over_divergent_logs() {
    let mut cluster = Cluster::new(5, 16);
    cluster.one(b"start", 5, true);
    let leader1 = cluster.check_one_leader();
    let others: Vec<NodeId> = cluster.ids.iter().copied().filter(|id| *id != leader1).collect();
    // Leader and one follower in a minority; 50 uncommitted entries there.
    for id in &others[1..] {
        cluster.disconnect(*id);
    }
    for i in 0..50u32 {
        cluster.propose(leader1, format!("lost-{i}").as_bytes());
    }
    cluster.run_ticks(5);
    cluster.disconnect(leader1);
    cluster.disconnect(others[0]);
    for id in &others[1..] {
        cluster.connect(*id);
    }
    for i in 0..50u32 {
        cluster.one(format!("kept-{i}").as_bytes(), 3, true);
    }
    // The new leader and one follower partitioned; another 50 uncommitted there.
    let leader2 = cluster.check_one_leader();
    let partner = other_than(&cluster, &[leader1, others[0], leader2]);
    cluster.disconnect(partner);
    for i in 0..50u32 {
        cluster.propose(leader2, format!("lost2-{i}").as_bytes());
    }
    cluster.run_ticks(5);
    // The first group comes back with `partner`: it must repair 100 divergent entries fast.
    for id in cluster.ids.clone() {
        cluster.disconnect(id);
    }
    cluster.connect(leader1);
    cluster.connect(others[0]);
    cluster.connect(partner);
    let sent_before = cluster.messages_sent;
    for i in 0..50u32 {
        cluster.one(format!("again-{i}").as_bytes(), 3, true);
    }
    for id in cluster.ids.clone() {
        cluster.connect(id);
    }
    let index = cluster.one(b"last", 5, true);
    assert_eq!(cluster.n_committed(index).0, 5);
    let sent = cluster.messages_sent - sent_before;
    assert!(sent < 5_000, "repair took {sent} messages: backtracking is not fast");
    cluster.check_log_matching();
}

#[test]
fn agreement_costs_a_small_constant_number_of_messages_per_entry() {
    let mut cluster = Cluster::new(3, 17);
    let leader = cluster.check_one_leader();
    // An election costs a handful of messages, not a storm.
    assert!(cluster.messages_sent < 60, "election took {} messages", cluster.messages_sent);
    let term = cluster.replica(leader).node.term();
    let before = cluster.messages_sent;
    let ticks_before = cluster.now;
    let iterations = 20u64;
    for i in 0..iterations {
        cluster.one(format!("{i}").as_bytes(), 3, false);
    }
    assert_eq!(cluster.replica(leader).node.term(), term, "leadership changed");
    let sent = cluster.messages_sent - before;
    // Per entry and follower: an append, its answer, the commit notice and its answer.
    // Heartbeats: one round trip per follower every 2 ticks.
    let heartbeats = (cluster.now - ticks_before) / 2 * 2 * 2;
    let bound = iterations * 4 * 2 + heartbeats + 20;
    assert!(sent <= bound, "{sent} messages for {iterations} entries (bound {bound})");
}

// ---- 2C: persistence ------------------------------------------------------------------------

#[test]
fn state_survives_a_crash_of_every_replica() {
    let mut cluster = Cluster::new(3, 20);
    cluster.one(b"11", 3, true);
    for id in cluster.ids.clone() {
        cluster.restart(id);
    }
    cluster.one(b"12", 3, true);
    let leader = cluster.check_one_leader();
    cluster.restart(leader);
    cluster.one(b"13", 3, true);
    let leader = cluster.check_one_leader();
    cluster.crash(leader);
    cluster.one(b"14", 2, true);
    cluster.start(leader);
    let index = cluster.one(b"15", 3, true);
    // Every replica rebuilt its state machine from its log after restarting.
    for command in [&b"11"[..], b"12", b"13", b"14", b"15"] {
        for replica in cluster.replicas.values() {
            assert!(replica.state.values().any(|c| &c[..] == command), "lost {command:?}");
        }
    }
    assert_eq!(cluster.n_committed(index).0, 3);
}

#[test]
fn state_survives_repeated_crashes_of_minorities() {
    let mut cluster = Cluster::new(5, 21);
    let mut index = 1u32;
    for iteration in 0..5 {
        cluster.one(format!("{index}").as_bytes(), 5, true);
        index += 1;
        let leader = cluster.check_one_leader();
        let a = other_than(&cluster, &[leader]);
        let b = other_than(&cluster, &[leader, a]);
        cluster.crash(a);
        cluster.crash(b);
        cluster.one(format!("{index}").as_bytes(), 3, true);
        index += 1;
        let c = other_than(&cluster, &[leader, a, b]);
        let d = other_than(&cluster, &[leader, a, b, c]);
        cluster.crash(c);
        cluster.crash(d);
        cluster.start(a);
        cluster.start(b);
        cluster.run_ticks(40 + iteration);
        cluster.start(c);
        cluster.start(d);
    }
    cluster.one(b"1000", 5, true);
}

#[test]
fn crashed_partitioned_leader_and_follower_recover() {
    let mut cluster = Cluster::new(3, 22);
    cluster.one(b"101", 3, true);
    let leader = cluster.check_one_leader();
    let follower = other_than(&cluster, &[leader]);
    cluster.disconnect(follower);
    cluster.one(b"102", 2, true);
    cluster.crash(leader);
    let third = other_than(&cluster, &[leader, follower]);
    cluster.crash(third);
    cluster.connect(follower);
    cluster.start(leader);
    cluster.one(b"103", 2, true);
    cluster.start(third);
    cluster.one(b"104", 3, true);
}

/// Raft paper Figure 8: a leader must not commit an entry of an older term by counting
/// replicas; with random leader crashes the logs still converge.
fn figure8(seed: u64, unreliable: bool) {
    let mut cluster = Cluster::new(5, seed);
    if unreliable {
        cluster.faults = Faults::unreliable();
    }
    one_random(&mut cluster, 1);
    let mut running = 5;
    for _ in 0..200 {
        let mut leader = None;
        for id in cluster.ids.clone() {
            let command = rand_command(&mut cluster);
            if cluster.propose(id, &command).is_some() {
                leader = Some(id);
            }
        }
        let pause = if cluster.rng.below(1000) < 100 {
            cluster.rng.below(50)
        } else {
            cluster.rng.below(13)
        };
        cluster.run_ticks(pause);
        if let Some(leader) = leader
            && (cluster.rng.below(2) == 0 || !unreliable)
        {
            cluster.crash(leader);
            running -= 1;
        }
        if running < 3 {
            let down: Vec<NodeId> =
                cluster.ids.iter().copied().filter(|id| !cluster.is_running(*id)).collect();
            let pick = down[cluster.rng.below(down.len() as u64) as usize];
            cluster.start(pick);
            running += 1;
        }
    }
    for id in cluster.ids.clone() {
        if !cluster.is_running(id) {
            cluster.start(id);
        }
    }
    cluster.faults = Faults::default();
    let command = rand_command(&mut cluster);
    cluster.one(&command, 5, true);
    cluster.check_log_matching();
}

fn rand_command(cluster: &mut Cluster) -> Vec<u8> {
    cluster.rng.next_u64().to_be_bytes().to_vec()
}

fn one_random(cluster: &mut Cluster, expected: usize) -> LogIndex {
    let command = rand_command(cluster);
    cluster.one(&command, expected, true)
}

#[test]
fn figure8_logs_converge_despite_leader_crashes() {
    figure8(30, false);
}

#[test]
fn figure8_unreliable_logs_converge() {
    figure8(31, true);
}

#[test]
fn unreliable_agreement_commits_concurrent_proposals() {
    let mut cluster = Cluster::new(5, 32);
    cluster.faults = Faults::unreliable();
    for round in 1..30u32 {
        for j in 0..4u32 {
            let command = format!("{}", 100 * round + j);
            let leader = cluster.leaders().into_iter().next_back().map(|(_, ids)| ids[0]);
            if let Some(leader) = leader {
                cluster.propose(leader, command.as_bytes());
            }
        }
        cluster.one(format!("{round}").as_bytes(), 1, true);
    }
    cluster.faults = Faults::default();
    cluster.one(b"100", 5, true);
}

/// 6.824's churn tests: replicas crash, restart, disconnect and reconnect while clients
/// propose; every command acknowledged at the end must be on every replica.
fn churn(seed: u64, unreliable: bool) {
    let mut cluster = Cluster::new(5, seed);
    if unreliable {
        cluster.faults = Faults::unreliable();
    }
    let mut proposed = Vec::new();
    for _ in 0..60 {
        for id in cluster.ids.clone() {
            let command = rand_command(&mut cluster);
            if let Some(index) = cluster.propose(id, &command) {
                proposed.push((index, command));
            }
        }
        let action = cluster.rng.below(1000);
        let victim = node(1 + cluster.rng.below(5));
        if action < 200 {
            cluster.disconnect(victim);
        } else if action < 500 {
            cluster.connect(victim);
        } else if action < 600 {
            cluster.crash(victim);
        } else if action < 800 && !cluster.is_running(victim) {
            cluster.start(victim);
        }
        let pause = cluster.rng.below(8);
        cluster.run_ticks(pause);
    }
    cluster.faults = Faults::default();
    cluster.connect_all();
    for id in cluster.ids.clone() {
        if !cluster.is_running(id) {
            cluster.start(id);
        }
    }
    cluster.run_ticks(100);
    let last = one_random(&mut cluster, 5);
    // Everything committed is on every replica, and committed commands were proposed.
    for index in 1..=last.0 {
        let (count, command) = cluster.n_committed(LogIndex(index));
        if let Some(command) = command {
            assert_eq!(count, 5, "index {index} is on {count} replicas");
            let was_proposed = proposed.iter().any(|(_, c)| *c == command) || index == last.0;
            assert!(was_proposed, "committed a command nobody proposed at {index}");
        }
    }
    cluster.check_log_matching();
}

#[test]
fn reliable_churn_keeps_every_replica_consistent() {
    churn(40, false);
}

#[test]
fn unreliable_churn_keeps_every_replica_consistent() {
    churn(41, true);
}

// ---- 2D: snapshots --------------------------------------------------------------------------

/// 6.824's snapcommon: replicas snapshot every 10 entries; a victim is disconnected or
/// crashed while the others move far past its log, so it needs the leader's snapshot.
fn snapshot_scenario(seed: u64, disconnect: bool, unreliable: bool, crash: bool) {
    let mut cluster = Cluster::new(3, seed);
    cluster.snapshot_every = Some(10);
    if unreliable {
        cluster.faults = Faults::unreliable();
    }
    one_random(&mut cluster, 3);
    let mut leader = cluster.check_one_leader();
    for iteration in 0..15 {
        let mut victim = leader;
        let mut sender = other_than(&cluster, &[leader]);
        if iteration % 3 == 1 {
            sender = leader;
            victim = other_than(&cluster, &[leader]);
        }
        if disconnect {
            cluster.disconnect(victim);
            one_random(&mut cluster, 2);
        }
        if crash {
            cluster.crash(victim);
            one_random(&mut cluster, 2);
        }
        // Far enough past the victim that its log is compacted away on the others.
        for _ in 0..11 {
            let command = rand_command(&mut cluster);
            cluster.propose(sender, &command);
        }
        one_random(&mut cluster, 2);
        if disconnect {
            cluster.connect(victim);
            one_random(&mut cluster, 3);
            leader = cluster.check_one_leader();
        }
        if crash {
            cluster.start(victim);
            one_random(&mut cluster, 3);
            leader = cluster.check_one_leader();
        }
    }
    cluster.faults = Faults::default();
    let index = cluster.one(b"end", 3, true);
    assert_eq!(cluster.n_committed(index).0, 3);
    for replica in cluster.replicas.values() {
        let first = replica.node.status().first_index;
        assert!(first > LogIndex(10), "log was never compacted (first index {first})");
    }
}

#[test]
fn snapshot_basic_compacts_the_log() {
    snapshot_scenario(50, false, false, false);
}

#[test]
fn snapshot_install_brings_a_disconnected_replica_back() {
    snapshot_scenario(51, true, false, false);
}

#[test]
fn snapshot_install_unreliable() {
    snapshot_scenario(52, true, true, false);
}

#[test]
fn snapshot_install_with_crash() {
    snapshot_scenario(53, false, false, true);
}

#[test]
fn snapshot_install_unreliable_with_crash() {
    snapshot_scenario(54, false, true, true);
}

#[test]
fn initial_snapshot_restarts_every_replica_from_its_snapshot() {
    let mut cluster = Cluster::new(3, 55);
    cluster.snapshot_every = Some(10);
    for i in 0..25u32 {
        cluster.one(format!("init-{i}").as_bytes(), 3, true);
    }
    for id in cluster.ids.clone() {
        cluster.crash(id);
    }
    for id in cluster.ids.clone() {
        cluster.start(id);
        let replica = cluster.replica(id);
        assert!(
            replica.applied_index >= LogIndex(10),
            "node {id} did not restart from its snapshot (applied {})",
            replica.applied_index
        );
    }
    let index = cluster.one(b"after", 3, true);
    assert_eq!(cluster.n_committed(index).0, 3);
    for i in 0..25u32 {
        let command = format!("init-{i}");
        for replica in cluster.replicas.values() {
            assert!(replica.state.values().any(|c| c == command.as_bytes()), "lost {command}");
        }
    }
}

fn other_than(cluster: &Cluster, exclude: &[NodeId]) -> NodeId {
    cluster
        .ids
        .iter()
        .copied()
        .find(|id| !exclude.contains(id))
        .unwrap_or_else(|| panic!("no node outside {exclude:?}"))
}
