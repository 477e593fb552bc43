//! Changing a group's voters one node at a time through its leader, as a pure planner: the
//! caller reads the leader's status, asks [`MembershipJob::next`] what to do, does it (a
//! `JoinGroup` on the node, a `ChangeMembership` at the leader) and asks again. Every decision
//! is taken from the status read just before, so a job goes on where it stopped whatever
//! happened in between (a lost answer, a leader change, a crash of the caller).
//!
//! The order of a job:
//! 1. every member whose replica lost its data ([`MembershipJob::lost`]) is removed first: its
//!    votes and acknowledgements from before the loss are gone, so it must not count in any
//!    quorum until it is brought back through the learner path like a new node;
//! 2. a node of the target that is not a voter joins (an empty replica with no membership,
//!    starting in the leader's term having voted for the leader, see [`LeaderTerm`]), is added
//!    as a learner, catches up to the commit index the leader had when the wait began, and is
//!    promoted;
//! 3. every member outside the target is removed;
//! 4. the job is over once the voters are the target and no learner is left.
//!
//! `mosaic admin group add-replica`/`remove-replica`, a storage node whose data directory was
//! lost (it brings itself back, docs/raftstore.md "Changing a group's membership"), and the simulator's operator
//! all run this planner.

use std::collections::{BTreeMap, BTreeSet};

use mosaic_raft::{ConfChange, LogIndex, NodeId, Role, Status, Term};

use crate::msg::LeaderTerm;

/// What a job needs of the leader's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderView {
    /// The leader.
    pub leader: NodeId,
    /// Its term.
    pub term: Term,
    /// Its commit index.
    pub commit: LogIndex,
    /// The voters it has applied.
    pub voters: BTreeSet<NodeId>,
    /// The learners it has applied.
    pub learners: BTreeSet<NodeId>,
    /// How far each member's log is known to match the leader's.
    pub matched: BTreeMap<NodeId, LogIndex>,
}

impl LeaderView {
    /// The view of a replica's status, if the replica leads.
    #[must_use]
    pub fn of_leader(status: &Status) -> Option<Self> {
        (status.soft_state.role == Role::Leader).then(|| Self {
            leader: status.id,
            term: status.hard_state.term,
            commit: status.hard_state.commit,
            voters: status.conf_state.voters.clone(),
            learners: status.conf_state.learners.clone(),
            matched: status
                .progress
                .iter()
                .map(|(node, progress)| (*node, progress.match_index))
                .collect(),
        })
    }

    fn is_member(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }
}

/// What the caller does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipStep {
    /// Create `node`'s empty replica (`JoinGroup`) starting in `leader`'s term; then tell the
    /// job with [`MembershipJob::joined`].
    Join {
        /// The node.
        node: NodeId,
        /// The leader and term it starts in.
        leader: LeaderTerm,
    },
    /// Propose the change at the leader.
    Change(ConfChange),
    /// A learner is catching up: read the status again after a pause.
    Wait,
    /// The voters are the target and no learner is left.
    Done,
}

/// One group's membership change in progress. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipJob {
    target: BTreeSet<NodeId>,
    lost: BTreeSet<NodeId>,
    joined: BTreeSet<NodeId>,
    catching_up: Option<(NodeId, LogIndex)>,
}

impl MembershipJob {
    /// A job that ends with `target` as the voters.
    #[must_use]
    pub fn new(target: BTreeSet<NodeId>) -> Self {
        Self { target, lost: BTreeSet::new(), joined: BTreeSet::new(), catching_up: None }
    }

    /// Marks `node` as a member whose replica lost its data: it is removed before anything
    /// else, and comes back (if in the target) only through a join.
    #[must_use]
    pub fn lost(mut self, node: NodeId) -> Self {
        self.lost.insert(node);
        self.joined.remove(&node);
        self
    }

    /// Records that `node`'s empty replica exists (its `JoinGroup` was answered, or the caller
    /// knows it joined before).
    pub fn joined(&mut self, node: NodeId) {
        self.joined.insert(node);
    }

    /// The voters the group ends with.
    #[must_use]
    pub fn target(&self) -> &BTreeSet<NodeId> {
        &self.target
    }

    /// The next step, from the leader's view read just now.
    pub fn next(&mut self, view: &LeaderView) -> MembershipStep {
        // A lost member that is out of the membership is like any other node from now on.
        self.lost.retain(|node| view.is_member(*node));
        if let Some(node) = self.lost.first() {
            return MembershipStep::Change(ConfChange::RemoveNode(*node));
        }
        let missing = self.target.iter().find(|node| !view.voters.contains(node)).copied();
        let extra = view
            .voters
            .iter()
            .chain(&view.learners)
            .find(|node| !self.target.contains(node))
            .copied();
        match (missing, extra) {
            (Some(node), _) if view.learners.contains(&node) => {
                let wait_for = match self.catching_up {
                    Some((learner, index)) if learner == node => index,
                    _ => self.catching_up.insert((node, view.commit)).1,
                };
                let matched = view.matched.get(&node).copied().unwrap_or(LogIndex(0));
                if matched < wait_for {
                    MembershipStep::Wait
                } else {
                    MembershipStep::Change(ConfChange::AddVoter(node))
                }
            }
            (Some(node), _) if !self.joined.contains(&node) => MembershipStep::Join {
                node,
                leader: LeaderTerm { leader: view.leader, term: view.term },
            },
            (Some(node), _) => MembershipStep::Change(ConfChange::AddLearner(node)),
            (None, Some(node)) => MembershipStep::Change(ConfChange::RemoveNode(node)),
            (None, None) => MembershipStep::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().map(|id| NodeId(*id)).collect()
    }

    fn view(voters: &[u64], learners: &[u64], commit: u64, matched: &[(u64, u64)]) -> LeaderView {
        LeaderView {
            leader: NodeId(1),
            term: Term(7),
            commit: LogIndex(commit),
            voters: nodes(voters),
            learners: nodes(learners),
            matched: matched
                .iter()
                .map(|(node, index)| (NodeId(*node), LogIndex(*index)))
                .collect(),
        }
    }

    #[test]
    fn a_new_node_joins_in_the_leaders_term_catches_up_as_a_learner_then_votes() {
        let mut job = MembershipJob::new(nodes(&[1, 2, 3, 4]));
        let join = MembershipStep::Join {
            node: NodeId(4),
            leader: LeaderTerm { leader: NodeId(1), term: Term(7) },
        };
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 10, &[])), join);
        // The join's answer was lost: asked again, the job joins again (idempotent).
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 10, &[])), join);
        job.joined(NodeId(4));
        let add_learner = MembershipStep::Change(ConfChange::AddLearner(NodeId(4)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 10, &[])), add_learner);
        // It waits for the commit index of when the wait began, not the moving one.
        assert_eq!(job.next(&view(&[1, 2, 3], &[4], 12, &[(4, 0)])), MembershipStep::Wait);
        assert_eq!(job.next(&view(&[1, 2, 3], &[4], 20, &[(4, 11)])), MembershipStep::Wait);
        let promote = MembershipStep::Change(ConfChange::AddVoter(NodeId(4)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[4], 30, &[(4, 12)])), promote);
        assert_eq!(job.next(&view(&[1, 2, 3, 4], &[], 30, &[])), MembershipStep::Done);
    }

    #[test]
    fn members_outside_the_target_are_removed_after_the_new_ones_vote() {
        let mut job = MembershipJob::new(nodes(&[1, 2, 4]));
        job.joined(NodeId(4));
        let add_learner = MembershipStep::Change(ConfChange::AddLearner(NodeId(4)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 5, &[])), add_learner);
        let remove = MembershipStep::Change(ConfChange::RemoveNode(NodeId(3)));
        assert_eq!(job.next(&view(&[1, 2, 3, 4], &[], 5, &[])), remove);
        assert_eq!(job.next(&view(&[1, 2, 4], &[], 5, &[])), MembershipStep::Done);
    }

    #[test]
    fn a_member_that_lost_its_data_is_removed_before_it_joins_again_as_a_new_node() {
        let mut job = MembershipJob::new(nodes(&[1, 2, 3])).lost(NodeId(3));
        let remove = MembershipStep::Change(ConfChange::RemoveNode(NodeId(3)));
        // Still a voter (its old replica's votes and acknowledgements counted): out first,
        // even though the voters already are the target.
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 9, &[])), remove);
        // A learner too (a rejoin interrupted before the loss).
        let mut learner = MembershipJob::new(nodes(&[1, 2, 3])).lost(NodeId(3));
        assert_eq!(learner.next(&view(&[1, 2], &[3], 9, &[])), remove);
        // Out of the membership: it joins in the term of the leader that shows it out.
        let join = MembershipStep::Join {
            node: NodeId(3),
            leader: LeaderTerm { leader: NodeId(1), term: Term(7) },
        };
        assert_eq!(job.next(&view(&[1, 2], &[], 9, &[])), join);
        job.joined(NodeId(3));
        // From now on it is a new node: a later view that shows it as a learner is the new
        // replica, not a reason to remove it again.
        let add_learner = MembershipStep::Change(ConfChange::AddLearner(NodeId(3)));
        assert_eq!(job.next(&view(&[1, 2], &[], 9, &[])), add_learner);
        assert_eq!(job.next(&view(&[1, 2], &[3], 9, &[(3, 0)])), MembershipStep::Wait);
        let promote = MembershipStep::Change(ConfChange::AddVoter(NodeId(3)));
        assert_eq!(job.next(&view(&[1, 2], &[3], 9, &[(3, 9)])), promote);
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 9, &[])), MembershipStep::Done);
    }

    #[test]
    fn only_a_leaders_status_is_a_view() {
        let mut status = Status {
            id: NodeId(2),
            hard_state: mosaic_raft::HardState { term: Term(3), vote: None, commit: LogIndex(4) },
            soft_state: mosaic_raft::SoftState { leader: Some(NodeId(1)), role: Role::Follower },
            applied: LogIndex(4),
            first_index: LogIndex(2),
            last_index: LogIndex(4),
            conf_state: mosaic_raft::ConfState { voters: nodes(&[1, 2]), learners: nodes(&[]) },
            progress: BTreeMap::new(),
        };
        assert_eq!(LeaderView::of_leader(&status), None);
        status.soft_state.role = Role::Leader;
        let view = LeaderView::of_leader(&status).expect("a leader");
        assert_eq!((view.leader, view.term, view.commit), (NodeId(2), Term(3), LogIndex(4)));
        assert_eq!(view.voters, nodes(&[1, 2]));
    }
}
