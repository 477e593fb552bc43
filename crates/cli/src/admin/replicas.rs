//! Commands against storage nodes directly (`--nodes`): creating a group on its members
//! before the controller places groups, a group's status on each member, and changing a
//! group's membership one node at a time.
//!
//! A node joins an existing group with `group add-replica` (it receives the group's state as a
//! snapshot, first as a learner, then becomes a voter); `group remove-replica` takes one out.
//! A node whose data directory was lost must be removed and added again: it never rejoins as
//! a voter with an empty log (a node that follows a controller does this by itself).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mosaic_client::membership::{LeaderView, MembershipDriver, MembershipJob, MembershipStep};
use mosaic_client::{GroupId, NodeId, Tls};
use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};

use super::{CALL_TIMEOUT, Output, print_line};

/// How often a long wait reports its progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub(super) async fn client(
    address: &str,
    tls: Option<&Tls>,
) -> anyhow::Result<NodeAdminClient<tonic::transport::Channel>> {
    mosaic_client::cluster_status::node_admin(address, tls, CALL_TIMEOUT)
        .map_err(|reason| anyhow::anyhow!("{address:?} is not a valid address: {reason}"))
}

/// Membership changes of one group, driven through its leader until a deadline by the
/// shared planner ([`mosaic_client::membership`]).
pub(super) struct Members<'a> {
    pub(super) nodes: &'a BTreeMap<NodeId, String>,
    pub(super) tls: Option<&'a Tls>,
    pub(super) group: u64,
    pub(super) deadline: Instant,
}

impl Members<'_> {
    fn driver(&self) -> MembershipDriver {
        MembershipDriver::new(self.nodes.clone(), CALL_TIMEOUT, self.tls.cloned())
    }

    pub(super) async fn add_replica(
        &self,
        node: NodeId,
        output: Output,
    ) -> anyhow::Result<ExitCode> {
        if !self.nodes.contains_key(&node) {
            bail!("node {node} is not in --nodes; add its address as {node}=HOST:PORT");
        }
        let driver = self.driver();
        let group = GroupId(self.group);
        let view = driver.leader_view(group, self.deadline).await?;
        if view.voters.contains(&node) {
            bail!(
                "node {node} is already a voter of group {}; if its data was lost, remove it first \
                 (`mosaic admin ... group remove-replica {} --node {node}`), then add it",
                self.group,
                self.group
            );
        }
        let view = self.run(&driver, MembershipJob::add(node)).await?;
        print_membership(self.group, &view, &format!("node {node} added"), output)?;
        Ok(ExitCode::SUCCESS)
    }

    pub(super) async fn remove_replica(
        &self,
        node: NodeId,
        output: Output,
    ) -> anyhow::Result<ExitCode> {
        let view = self.run(&self.driver(), MembershipJob::remove(node)).await?;
        print_membership(self.group, &view, &format!("node {node} removed"), output)?;
        Ok(ExitCode::SUCCESS)
    }

    /// Runs `job`, reporting a learner's catch-up on stderr every [`PROGRESS_EVERY`].
    pub(super) async fn run(
        &self,
        driver: &MembershipDriver,
        job: MembershipJob,
    ) -> anyhow::Result<LeaderView> {
        let mut reported = Instant::now();
        let report = |view: &LeaderView, step: &MembershipStep| {
            if *step != MembershipStep::Wait || reported.elapsed() < PROGRESS_EVERY {
                return;
            }
            for learner in &view.learners {
                let matched = view.matched.get(learner).copied().unwrap_or_default();
                eprintln!("node {learner}: log at {matched} of {}", view.commit);
            }
            reported = Instant::now();
        };
        Ok(driver.run(GroupId(self.group), job, self.deadline, report).await?)
    }
}

fn print_membership(
    group: u64,
    view: &LeaderView,
    done: &str,
    output: Output,
) -> anyhow::Result<()> {
    let voters: Vec<u64> = view.voters.iter().map(|node| node.0).collect();
    let learners: Vec<u64> = view.learners.iter().map(|node| node.0).collect();
    let text = match output {
        Output::Human => format!("{done}: group {group} voters {voters:?} learners {learners:?}"),
        Output::Json => serde_json::json!({
            "group": group, "voters": voters, "learners": learners,
        })
        .to_string(),
    };
    print_line(&text)
}

pub(super) async fn create_group(
    nodes: &BTreeMap<NodeId, String>,
    tls: Option<&Tls>,
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
        client(address, tls)
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
    tls: Option<&Tls>,
    group: u64,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut failures = 0;
    for (node, address) in nodes {
        let request = pb::GroupStatusRequest { group_id: group, confirm_leadership: false };
        let answer = match client(address, tls).await?.group_status(request).await {
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
