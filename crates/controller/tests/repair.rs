//! The automatic repair's decisions ([`Repairer`], [`RetireWatch`]): which node is repaired
//! and when, what it avoids, one node at a time, nothing while the leader may be the one cut
//! off, retiring once no group holds the node, and backing off after refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use mosaic_controller::{
    Command, ConfigNum, Error, NodeLiveness, NodeReport, NodeState, Outcome, REPAIR_GRACE,
    RETIRE_RETRY, RepairStep, Repairer, RetireWatch, may_hold,
};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

const AFTER: Duration = Duration::from_secs(60);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn up() -> NodeReport {
    NodeReport { state: NodeState::Active, liveness: NodeLiveness::Up { last_heard: secs(0) } }
}

fn down(ago: Option<u64>) -> NodeReport {
    NodeReport {
        state: NodeState::Active,
        liveness: NodeLiveness::Down { last_heard: ago.map(secs) },
    }
}

fn nodes(reports: &[(u64, NodeReport)]) -> BTreeMap<NodeId, NodeReport> {
    reports.iter().map(|(node, report)| (NodeId(*node), *report)).collect()
}

fn decommission(node: u64, avoid: &[u64]) -> RepairStep {
    let avoid = avoid.iter().copied().map(NodeId).collect();
    RepairStep::Send(Command::DecommissionNode { node: NodeId(node), avoid })
}

fn no_status() -> BTreeMap<NodeId, Option<Vec<GroupId>>> {
    BTreeMap::new()
}

#[test]
fn a_node_down_longer_than_the_set_time_is_decommissioned() {
    let mut repairer = Repairer::new(AFTER);
    let mut cluster = nodes(&[(1, up()), (2, up()), (3, up()), (4, down(Some(59)))]);
    assert_eq!(repairer.tick(secs(100), &cluster, &no_status()), RepairStep::Idle);
    // Unheard for the set time, but seen down by this repairer for only a second: a node
    // reconnecting after a long cut is given the grace.
    cluster.insert(NodeId(4), down(Some(60)));
    assert_eq!(repairer.tick(secs(101), &cluster, &no_status()), RepairStep::Idle);
    cluster.insert(NodeId(4), down(Some(88)));
    assert_eq!(repairer.tick(secs(129), &cluster, &no_status()), RepairStep::Idle);
    cluster.insert(NodeId(4), down(Some(89)));
    assert_eq!(secs(130) - secs(100), REPAIR_GRACE);
    assert_eq!(repairer.tick(secs(130), &cluster, &no_status()), decommission(4, &[]));
}

/// A node this leader never heard counts from the first tick that saw it down: a new leader
/// waits a whole period. Seen up once, it counts afresh.
#[test]
fn a_node_never_heard_counts_from_when_it_was_first_seen_down() {
    let mut repairer = Repairer::new(AFTER);
    let mut cluster = nodes(&[(1, up()), (2, up()), (3, up()), (4, down(None))]);
    assert_eq!(repairer.tick(secs(10), &cluster, &no_status()), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(69), &cluster, &no_status()), RepairStep::Idle);
    cluster.insert(NodeId(4), up());
    assert_eq!(repairer.tick(secs(70), &cluster, &no_status()), RepairStep::Idle);
    cluster.insert(NodeId(4), down(None));
    assert_eq!(repairer.tick(secs(71), &cluster, &no_status()), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(130), &cluster, &no_status()), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(131), &cluster, &no_status()), decommission(4, &[]));
    // Unknown (a leader that has not watched long enough) forgets it too; so does a reset.
    cluster.insert(
        NodeId(4),
        NodeReport { state: NodeState::Active, liveness: NodeLiveness::Unknown },
    );
    assert_eq!(repairer.tick(secs(132), &cluster, &no_status()), RepairStep::Idle);
    cluster.insert(NodeId(4), down(None));
    assert_eq!(repairer.tick(secs(133), &cluster, &no_status()), RepairStep::Idle);
    repairer.reset();
    assert_eq!(repairer.tick(secs(193), &cluster, &no_status()), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(253), &cluster, &no_status()), decommission(4, &[]));
}

/// The node down longest goes first (the lowest id on a tie), avoiding the other down nodes;
/// nothing more while it is decommissioning.
#[test]
fn the_node_down_longest_goes_first_avoiding_the_others_one_at_a_time() {
    let mut repairer = Repairer::new(AFTER);
    let mut cluster = nodes(&[
        (1, up()),
        (2, down(Some(70))),
        (3, up()),
        (4, down(Some(90))),
        (5, up()),
        (6, up()),
        (7, down(Some(90))),
    ]);
    assert_eq!(repairer.tick(secs(70), &cluster, &no_status()), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(100), &cluster, &no_status()), decommission(4, &[2, 7]));
    cluster.insert(NodeId(4), NodeReport { state: NodeState::Decommissioning, ..down(Some(91)) });
    let RepairStep::Waiting(why) = repairer.tick(secs(101), &cluster, &no_status()) else {
        panic!("one node at a time");
    };
    assert!(why.contains("node 7") && why.contains("node 4 (decommissioning)"), "{why}");
    // Retired, node 4 is no longer active: node 7 (down longer than node 2) goes next.
    cluster.insert(NodeId(4), NodeReport { state: NodeState::Retired, ..down(Some(92)) });
    assert_eq!(repairer.tick(secs(102), &cluster, &no_status()), decommission(7, &[2]));
}

/// A leader that holds half the active nodes or more down may be the one cut off.
#[test]
fn nothing_is_repaired_while_half_the_active_nodes_are_down() {
    let mut repairer = Repairer::new(AFTER);
    let mut cluster = nodes(&[(1, up()), (2, down(Some(100))), (3, up()), (4, down(Some(5)))]);
    assert_eq!(repairer.tick(secs(170), &cluster, &no_status()), RepairStep::Idle);
    let RepairStep::Waiting(why) = repairer.tick(secs(200), &cluster, &no_status()) else {
        panic!("2 of 4 down");
    };
    assert!(why.contains("2 of 4 active nodes are down"), "{why}");
    cluster.insert(NodeId(5), up());
    assert_eq!(repairer.tick(secs(201), &cluster, &no_status()), decommission(2, &[4]));
}

/// A decommissioning node (an operator's too) is retired after two ticks in a row in which no
/// group holds it; an unreadable status counts as holding; a refusal waits `RETIRE_RETRY`.
#[test]
fn a_decommissioning_node_is_retired_once_no_group_holds_it_twice_in_a_row() {
    let mut repairer = Repairer::new(AFTER);
    let leaving = NodeReport { state: NodeState::Decommissioning, liveness: NodeLiveness::Unknown };
    let cluster = nodes(&[(1, up()), (2, up()), (3, up()), (4, leaving)]);
    let holding = |groups: Option<&[u64]>| {
        BTreeMap::from([(NodeId(4), groups.map(|g| g.iter().copied().map(GroupId).collect()))])
    };
    let retire = RepairStep::Send(Command::RetireNode { node: NodeId(4) });
    assert_eq!(repairer.tick(secs(1), &cluster, &holding(Some(&[1]))), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(2), &cluster, &holding(Some(&[]))), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(3), &cluster, &holding(None)), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(4), &cluster, &no_status()), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(5), &cluster, &holding(Some(&[]))), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(6), &cluster, &holding(Some(&[]))), retire);
    let command = Command::RetireNode { node: NodeId(4) };
    let refusal = Err(Error::NodeStillListed { node: NodeId(4), group: GroupId(9) });
    repairer.answered(&command, &refusal, secs(6));
    let later = secs(6) + RETIRE_RETRY;
    assert_eq!(repairer.tick(later - secs(1), &cluster, &holding(Some(&[]))), RepairStep::Idle);
    assert_eq!(repairer.tick(later, &cluster, &holding(Some(&[]))), retire);
}

/// A refused `DecommissionNode` (no node can take a replica) is not asked again for that node
/// for a whole period, while another node may be repaired meanwhile.
#[test]
fn a_refused_decommission_waits_a_period_for_that_node() {
    let mut repairer = Repairer::new(AFTER);
    let mut cluster = nodes(&[(1, up()), (2, up()), (3, up()), (4, up()), (5, down(Some(100)))]);
    assert_eq!(repairer.tick(secs(60), &cluster, &no_status()), RepairStep::Idle);
    let step = repairer.tick(secs(100), &cluster, &no_status());
    assert_eq!(step, decommission(5, &[]));
    let RepairStep::Send(command) = step else { unreachable!() };
    let refusal = Err(Error::NoReplacement { group: GroupId(1), node: NodeId(5) });
    repairer.answered(&command, &refusal, secs(100));
    assert_eq!(repairer.tick(secs(101), &cluster, &no_status()), RepairStep::Idle);
    cluster.insert(NodeId(1), down(Some(60)));
    assert_eq!(repairer.tick(secs(101), &cluster, &no_status()), RepairStep::Idle);
    cluster.insert(NodeId(1), down(Some(90)));
    assert_eq!(repairer.tick(secs(131), &cluster, &no_status()), decommission(1, &[5]));
    let accepted = Ok(Outcome::NodeDecommissioning {
        node: NodeId(1),
        num: mosaic_controller::ConfigNum(3),
        replacements: BTreeMap::new(),
    });
    let command = Command::DecommissionNode { node: NodeId(1), avoid: [NodeId(5)].into() };
    repairer.answered(&command, &accepted, secs(131));
    cluster.insert(NodeId(1), NodeReport { state: NodeState::Retired, ..down(Some(70)) });
    assert_eq!(repairer.tick(secs(159), &cluster, &no_status()), RepairStep::Idle);
    assert_eq!(repairer.tick(secs(160), &cluster, &no_status()), decommission(5, &[]));
}

/// A decommission that does not end within a repair period (its group has no leader, or its
/// replacement died too) holds the next repair back no longer.
#[test]
fn a_decommission_that_does_not_end_holds_the_next_repair_back_one_period_at_most() {
    let mut repairer = Repairer::new(AFTER);
    let stuck = NodeReport { state: NodeState::Decommissioning, ..down(Some(100)) };
    let cluster =
        nodes(&[(1, up()), (2, up()), (3, up()), (4, up()), (5, stuck), (6, down(Some(100)))]);
    let holding = BTreeMap::from([(NodeId(5), Some(vec![GroupId(1)]))]);
    assert_eq!(repairer.tick(secs(70), &cluster, &holding), RepairStep::Idle);
    let RepairStep::Waiting(why) = repairer.tick(secs(100), &cluster, &holding) else {
        panic!("node 5 is decommissioning");
    };
    assert!(why.contains("node 6") && why.contains("node 5 (decommissioning)"), "{why}");
    assert!(matches!(repairer.tick(secs(129), &cluster, &holding), RepairStep::Waiting(_)));
    // Node 5 seen decommissioning since 70, a repair period.
    assert_eq!(repairer.tick(secs(130), &cluster, &holding), decommission(6, &[]));
}

#[test]
fn a_retire_watch_counts_empty_observations_in_a_row() {
    let mut watch = RetireWatch::default();
    assert!(!watch.observe(Some(&[]), secs(0)));
    assert!(!watch.observe(None, secs(1)));
    assert!(!watch.observe(Some(&[]), secs(2)));
    assert!(watch.observe(Some(&[]), secs(3)));
    watch.refused(secs(3));
    assert!(!watch.observe(Some(&[]), secs(4)));
    assert!(watch.observe(Some(&[]), secs(3) + RETIRE_RETRY));
}

#[test]
fn reports_default_to_active_and_unknown() {
    let states = BTreeMap::from([(NodeId(2), NodeState::Decommissioning)]);
    let liveness = BTreeMap::from([(NodeId(1), NodeLiveness::Up { last_heard: secs(2) })]);
    let reports = NodeReport::of_all([1, 2, 3].map(NodeId).into_iter(), &states, &liveness);
    let expected = BTreeMap::from([
        (NodeId(1), NodeReport { state: NodeState::Active, liveness: liveness[&NodeId(1)] }),
        (
            NodeId(2),
            NodeReport { state: NodeState::Decommissioning, liveness: NodeLiveness::Unknown },
        ),
        (NodeId(3), NodeReport { state: NodeState::Active, liveness: NodeLiveness::Unknown }),
    ]);
    assert_eq!(reports, expected);
}

#[test]
fn a_group_holds_a_node_unless_its_leader_applied_the_latest_configuration_without_it() {
    let latest = ConfigNum(5);
    assert!(may_hold(latest, None), "no leader answered");
    assert!(may_hold(latest, Some((ConfigNum(4), false))), "the leader is behind");
    assert!(may_hold(latest, Some((ConfigNum(5), true))), "the leader shows the node");
    assert!(!may_hold(latest, Some((ConfigNum(5), false))));
}
