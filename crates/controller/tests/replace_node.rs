//! `Command::ReplaceNode`: one new configuration in which a node's place in its groups goes to
//! another node, with the same shards; every refusal changes nothing; a retried request
//! applies once.

mod support;

use std::collections::BTreeMap;

use mosaic_controller::{Command, ConfigNum, Error, Outcome};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use support::Harness;

const SHARDS: u32 = 12;

impl Harness {
    /// A controller with nodes 1..=8 registered and, in configuration 1, groups 1 = {1,2,3},
    /// 2 = {2,3,4} and 3 = {4,5,6}.
    fn new() -> Self {
        let mut harness = Self::with_nodes(SHARDS, 8);
        let groups = BTreeMap::from([
            (GroupId(1), nodes(&[1, 2, 3])),
            (GroupId(2), nodes(&[2, 3, 4])),
            (GroupId(3), nodes(&[4, 5, 6])),
        ]);
        harness.must(Command::AddGroups { groups, max_moves: None });
        assert_eq!(harness.latest().num, ConfigNum(1));
        harness
    }

    /// Replaces `node` by `with` (in `group` only, if given) and returns the configuration
    /// created; panics if none was.
    fn must_replace(&mut self, node: u64, with: u64, group: Option<u64>) -> ConfigNum {
        let command = replace(node, with, group);
        match self.must(command) {
            Outcome::ConfigCreated { num, moves } => {
                assert!(moves.is_empty(), "replacing a node moves no shard: {moves:?}");
                num
            }
            other => panic!("replacing node {node} by {with}: {other:?}"),
        }
    }

    fn members(&self, group: u64) -> Vec<NodeId> {
        self.latest().groups.get(&GroupId(group)).cloned().unwrap_or_default()
    }
}

fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn replace(node: u64, with: u64, group: Option<u64>) -> Command {
    Command::ReplaceNode { node: NodeId(node), with: NodeId(with), group: group.map(GroupId) }
}

#[test]
fn a_node_is_replaced_in_every_group_that_lists_it_and_no_shard_moves() {
    let mut h = Harness::new();
    let before = h.latest();
    // Group 3 lists node 6 but not node 3: it is not changed, and is no obstacle.
    let num = h.must_replace(3, 6, None);
    assert_eq!(num, ConfigNum(2), "one configuration for every group changed");
    let after = h.latest();
    assert_eq!(after.num, num);
    assert_eq!(after.shards, before.shards, "the shards stay where they were");
    assert_eq!(h.members(1), nodes(&[1, 2, 6]));
    assert_eq!(h.members(2), nodes(&[2, 4, 6]));
    assert_eq!(h.members(3), nodes(&[4, 5, 6]));
}

#[test]
fn members_stay_sorted_after_a_replacement() {
    let mut h = Harness::new();
    h.must_replace(1, 8, None);
    assert_eq!(h.members(1), nodes(&[2, 3, 8]));
    h.must_replace(8, 1, None);
    assert_eq!(h.members(1), nodes(&[1, 2, 3]));
}

#[test]
fn naming_a_group_replaces_the_node_there_only() {
    let mut h = Harness::new();
    let before = h.latest();
    let num = h.must_replace(2, 7, Some(2));
    assert_eq!(num, ConfigNum(2));
    assert_eq!(h.members(1), nodes(&[1, 2, 3]), "group 1 lists node 2 and was not named");
    assert_eq!(h.members(2), nodes(&[3, 4, 7]));
    assert_eq!(h.members(3), nodes(&[4, 5, 6]));
    assert_eq!(h.latest().shards, before.shards);
}

#[test]
fn every_refusal_says_what_is_wrong_and_changes_nothing() {
    let mut h = Harness::new();
    assert_eq!(h.must_refuse(replace(0, 7, None)), Error::InvalidNodeId);
    assert_eq!(h.must_refuse(replace(3, 0, None)), Error::InvalidNodeId);

    let same = h.must_refuse(replace(3, 3, None));
    assert_eq!(same, Error::SameNode { node: NodeId(3) });
    assert!(same.to_string().contains("node 3 cannot replace itself"), "{same}");

    let unregistered = h.must_refuse(replace(3, 42, None));
    assert_eq!(unregistered, Error::NodeNotRegistered { node: NodeId(42) });
    let message = unregistered.to_string();
    assert!(message.contains("node 42") && message.contains("node list"), "{message}");

    // Node 7 is registered but in no group; node 99 was never registered (a node that died
    // before it registered could still not be in a group).
    let nowhere = h.must_refuse(replace(7, 8, None));
    assert_eq!(nowhere, Error::NotAMember { node: NodeId(7), group: None });
    assert!(nowhere.to_string().contains("node 7 is not a member of any group"), "{nowhere}");
    assert_eq!(
        h.must_refuse(replace(99, 8, None)),
        Error::NotAMember { node: NodeId(99), group: None }
    );
    let not_there = h.must_refuse(replace(1, 8, Some(2)));
    assert_eq!(not_there, Error::NotAMember { node: NodeId(1), group: Some(GroupId(2)) });
    assert!(not_there.to_string().contains("node 1 is not a member of group 2"), "{not_there}");

    assert_eq!(h.must_refuse(replace(1, 8, Some(9))), Error::UnknownGroup { group: GroupId(9) });

    // Group 2 lists both 3 and 4: it would hold two replicas on node 4. Group 1, which would
    // change too, is left as it was.
    let twice = h.must_refuse(replace(3, 4, None));
    assert_eq!(twice, Error::AlreadyAMember { group: GroupId(2), node: NodeId(4) });
    assert!(twice.to_string().contains("group 2 already has a replica on node 4"), "{twice}");
    assert_eq!(h.members(1), nodes(&[1, 2, 3]));
    // Named alone, group 1 may take node 4.
    h.must_replace(3, 4, Some(1));
    assert_eq!(h.members(1), nodes(&[1, 2, 4]));
}

#[test]
fn a_removed_group_is_never_changed() {
    let mut h = Harness::new();
    h.must(Command::RemoveGroups { groups: vec![GroupId(3)], max_moves: None });
    let removed = h.latest().num;
    // Node 5 and 6 are only in group 3, which the latest configuration no longer lists (its
    // replicas may still be handing their shards off).
    assert_eq!(
        h.must_refuse(replace(5, 8, None)),
        Error::NotAMember { node: NodeId(5), group: None }
    );
    assert_eq!(h.must_refuse(replace(5, 8, Some(3))), Error::UnknownGroup { group: GroupId(3) });
    // Node 4 is in groups 2 and 3: only group 2 changes.
    let num = h.must_replace(4, 8, None);
    assert_eq!(h.members(2), nodes(&[2, 3, 8]));
    let config_removed = h.state.config(Some(ConfigNum(removed.0 - 1))).expect("exists");
    assert_eq!(config_removed.groups[&GroupId(3)], nodes(&[4, 5, 6]), "history is kept");
    assert!(num > removed);
}

#[test]
fn a_retried_replace_applies_once_and_answers_the_same() {
    let mut h = Harness::new();
    let command = replace(3, 7, None);
    let first = h.apply_as(5, 1, command.clone());
    let retry = h.apply_as(5, 1, command.clone());
    assert_eq!(first, retry, "a retry returns the first answer");
    assert_eq!(first, Ok(Outcome::ConfigCreated { num: ConfigNum(2), moves: vec![] }));
    assert_eq!(h.latest().num, ConfigNum(2), "applied once");
    // Applied again under a new sequence number, node 3 is in no group any more.
    let again = h.apply_as(5, 2, command.clone());
    assert_eq!(again, Err(Error::NotAMember { node: NodeId(3), group: None }));
    // An older duplicate is refused as stale.
    let stale = h.apply_as(5, 1, command).unwrap_err();
    assert!(matches!(stale, Error::StaleRequest { seq: 1, latest: 2, .. }), "{stale}");
    assert_eq!(h.latest().num, ConfigNum(2));
}

#[test]
fn the_outcome_reads_as_a_configuration_created_without_moves() {
    let outcome = Outcome::ConfigCreated { num: ConfigNum(7), moves: vec![] };
    assert_eq!(outcome.to_string(), "configuration 7 created, 0 shards change owner");
}
