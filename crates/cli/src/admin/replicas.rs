//! Commands against storage nodes directly (`--nodes`): creating a group on its members
//! before the controller places groups, a group's status on each member, and changing a
//! group's membership one node at a time.
//!
//! A node joins an existing group with `group add-replica` (it receives the group's state as a
//! snapshot, first as a learner, then becomes a voter); `group remove-replica` takes one out.
//! A node whose data directory was lost must be removed and added again: it never rejoins as
//! a voter with an empty log.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mosaic_client::NodeId;
use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};
use tonic::transport::Endpoint;

use super::{CALL_TIMEOUT, Output, print_line};

/// Pause between two attempts of a step that waits for the group (a leader, a catch-up).
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often a long wait reports its progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub(super) async fn client(
    address: &str,
) -> anyhow::Result<NodeAdminClient<tonic::transport::Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .with_context(|| format!("{address:?} is not a valid address"))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    Ok(NodeAdminClient::new(channel))
}

/// Runs `mosaic admin`.
/// What a node should be in a group's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    Absent,
    Learner,
    Voter,
}

impl Membership {
    fn of(node: NodeId, status: &pb::GroupStatusResponse) -> Self {
        if status.voters.contains(&node.0) {
            Self::Voter
        } else if status.learners.contains(&node.0) {
            Self::Learner
        } else {
            Self::Absent
        }
    }

    fn change(self) -> pb::MembershipChange {
        match self {
            Self::Absent => pb::MembershipChange::Remove,
            Self::Learner => pb::MembershipChange::AddLearner,
            Self::Voter => pb::MembershipChange::AddVoter,
        }
    }
}

/// Membership changes of one group, driven through its leader until a deadline.
pub(super) struct Members<'a> {
    pub(super) nodes: &'a BTreeMap<NodeId, String>,
    pub(super) group: u64,
    pub(super) deadline: Instant,
}

impl Members<'_> {
    fn address(&self, node: NodeId) -> anyhow::Result<&str> {
        self.nodes.get(&node).map(String::as_str).with_context(|| {
            format!("node {node} is not in --nodes; add its address as {node}=HOST:PORT")
        })
    }

    pub(super) async fn add_replica(
        &self,
        node: NodeId,
        output: Output,
    ) -> anyhow::Result<ExitCode> {
        let address = self.address(node)?;
        let (_, status) = self.leader_status().await?;
        if Membership::of(node, &status) == Membership::Voter {
            bail!(
                "node {node} is already a voter of group {}; if its data was lost, remove it first \
                 (`mosaic admin ... group remove-replica {} --node {node}`), then add it",
                self.group,
                self.group
            );
        }
        client(address)
            .await?
            .join_group(pb::JoinGroupRequest { group_id: self.group })
            .await
            .map_err(|status| anyhow::anyhow!("node {node} ({address}): {}", status.message()))
            .context("creating the empty replica")?;
        self.ensure(node, Membership::Learner).await?;
        self.wait_caught_up(node).await?;
        let status = self.ensure(node, Membership::Voter).await?;
        print_membership(self.group, &status, &format!("node {node} added"), output)?;
        Ok(ExitCode::SUCCESS)
    }

    pub(super) async fn remove_replica(
        &self,
        node: NodeId,
        output: Output,
    ) -> anyhow::Result<ExitCode> {
        let status = self.ensure(node, Membership::Absent).await?;
        print_membership(self.group, &status, &format!("node {node} removed"), output)?;
        Ok(ExitCode::SUCCESS)
    }

    /// Changes the membership until `node` is `want`, at whichever node leads; idempotent (a
    /// change whose answer was lost is seen in the leader's status and not made twice).
    async fn ensure(
        &self,
        node: NodeId,
        want: Membership,
    ) -> anyhow::Result<pb::GroupStatusResponse> {
        loop {
            let (leader, status) = self.leader_status().await?;
            if Membership::of(node, &status) == want {
                return Ok(status);
            }
            let request = pb::ChangeMembershipRequest {
                group_id: self.group,
                change: want.change().into(),
                node_id: node.0,
            };
            let address = self.address(leader)?;
            let error = match client(address).await?.change_membership(request).await {
                Ok(_) => continue,
                Err(status) => status,
            };
            if error.code() == tonic::Code::InvalidArgument || Instant::now() >= self.deadline {
                bail!("group {}: {want:?} for node {node}: {}", self.group, error.message());
            }
            tracing::debug!(group = self.group, %node, error = error.message(), "retrying");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Waits until the leader knows `node`'s log matches its own up to its commit index,
    /// reporting progress on stderr.
    async fn wait_caught_up(&self, node: NodeId) -> anyhow::Result<()> {
        let mut reported = Instant::now();
        let mut target = None;
        loop {
            let (_, status) = self.leader_status().await?;
            // The commit index when the wait began: under a steady write load the learner
            // trails the moving commit index by a few entries, which promotion tolerates.
            let target = *target.get_or_insert(status.commit_index);
            let matched = status
                .progress
                .iter()
                .find(|progress| progress.node_id == node.0)
                .map_or(0, |progress| progress.match_index);
            if matched >= target {
                return Ok(());
            }
            if Instant::now() >= self.deadline {
                bail!(
                    "node {node} did not catch up with group {} in time (at {matched} of {target})",
                    self.group
                );
            }
            if reported.elapsed() >= PROGRESS_EVERY {
                eprintln!("node {node}: log at {matched} of {target}");
                reported = Instant::now();
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The group's leader and its status, asking every node of --nodes until one leads.
    pub(super) async fn leader_status(&self) -> anyhow::Result<(NodeId, pb::GroupStatusResponse)> {
        loop {
            let mut last_error = None;
            for (node, address) in self.nodes {
                let request = pb::GroupStatusRequest { group_id: self.group };
                match client(address).await?.group_status(request).await {
                    Ok(response) if response.get_ref().role == "leader" => {
                        return Ok((*node, response.into_inner()));
                    }
                    Ok(_) => {}
                    Err(status) => last_error = Some(format!("node {node}: {}", status.message())),
                }
            }
            if Instant::now() >= self.deadline {
                let why = last_error.unwrap_or_else(|| "no node reports leading it".into());
                bail!("group {} has no reachable leader ({why})", self.group);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn print_membership(
    group: u64,
    status: &pb::GroupStatusResponse,
    done: &str,
    output: Output,
) -> anyhow::Result<()> {
    let text = match output {
        Output::Human => format!(
            "{done}: group {group} voters {:?} learners {:?}",
            status.voters, status.learners
        ),
        Output::Json => serde_json::json!({
            "group": group, "voters": status.voters, "learners": status.learners,
        })
        .to_string(),
    };
    print_line(&text)
}

pub(super) async fn create_group(
    nodes: &BTreeMap<NodeId, String>,
    group: u64,
    members: &[NodeId],
    output: Output,
) -> anyhow::Result<ExitCode> {
    if group == 0 {
        bail!("group id 0 is not valid; use a positive integer");
    }
    for member in members {
        if !nodes.contains_key(member) {
            bail!("member {member} is not in --nodes; add its address as {member}=HOST:PORT");
        }
    }
    let ids: Vec<u64> = members.iter().map(|member| member.0).collect();
    for member in members {
        let address = &nodes[member];
        let request = pb::CreateGroupRequest { group_id: group, members: ids.clone() };
        client(address)
            .await?
            .create_group(request)
            .await
            .map_err(|status| anyhow::anyhow!("node {member} ({address}): {}", status.message()))
            .with_context(|| {
                format!("creating group {group}; replicas already created stay, rerun to finish")
            })?;
    }
    let text = match output {
        Output::Human => format!("group {group} created on nodes {ids:?}"),
        Output::Json => serde_json::json!({ "group": group, "members": ids }).to_string(),
    };
    print_line(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn group_status(
    nodes: &BTreeMap<NodeId, String>,
    group: u64,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut failures = 0;
    for (node, address) in nodes {
        let request = pb::GroupStatusRequest { group_id: group };
        let answer = match client(address).await?.group_status(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => {
                failures += 1;
                Err(status.message().to_string())
            }
        };
        rows.push((node.0, answer));
    }
    let text = match output {
        Output::Human => status_table(&rows),
        Output::Json => {
            let replicas: Vec<serde_json::Value> = rows
                .iter()
                .map(|(node, answer)| match answer {
                    Ok(s) => serde_json::json!({
                        "node": node,
                        "role": s.role,
                        "leader": s.leader,
                        "term": s.term,
                        "commit": s.commit_index,
                        "applied": s.applied_index,
                        "first_index": s.first_index,
                        "last_index": s.last_index,
                        "voters": s.voters,
                        "learners": s.learners,
                    }),
                    Err(error) => serde_json::json!({ "node": node, "error": error }),
                })
                .collect();
            serde_json::json!({ "group": group, "replicas": replicas }).to_string()
        }
    };
    print_line(&text)?;
    Ok(if failures == rows.len() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One row per node: its view of the group, or why it could not answer.
type StatusRows = [(u64, Result<pb::GroupStatusResponse, String>)];

fn status_table(rows: &StatusRows) -> String {
    let mut text = format!(
        "{:<6} {:<14} {:<7} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "node", "role", "leader", "term", "commit", "applied", "first", "last"
    );
    for (node, answer) in rows {
        text.push('\n');
        match answer {
            Ok(s) => text.push_str(&format!(
                "{:<6} {:<14} {:<7} {:>6} {:>10} {:>10} {:>10} {:>10}",
                node,
                s.role,
                s.leader.map_or("-".to_string(), |leader| leader.to_string()),
                s.term,
                s.commit_index,
                s.applied_index,
                s.first_index,
                s.last_index
            )),
            Err(error) => text.push_str(&format!("{node:<6} unavailable: {error}")),
        }
    }
    text
}
