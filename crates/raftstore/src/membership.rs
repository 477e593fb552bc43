//! Changing a group's voters one node at a time through its leader, as a pure planner: the
//! caller reads the leader's status, asks [`MembershipJob::next`] what to do, does it (a
//! `JoinGroup` on the node, a `ChangeMembership` at the leader) and asks again. Every decision
//! is taken from the status read just before, so a job goes on where it stopped whatever
//! happened in between (a lost answer, a leader change, a crash of the caller).
//!
//! A job names the nodes that must end as voters and the members that must end out of the
//! group (or, for [`MembershipJob::exactly`], every member outside its voters); it leaves
//! every other member alone, so jobs on different nodes do not undo each other. The order:
//! 1. every member whose replica lost its data ([`MembershipJob::lost`]) is removed first: its
//!    votes and acknowledgements from before the loss are gone, so it must not count in any
//!    quorum until it is brought back through the learner path like a new node;
//! 2. a node to add that is not a voter joins (an empty replica with no membership, starting
//!    in the leader's term having voted for the leader, see [`LeaderTerm`]), is added as a
//!    learner, catches up to the commit index the leader had when the wait began, and is
//!    promoted; in id order, except that nodes named by [`MembershipJob::joining_last`] come
//!    after the others;
//! 3. the members to remove are removed: first one the leader has not heard from lately (in
//!    its current CheckQuorum round), then the one whose log is furthest behind; and a voter
//!    only while the voters left count a majority of current ones (heard from lately, with a
//!    log that reaches the commit index the leader had when the removal was first planned):
//!    removing a live voter while others are down would leave the group without a majority of
//!    live voters for ever (the simulator found a group of five, one voter wiped and one dead
//!    for good, left with two live voters of four when a live one was removed first); the job
//!    waits instead;
//! 4. the job is over then.
//!
//! The view must be the current leader's, confirmed by a quorum round just before it was read
//! (`NodeAdmin.GroupStatus` with `confirm_leadership`): a deposed leader's applied membership
//! may show as removed a member that a later leader added back, and a lost member joined on
//! such a view would never be removed from the real membership.
//!
//! `mosaic admin group add-replica`/`remove-replica`, a storage node whose data directory was
//! lost (it brings itself back, docs/raftstore.md "Changing a group's membership"), and the
//! simulator's operator all run this planner.

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
    /// Its applied index: the membership below is as of it.
    pub applied: LogIndex,
    /// Its last log index.
    pub last_index: LogIndex,
    /// The voters it has applied.
    pub voters: BTreeSet<NodeId>,
    /// The learners it has applied.
    pub learners: BTreeSet<NodeId>,
    /// How far each member's log is known to match the leader's.
    pub matched: BTreeMap<NodeId, LogIndex>,
    /// The members the leader heard from since its last CheckQuorum round.
    pub active: BTreeSet<NodeId>,
    /// True when the leader has a membership change it has not applied: the voters and
    /// learners above are about to change.
    pub changing: bool,
    /// True when every voter has applied the change that made the membership above: none
    /// counts a member it left out any more, even after a crash.
    pub voters_applied: bool,
}

impl LeaderView {
    /// The view of a replica's status, if the replica leads.
    #[must_use]
    pub fn of_leader(status: &Status) -> Option<Self> {
        (status.soft_state.role == Role::Leader).then(|| Self {
            leader: status.id,
            term: status.hard_state.term,
            commit: status.hard_state.commit,
            applied: status.applied,
            last_index: status.last_index,
            voters: status.conf_state.voters.clone(),
            learners: status.conf_state.learners.clone(),
            matched: status
                .progress
                .iter()
                .map(|(node, progress)| (*node, progress.match_index))
                .collect(),
            active: status
                .progress
                .iter()
                .filter(|(_, progress)| progress.recent_active)
                .map(|(node, _)| *node)
                .collect(),
            changing: status.membership_change_pending,
            voters_applied: status.voters_applied_membership,
        })
    }

    /// The step that proposes `change`, planned from this view.
    fn change(&self, change: ConfChange) -> MembershipStep {
        MembershipStep::Change { change, unchanged_since: self.applied }
    }

    fn is_member(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// How far `node`'s log is known to match the leader's (the leader's is all of it).
    fn matched(&self, node: NodeId) -> LogIndex {
        if node == self.leader {
            return self.last_index;
        }
        self.matched.get(&node).copied().unwrap_or(LogIndex(0))
    }

    /// Whether the leader heard from `node` in its current CheckQuorum round (itself: yes).
    fn is_active(&self, node: NodeId) -> bool {
        node == self.leader || self.active.contains(&node)
    }

    /// Of `members`, the one to remove first: one the leader has not heard from lately before
    /// one it has, then the one furthest behind, then the lowest id.
    fn furthest_behind(&self, members: impl Iterator<Item = NodeId>) -> Option<NodeId> {
        members.min_by_key(|node| (self.is_active(*node), self.matched(*node), *node))
    }

    /// Whether the voters left once `node` is out still count a majority of current voters:
    /// heard from lately, with a log that reaches `since` (a learner's removal changes no
    /// quorum).
    fn keeps_a_current_majority_without(&self, node: NodeId, since: LogIndex) -> bool {
        if !self.voters.contains(&node) {
            return true;
        }
        let left = self.voters.iter().filter(|voter| **voter != node);
        let current = left
            .clone()
            .filter(|voter| self.is_active(**voter) && self.matched(**voter) >= since)
            .count();
        current > left.count() / 2
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
    /// Propose the change at the leader, refused there if the membership changed after
    /// `unchanged_since` (the view's applied index): the request may arrive late, after the
    /// job was given up and another job changed the group.
    Change {
        /// The change.
        change: ConfChange,
        /// The applied index of the view it was planned from.
        unchanged_since: LogIndex,
    },
    /// A learner is catching up, or a voter to remove is needed for a majority of current
    /// voters: read the status again after a pause.
    Wait,
    /// The voters are the target and no learner is left.
    Done,
}

/// Which members a job removes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Removing {
    /// These.
    These(BTreeSet<NodeId>),
    /// Every voter or learner outside the job's voters.
    AllOthers,
    /// None: the job waits until this member is out (another job removes it).
    AwaitedOut(NodeId),
}

/// One group's membership change in progress. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipJob {
    voters: BTreeSet<NodeId>,
    removing: Removing,
    lost: BTreeSet<NodeId>,
    joined: BTreeSet<NodeId>,
    /// Nodes to add only once every other node to add is a voter.
    join_last: BTreeSet<NodeId>,
    catching_up: Option<(NodeId, LogIndex)>,
    /// The member being removed and the commit index the leader had when its removal was
    /// first planned.
    removing_since: Option<(NodeId, LogIndex)>,
}

impl MembershipJob {
    fn with(voters: BTreeSet<NodeId>, removing: Removing) -> Self {
        let (lost, joined, join_last) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        Self { voters, removing, lost, joined, join_last, catching_up: None, removing_since: None }
    }

    /// A job that ends with `target` as the voters and no learner.
    #[must_use]
    pub fn exactly(target: BTreeSet<NodeId>) -> Self {
        Self::with(target, Removing::AllOthers)
    }

    /// A job that makes `node` a voter and changes no other member.
    #[must_use]
    pub fn add(node: NodeId) -> Self {
        Self::with(BTreeSet::from([node]), Removing::These(BTreeSet::new()))
    }

    /// A job that takes `node` out of the group and changes no other member.
    #[must_use]
    pub fn remove(node: NodeId) -> Self {
        Self::with(BTreeSet::new(), Removing::These(BTreeSet::from([node])))
    }

    /// A job that changes nothing: it waits while `node` is a member of the group, and is
    /// done once the leader shows it out and every voter has applied that membership (a
    /// replica no longer placed on its node is destroyed only then: while it is a member, its
    /// acknowledgements may be part of a quorum, and while a voter has not applied its
    /// removal, that voter may need its vote).
    #[must_use]
    pub fn awaiting_removal(node: NodeId) -> Self {
        Self::with(BTreeSet::new(), Removing::AwaitedOut(node))
    }

    /// Marks `node` as a member whose replica lost its data: it is removed before anything
    /// else, and comes back (if in the target) only through a join.
    #[must_use]
    pub fn lost(mut self, node: NodeId) -> Self {
        self.lost.insert(node);
        self.joined.remove(&node);
        self
    }

    /// Adds `nodes` (those of them the job adds) only once every other node it adds is a
    /// voter: nodes leaving the cluster, which a removed group's last listing may still name,
    /// and which may be dead for good (a join that never succeeds would hold back the others,
    /// on which the group's shards are looked for).
    #[must_use]
    pub fn joining_last(mut self, nodes: BTreeSet<NodeId>) -> Self {
        self.join_last = nodes;
        self
    }

    /// Records that `node`'s empty replica exists (its `JoinGroup` was answered, or the caller
    /// knows it joined before).
    pub fn joined(&mut self, node: NodeId) {
        self.joined.insert(node);
    }

    /// True once `node`'s empty replica is known to exist ([`MembershipJob::joined`]).
    #[must_use]
    pub fn has_joined(&self, node: NodeId) -> bool {
        self.joined.contains(&node)
    }

    /// The nodes that end as voters.
    #[must_use]
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The next step, from the leader's view read just now. While the leader has a
    /// membership change it has not applied (another job's, or one whose answer was lost),
    /// the membership it shows is about to change: the job waits (a job that took it for the
    /// final one could end with a learner another job left behind).
    pub fn next(&mut self, view: &LeaderView) -> MembershipStep {
        if view.changing {
            return MembershipStep::Wait;
        }
        if let Removing::AwaitedOut(node) = self.removing {
            // Out, and no voter counts it any more: a voter that has not applied its removal
            // may still need its vote (found in review: with the leader then dead for good,
            // two voters of three that had not applied it counted the destroyed replica).
            return if view.is_member(node) || !view.voters_applied {
                MembershipStep::Wait
            } else {
                MembershipStep::Done
            };
        }
        // A lost member that is out of the membership is like any other node from now on.
        self.lost.retain(|node| view.is_member(*node));
        if let Some(node) = self.lost.first() {
            return view.change(ConfChange::RemoveNode(*node));
        }
        let missing = self
            .voters
            .iter()
            .filter(|node| !view.voters.contains(node))
            .min_by_key(|node| (self.join_last.contains(node), **node))
            .copied();
        let extra = match &self.removing {
            Removing::These(nodes) => {
                view.furthest_behind(nodes.iter().copied().filter(|node| view.is_member(*node)))
            }
            Removing::AllOthers => view.furthest_behind(
                view.voters
                    .iter()
                    .chain(&view.learners)
                    .copied()
                    .filter(|node| !self.voters.contains(node)),
            ),
            Removing::AwaitedOut(_) => unreachable!("answered above"),
        };
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
                    view.change(ConfChange::AddVoter(node))
                }
            }
            (Some(node), _) if !self.joined.contains(&node) => MembershipStep::Join {
                node,
                leader: LeaderTerm { leader: view.leader, term: view.term },
            },
            (Some(node), _) => view.change(ConfChange::AddLearner(node)),
            (None, Some(node)) => {
                // The index the voters left must reach is fixed when the removal is first
                // planned: a live voter keeps up with it, while the commit index of a busy
                // group moves on between two reads of the view.
                let since = match self.removing_since {
                    Some((removed, index)) if removed == node => index,
                    _ => self.removing_since.insert((node, view.commit)).1,
                };
                if view.keeps_a_current_majority_without(node, since) {
                    view.change(ConfChange::RemoveNode(node))
                } else {
                    MembershipStep::Wait
                }
            }
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

    /// The applied index of every view below but one.
    const PLANNED_AT: LogIndex = LogIndex(3);

    /// `change`, planned from a view applied at [`PLANNED_AT`].
    fn planned(change: ConfChange) -> MembershipStep {
        MembershipStep::Change { change, unchanged_since: PLANNED_AT }
    }

    /// A view in which every member not in `matched` has the commit index, and every member
    /// was heard from lately.
    fn view(voters: &[u64], learners: &[u64], commit: u64, matched: &[(u64, u64)]) -> LeaderView {
        let listed: BTreeMap<NodeId, LogIndex> =
            matched.iter().map(|(node, index)| (NodeId(*node), LogIndex(*index))).collect();
        let members = voters.iter().chain(learners).map(|node| NodeId(*node));
        LeaderView {
            leader: NodeId(1),
            term: Term(7),
            commit: LogIndex(commit),
            applied: PLANNED_AT,
            last_index: LogIndex(commit),
            voters: nodes(voters),
            learners: nodes(learners),
            matched: members
                .clone()
                .map(|node| (node, listed.get(&node).copied().unwrap_or(LogIndex(commit))))
                .chain(listed.clone())
                .collect(),
            active: members.collect(),
            changing: false,
            voters_applied: true,
        }
    }

    /// Found by the wide sweep at seed 2390: a job given up left `AddLearner(16)` in the
    /// leader's log; the restoring job saw the applied voters right, said `Done`, and the
    /// learner appeared after it. A pending change is waited out.
    #[test]
    fn a_job_waits_out_a_membership_change_the_leader_has_not_applied() {
        let mut job = MembershipJob::exactly(nodes(&[1, 2, 3]));
        let pending = LeaderView { changing: true, ..view(&[1, 2, 3], &[], 5, &[]) };
        assert_eq!(job.next(&pending), MembershipStep::Wait);
        let applied = view(&[1, 2, 3], &[4], 6, &[]);
        let remove = planned(ConfChange::RemoveNode(NodeId(4)));
        assert_eq!(job.next(&applied), remove);
    }

    #[test]
    fn a_change_is_conditioned_on_the_membership_of_the_view_it_was_planned_from() {
        let mut job = MembershipJob::remove(NodeId(3));
        let view = LeaderView { applied: LogIndex(41), ..view(&[1, 2, 3], &[], 42, &[]) };
        let remove = ConfChange::RemoveNode(NodeId(3));
        let step = MembershipStep::Change { change: remove, unchanged_since: LogIndex(41) };
        assert_eq!(job.next(&view), step);
    }

    #[test]
    fn a_new_node_joins_in_the_leaders_term_catches_up_as_a_learner_then_votes() {
        let mut job = MembershipJob::add(NodeId(4));
        let join = MembershipStep::Join {
            node: NodeId(4),
            leader: LeaderTerm { leader: NodeId(1), term: Term(7) },
        };
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 10, &[])), join);
        // The join's answer was lost: asked again, the job joins again (idempotent).
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 10, &[])), join);
        job.joined(NodeId(4));
        let add_learner = planned(ConfChange::AddLearner(NodeId(4)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 10, &[])), add_learner);
        // It waits for the commit index of when the wait began, not the moving one.
        assert_eq!(job.next(&view(&[1, 2, 3], &[4], 12, &[(4, 0)])), MembershipStep::Wait);
        assert_eq!(job.next(&view(&[1, 2, 3], &[4], 20, &[(4, 11)])), MembershipStep::Wait);
        let promote = planned(ConfChange::AddVoter(NodeId(4)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[4], 30, &[(4, 12)])), promote);
        assert_eq!(job.next(&view(&[1, 2, 3, 4], &[], 30, &[])), MembershipStep::Done);
    }

    #[test]
    fn nodes_joining_last_join_after_every_other_node_to_add_votes() {
        let mut job = MembershipJob::exactly(nodes(&[1, 4, 5])).joining_last(nodes(&[4]));
        let join = |node| MembershipStep::Join {
            node: NodeId(node),
            leader: LeaderTerm { leader: NodeId(1), term: Term(7) },
        };
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 5, &[])), join(5));
        job.joined(NodeId(5));
        let add_learner = planned(ConfChange::AddLearner(NodeId(5)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 5, &[])), add_learner);
        let promote = planned(ConfChange::AddVoter(NodeId(5)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[5], 5, &[])), promote);
        // Then it joins too, before any member is removed.
        assert_eq!(job.next(&view(&[1, 2, 3, 5], &[], 5, &[])), join(4));
    }

    #[test]
    fn members_outside_the_target_are_removed_after_the_new_ones_vote() {
        let mut job = MembershipJob::exactly(nodes(&[1, 2, 4]));
        job.joined(NodeId(4));
        let add_learner = planned(ConfChange::AddLearner(NodeId(4)));
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 5, &[])), add_learner);
        let remove = planned(ConfChange::RemoveNode(NodeId(3)));
        assert_eq!(job.next(&view(&[1, 2, 3, 4], &[], 5, &[])), remove);
        assert_eq!(job.next(&view(&[1, 2, 4], &[], 5, &[])), MembershipStep::Done);
    }

    #[test]
    fn a_member_that_lost_its_data_is_removed_before_it_joins_again_as_a_new_node() {
        let mut job = MembershipJob::add(NodeId(3)).lost(NodeId(3));
        let remove = planned(ConfChange::RemoveNode(NodeId(3)));
        // Still a voter (its old replica's votes and acknowledgements counted): out first,
        // even though the voters already are the target.
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 9, &[])), remove);
        // A learner too (a rejoin interrupted before the loss).
        let mut learner = MembershipJob::add(NodeId(3)).lost(NodeId(3));
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
        let add_learner = planned(ConfChange::AddLearner(NodeId(3)));
        assert_eq!(job.next(&view(&[1, 2], &[], 9, &[])), add_learner);
        assert_eq!(job.next(&view(&[1, 2], &[3], 9, &[(3, 0)])), MembershipStep::Wait);
        let promote = planned(ConfChange::AddVoter(NodeId(3)));
        assert_eq!(job.next(&view(&[1, 2], &[3], 9, &[(3, 9)])), promote);
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 9, &[])), MembershipStep::Done);
    }

    #[test]
    fn adding_or_removing_one_node_leaves_the_other_members_alone() {
        // Node 5 is a learner another job is bringing in; node 3 is out of date, not ours.
        let mut add = MembershipJob::add(NodeId(4));
        add.joined(NodeId(4));
        let add_learner = planned(ConfChange::AddLearner(NodeId(4)));
        assert_eq!(add.next(&view(&[1, 2, 3], &[5], 5, &[])), add_learner);
        let promote = planned(ConfChange::AddVoter(NodeId(4)));
        assert_eq!(add.next(&view(&[1, 2, 3], &[4, 5], 5, &[(4, 5)])), promote);
        assert_eq!(add.next(&view(&[1, 2, 3, 4], &[5], 5, &[])), MembershipStep::Done);

        let mut remove = MembershipJob::remove(NodeId(2));
        let out = planned(ConfChange::RemoveNode(NodeId(2)));
        assert_eq!(remove.next(&view(&[1, 2, 3], &[5], 5, &[])), out);
        assert_eq!(remove.next(&view(&[1, 3], &[5], 5, &[])), MembershipStep::Done);
        // Removing a node that is not a member changes nothing.
        assert_eq!(
            MembershipJob::remove(NodeId(9)).next(&view(&[1], &[], 1, &[])),
            MembershipStep::Done
        );
    }

    /// Found by the repair sweep (seed 114 of `...through_snapshots...`): voters 1 to 5, the
    /// target 3, 4 and 5; node 2 lost its data (it answers nothing) and node 5 died. Removing
    /// node 1 first left 3 and 4, two live voters of four: no leader ever again.
    #[test]
    fn the_member_furthest_behind_is_removed_first_and_never_a_voter_a_majority_needs() {
        let mut job = MembershipJob::exactly(nodes(&[3, 4, 5]));
        let (dead, wiped) = ((5, 40), (2, 25));
        let view_of = |voters: &[u64], matched: &[(u64, u64)]| view(voters, &[], 50, matched);
        let first = view_of(&[1, 2, 3, 4, 5], &[dead, wiped]);
        assert_eq!(job.next(&first), planned(ConfChange::RemoveNode(NodeId(2))));
        let second = view_of(&[1, 3, 4, 5], &[dead]);
        assert_eq!(job.next(&second), planned(ConfChange::RemoveNode(NodeId(1))));
        assert_eq!(job.next(&view_of(&[3, 4, 5], &[dead])), MembershipStep::Done);

        // Node 1 is the only one to remove, and 2 and 5 are down: 3 and 4 alone would not be
        // a majority of four. The job waits until a voter comes back (or the target changes).
        let mut job = MembershipJob::remove(NodeId(1));
        assert_eq!(job.next(&first), MembershipStep::Wait);
        let back = view_of(&[1, 2, 3, 4, 5], &[dead]);
        assert_eq!(job.next(&back), planned(ConfChange::RemoveNode(NodeId(1))));
        // A learner's removal needs no quorum, however many voters are down.
        let mut job = MembershipJob::remove(NodeId(6));
        let with_learner = view(&[1, 2, 3], &[6], 50, &[(2, 1), (3, 1)]);
        assert_eq!(job.next(&with_learner), planned(ConfChange::RemoveNode(NodeId(6))));
    }

    /// Found in review: in an idle group, members that went down after the last commit still
    /// show the commit index; the leader not hearing from them is what tells them apart.
    #[test]
    fn members_the_leader_does_not_hear_from_count_as_down_whatever_they_matched() {
        let idle = |voters: &[u64], down: &[u64]| LeaderView {
            active: voters
                .iter()
                .map(|node| NodeId(*node))
                .filter(|n| !down.contains(&n.0))
                .collect(),
            ..view(voters, &[], 50, &[])
        };
        let mut job = MembershipJob::exactly(nodes(&[3, 4, 5]));
        let first = idle(&[1, 2, 3, 4, 5], &[2, 5]);
        assert_eq!(job.next(&first), planned(ConfChange::RemoveNode(NodeId(2))));
        assert_eq!(
            job.next(&idle(&[1, 3, 4, 5], &[5])),
            planned(ConfChange::RemoveNode(NodeId(1)))
        );
        let mut job = MembershipJob::remove(NodeId(1));
        assert_eq!(job.next(&first), MembershipStep::Wait);
    }

    /// Found in review: under load the commit index moves on between two reads of the view, and
    /// a live voter is always a little behind the latest; the index it must reach is the one of
    /// when the removal was first planned.
    #[test]
    fn a_removal_under_load_waits_for_the_commit_index_of_when_it_was_planned() {
        let mut job = MembershipJob::remove(NodeId(3));
        // Leader 1; node 2 lags the moving commit index by a few entries at every read.
        assert_eq!(job.next(&view(&[1, 2, 3], &[], 50, &[(2, 47)])), MembershipStep::Wait);
        let later = view(&[1, 2, 3], &[], 60, &[(2, 57)]);
        assert_eq!(job.next(&later), planned(ConfChange::RemoveNode(NodeId(3))));
        // Another member to remove starts its own wait.
        let mut job = MembershipJob::exactly(nodes(&[1, 2]));
        assert_eq!(
            job.next(&view(&[1, 2, 3, 4], &[], 70, &[(2, 69), (3, 60), (4, 70)])),
            planned(ConfChange::RemoveNode(NodeId(3)))
        );
        assert_eq!(job.next(&view(&[1, 2, 4], &[], 80, &[(2, 79)])), MembershipStep::Wait);
        assert_eq!(
            job.next(&view(&[1, 2, 4], &[], 90, &[(2, 85)])),
            planned(ConfChange::RemoveNode(NodeId(4)))
        );
    }

    #[test]
    fn a_job_awaiting_a_removal_changes_nothing_and_ends_once_the_member_is_out() {
        let mut job = MembershipJob::awaiting_removal(NodeId(3));
        assert_eq!(job.next(&view(&[1, 2, 3], &[4], 5, &[])), MembershipStep::Wait);
        assert_eq!(job.next(&view(&[1, 2, 4], &[3], 5, &[])), MembershipStep::Wait);
        let pending = LeaderView { changing: true, ..view(&[1, 2, 4], &[], 5, &[]) };
        assert_eq!(job.next(&pending), MembershipStep::Wait);
        // Out, but a voter has not applied the removal yet: it may still need node 3's vote.
        let unapplied = LeaderView { voters_applied: false, ..view(&[1, 2, 4], &[], 5, &[]) };
        assert_eq!(job.next(&unapplied), MembershipStep::Wait);
        assert_eq!(job.next(&view(&[1, 2, 4], &[], 5, &[])), MembershipStep::Done);
    }

    #[test]
    fn only_a_leaders_status_is_a_view() {
        let mut status = Status {
            id: NodeId(2),
            hard_state: mosaic_raft::HardState { term: Term(3), vote: None, commit: LogIndex(4) },
            soft_state: mosaic_raft::SoftState { leader: Some(NodeId(1)), role: Role::Follower },
            applied: LogIndex(3),
            first_index: LogIndex(2),
            last_index: LogIndex(4),
            conf_state: mosaic_raft::ConfState { voters: nodes(&[1, 2]), learners: nodes(&[]) },
            progress: BTreeMap::new(),
            membership_change_pending: false,
            voters_applied_membership: false,
        };
        assert_eq!(LeaderView::of_leader(&status), None);
        status.soft_state.role = Role::Leader;
        let view = LeaderView::of_leader(&status).expect("a leader");
        assert_eq!(
            (view.leader, view.term, view.commit, view.applied),
            (NodeId(2), Term(3), LogIndex(4), LogIndex(3))
        );
        assert_eq!(view.voters, nodes(&[1, 2]));
    }
}
