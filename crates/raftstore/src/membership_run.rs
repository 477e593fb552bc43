//! Running a [`MembershipJob`] to its end, as a pure state machine over milliseconds of the
//! caller's clock: read the leader's view, ask the planner, take the step, read again; pause
//! and retry after a failure or while a learner catches up; give up at a deadline; stop at a
//! refusal no retry can help. `mosaic admin group add-replica`/`remove-replica` (over
//! `NodeAdmin`), a storage node's agent bringing its replica back after a disk loss, and the
//! simulator's operator all execute this one run, so the simulator sees the retries and
//! deadlines that ship.
//!
//! Invariant: a run waits for at most one answer at a time (a leader search, or a step's
//! answer), and once [`RunAction::Finished`] is returned it ignores every input.

use std::collections::BTreeSet;

use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

use crate::membership::{LeaderView, MembershipJob, MembershipStep};

/// Milliseconds on the caller's monotonic clock (virtual time in the simulator).
pub type Millis = u64;

/// The pause before reading the leader again after a failure, or while a learner catches up.
pub const RETRY_PAUSE_MS: Millis = 200;

/// Why a membership change did not finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// No node answered as the group's leader by the deadline.
    #[error("group {group} has no reachable leader ({reason})")]
    NoLeader {
        /// The group.
        group: GroupId,
        /// The last error seen, or that no node leads.
        reason: String,
    },
    /// A step was refused in a way no retry can help (an invalid change).
    #[error("group {group}: {step:?} was refused: {reason}")]
    Refused {
        /// The group.
        group: GroupId,
        /// The step.
        step: MembershipStep,
        /// The node's reason.
        reason: String,
    },
    /// The job was not done by the deadline.
    #[error("group {group}: not done in time; the last step was {step:?}")]
    Deadline {
        /// The group.
        group: GroupId,
        /// The last step tried.
        step: MembershipStep,
    },
}

/// How a step ([`RunAction::Join`] or [`RunAction::Change`]) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepFailure {
    /// Refused for good (an invalid change): the run ends with [`MembershipError::Refused`].
    Refused(String),
    /// Failed, refused for now (not the leader, a change pending) or unanswered: it may or
    /// may not have taken effect, and the run reads the leader again after a pause.
    Failed(String),
}

/// What the caller does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunAction {
    /// Read the group's leader: ask every node that may lead it for its status confirmed by a
    /// quorum round (a [`LeaderSearch`] gathers the answers), and hand the result to
    /// [`MembershipRun::on_leader`].
    ReadLeader,
    /// Create `node`'s empty replica in the leader's term ([`MembershipStep::Join`]), then
    /// call [`MembershipRun::on_step`].
    Join {
        /// The node.
        node: NodeId,
        /// The leader and term it starts in.
        leader: crate::LeaderTerm,
    },
    /// Propose `change` at `leader`, conditioned on `unchanged_since`
    /// ([`MembershipStep::Change`]), then call [`MembershipRun::on_step`].
    Change {
        /// The leader of the view the step was planned from.
        leader: NodeId,
        /// The change.
        change: mosaic_raft::ConfChange,
        /// The applied index of that view.
        unchanged_since: mosaic_raft::LogIndex,
    },
    /// Nothing until `until`: call [`MembershipRun::poll`] then.
    Pause {
        /// When to poll.
        until: Millis,
    },
    /// The run is over: the leader's last view once the job is done, or why not.
    Finished(Result<LeaderView, MembershipError>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Reading,
    Stepping(MembershipStep),
    Paused { until: Millis },
    Over,
}

/// One job run until it is done, refused or out of time. See the module documentation.
#[derive(Clone, Debug)]
pub struct MembershipRun {
    group: GroupId,
    job: MembershipJob,
    give_up_at: Millis,
    state: State,
    /// The last step planned, and the view it was planned from.
    planned: Option<(LeaderView, MembershipStep)>,
}

impl MembershipRun {
    /// A run of `job` on `group` that gives up at `give_up_at`; the first action is
    /// [`RunAction::ReadLeader`].
    #[must_use]
    pub fn start(group: GroupId, job: MembershipJob, give_up_at: Millis) -> (Self, RunAction) {
        let run = Self { group, job, give_up_at, state: State::Reading, planned: None };
        (run, RunAction::ReadLeader)
    }

    /// The group.
    #[must_use]
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The job (what is left to do).
    #[must_use]
    pub fn job(&self) -> &MembershipJob {
        &self.job
    }

    /// The last step planned and the leader's view it was planned from, for progress reports.
    #[must_use]
    pub fn planned(&self) -> Option<(&LeaderView, &MembershipStep)> {
        self.planned.as_ref().map(|(view, step)| (view, step))
    }

    /// True once [`RunAction::Finished`] was returned.
    #[must_use]
    pub fn is_over(&self) -> bool {
        self.state == State::Over
    }

    /// The next action once a pause is over; `None` while the run waits (for an answer, or
    /// for the pause to end) or is over.
    pub fn poll(&mut self, now: Millis) -> Option<RunAction> {
        match self.state {
            State::Paused { until } if until <= now => {
                self.state = State::Reading;
                Some(RunAction::ReadLeader)
            }
            _ => None,
        }
    }

    /// The leader's confirmed view, or why none was found, and what to do next; `None` (the
    /// input is ignored) unless the run was reading the leader.
    pub fn on_leader(
        &mut self,
        now: Millis,
        leader: Result<LeaderView, String>,
    ) -> Option<RunAction> {
        (self.state == State::Reading).then(|| self.read(now, leader))
    }

    fn read(&mut self, now: Millis, leader: Result<LeaderView, String>) -> RunAction {
        let view = match leader {
            Ok(view) => view,
            Err(reason) => {
                return self.pause(now, |group, step| match step {
                    Some(step) => MembershipError::Deadline { group, step },
                    None => MembershipError::NoLeader { group, reason },
                });
            }
        };
        let step = self.job.next(&view);
        self.planned = Some((view.clone(), step));
        let action = match step {
            MembershipStep::Done => return self.finish(Ok(view)),
            MembershipStep::Wait => return self.pause(now, deadline),
            MembershipStep::Join { node, leader } => RunAction::Join { node, leader },
            MembershipStep::Change { change, unchanged_since } => {
                RunAction::Change { leader: view.leader, change, unchanged_since }
            }
        };
        self.state = State::Stepping(step);
        action
    }

    /// The answer to the step asked for, and what to do next; `None` (the input is ignored)
    /// unless the run waits for a step's answer.
    pub fn on_step(&mut self, now: Millis, answer: Result<(), StepFailure>) -> Option<RunAction> {
        let State::Stepping(step) = self.state else { return None };
        Some(match answer {
            Ok(()) => {
                if let MembershipStep::Join { node, .. } = step {
                    self.job.joined(node);
                }
                self.state = State::Reading;
                RunAction::ReadLeader
            }
            Err(StepFailure::Refused(reason)) => {
                self.finish(Err(MembershipError::Refused { group: self.group, step, reason }))
            }
            Err(StepFailure::Failed(_)) => self.pause(now, deadline),
        })
    }

    /// A pause before the next read, or the end if the deadline passed (`error` names why,
    /// from the last step planned if any).
    fn pause(
        &mut self,
        now: Millis,
        error: impl FnOnce(GroupId, Option<MembershipStep>) -> MembershipError,
    ) -> RunAction {
        if now >= self.give_up_at {
            let step = self.planned.as_ref().map(|(_, step)| *step);
            return self.finish(Err(error(self.group, step)));
        }
        let until = now + RETRY_PAUSE_MS;
        self.state = State::Paused { until };
        RunAction::Pause { until }
    }

    fn finish(&mut self, result: Result<LeaderView, MembershipError>) -> RunAction {
        self.state = State::Over;
        RunAction::Finished(result)
    }
}

/// The deadline error after the last step planned.
fn deadline(group: GroupId, step: Option<MembershipStep>) -> MembershipError {
    MembershipError::Deadline { group, step: step.unwrap_or(MembershipStep::Wait) }
}

/// Gathers the answers of the nodes asked for a group's status ([`RunAction::ReadLeader`]):
/// the first that confirms its leadership is the view; when every node answered without one,
/// the search failed, with the last error seen.
#[derive(Clone, Debug)]
pub struct LeaderSearch {
    waiting: BTreeSet<NodeId>,
    reason: String,
    over: bool,
}

impl LeaderSearch {
    /// A search among `asked`, the nodes asked.
    ///
    /// # Errors
    /// When no node is asked: the search has failed already.
    pub fn new(asked: impl IntoIterator<Item = NodeId>) -> Result<Self, String> {
        let waiting: BTreeSet<NodeId> = asked.into_iter().collect();
        if waiting.is_empty() {
            return Err("no node to ask".into());
        }
        Ok(Self { waiting, reason: "no node reports leading the group".into(), over: false })
    }

    /// True while an answer is awaited from `node`.
    #[must_use]
    pub fn waits_for(&self, node: NodeId) -> bool {
        !self.over && self.waiting.contains(&node)
    }

    /// `node`'s answer: its confirmed leader view, `Ok(None)` if it does not lead, or an
    /// error. Returns the search's result once it has one (once only).
    pub fn answer(
        &mut self,
        node: NodeId,
        answer: Result<Option<LeaderView>, String>,
    ) -> Option<Result<LeaderView, String>> {
        if !self.waits_for(node) {
            return None;
        }
        self.waiting.remove(&node);
        match answer {
            Ok(Some(view)) => {
                self.over = true;
                return Some(Ok(view));
            }
            Ok(None) => {}
            Err(reason) => self.reason = format!("node {node}: {reason}"),
        }
        if self.waiting.is_empty() {
            self.over = true;
            return Some(Err(self.reason.clone()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use mosaic_raft::{ConfChange, LogIndex, Term};

    use super::*;
    use crate::LeaderTerm;

    const GROUP: GroupId = GroupId(7);

    fn view(voters: &[u64], learners: &[u64], matched: &[(u64, u64)]) -> LeaderView {
        LeaderView {
            leader: NodeId(1),
            term: Term(3),
            commit: LogIndex(10),
            applied: LogIndex(10),
            last_index: LogIndex(10),
            voters: voters.iter().map(|node| NodeId(*node)).collect(),
            learners: learners.iter().map(|node| NodeId(*node)).collect(),
            // Voters not listed have the commit index; every member answers the leader.
            matched: voters
                .iter()
                .map(|node| (*node, 10))
                .chain(matched.iter().copied())
                .map(|(node, index)| (NodeId(node), LogIndex(index)))
                .collect::<BTreeMap<_, _>>(),
            active: voters.iter().chain(learners).map(|node| NodeId(*node)).collect(),
            changing: false,
            voters_applied: true,
        }
    }

    #[test]
    fn a_run_joins_adds_catches_up_promotes_and_finishes_with_the_last_view() {
        let (mut run, first) = MembershipRun::start(GROUP, MembershipJob::add(NodeId(4)), 10_000);
        assert_eq!(first, RunAction::ReadLeader);
        let leader = LeaderTerm { leader: NodeId(1), term: Term(3) };
        assert_eq!(
            run.on_leader(0, Ok(view(&[1, 2, 3], &[], &[]))).unwrap(),
            RunAction::Join { node: NodeId(4), leader }
        );
        assert_eq!(run.on_step(1, Ok(())).unwrap(), RunAction::ReadLeader);
        let add_learner = RunAction::Change {
            leader: NodeId(1),
            change: ConfChange::AddLearner(NodeId(4)),
            unchanged_since: LogIndex(10),
        };
        assert_eq!(run.on_leader(2, Ok(view(&[1, 2, 3], &[], &[]))).unwrap(), add_learner);
        assert_eq!(run.on_step(3, Ok(())).unwrap(), RunAction::ReadLeader);
        // Catching up: a pause, and nothing before it ends.
        assert_eq!(
            run.on_leader(4, Ok(view(&[1, 2, 3], &[4], &[(4, 5)]))).unwrap(),
            RunAction::Pause { until: 4 + RETRY_PAUSE_MS }
        );
        assert_eq!(run.poll(4 + RETRY_PAUSE_MS - 1), None);
        assert_eq!(run.poll(4 + RETRY_PAUSE_MS), Some(RunAction::ReadLeader));
        let promote = run.on_leader(300, Ok(view(&[1, 2, 3], &[4], &[(4, 10)]))).unwrap();
        assert!(matches!(promote, RunAction::Change { change: ConfChange::AddVoter(_), .. }));
        assert_eq!(run.on_step(301, Ok(())).unwrap(), RunAction::ReadLeader);
        let done = view(&[1, 2, 3, 4], &[], &[]);
        assert_eq!(run.on_leader(302, Ok(done.clone())).unwrap(), RunAction::Finished(Ok(done)));
        assert!(run.is_over());
        assert_eq!(run.poll(10_000), None);
    }

    #[test]
    fn a_failed_step_is_retried_after_a_pause_and_the_join_is_not_forgotten() {
        let (mut run, _) = MembershipRun::start(GROUP, MembershipJob::add(NodeId(4)), 10_000);
        assert!(matches!(
            run.on_leader(0, Ok(view(&[1], &[], &[]))).unwrap(),
            RunAction::Join { .. }
        ));
        // A failed join is asked again (it may not have happened).
        let failed = Err(StepFailure::Failed("unavailable".into()));
        assert_eq!(run.on_step(5, failed).unwrap(), RunAction::Pause { until: 5 + RETRY_PAUSE_MS });
        assert_eq!(run.poll(5 + RETRY_PAUSE_MS), Some(RunAction::ReadLeader));
        assert!(matches!(
            run.on_leader(300, Ok(view(&[1], &[], &[]))).unwrap(),
            RunAction::Join { .. }
        ));
        assert_eq!(run.on_step(301, Ok(())).unwrap(), RunAction::ReadLeader);
        // A failed change after it: the next plan is the change again, not the join.
        let change = run.on_leader(302, Ok(view(&[1], &[], &[]))).unwrap();
        assert!(matches!(change, RunAction::Change { change: ConfChange::AddLearner(_), .. }));
        let failed = Err(StepFailure::Failed("not the leader".into()));
        assert!(matches!(run.on_step(303, failed).unwrap(), RunAction::Pause { .. }));
        assert_eq!(run.poll(600), Some(RunAction::ReadLeader));
        let again = run.on_leader(601, Ok(view(&[1], &[], &[]))).unwrap();
        assert!(matches!(again, RunAction::Change { change: ConfChange::AddLearner(_), .. }));
    }

    #[test]
    fn a_refused_step_ends_the_run_and_names_the_step() {
        let (mut run, _) = MembershipRun::start(GROUP, MembershipJob::remove(NodeId(2)), 10_000);
        let RunAction::Change { change, unchanged_since, .. } =
            run.on_leader(0, Ok(view(&[1, 2], &[], &[]))).unwrap()
        else {
            panic!("a removal");
        };
        let refused = run.on_step(1, Err(StepFailure::Refused("last voter".into()))).unwrap();
        let step = MembershipStep::Change { change, unchanged_since };
        let reason = "last voter".to_string();
        let error = MembershipError::Refused { group: GROUP, step, reason };
        assert_eq!(refused, RunAction::Finished(Err(error)));
        // Nothing after the end.
        assert!(run.is_over());
        assert_eq!(run.poll(100_000), None);
        assert_eq!(run.on_step(2, Ok(())), None);
    }

    #[test]
    fn past_its_deadline_a_run_ends_with_no_leader_or_with_the_last_step() {
        let (mut run, _) = MembershipRun::start(GROUP, MembershipJob::add(NodeId(4)), 1_000);
        assert!(matches!(run.on_leader(10, Err("down".into())).unwrap(), RunAction::Pause { .. }));
        assert_eq!(run.poll(1_000), Some(RunAction::ReadLeader));
        let no_leader = MembershipError::NoLeader { group: GROUP, reason: "still down".into() };
        assert_eq!(
            run.on_leader(1_000, Err("still down".into())).unwrap(),
            RunAction::Finished(Err(no_leader))
        );

        let (mut run, _) = MembershipRun::start(GROUP, MembershipJob::add(NodeId(4)), 1_000);
        let catching_up = view(&[1], &[4], &[(4, 1)]);
        assert!(matches!(
            run.on_leader(10, Ok(catching_up.clone())).unwrap(),
            RunAction::Pause { .. }
        ));
        assert_eq!(run.poll(1_500), Some(RunAction::ReadLeader));
        let error = MembershipError::Deadline { group: GROUP, step: MembershipStep::Wait };
        assert_eq!(run.on_leader(1_500, Ok(catching_up)).unwrap(), RunAction::Finished(Err(error)));
    }

    #[test]
    fn answers_out_of_turn_are_ignored() {
        let (mut run, _) = MembershipRun::start(GROUP, MembershipJob::add(NodeId(4)), 10_000);
        // A step answer while reading changes nothing.
        assert_eq!(run.on_step(0, Ok(())), None);
        assert!(matches!(
            run.on_leader(1, Ok(view(&[1], &[], &[]))).unwrap(),
            RunAction::Join { .. }
        ));
        // A second view while the join is out changes nothing either.
        assert_eq!(run.on_leader(2, Ok(view(&[1], &[], &[]))), None);
        assert_eq!(run.on_step(3, Ok(())).unwrap(), RunAction::ReadLeader);
    }

    #[test]
    fn a_leader_search_takes_the_first_leader_or_fails_once_everyone_answered() {
        let mut search = LeaderSearch::new([NodeId(1), NodeId(2), NodeId(3)]).unwrap();
        assert_eq!(search.answer(NodeId(1), Ok(None)), None);
        assert_eq!(search.answer(NodeId(9), Ok(Some(view(&[9], &[], &[])))), None, "not asked");
        let leader = view(&[1, 2, 3], &[], &[]);
        assert_eq!(search.answer(NodeId(2), Ok(Some(leader.clone()))), Some(Ok(leader)));
        assert_eq!(search.answer(NodeId(3), Ok(None)), None, "over");
        assert!(!search.waits_for(NodeId(3)));

        let mut search = LeaderSearch::new([NodeId(1), NodeId(2)]).unwrap();
        assert_eq!(search.answer(NodeId(1), Err("unreachable".into())), None);
        assert_eq!(
            search.answer(NodeId(2), Ok(None)),
            Some(Err("node 1: unreachable".to_string()))
        );
        let nobody: BTreeSet<NodeId> = BTreeSet::new();
        assert!(LeaderSearch::new(nobody).is_err(), "nobody to ask: failed at once");
    }
}
