//! Changing a group's membership over `NodeAdmin`: [`MembershipDriver`] executes the run of
//! [`mosaic_raftstore::membership_run`] against live nodes (`mosaic admin group
//! add-replica` and `remove-replica`), and lends its calls (a confirmed status, a membership
//! change at the leader) to a storage node whose agent brings its replica back after a data
//! loss (docs/raftstore.md "Changing a group's membership").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mosaic_engine::GroupId;
use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};
use mosaic_raft::{ConfChange, LogIndex, NodeId, Term};
use mosaic_raftstore::LeaderTerm;
pub use mosaic_raftstore::membership::{LeaderView, MembershipJob, MembershipStep};
use mosaic_raftstore::membership_run::{
    LeaderSearch, MembershipRun, Millis, RETRY_PAUSE_MS, RunAction,
};
pub use mosaic_raftstore::membership_run::{MembershipError, StepFailure};

use crate::channel::{Channels, with_timeout};
use crate::tls::Tls;

/// Drives membership changes through `NodeAdmin` on a set of nodes.
#[derive(Debug)]
pub struct MembershipDriver {
    nodes: BTreeMap<NodeId, String>,
    channels: Channels,
    call_timeout: Duration,
}

impl MembershipDriver {
    /// A driver that reaches each of `nodes` at its address (over TLS with `tls`); each call
    /// may take `call_timeout`.
    #[must_use]
    pub fn new(nodes: BTreeMap<NodeId, String>, call_timeout: Duration, tls: Option<Tls>) -> Self {
        Self { nodes, channels: Channels::new(call_timeout, tls), call_timeout }
    }

    fn client(&self, node: NodeId) -> Result<NodeAdminClient<tonic::transport::Channel>, String> {
        let address = self.nodes.get(&node).ok_or_else(|| format!("node {node}: no address"))?;
        let channel = self.channels.get(address).map_err(|error| format!("{address}: {error}"))?;
        Ok(NodeAdminClient::new(channel))
    }

    /// The group's leader and its view, asking every node (at once) until one confirms its
    /// leadership (`confirm_leadership`; again after a pause, until `deadline`).
    ///
    /// # Errors
    /// [`MembershipError::NoLeader`] at the deadline.
    pub async fn leader_view(
        &self,
        group: GroupId,
        deadline: Instant,
    ) -> Result<LeaderView, MembershipError> {
        loop {
            match self.read_leader(group).await {
                Ok(view) => return Ok(view),
                Err(reason) if Instant::now() >= deadline => {
                    return Err(MembershipError::NoLeader { group, reason });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await,
            }
        }
    }

    /// One round of [`MembershipDriver::leader_view`]: every node asked at once (one that is
    /// down costs a call timeout, not one per node).
    async fn read_leader(&self, group: GroupId) -> Result<LeaderView, String> {
        let mut search = LeaderSearch::new(self.nodes.keys().copied())?;
        let mut asks = tokio::task::JoinSet::new();
        for node in self.nodes.keys().copied() {
            let status = self.status(node, group);
            asks.spawn(async move { (node, status.await) });
        }
        while let Some(asked) = asks.join_next().await {
            let (node, answer) = asked.map_err(|error| error.to_string())?;
            if let Some(found) = search.answer(node, answer) {
                return found;
            }
        }
        unreachable!("every node asked answers the search")
    }

    /// `group`'s status at `node`, confirmed by a quorum round: its view if it leads the
    /// group, `None` if it does not.
    pub fn status(
        &self,
        node: NodeId,
        group: GroupId,
    ) -> impl std::future::Future<Output = Result<Option<LeaderView>, String>> + Send + 'static
    {
        let client = self.client(node);
        let request = pb::GroupStatusRequest { group_id: group.0, confirm_leadership: true };
        let request = with_timeout(request, self.call_timeout);
        async move {
            client?
                .group_status(request)
                .await
                .map(|status| leader_of(node, &status.into_inner()))
                .map_err(|status| status.message().to_string())
        }
    }

    /// Runs `job` on `group` ([`MembershipRun`]) until it is done (returns the leader's last
    /// view) or `deadline` passes. `report` sees each step planned, with the view it was
    /// planned from.
    ///
    /// # Errors
    /// See [`MembershipError`].
    pub async fn run(
        &self,
        group: GroupId,
        job: MembershipJob,
        deadline: Instant,
        mut report: impl FnMut(&LeaderView, &MembershipStep),
    ) -> Result<LeaderView, MembershipError> {
        let start = Instant::now();
        let now = || Millis::try_from(start.elapsed().as_millis()).unwrap_or(Millis::MAX);
        let give_up_at = deadline.saturating_duration_since(start).as_millis();
        let (mut run, mut action) =
            MembershipRun::start(group, job, Millis::try_from(give_up_at).unwrap_or(Millis::MAX));
        loop {
            let next = match action {
                RunAction::Finished(result) => return result,
                RunAction::ReadLeader => {
                    let leader = self.read_leader(group).await;
                    let found = leader.is_ok();
                    let next = run.on_leader(now(), leader);
                    if let (true, Some((view, step))) = (found, run.planned()) {
                        report(view, step);
                    }
                    next
                }
                RunAction::Join { node, leader } => {
                    let answer = self.join(group, node, leader).await;
                    run.on_step(now(), answer)
                }
                RunAction::Change { leader, change, unchanged_since } => {
                    let answer = self.change(group, leader, change, unchanged_since).await;
                    run.on_step(now(), answer)
                }
                RunAction::Pause { until } => {
                    let wake = start + Duration::from_millis(until);
                    tokio::time::sleep_until(wake.into()).await;
                    run.poll(now())
                }
            };
            action = next.expect("a run driven in turn always has a next action");
        }
    }

    /// Creates `node`'s empty replica of `group`, starting in `leader`'s term
    /// (`NodeAdmin.JoinGroup`).
    ///
    /// # Errors
    /// [`StepFailure::Refused`] for an invalid request, [`StepFailure::Failed`] otherwise.
    pub async fn join(
        &self,
        group: GroupId,
        node: NodeId,
        leader: LeaderTerm,
    ) -> Result<(), StepFailure> {
        let mut client = self.client(node).map_err(StepFailure::Failed)?;
        let request = pb::JoinGroupRequest {
            group_id: group.0,
            leader: Some(leader.leader.0),
            term: Some(leader.term.0),
        };
        client
            .join_group(with_timeout(request, self.call_timeout))
            .await
            .map(|_| ())
            .map_err(refused(format!("node {node}")))
    }

    /// Proposes `change` to `group` at `leader`, refused there if the membership changed
    /// after `unchanged_since`.
    ///
    /// # Errors
    /// [`StepFailure::Refused`] for an invalid change, [`StepFailure::Failed`] otherwise.
    pub async fn change(
        &self,
        group: GroupId,
        leader: NodeId,
        change: ConfChange,
        unchanged_since: LogIndex,
    ) -> Result<(), StepFailure> {
        let mut client = self.client(leader).map_err(StepFailure::Failed)?;
        let (kind, node) = match change {
            ConfChange::AddLearner(node) => (pb::MembershipChange::AddLearner, node),
            ConfChange::AddVoter(node) => (pb::MembershipChange::AddVoter, node),
            ConfChange::RemoveNode(node) => (pb::MembershipChange::Remove, node),
        };
        let request = pb::ChangeMembershipRequest {
            group_id: group.0,
            change: kind.into(),
            node_id: node.0,
            unchanged_since: Some(unchanged_since.0),
        };
        client
            .change_membership(with_timeout(request, self.call_timeout))
            .await
            .map(|_| ())
            .map_err(refused(format!("leader {leader}")))
    }
}

/// A call's refusal or failure, with `who` answered: only an invalid change is refused for
/// good.
fn refused(who: String) -> impl FnOnce(tonic::Status) -> StepFailure {
    move |status| {
        let reason = format!("{who}: {}", status.message());
        match status.code() {
            tonic::Code::InvalidArgument => StepFailure::Refused(reason),
            _ => StepFailure::Failed(reason),
        }
    }
}

/// The planner's view of `node`'s `GroupStatus`, if it confirmed that it leads.
fn leader_of(node: NodeId, status: &pb::GroupStatusResponse) -> Option<LeaderView> {
    status.leadership_confirmed.then(|| view_of(node, status))
}

/// The planner's view of a leader's `GroupStatus`.
fn view_of(leader: NodeId, status: &pb::GroupStatusResponse) -> LeaderView {
    LeaderView {
        leader,
        term: Term(status.term),
        commit: LogIndex(status.commit_index),
        applied: LogIndex(status.applied_index),
        last_index: LogIndex(status.last_index),
        voters: status.voters.iter().map(|node| NodeId(*node)).collect(),
        learners: status.learners.iter().map(|node| NodeId(*node)).collect(),
        matched: status
            .progress
            .iter()
            .map(|progress| (NodeId(progress.node_id), LogIndex(progress.match_index)))
            .collect(),
        active: status
            .progress
            .iter()
            .filter(|progress| progress.recent_active)
            .map(|progress| NodeId(progress.node_id))
            .collect(),
        changing: status.membership_change_pending,
        voters_applied: status.voters_applied_membership,
    }
}
