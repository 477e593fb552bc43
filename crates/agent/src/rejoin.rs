//! One attempt at bringing this node's replica of a group back after its data directory may
//! have been lost: a [`MembershipRun`] of `MembershipJob::add(node)`, whose requests are the
//! agent's ([`Request::GroupStatus`] to every registered node to find the leader,
//! [`Request::JoinGroup`] here, [`Request::ChangeMembership`] at the leader).
//!
//! A replica hosted here came from an earlier join of this store (or from before a restart
//! that kept the data): the job brings it on from there. None means the data may be lost:
//! the job removes the node first, so that its votes and acknowledgements from before the
//! loss never count again, then joins it as a new node (docs/raftstore.md "Changing a
//! group's membership").

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

/// One attempt in progress. See the module documentation.
#[derive(Debug)]
pub(crate) struct Attempt {
    node: NodeId,
    run: MembershipRun,
    /// The status reads out, while the run reads the leader.
    search: Option<LeaderSearch>,
}

impl Attempt {
    /// An attempt, started at `now`, by `node` on `group`, whose replica here is `hosted` (or
    /// joined in an earlier attempt), given up at `give_up_at`; it asks every node of `nodes`.
    pub(crate) fn start(
        now: Time,
        node: NodeId,
        group: GroupId,
        hosted: bool,
        give_up_at: Time,
        nodes: &[NodeId],
    ) -> (Self, Vec<Ask>) {
        let mut job = MembershipJob::add(node);
        if hosted {
            job.joined(node);
        } else {
            job = job.lost(node);
        }
        let (run, action) = MembershipRun::start(group, job, give_up_at);
        let mut attempt = Self { node, run, search: None };
        let asks = attempt.act(now, action, nodes);
        (attempt, asks)
    }

    /// True if this node's replica was joined by this attempt (or hosted when it started).
    pub(crate) fn has_joined(&self) -> bool {
        self.run.job().has_joined(self.node)
    }

    /// Once a pause is over, the next requests.
    pub(crate) fn poll(&mut self, now: Time, nodes: &[NodeId]) -> Vec<Ask> {
        let action = self.run.poll(now);
        self.then(now, action, nodes)
    }

    /// `node`'s answer to a status read.
    pub(crate) fn on_status(
        &mut self,
        now: Time,
        node: NodeId,
        answer: Answer,
        nodes: &[NodeId],
    ) -> Vec<Ask> {
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
        asks.extend(self.then(now, action, nodes));
        asks
    }

    /// The answer to the step asked for.
    pub(crate) fn on_step(&mut self, now: Time, answer: Answer, nodes: &[NodeId]) -> Vec<Ask> {
        let answer = match answer {
            Answer::Done => Ok(()),
            Answer::Refused(reason) => Err(StepFailure::Refused(reason)),
            Answer::Failed(reason) => Err(StepFailure::Failed(reason)),
            other => panic!("a membership step answered with {other:?}"),
        };
        let action = self.run.on_step(now, answer);
        self.then(now, action, nodes)
    }

    /// What the run's next `action` asks, if it has one.
    fn then(&mut self, now: Time, action: Option<RunAction>, nodes: &[NodeId]) -> Vec<Ask> {
        action.map_or_else(Vec::new, |action| self.act(now, action, nodes))
    }

    fn act(&mut self, now: Time, action: RunAction, nodes: &[NodeId]) -> Vec<Ask> {
        let group = self.run.group();
        match action {
            RunAction::ReadLeader => match LeaderSearch::new(nodes.iter().copied()) {
                Ok(search) => {
                    self.search = Some(search);
                    let reads =
                        nodes.iter().map(|node| Request::GroupStatus { node: *node, group });
                    vec![Ask::Send(reads.collect())]
                }
                Err(reason) => {
                    let action = self.run.on_leader(now, Err(reason));
                    self.then(now, action, nodes)
                }
            },
            RunAction::Join { node, leader } => {
                assert_eq!(node, self.node, "a rejoin adds only its own node");
                vec![Ask::Send(vec![Request::JoinGroup { group, leader }])]
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
