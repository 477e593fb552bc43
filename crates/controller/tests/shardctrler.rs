//! What the MIT 6.824 Lab 4A (shardctrler) tests check, at the level of the replicated state
//! machine: join/leave, historical queries, move, concurrent clients with retries, minimal
//! transfers, multi-group operations; plus every invalid operation, refused with nothing
//! changed. (The multi-replica parts, replicas stopped and the leader killed, run against the
//! controller process.)

mod support;

use std::collections::{BTreeMap, BTreeSet};

use mosaic_controller::{
    Command, ConfigNum, Configuration, ControllerState, Error, GroupLife, Outcome, Request,
};
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::{LogIndex, NodeId};
use support::Harness;

const SHARDS: u32 = 10;

impl Harness {
    fn new() -> Self {
        Self::with_nodes(SHARDS, 9)
    }

    fn join(&mut self, groups: &[u64]) -> Outcome {
        let groups = groups.iter().map(|g| (GroupId(*g), members(*g))).collect();
        self.must(Command::AddGroups { groups, max_moves: None })
    }

    fn leave(&mut self, groups: &[u64]) -> Outcome {
        let groups = groups.iter().map(|g| GroupId(*g)).collect();
        self.must(Command::RemoveGroups { groups, max_moves: None })
    }
}

fn members(group: u64) -> Vec<NodeId> {
    (0..3).map(|i| NodeId(1 + (group + i) % 9)).collect()
}

/// 6.824's `check`: the groups are exactly `groups`, every shard is owned by one of them, and
/// the assignment is balanced.
fn check(config: &Configuration, groups: &[u64]) {
    let expected: BTreeSet<GroupId> = groups.iter().map(|g| GroupId(*g)).collect();
    let actual: BTreeSet<GroupId> = config.groups.keys().copied().collect();
    assert_eq!(actual, expected, "groups of configuration {}", config.num);
    if !groups.is_empty() {
        for (shard, owner) in config.shards.iter().enumerate() {
            let owner = owner.unwrap_or_else(|| panic!("shard {shard} has no owner"));
            assert!(expected.contains(&owner), "shard {shard} owned by unknown group {owner}");
        }
    }
    let counts = config.shard_counts();
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    assert!(max <= min + 1, "unbalanced: {counts:?}");
}

#[test]
fn basic_join_and_leave_balance_the_shards() {
    let mut h = Harness::new();
    check(&h.latest(), &[]);
    h.join(&[1]);
    check(&h.latest(), &[1]);
    h.join(&[2]);
    check(&h.latest(), &[1, 2]);
    // Joining a group that exists with the same members changes nothing.
    let outcome = h.join(&[2]);
    assert!(matches!(outcome, Outcome::Unchanged { .. }), "{outcome:?}");
    check(&h.latest(), &[1, 2]);
    h.leave(&[1]);
    check(&h.latest(), &[2]);
    // Leaving again reports that it already happened.
    let outcome = h.leave(&[1]);
    assert!(matches!(outcome, Outcome::Unchanged { .. }), "{outcome:?}");
}

#[test]
fn historical_queries_return_the_exact_saved_configurations() {
    let mut h = Harness::new();
    let mut saved = vec![h.latest()];
    for step in [&[1u64][..], &[2], &[3]] {
        h.join(step);
        saved.push(h.latest());
    }
    h.leave(&[2]);
    saved.push(h.latest());
    for config in &saved {
        assert_eq!(h.state.config(Some(config.num)).expect("saved"), config);
    }
    assert_eq!(h.state.config(None).expect("latest"), saved.last().expect("some"));
    let error = h.state.config(Some(ConfigNum(99))).unwrap_err();
    assert_eq!(error, Error::UnknownConfig { num: ConfigNum(99), latest: ConfigNum(4) });
}

#[test]
fn move_pins_a_shard_and_a_later_join_rebalances() {
    let mut h = Harness::new();
    h.join(&[1, 2]);
    for shard in 0..SHARDS / 2 {
        h.must(Command::MoveShard { shard: ShardId(shard), group: GroupId(1) });
    }
    for shard in SHARDS / 2..SHARDS {
        h.must(Command::MoveShard { shard: ShardId(shard), group: GroupId(2) });
    }
    let config = h.latest();
    for shard in 0..SHARDS {
        let expected = if shard < SHARDS / 2 { 1 } else { 2 };
        assert_eq!(config.owner(ShardId(shard)), Some(GroupId(expected)));
    }
    let outcome = h.must(Command::MoveShard { shard: ShardId(0), group: GroupId(1) });
    assert!(matches!(outcome, Outcome::Unchanged { .. }), "moving to the owner: {outcome:?}");
    h.join(&[3]);
    check(&h.latest(), &[1, 2, 3]);
}

#[test]
fn concurrent_clients_with_retries_apply_each_request_once() {
    let mut h = Harness::new();
    h.join(&[1]);
    // Ten clients each join their own group then leave it, interleaved, each request sent
    // twice (a retry after a lost answer).
    let mut results = BTreeMap::new();
    for round in 0..2u64 {
        for client in 10..20u64 {
            let group = client;
            let command = if round == 0 {
                let groups = [(GroupId(group), members(group))].into_iter().collect();
                Command::AddGroups { groups, max_moves: None }
            } else {
                Command::RemoveGroups { groups: vec![GroupId(group)], max_moves: None }
            };
            let first = h.apply_as(client, round + 1, command.clone());
            let retry = h.apply_as(client, round + 1, command);
            assert_eq!(first, retry, "a retry returns the first answer");
            results.insert((client, round), first.expect("applied"));
        }
    }
    // One base join, ten joins and ten leaves: 21 configurations, not 41.
    assert_eq!(h.latest().num, ConfigNum(21));
    check(&h.latest(), &[1]);
    // A delayed duplicate of an older request is refused.
    let command = Command::Rebalance { max_moves: None };
    let error = h.apply_as(10, 1, command).unwrap_err();
    assert!(matches!(error, Error::StaleRequest { seq: 1, latest: 2, .. }), "{error}");
}

fn moves(before: &Configuration, after: &Configuration) -> usize {
    before.shards.iter().zip(&after.shards).filter(|(a, b)| a != b).count()
}

#[test]
fn joins_and_leaves_move_the_minimum_number_of_shards() {
    let mut h = Harness::new();
    h.join(&[1]);
    for group in 2..=5 {
        let before = h.latest();
        h.join(&[group]);
        let after = h.latest();
        // The new group takes floor(10 / n) shards; nobody else moves.
        let expected = SHARDS as usize / group as usize;
        assert_eq!(moves(&before, &after), expected, "join of group {group}");
        for (shard, (a, b)) in before.shards.iter().zip(&after.shards).enumerate() {
            if a != b {
                assert_eq!(*b, Some(GroupId(group)), "shard {shard} moved between old groups");
            }
        }
    }
    for group in 1..=4 {
        let before = h.latest();
        let held = before.shards_of(GroupId(group)).len();
        h.leave(&[group]);
        let after = h.latest();
        assert_eq!(moves(&before, &after), held, "leave of group {group} moved other shards");
    }
    check(&h.latest(), &[5]);
}

#[test]
fn multi_group_join_and_leave() {
    let mut h = Harness::new();
    h.join(&[1, 2, 3]);
    check(&h.latest(), &[1, 2, 3]);
    h.join(&[4, 5]);
    check(&h.latest(), &[1, 2, 3, 4, 5]);
    let before = h.latest();
    h.leave(&[1, 2]);
    let after = h.latest();
    check(&after, &[3, 4, 5]);
    let held = before.shards_of(GroupId(1)).len() + before.shards_of(GroupId(2)).len();
    assert_eq!(moves(&before, &after), held);
}

#[test]
fn max_moves_spreads_a_rebalance_over_several_configurations() {
    let mut h = Harness::new();
    h.join(&[1]);
    let groups = [(GroupId(2), members(2)), (GroupId(3), members(3))].into_iter().collect();
    h.must(Command::AddGroups { groups, max_moves: Some(2) });
    assert_eq!(moves(h.state.config(Some(ConfigNum(1))).unwrap(), &h.latest()), 2);
    let plan = h.state.plan_rebalance(Some(2));
    assert_eq!(plan.len(), 2, "the dry run shows the next two moves: {plan:?}");
    let latest_before = h.latest().num;
    assert_eq!(h.latest().num, latest_before, "a dry run changes nothing");
    let mut steps = 0;
    while !h.state.plan_rebalance(None).is_empty() {
        h.must(Command::Rebalance { max_moves: Some(2) });
        steps += 1;
        assert!(steps < 10, "rebalance does not converge");
    }
    check(&h.latest(), &[1, 2, 3]);
    let outcome = h.must(Command::Rebalance { max_moves: None });
    assert!(matches!(outcome, Outcome::Unchanged { .. }));
}

/// Applies a command that must fail and checks that the state did not change.
fn must_refuse(h: &mut Harness, command: Command) -> Error {
    let before = h.state.clone();
    let error = h.apply(command).expect_err("refused");
    // Only the session moved (the refusal is remembered for retries).
    assert_eq!(before.latest(), h.state.latest(), "a refused command changed the configuration");
    assert_eq!(before.nodes(), h.state.nodes(), "a refused command changed the nodes");
    error
}

#[test]
fn invalid_operations_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    h.join(&[1]);
    let one_group = |g: u64, m: Vec<u64>| Command::AddGroups {
        groups: [(GroupId(g), m.into_iter().map(NodeId).collect())].into_iter().collect(),
        max_moves: None,
    };
    assert_eq!(
        must_refuse(&mut h, one_group(2, vec![1, 42])),
        Error::UnregisteredMember { group: GroupId(2), node: NodeId(42) }
    );
    assert_eq!(must_refuse(&mut h, one_group(2, vec![])), Error::EmptyGroup { group: GroupId(2) });
    assert_eq!(
        must_refuse(&mut h, one_group(2, vec![3, 3])),
        Error::DuplicateMember { group: GroupId(2), node: NodeId(3) }
    );
    assert!(matches!(must_refuse(&mut h, one_group(1, vec![7])), Error::GroupExists { .. }));
    assert!(matches!(must_refuse(&mut h, one_group(0, vec![1])), Error::InvalidGroupId { .. }));
    assert_eq!(
        must_refuse(&mut h, Command::AddGroups { groups: BTreeMap::new(), max_moves: None }),
        Error::NoGroups
    );
    assert_eq!(
        must_refuse(&mut h, Command::RemoveGroups { groups: vec![GroupId(9)], max_moves: None }),
        Error::UnknownGroup { group: GroupId(9) }
    );
    assert_eq!(
        must_refuse(&mut h, Command::RemoveGroups { groups: vec![GroupId(1)], max_moves: None }),
        Error::RemovingEveryGroup
    );
    assert_eq!(
        must_refuse(&mut h, Command::MoveShard { shard: ShardId(SHARDS), group: GroupId(1) }),
        Error::ShardOutOfRange { shard: ShardId(SHARDS), shard_count: SHARDS }
    );
    assert_eq!(
        must_refuse(&mut h, Command::MoveShard { shard: ShardId(0), group: GroupId(5) }),
        Error::UnknownGroup { group: GroupId(5) }
    );
    assert_eq!(
        must_refuse(&mut h, Command::RegisterNode { node: NodeId(0), address: "a:1".into() }),
        Error::InvalidNodeId
    );
    for address in ["localhost", "host:0", "host:99999", ":7000", "::1:7000", "a b:7000", "[::1:70"]
    {
        let error = must_refuse(
            &mut h,
            Command::RegisterNode { node: NodeId(10), address: address.to_string() },
        );
        assert!(matches!(error, Error::InvalidAddress { .. }), "{address}: {error}");
    }
    for address in ["127.0.0.1:7000", "node-1.example:80", "[::1]:7000"] {
        let mut fresh = Harness::new();
        fresh.must(Command::RegisterNode { node: NodeId(10), address: address.to_string() });
    }
}

#[test]
fn re_registering_a_node_reports_what_changed() {
    let mut h = Harness::new();
    let same = h.must(Command::RegisterNode { node: NodeId(1), address: "127.0.0.1:7001".into() });
    assert!(matches!(same, Outcome::Unchanged { .. }), "{same:?}");
    let moved = h.must(Command::RegisterNode { node: NodeId(1), address: "10.0.0.1:7001".into() });
    assert_eq!(
        moved,
        Outcome::NodeAddressChanged { node: NodeId(1), previous: "127.0.0.1:7001".into() }
    );
    assert_eq!(h.state.nodes()[&NodeId(1)], "10.0.0.1:7001");
}

#[test]
fn sessions_are_bounded_and_evict_the_least_recent_client() {
    let mut state = ControllerState::new(SHARDS, 3);
    for client in 1..=4u64 {
        let request = Request {
            client: ClientId(client),
            seq: 1,
            command: Command::RegisterNode { node: NodeId(client), address: "h:1".into() },
        };
        state.apply(LogIndex(client), request).expect("applies");
    }
    // Client 1 was evicted: its old request is no longer recognised as a duplicate and is
    // executed again (registering the same address again is harmless and says so).
    let retry = Request {
        client: ClientId(1),
        seq: 1,
        command: Command::RegisterNode { node: NodeId(1), address: "h:1".into() },
    };
    let outcome = state.apply(LogIndex(5), retry).expect("applies");
    assert!(matches!(outcome, Outcome::Unchanged { .. }), "{outcome:?}");
}

#[test]
fn a_removed_group_retires_once_and_its_id_is_never_reused() {
    let mut h = Harness::new();
    h.join(&[1]);
    h.join(&[2]);
    let life = |h: &Harness, group: u64| h.state.lives().get(&GroupId(group)).cloned();
    assert_eq!(
        life(&h, 2),
        Some(GroupLife {
            added: ConfigNum(2),
            founders: members(2),
            removed: None,
            retired: false
        })
    );
    let still_listed = h.apply(Command::RetireGroup { group: GroupId(2) }).unwrap_err();
    assert_eq!(still_listed, Error::GroupNotRemoved { group: GroupId(2) });
    let unknown = h.apply(Command::RetireGroup { group: GroupId(7) }).unwrap_err();
    assert_eq!(unknown, Error::UnknownGroup { group: GroupId(7) });

    h.leave(&[2]);
    let removed = Some(ConfigNum(3));
    assert_eq!(
        life(&h, 2),
        Some(GroupLife { added: ConfigNum(2), founders: members(2), removed, retired: false })
    );
    // Adding it again is refused (before and after it retired), and changes nothing.
    let again = [(GroupId(2), members(2))].into_iter().collect();
    let refused = h.apply(Command::AddGroups { groups: again, max_moves: None }).unwrap_err();
    assert_eq!(refused, Error::GroupRemoved { group: GroupId(2), removed: ConfigNum(3) });
    assert_eq!(h.latest().num, ConfigNum(3));

    let retired = h.must(Command::RetireGroup { group: GroupId(2) });
    assert_eq!(retired, Outcome::GroupRetired { group: GroupId(2) });
    assert_eq!(
        life(&h, 2),
        Some(GroupLife { added: ConfigNum(2), founders: members(2), removed, retired: true })
    );
    let twice = h.must(Command::RetireGroup { group: GroupId(2) });
    assert!(matches!(twice, Outcome::Unchanged { .. }), "{twice:?}");
    // Retiring creates no configuration.
    assert_eq!(h.latest().num, ConfigNum(3));
    assert_eq!(
        life(&h, 1),
        Some(GroupLife {
            added: ConfigNum(1),
            founders: members(1),
            removed: None,
            retired: false
        })
    );
}
