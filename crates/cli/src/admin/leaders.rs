//! Handing leaderships over by hand, through each group's leader (`NodeAdmin.TransferLeader`):
//! `mosaic admin leaders balance` moves every group of the latest configuration to its
//! preferred voter now, instead of waiting for leader balance to (docs/raftstore.md "Leader
//! balance"), and `mosaic admin group transfer-leader` (`--nodes`) moves one group's to the
//! voter named. Both wait until the new leader leads, showing progress on stderr.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mosaic_client::cluster_status::{self, ClusterStatus, GroupStatus};
use mosaic_client::membership::MembershipDriver;
use mosaic_client::{GroupId, Handover, NodeId, Tls};
use mosaic_proto::{node, pb};
use serde_json::json;

use super::cluster::{Cluster, leaders_summary};
use super::{CALL_TIMEOUT, Output, print_line};
use crate::progress::Progress;

/// How often the balance looks again at the groups.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A group asked to hand over that is still not led by the voter asked is asked again after
/// this long. A handover ends within an election timeout (1 to 2 s by default) or fails;
/// asking sooner would not speed it up, and each ask of a voter that cannot win costs the
/// group an election.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// How long `group transfer-leader` asks again while the voter is not ready: a leader that
/// was quiescent, or just elected, has not heard from its voters yet, and does after a
/// heartbeat round; a voter still not ready after this is down or behind.
const NOT_READY_FOR: Duration = Duration::from_secs(3);

/// Asks the node at `address`, which should lead `group`, to hand the leadership to `to`
/// (the group's preferred voter when `None`).
///
/// # Errors
/// The node's refusal (not the leader, not a voter, no such group) or a failed call, in words.
async fn ask(
    address: &str,
    tls: Option<&Tls>,
    group: GroupId,
    to: Option<NodeId>,
) -> Result<Handover, String> {
    let mut client = cluster_status::node_admin(address, tls, CALL_TIMEOUT)?;
    let request = pb::TransferLeaderRequest { group_id: group.0, to: to.map(|node| node.0) };
    let response =
        client.transfer_leader(request).await.map_err(|status| status.message().to_string())?;
    node::handover_from_pb(response.into_inner())
}

/// Where one group stands in a round of a balance.
enum Round {
    /// Led by its preferred voter.
    Balanced,
    /// Its leader was asked now to hand over to `to`.
    Asked { to: NodeId },
    /// Not balanced yet, and why (for the report at the deadline).
    Waiting(String),
}

/// One round for `group`: asks its leader (at `address`) to hand over to the preferred voter,
/// unless the group was `recent`ly asked to hand over to a voter, less than
/// [`ASK_AGAIN_AFTER`] ago.
async fn round(
    group: &GroupStatus,
    address: Option<&String>,
    recent: Option<(NodeId, Instant)>,
    tls: Option<&Tls>,
) -> Round {
    let Some(leader) = group.leader else { return Round::Waiting("no leader known".into()) };
    if let Some((to, at)) = recent {
        if to == leader {
            return Round::Balanced;
        }
        if at.elapsed() < ASK_AGAIN_AFTER {
            return Round::Waiting(format!("node {leader} is handing over to node {to}"));
        }
    }
    let Some(address) = address else {
        return Round::Waiting(format!("its leader, node {leader}, has no address"));
    };
    match ask(address, tls, group.group, None).await {
        Ok(Handover::AlreadyLeads { .. }) => Round::Balanced,
        Ok(Handover::Asked { to }) => Round::Asked { to },
        Ok(Handover::NotReady { to, reason }) => {
            Round::Waiting(format!("node {to} cannot take over from node {leader} yet: {reason}"))
        }
        Err(reason) => Round::Waiting(format!("node {leader}: {reason}")),
    }
}

/// `mosaic admin leaders balance`: until `deadline`, asks the leader of every group of the
/// latest configuration that its preferred voter does not lead to hand over to it (again
/// after [`ASK_AGAIN_AFTER`] if the handover did not happen), and returns once every group is
/// led by its preferred voter. Exits 1 at the deadline, naming each group left and why.
pub(super) async fn balance(cluster: &Cluster, deadline: Instant) -> anyhow::Result<ExitCode> {
    let tls = cluster.client().options().tls.clone();
    let mut progress = Progress::new("groups led by their preferred voter");
    // The voter each group was last asked to hand over to, and when.
    let mut asked: BTreeMap<GroupId, (NodeId, Instant)> = BTreeMap::new();
    let mut handovers = 0u64;
    loop {
        let status = ClusterStatus::read(cluster.client(), CALL_TIMEOUT).await?;
        let rounds = status.groups.iter().map(|group| {
            let address = group.leader.and_then(|leader| status.answer.nodes.get(&leader));
            round(group, address, asked.get(&group.group).copied(), tls.as_ref())
        });
        let rounds = futures_util::future::join_all(rounds).await;
        let mut waiting = Vec::new();
        for (group, round) in status.groups.iter().zip(rounds) {
            match round {
                Round::Balanced => {}
                Round::Asked { to } => {
                    asked.insert(group.group, (to, Instant::now()));
                    handovers += 1;
                    waiting.push((group.group, format!("asked to hand over to node {to}")));
                }
                Round::Waiting(reason) => waiting.push((group.group, reason)),
            }
        }
        let total = status.groups.len() as u64;
        if waiting.is_empty() {
            progress.finish();
            return report_balanced(cluster.output(), &status, handovers);
        }
        if Instant::now() >= deadline {
            progress.finish();
            for (group, reason) in &waiting {
                eprintln!("group {group}: not led by its preferred voter: {reason}");
            }
            eprintln!(
                "{} of {total} groups not balanced; see `mosaic admin status`",
                waiting.len()
            );
            return Ok(ExitCode::FAILURE);
        }
        let balanced = total - waiting.len() as u64;
        progress.update(balanced, total, &format!("{handovers} handovers asked"));
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn report_balanced(
    output: Output,
    status: &ClusterStatus,
    handovers: u64,
) -> anyhow::Result<ExitCode> {
    let leaders = status.leaders_by_node();
    let text = match output {
        Output::Human => format!(
            "every group is led by its preferred voter ({handovers} handovers asked){}",
            leaders_summary(&leaders)
        ),
        Output::Json => json!({
            "balanced": true,
            "handovers": handovers,
            "leaders": leaders
                .iter()
                .map(|(node, led)| (node.0.to_string(), json!(led)))
                .collect::<serde_json::Map<_, _>>(),
        })
        .to_string(),
    };
    print_line(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `mosaic admin group transfer-leader` (`--nodes`): asks `group`'s leader to hand over to
/// `to` (its preferred voter when `None`) and waits until that voter leads, until `deadline`.
/// Exits 1 when the voter cannot take over (still not ready after [`NOT_READY_FOR`] of asking
/// again; the reason on stderr) or does not lead by then.
pub(super) async fn transfer(
    nodes: &BTreeMap<NodeId, String>,
    tls: Option<&Tls>,
    group: GroupId,
    to: Option<NodeId>,
    deadline: Instant,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let driver = MembershipDriver::new(nodes.clone(), CALL_TIMEOUT, tls.cloned());
    let view = driver.leader_view(group, deadline).await?;
    let from = view.leader;
    let address = &nodes[&from];
    let not_ready_until = Instant::now() + NOT_READY_FOR;
    let answer = loop {
        match ask(address, tls, group, to).await.map_err(anyhow::Error::msg)? {
            Handover::NotReady { .. } if Instant::now() < not_ready_until.min(deadline) => {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            answer => break answer,
        }
    };
    let to = match answer {
        Handover::AlreadyLeads { to } => to,
        Handover::NotReady { to, reason } => {
            eprintln!("group {group}: node {to} cannot take over from node {from} now: {reason}");
            return Ok(ExitCode::FAILURE);
        }
        Handover::Asked { to } => {
            let mut progress = Progress::new("handovers");
            let message = format!("node {from} handing group {group} over to node {to}");
            loop {
                progress.update(0, 1, &message);
                tokio::time::sleep(POLL_INTERVAL).await;
                let view = driver.leader_view(group, deadline).await?;
                if view.leader == to {
                    break;
                }
                if Instant::now() >= deadline {
                    progress.finish();
                    eprintln!("group {group}: node {} leads, not node {to}", view.leader);
                    return Ok(ExitCode::FAILURE);
                }
            }
            progress.finish();
            to
        }
    };
    let text = match output {
        Output::Human => format!("group {group}: led by node {to} (was node {from})"),
        Output::Json => json!({ "group": group.0, "leader": to.0, "was": from.0 }).to_string(),
    };
    print_line(&text)?;
    Ok(ExitCode::SUCCESS)
}
