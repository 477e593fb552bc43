//! Raft's safety properties, checked on every replica of every node after each step of its
//! store, while the run goes on (the end of a run checks the state machines instead):
//! - *Election Safety* (Raft §5.2): at most one leader per group per term;
//! - *committed entries agree* (Log Matching and State Machine Safety, Raft §5.3-5.4): every
//!   replica holds, at the index up to which it has committed, the term that any replica
//!   committed there. Each replica's commit point is recorded with its term; a replica is
//!   checked at the highest recorded point at or below its own commit index (the entries
//!   below match when those do, by Log Matching).
//!
//! A replica that disagrees with another is what a split brain looks like from inside: a
//! replica that elected itself alone (a membership that lost its other voters) and committed
//! entries the group never saw. The first violation is kept for the report.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use mosaic_engine::GroupId;
use mosaic_raft::{LogIndex, NodeId, Role, Status, Term};

/// What has been seen so far. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct RaftSafety {
    /// The leader of each term of each group.
    leaders: BTreeMap<(GroupId, Term), NodeId>,
    /// Commit points seen, per group: index, its term, and the node that first had it.
    committed: BTreeMap<GroupId, BTreeMap<LogIndex, (Term, NodeId)>>,
    /// The first broken property.
    violation: Option<String>,
}

impl RaftSafety {
    /// Checks `node`'s replica of `group` in state `status`; `term_at` reads the term of an
    /// entry of its log (`None` if compacted or absent).
    pub(crate) fn observe(
        &mut self,
        node: NodeId,
        group: GroupId,
        status: &Status,
        term_at: impl Fn(LogIndex) -> Option<Term>,
    ) {
        if self.violation.is_some() {
            return;
        }
        let term = status.hard_state.term;
        if status.soft_state.role == Role::Leader {
            match self.leaders.entry((group, term)) {
                Entry::Vacant(vacant) => {
                    vacant.insert(node);
                }
                Entry::Occupied(occupied) if *occupied.get() != node => {
                    self.violation = Some(format!(
                        "group {group}: nodes {} and {node} both lead term {term} (voters {:?})",
                        occupied.get(),
                        status.conf_state.voters
                    ));
                    return;
                }
                Entry::Occupied(_) => {}
            }
        }
        let commit = status.hard_state.commit;
        if commit == LogIndex(0) {
            return;
        }
        let points = self.committed.entry(group).or_default();
        if let Some((index, (recorded, by))) = points.range(..=commit).next_back()
            && let Some(found) = term_at(*index)
            && found != *recorded
        {
            self.violation = Some(format!(
                "group {group}: node {by} committed index {index} in term {recorded}, but node \
                 {node} (commit {commit}, term {term}, voters {:?}) holds term {found} there",
                status.conf_state.voters
            ));
            return;
        }
        if let Some(commit_term) = term_at(commit) {
            points.entry(commit).or_insert((commit_term, node));
        }
    }

    /// True once a property broke.
    pub(crate) fn is_violated(&self) -> bool {
        self.violation.is_some()
    }

    /// The first broken property, if any.
    pub(crate) fn take_violation(&mut self) -> Option<String> {
        self.violation.take()
    }
}
