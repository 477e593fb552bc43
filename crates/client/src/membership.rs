//! Changing a group's membership over `NodeAdmin`: [`MembershipDriver`] runs the planner of
//! [`mosaic_raftstore::membership`] against live nodes, reading the leader's status before
//! every step. `mosaic admin group add-replica` and `remove-replica` use it, and so does a
//! storage node whose data directory was lost, to bring itself back into the groups it was a
//! member of (docs/raftstore.md "Changing a group's membership").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mosaic_engine::GroupId;
use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};
use mosaic_raft::{ConfChange, LogIndex, NodeId, Term};
use mosaic_raftstore::LeaderTerm;
pub use mosaic_raftstore::membership::{LeaderView, MembershipJob, MembershipStep};

use crate::channel::{Channels, with_timeout};

/// Pause between two attempts of a step that waits for the group (a leader, a catch-up).
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Why a membership change did not finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// A node the change needs has no address here.
    #[error("node {node} has no known address")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// No node answered as the group's leader by the deadline.
    #[error("group {group} has no reachable leader ({reason})")]
    NoLeader {
        /// The group.
        group: GroupId,
        /// The last error seen, or that no node leads.
        reason: String,
    },
    /// A step was refused in a way no retry can help (`InvalidArgument`).
    #[error("group {group}: {step} was refused: {reason}")]
    Refused {
        /// The group.
        group: GroupId,
        /// The step.
        step: String,
        /// The node's reason.
        reason: String,
    },
    /// The job was not done by the deadline.
    #[error("group {group}: not done in time; the last step was {step}")]
    Deadline {
        /// The group.
        group: GroupId,
        /// The last step tried.
        step: String,
    },
}

/// Drives membership changes through `NodeAdmin` on a set of nodes.
#[derive(Debug)]
pub struct MembershipDriver {
    nodes: BTreeMap<NodeId, String>,
    channels: Channels,
    call_timeout: Duration,
}

impl MembershipDriver {
    /// A driver that reaches each of `nodes` at its address; each call may take
    /// `call_timeout`.
    #[must_use]
    pub fn new(nodes: BTreeMap<NodeId, String>, call_timeout: Duration) -> Self {
        Self { nodes, channels: Channels::new(call_timeout), call_timeout }
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
            let mut reason = "no node reports leading it".to_string();
            // Every node at once: one that is down costs a call timeout, not one per node.
            let mut asks = tokio::task::JoinSet::new();
            for node in self.nodes.keys().copied() {
                let client = self.client(node);
                let request =
                    pb::GroupStatusRequest { group_id: group.0, confirm_leadership: true };
                let request = with_timeout(request, self.call_timeout);
                asks.spawn(async move {
                    let answer = match client {
                        Ok(mut client) => client
                            .group_status(request)
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(|status| format!("node {node}: {}", status.message())),
                        Err(error) => Err(error),
                    };
                    (node, answer)
                });
            }
            while let Some(asked) = asks.join_next().await {
                match asked {
                    Ok((node, Ok(status))) if status.leadership_confirmed => {
                        return Ok(view_of(node, &status));
                    }
                    Ok((_, Ok(_))) => {}
                    Ok((_, Err(error))) => reason = error,
                    Err(error) => reason = error.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(MembershipError::NoLeader { group, reason });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Runs `job` on `group` until it is done (returns the leader's last view) or `deadline`
    /// passes. `report` sees each step before it is taken, with the view it was planned from.
    ///
    /// # Errors
    /// See [`MembershipError`].
    pub async fn run(
        &self,
        group: GroupId,
        mut job: MembershipJob,
        deadline: Instant,
        mut report: impl FnMut(&LeaderView, &MembershipStep),
    ) -> Result<LeaderView, MembershipError> {
        loop {
            let view = self.leader_view(group, deadline).await?;
            let step = job.next(&view);
            report(&view, &step);
            let done = match step {
                MembershipStep::Done => return Ok(view),
                MembershipStep::Wait => Ok(false),
                MembershipStep::Join { node, leader } => {
                    let joined = self.join(group, node, leader).await;
                    if joined.is_ok() {
                        job.joined(node);
                    }
                    joined.map(|()| true)
                }
                MembershipStep::Change { change, unchanged_since } => {
                    self.change(group, view.leader, change, unchanged_since).await.map(|()| true)
                }
            };
            match done {
                Ok(true) => continue,
                Ok(false) => {}
                Err((tonic::Code::InvalidArgument, reason)) => {
                    let step = format!("{step:?}");
                    return Err(MembershipError::Refused { group, step, reason });
                }
                Err((_, reason)) => tracing::debug!(%group, ?step, reason, "retrying"),
            }
            if Instant::now() >= deadline {
                return Err(MembershipError::Deadline { group, step: format!("{step:?}") });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn join(
        &self,
        group: GroupId,
        node: NodeId,
        leader: LeaderTerm,
    ) -> Result<(), (tonic::Code, String)> {
        let mut client = self.client(node).map_err(unreachable)?;
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

    async fn change(
        &self,
        group: GroupId,
        leader: NodeId,
        change: ConfChange,
        unchanged_since: LogIndex,
    ) -> Result<(), (tonic::Code, String)> {
        let mut client = self.client(leader).map_err(unreachable)?;
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

/// A node with no usable address, as a failed call (retried like any unavailable node).
fn unreachable(reason: String) -> (tonic::Code, String) {
    (tonic::Code::Unavailable, reason)
}

/// A call's refusal or failure, with `who` answered.
fn refused(who: String) -> impl FnOnce(tonic::Status) -> (tonic::Code, String) {
    move |status| (status.code(), format!("{who}: {}", status.message()))
}

/// The planner's view of a leader's `GroupStatus`.
fn view_of(leader: NodeId, status: &pb::GroupStatusResponse) -> LeaderView {
    LeaderView {
        leader,
        term: Term(status.term),
        commit: LogIndex(status.commit_index),
        applied: LogIndex(status.applied_index),
        voters: status.voters.iter().map(|node| NodeId(*node)).collect(),
        learners: status.learners.iter().map(|node| NodeId(*node)).collect(),
        matched: status
            .progress
            .iter()
            .map(|progress| (NodeId(progress.node_id), LogIndex(progress.match_index)))
            .collect(),
        changing: status.membership_change_pending,
    }
}
