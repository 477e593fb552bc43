//! `mosaic admin`: operator commands against storage nodes.
//!
//! Until the controller places groups, a group is created by asking each of its member nodes
//! to create its replica, with the same member list:
//!
//! ```text
//! mosaic admin --nodes 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 group create 1
//! mosaic admin --nodes 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 group status 1
//! ```
//!
//! Human-readable output by default, `--output json` for scripts; a non-zero exit and a
//! message on stderr on any error.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use mosaic_client::NodeId;
use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};
use tonic::transport::Endpoint;

use crate::nodes::{NodeAddress, node_map, parse_node};

/// How long one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `mosaic admin`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The storage nodes, as ID=HOST:PORT,ID=HOST:PORT.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_node)]
    nodes: Vec<NodeAddress>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(subcommand)]
    command: AdminCommand,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables for people.
    Human,
    /// One JSON document for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Replica groups.
    #[command(subcommand)]
    Group(GroupCommand),
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Creates a group with a replica on every node of --nodes (or on --members only).
    Create {
        /// The group id (a positive integer).
        group: u64,
        /// The member node ids, comma-separated (default: every node of --nodes).
        #[arg(long, value_delimiter = ',')]
        members: Vec<u64>,
    },
    /// Shows each member's view of a group: role, leader, term, log positions.
    Status {
        /// The group id.
        group: u64,
    },
}

async fn client(address: &str) -> anyhow::Result<NodeAdminClient<tonic::transport::Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .with_context(|| format!("{address:?} is not a valid address"))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    Ok(NodeAdminClient::new(channel))
}

/// Runs `mosaic admin`.
pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let nodes = node_map(&args.nodes).map_err(anyhow::Error::msg)?;
    match args.command {
        AdminCommand::Group(GroupCommand::Create { group, members }) => {
            let members: Vec<NodeId> = if members.is_empty() {
                nodes.keys().copied().collect()
            } else {
                members.into_iter().map(NodeId).collect()
            };
            create_group(&nodes, group, &members, args.output).await
        }
        AdminCommand::Group(GroupCommand::Status { group }) => {
            group_status(&nodes, group, args.output).await
        }
    }
}

async fn create_group(
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

async fn group_status(
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

/// Writes one line of the command's output to stdout.
fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).context("writing to stdout")
}
