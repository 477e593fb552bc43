//! `mosaic admin node decommission N`: retires a live storage node.
//!
//! 1. `DecommissionNode` (the controller gives each of the node's replicas to another active
//!    node in one configuration and stops listing the node anywhere), avoiding the nodes the
//!    controller's leader holds down. A node already being decommissioned changes nothing, so
//!    running the command again resumes where it was.
//! 2. Unless `--no-wait`: polls every group's leader until none shows the node as a voter or a
//!    learner, on two polls in a row, each leader having applied the latest configuration
//!    (each group moves its replica through a learner, a snapshot and a promotion, then
//!    removes the node), with progress on stderr.
//! 3. `RetireNode`: the node is marked retired for good. The controller refuses it while a
//!    removed group handing its shards off listed the node (no one polls such a group's
//!    members); the command then waits on, asking again every few seconds.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mosaic_client::cluster_status::ClusterStatus;
use mosaic_client::{GroupId, NodeId};
use mosaic_controller::{Command, NodeLiveness, NodeState, Outcome, RetireWatch};

use super::cluster::{Cluster, group_list};
use super::{CALL_TIMEOUT, Output, print_line};
use crate::progress::Progress;

/// How often the command looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The refusal kind of `RetireNode` while a removed group still handing its shards off listed
/// the node.
const STILL_LISTED: &str = "node-still-listed";

/// Decommissions `node` (see the module documentation); waits until `deadline` at most.
pub(super) async fn decommission(
    cluster: &Cluster,
    node: u64,
    wait: bool,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let node = NodeId(node);
    let answer = cluster.client().query(None).await?;
    // Only active nodes could take a replica: a retired or decommissioning one (down for
    // good, often) need not be named, which keeps the command readable by an older controller
    // when no active node is down.
    let avoid: BTreeSet<NodeId> = answer
        .nodes
        .keys()
        .filter(|other| {
            **other != node
                && answer.state_of(**other) == NodeState::Active
                && matches!(answer.liveness_of(**other), NodeLiveness::Down { .. })
        })
        .copied()
        .collect();
    if !avoid.is_empty() && cluster.output() == Output::Human {
        let list: Vec<String> = avoid.iter().map(ToString::to_string).collect();
        eprintln!(
            "the controller's leader holds node(s) {} down: they take none of node {node}'s \
             replicas",
            list.join(", ")
        );
    }
    let command = Command::DecommissionNode { node, avoid };
    let Some(outcome) = cluster.execute_quietly(command).await? else {
        return Ok(ExitCode::FAILURE);
    };
    match &outcome {
        Outcome::NodeDecommissioning { num, replacements, .. } => {
            let text = match cluster.output() {
                Output::Human => {
                    let moves: Vec<String> = replacements
                        .iter()
                        .map(|(group, with)| format!("group {group} -> node {with}"))
                        .collect();
                    if moves.is_empty() {
                        format!("node {node} decommissioning: it hosts no replica")
                    } else {
                        format!(
                            "configuration {num} created: node {node} decommissioning, its \
                             replicas move: {}",
                            moves.join(", ")
                        )
                    }
                }
                Output::Json => cluster.outcome_text(&outcome),
            };
            print_line(&text)?;
        }
        Outcome::Unchanged { .. } => {
            print_line(&cluster.outcome_text(&outcome))?;
            let answer = cluster.client().query(None).await?;
            if answer.state_of(node) == NodeState::Retired {
                return Ok(ExitCode::SUCCESS);
            }
        }
        other => anyhow::bail!("the controller answered DecommissionNode with {other}"),
    }
    if !wait {
        if cluster.output() == Output::Human {
            eprintln!(
                "not waiting: `mosaic admin node decommission {node}` again waits for the groups \
                 and marks the node retired"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    retire_when_out(cluster, node, deadline).await
}

/// Waits until no group holds a replica on `node` (on two polls in a row, each group's leader
/// having applied the latest configuration), then marks it retired. A status that cannot be
/// read is waited out like a group still holding the node.
async fn retire_when_out(
    cluster: &Cluster,
    node: NodeId,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let mut progress = Progress::new("groups moved off the node");
    let mut total = None;
    let mut watch = RetireWatch::default();
    let started = Instant::now();
    let result = loop {
        let (holding, mut waiting_for) =
            match ClusterStatus::read(cluster.client(), CALL_TIMEOUT).await {
                Ok(status) => {
                    let holding = status.holding(node);
                    let text = holding_text(&holding);
                    (Some(holding), text)
                }
                Err(error) => (None, format!("reading the groups' status: {error}")),
            };
        if watch.observe(holding.as_deref(), started.elapsed()) {
            match cluster.client().execute(Command::RetireNode { node }).await {
                Ok(Ok(outcome)) => break Ok(outcome),
                Ok(Err(refusal)) if refusal.kind == STILL_LISTED => {
                    waiting_for = refusal.message;
                    watch.refused(started.elapsed());
                }
                Ok(Err(refusal)) => break Err(refusal),
                Err(error) => waiting_for = format!("marking the node retired: {error}"),
            }
        }
        if Instant::now() >= deadline {
            progress.finish();
            eprintln!(
                "node {node} is not retired yet: {waiting_for}; `mosaic admin node decommission \
                 {node}` again resumes (see `mosaic admin status`)"
            );
            return Ok(ExitCode::FAILURE);
        }
        if let Some(holding) = &holding {
            let total = *total.get_or_insert(holding.len().max(1) as u64);
            let done = total.saturating_sub(holding.len() as u64);
            progress.update(done, total.max(done), &waiting_for);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    progress.finish();
    match result {
        Ok(outcome) => {
            let text = match cluster.output() {
                Output::Human => format!("node {node} retired: no group has a replica on it"),
                Output::Json => cluster.outcome_text(&outcome),
            };
            print_line(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            cluster.print_refusal(&refusal)?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `groups 1, 4 may still have a replica on the node (...)`.
fn holding_text(holding: &[GroupId]) -> String {
    if holding.is_empty() {
        return "no group shows a replica on the node; checking again".to_string();
    }
    let noun = if holding.len() == 1 { "group" } else { "groups" };
    format!(
        "{noun} {} may still have a replica on the node (its leader shows it, is behind the \
         latest configuration, or did not answer)",
        group_list(holding)
    )
}
