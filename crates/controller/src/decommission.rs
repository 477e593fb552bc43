//! Retiring a storage node: the states a registered node goes through, and where the replicas
//! of a node being decommissioned go.
//!
//! A registered node is [`NodeState::Active`] until `DecommissionNode` makes it
//! [`NodeState::Decommissioning`]: the same command's configuration gives each of its replicas
//! to another node ([`replacements`]), and no later command may list it in a group. Once the
//! groups have carried the change out (no group's leader shows the node as a member, which the
//! controller cannot see itself: `mosaic admin node decommission` waits for it in the groups'
//! status), `RetireNode` marks it [`NodeState::Retired`] for good.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

use crate::error::{Error, Result};

/// Where a registered node is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    /// It may host replicas.
    #[default]
    Active,
    /// Its replicas are moving to other nodes; no group may list it again.
    Decommissioning,
    /// Every group moved its replica away; it never hosts one again.
    Retired,
}

impl NodeState {
    /// `active`, `decommissioning` or `retired`, as tools show it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Decommissioning => "decommissioning",
            Self::Retired => "retired",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The node that takes `node`'s place in each group of `groups` that lists it, chosen among
/// `candidates` (the active registered nodes other than `node`): for each such group in id
/// order, the candidate the group does not list that hosts the fewest replicas so far
/// (counting those already given in this plan), the lowest id on a tie. So the replicas
/// spread over the nodes with the most room, and a group never gets two replicas on one node.
///
/// # Errors
/// [`Error::NoReplacement`] for the first group that every candidate is a member of already.
pub(crate) fn replacements(
    groups: &BTreeMap<GroupId, Vec<NodeId>>,
    node: NodeId,
    candidates: &BTreeSet<NodeId>,
) -> Result<BTreeMap<GroupId, NodeId>> {
    let mut hosted: BTreeMap<NodeId, usize> =
        candidates.iter().map(|candidate| (*candidate, 0)).collect();
    for member in groups.values().flatten() {
        if let Some(count) = hosted.get_mut(member) {
            *count += 1;
        }
    }
    let mut chosen = BTreeMap::new();
    for (group, members) in groups.iter().filter(|(_, members)| members.contains(&node)) {
        let with = hosted
            .iter()
            .filter(|(candidate, _)| !members.contains(candidate))
            .min_by_key(|(candidate, count)| (**count, **candidate))
            .map(|(candidate, _)| *candidate)
            .ok_or(Error::NoReplacement { group: *group, node })?;
        *hosted.get_mut(&with).expect("a candidate") += 1;
        chosen.insert(*group, with);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn groups(layout: &[(u64, &[u64])]) -> BTreeMap<GroupId, Vec<NodeId>> {
        layout.iter().map(|(group, members)| (GroupId(*group), nodes(members))).collect()
    }

    #[test]
    fn replicas_go_to_the_nodes_hosting_fewest_and_never_to_a_member() {
        // Node 1 is in groups 1, 2 and 3. Nodes 4 and 5 host one replica each, nodes 2 and 3
        // three each.
        let layout = groups(&[(1, &[1, 2, 3]), (2, &[1, 2, 3]), (3, &[1, 2, 4]), (4, &[3, 5])]);
        let candidates: BTreeSet<NodeId> = nodes(&[2, 3, 4, 5]).into_iter().collect();
        let plan = replacements(&layout, NodeId(1), &candidates).unwrap();
        // Group 1: nodes 4 and 5 tie at one, the lower id wins. Group 2: node 5 (one) before
        // node 4 (now two). Group 3: node 4 is a member, so node 5 (now two) before node 3.
        assert_eq!(
            plan,
            BTreeMap::from([
                (GroupId(1), NodeId(4)),
                (GroupId(2), NodeId(5)),
                (GroupId(3), NodeId(5)),
            ])
        );
    }

    #[test]
    fn a_group_that_lists_every_candidate_has_no_replacement() {
        let layout = groups(&[(1, &[1, 2, 3]), (2, &[1, 2])]);
        let candidates: BTreeSet<NodeId> = nodes(&[2, 3]).into_iter().collect();
        assert_eq!(
            replacements(&layout, NodeId(1), &candidates),
            Err(Error::NoReplacement { group: GroupId(1), node: NodeId(1) })
        );
    }

    #[test]
    fn a_node_in_no_group_needs_no_replacement() {
        let layout = groups(&[(1, &[2, 3])]);
        let candidates: BTreeSet<NodeId> = BTreeSet::new();
        assert_eq!(replacements(&layout, NodeId(1), &candidates), Ok(BTreeMap::new()));
    }
}
