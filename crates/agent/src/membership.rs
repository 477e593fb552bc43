//! The agent's membership runs: each is one attempt at a [`MembershipJob`] on one group, a
//! [`MembershipRun`] whose requests are the agent's ([`Request::GroupStatus`] to the nodes
//! that may lead, to find the leader; [`Request::JoinGroup`] at the node joining;
//! [`Request::ChangeMembership`] at the leader). What each kind is for is at [`RunKind`]; the
//! rules they follow together are in the crate documentation.

use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use mosaic_raftstore::membership::{LeaderView, MembershipJob};
use mosaic_raftstore::membership_run::{
    LeaderSearch, MembershipError, MembershipRun, RunAction, StepFailure,
};

use crate::io::{Answer, Request, Time};

/// What an attempt asks of the agent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Send these requests.
    Send(Vec<Request>),
    /// The leader is found or the search failed: cancel the status reads still out.
    CancelSearch,
    /// The attempt is over.
    Over(Result<LeaderView, MembershipError>),
}

/// What a membership run is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RunKind {
    /// This node's replica may have been lost with its data directory (the store is newer
    /// than the group, or the group's members changed since it was created, and no replica is
    /// here): the job takes the node out of the group if it is a member, so that it counts in
    /// no quorum until the group's leader brings it back as a new node.
    Leave,
    /// The node is no longer placed in the group: the job waits until the group's leader has
    /// removed it, then the agent destroys the replica.
    Release,
    /// The node leads the group: the job makes the group's members exactly those the
    /// configuration lists, one change at a time (the missing ones join, are added as
    /// learners, catch up and are promoted; then the others are removed).
    Reshape,
}

/// One attempt in progress. See the module documentation.
#[derive(Debug)]
pub(crate) struct Attempt {
    run: MembershipRun,
    /// The nodes asked for the group's leader.
    asked: Vec<NodeId>,
    /// The status reads out, while the run reads the leader.
    search: Option<LeaderSearch>,
}

impl Attempt {
    /// An attempt at `job` on `group`, started at `now` and given up at `give_up_at`, that
    /// looks for the leader among `asked`.
    pub(crate) fn start(
        now: Time,
        group: GroupId,
        job: MembershipJob,
        give_up_at: Time,
        asked: Vec<NodeId>,
    ) -> (Self, Vec<Ask>) {
        let (run, action) = MembershipRun::start(group, job, give_up_at);
        let mut attempt = Self { run, asked, search: None };
        let asks = attempt.act(now, action);
        (attempt, asks)
    }

    /// The job (what is left to do).
    pub(crate) fn job(&self) -> &MembershipJob {
        self.run.job()
    }

    /// Once a pause is over, the next requests.
    pub(crate) fn poll(&mut self, now: Time) -> Vec<Ask> {
        let action = self.run.poll(now);
        self.then(now, action)
    }

    /// `node`'s answer to a status read.
    pub(crate) fn on_status(&mut self, now: Time, node: NodeId, answer: Answer) -> Vec<Ask> {
        let answer = match answer {
            Answer::Leader(view) => Ok(view),
            Answer::Failed(reason) => Err(reason),
            other => panic!("a status read answered with {other:?}"),
        };
        let Some(search) = self.search.as_mut() else { return Vec::new() };
        let Some(found) = search.answer(node, answer) else { return Vec::new() };
        self.search = None;
        let action = self.run.on_leader(now, found);
        let mut asks = vec![Ask::CancelSearch];
        asks.extend(self.then(now, action));
        asks
    }

    /// The answer to the step asked for.
    pub(crate) fn on_step(&mut self, now: Time, answer: Answer) -> Vec<Ask> {
        let answer = match answer {
            Answer::Done => Ok(()),
            Answer::Refused(reason) => Err(StepFailure::Refused(reason)),
            Answer::Failed(reason) => Err(StepFailure::Failed(reason)),
            other => panic!("a membership step answered with {other:?}"),
        };
        let action = self.run.on_step(now, answer);
        self.then(now, action)
    }

    /// What the run's next `action` asks, if it has one.
    fn then(&mut self, now: Time, action: Option<RunAction>) -> Vec<Ask> {
        action.map_or_else(Vec::new, |action| self.act(now, action))
    }

    fn act(&mut self, now: Time, action: RunAction) -> Vec<Ask> {
        let group = self.run.group();
        match action {
            RunAction::ReadLeader => match LeaderSearch::new(self.asked.iter().copied()) {
                Ok(search) => {
                    self.search = Some(search);
                    let reads =
                        self.asked.iter().map(|node| Request::GroupStatus { node: *node, group });
                    vec![Ask::Send(reads.collect())]
                }
                Err(reason) => {
                    let action = self.run.on_leader(now, Err(reason));
                    self.then(now, action)
                }
            },
            RunAction::Join { node, leader } => {
                vec![Ask::Send(vec![Request::JoinGroup { node, group, leader }])]
            }
            RunAction::Change { leader, change, unchanged_since } => {
                let request = Request::ChangeMembership { leader, group, change, unchanged_since };
                vec![Ask::Send(vec![request])]
            }
            RunAction::Pause { .. } => Vec::new(),
            RunAction::Finished(result) => vec![Ask::Over(result)],
        }
    }
}
