//! `mosaic admin`: operator commands.
//!
//! Against the controller (`--controllers HOST:PORT,...`): initializing a new cluster
//! ([`init`]), the node registry, replacing a node in its groups, decommissioning a node
//! ([`decommission`]), changing the controller's own replicas ([`controllers`]), adding and
//! removing groups,
//! moving shards, rebalancing, the configuration history and the cluster's status
//! ([`cluster`]):
//!
//! ```text
//! mosaic admin --controllers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 init --shard-count 64
//! mosaic admin --controllers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 node list
//! mosaic admin --controllers ... node replace 3 --with 5
//! mosaic admin --controllers ... node decommission 3
//! mosaic admin --controllers ... controller add 4 --address 10.0.0.4:7000
//! mosaic admin --controllers ... group add 1 --members 1,2,3
//! mosaic admin --controllers ... rebalance --dry-run
//! mosaic admin --controllers ... leaders balance
//! mosaic admin --controllers ... config show
//! ```
//!
//! Against storage nodes directly (`--nodes ID=HOST:PORT,...`): creating a group on its members
//! without a controller, a group's status on each member, and changing a group's membership
//! ([`replicas`]) or its leader ([`leaders`], which also balances every group's leadership
//! against the controller):
//!
//! ```text
//! mosaic admin --nodes 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 group create 1
//! mosaic admin --nodes 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 group status 1
//! mosaic admin --nodes 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 group transfer-leader 1 --to 2
//! ```
//!
//! Human-readable output by default, `--output json` for scripts; a non-zero exit and a
//! message on stderr on any error; a command the controller refused exits 1 and says why.

mod cluster;
mod controllers;
mod decommission;
mod init;
mod leaders;
mod replicas;

pub(crate) use cluster::wait_until_settled;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use mosaic_client::{GroupId, NodeId};

use crate::nodes::{NodeAddress, node_map, parse_node};
use crate::tls::TlsArgs;

/// How long one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `mosaic admin`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The controller replicas, as HOST:PORT,HOST:PORT.
    #[arg(long, value_delimiter = ',', env = crate::nodes::CONTROLLERS_ENV)]
    controllers: Vec<String>,
    /// The storage nodes, as ID=HOST:PORT,ID=HOST:PORT (for the commands that talk to nodes
    /// directly: group create, status, add-replica, remove-replica).
    #[arg(long, value_delimiter = ',', value_parser = parse_node)]
    nodes: Vec<NodeAddress>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// How long a command may take, including retries while the controller elects a leader,
    /// in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    #[command(flatten)]
    tls: TlsArgs,
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
    /// Creates the controller group of a new cluster on every replica of --controllers,
    /// started without --bootstrap (each waits for this), once every replica has answered
    /// that it holds nothing; changes nothing on a cluster that is initialized, and refuses
    /// when some replicas hold the group and others do not (one lost its data). Waits up to
    /// --timeout for every replica to answer.
    Init {
        /// The number of shards of the new cluster, fixed for its life.
        #[arg(long, default_value_t = mosaic_controller::DEFAULT_SHARD_COUNT,
              value_parser = clap::value_parser!(u32).range(1..))]
        shard_count: u32,
    },
    /// The controller group's own replicas (controller).
    #[command(subcommand)]
    Controller(ControllerCommand),
    /// Registered storage nodes (controller).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Replica groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Shards (controller).
    #[command(subcommand)]
    Shard(ShardCommand),
    /// Spreads the shards evenly over the groups (controller).
    Rebalance {
        /// Prints the moves a rebalance would make now, and changes nothing.
        #[arg(long)]
        dry_run: bool,
        /// Moves at most this many shards (run again to go on).
        #[arg(long)]
        max_moves: Option<u32>,
    },
    /// The configuration history (controller).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Every group of the latest configuration: members, leader, the configuration its
    /// leader has applied, shards, and the shards still moving (controller, then the storage
    /// nodes).
    Status,
    /// Waits until every group has applied the latest configuration and no shard is moving,
    /// showing progress on stderr; exits 1 if that takes longer than --max-wait.
    Wait {
        /// How long to wait at most, in seconds.
        #[arg(long, default_value_t = 600)]
        max_wait: u64,
    },
    /// Groups' leaderships (controller).
    #[command(subcommand)]
    Leaders(LeadersCommand),
}

#[derive(Subcommand, Debug)]
enum LeadersCommand {
    /// Hands every group's leadership to its preferred voter now (the voter leader balance
    /// moves it to within `leader-balance-ticks`; docs/raftstore.md "Leader balance"), for
    /// example after a node restarted; waits until every group is led by it, showing progress
    /// on stderr, and exits 1 if that takes longer than --max-wait (naming each group left and
    /// why: its voter down, lagging, or being added).
    Balance {
        /// How long to wait at most, in seconds.
        #[arg(long, default_value_t = 60)]
        max_wait: u64,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Lists every registered node and its address.
    List,
    /// Replaces a node by another in the members of every group of the latest configuration
    /// that lists it (or of --group only): one new configuration, no shard moves. Each group
    /// then moves its replica itself: its leader adds the new node as a learner, promotes it
    /// once caught up, and removes the replaced node (which may be dead); `mosaic admin
    /// status` shows the progress.
    Replace {
        /// The node whose replicas move.
        node: u64,
        /// The registered node that takes its place.
        #[arg(long)]
        with: u64,
        /// Only in this group (default: every group that lists the node).
        #[arg(long)]
        group: Option<u64>,
    },
    /// Retires a node: gives each of its replicas to another active node (the one hosting
    /// fewest replicas that the group does not list) in one new configuration, waits until
    /// no group's leader shows the node as a member (progress on stderr), then marks it
    /// retired. Refused, with nothing changed, when some group has no other node to go to.
    /// Running it again resumes.
    Decommission {
        /// The node to retire.
        node: u64,
        /// Returns once the configuration is created, without waiting or marking the node
        /// retired (run the command again to do both).
        #[arg(long)]
        no_wait: bool,
        /// How long to wait at most, in seconds; exits 1 if the groups are not done by then.
        #[arg(long, default_value_t = 3600)]
        max_wait: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ControllerCommand {
    /// Lists the controller group's replicas as its leader shows them: voters, learners,
    /// and how far each one's log matches the leader's.
    List,
    /// Adds a controller replica, already running on an empty data directory without
    /// --bootstrap and with --peers naming every voter: records its address, then it joins
    /// as a learner, receives the controller's state as a snapshot, and becomes a voter once
    /// caught up (progress on stderr). A member that lost its data is removed first, then
    /// added back at the same address (a replica on another host takes a new id). Running
    /// it again resumes.
    Add {
        /// The replica's id (its --id).
        id: u64,
        /// Where it listens, as its peers and clients reach it: HOST:PORT.
        #[arg(long)]
        address: String,
        /// How long the whole operation may take, in seconds.
        #[arg(long, default_value_t = 300)]
        max_wait: u64,
    },
    /// Removes a controller replica from the group through its leader (it may be dead);
    /// refused for the only voter, and when the voters left that answer are not a majority
    /// of the voters left. Stop the removed replica's process afterwards.
    Remove {
        /// The replica's id.
        id: u64,
        /// Removes it even when the voters left that answer are not a majority (the group
        /// then elects no leader until enough of them are back).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ShardCommand {
    /// Gives one shard to one group (a later rebalance may move it again).
    Move {
        /// The shard.
        shard: u32,
        /// The group that gets it.
        group: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Shows a configuration (the latest by default): shard -> group, group -> nodes.
    Show {
        /// The configuration number.
        num: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Adds a group hosted by registered nodes, and rebalances (controller).
    Add {
        /// The group id (a positive integer).
        group: u64,
        /// The member node ids, comma-separated (`--nodes`, the name of earlier releases, is
        /// still accepted; elsewhere `--nodes` lists node addresses).
        #[arg(long = "members", alias = "nodes", value_delimiter = ',', required = true)]
        members: Vec<u64>,
        /// Moves at most this many shards between existing groups.
        #[arg(long)]
        max_moves: Option<u32>,
    },
    /// Removes a group; its shards go to the others (controller).
    Remove {
        /// The group id.
        group: u64,
        /// Moves at most this many shards between the remaining groups.
        #[arg(long)]
        max_moves: Option<u32>,
    },
    /// Creates a group with a replica on every node of --nodes (or on --members only),
    /// without a controller.
    Create {
        /// The group id (a positive integer).
        group: u64,
        /// The member node ids, comma-separated (default: every node of --nodes).
        #[arg(long, value_delimiter = ',')]
        members: Vec<u64>,
    },
    /// Shows each member's view of a group: role, leader, term, log positions (--nodes).
    Status {
        /// The group id.
        group: u64,
    },
    /// Adds a replica of an existing group on a node of --nodes: the node receives the
    /// group's state as a snapshot, as a learner, and becomes a voter once caught up.
    AddReplica {
        /// The group id.
        group: u64,
        /// The node that gets the replica.
        #[arg(long)]
        node: u64,
        /// How long the whole operation may take, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Removes a node's replica from a group's membership, through the group's log (--nodes).
    RemoveReplica {
        /// The group id.
        group: u64,
        /// The node whose replica leaves the group.
        #[arg(long)]
        node: u64,
    },
    /// Hands a group's leadership to a voter now and waits until it leads (--nodes). With
    /// leader balance on, a voter other than the group's preferred one hands it back within
    /// `leader-balance-ticks`.
    TransferLeader {
        /// The group id.
        group: u64,
        /// The voter that takes over (default: the group's preferred voter).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        to: Option<u64>,
    },
}

/// Runs `mosaic admin`.
pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let output = args.output;
    let timeout = Duration::from_secs(args.timeout);
    let tls = args.tls.load()?;
    let cluster = || cluster::Cluster::connect(&args.controllers, tls.clone(), timeout, output);
    match args.command {
        AdminCommand::Init { shard_count } => {
            let deadline = Instant::now() + timeout;
            init::init(&args.controllers, tls.as_ref(), shard_count, deadline, output).await
        }
        AdminCommand::Controller(command) => {
            let cluster = cluster()?;
            let max_wait = match &command {
                ControllerCommand::Add { max_wait, .. } => Duration::from_secs(*max_wait),
                ControllerCommand::List | ControllerCommand::Remove { .. } => timeout,
            };
            let controllers = controllers::Controllers {
                cluster: &cluster,
                addresses: &args.controllers,
                tls: tls.as_ref(),
                deadline: Instant::now() + max_wait,
            };
            match command {
                ControllerCommand::List => controllers.list().await,
                ControllerCommand::Add { id, address, .. } => {
                    controllers.add(NodeId(id), &address).await
                }
                ControllerCommand::Remove { id, force } => {
                    controllers.remove(NodeId(id), force).await
                }
            }
        }
        AdminCommand::Node(NodeCommand::List) => cluster()?.node_list().await,
        AdminCommand::Node(NodeCommand::Replace { node, with, group }) => {
            cluster()?.replace_node(node, with, group).await
        }
        AdminCommand::Node(NodeCommand::Decommission { node, no_wait, max_wait }) => {
            let deadline = Instant::now() + Duration::from_secs(max_wait);
            decommission::decommission(&cluster()?, node, !no_wait, deadline).await
        }
        AdminCommand::Group(GroupCommand::Add { group, members, max_moves }) => {
            cluster()?.add_group(group, &members, max_moves).await
        }
        AdminCommand::Group(GroupCommand::Remove { group, max_moves }) => {
            cluster()?.remove_group(group, max_moves).await
        }
        AdminCommand::Shard(ShardCommand::Move { shard, group }) => {
            cluster()?.move_shard(shard, group).await
        }
        AdminCommand::Rebalance { dry_run, max_moves } => {
            cluster()?.rebalance(dry_run, max_moves).await
        }
        AdminCommand::Config(ConfigCommand::Show { num }) => cluster()?.config_show(num).await,
        AdminCommand::Status => cluster()?.status().await,
        AdminCommand::Wait { max_wait } => {
            cluster()?.wait(Instant::now() + Duration::from_secs(max_wait)).await
        }
        AdminCommand::Leaders(LeadersCommand::Balance { max_wait }) => {
            leaders::balance(&cluster()?, Instant::now() + Duration::from_secs(max_wait)).await
        }
        AdminCommand::Group(GroupCommand::Create { group, members }) => {
            let nodes = node_flags(&args.nodes)?;
            let members: Vec<NodeId> = if members.is_empty() {
                nodes.keys().copied().collect()
            } else {
                members.into_iter().map(NodeId).collect()
            };
            replicas::create_group(&nodes, tls.as_ref(), group, &members, output).await
        }
        AdminCommand::Group(GroupCommand::Status { group }) => {
            replicas::group_status(&node_flags(&args.nodes)?, tls.as_ref(), group, output).await
        }
        AdminCommand::Group(GroupCommand::AddReplica { group, node, timeout }) => {
            let nodes = node_flags(&args.nodes)?;
            let deadline = Instant::now() + Duration::from_secs(timeout);
            let members = replicas::Members { nodes: &nodes, tls: tls.as_ref(), group, deadline };
            members.add_replica(NodeId(node), output).await
        }
        AdminCommand::Group(GroupCommand::RemoveReplica { group, node }) => {
            let nodes = node_flags(&args.nodes)?;
            let deadline = Instant::now() + timeout;
            let members = replicas::Members { nodes: &nodes, tls: tls.as_ref(), group, deadline };
            members.remove_replica(NodeId(node), output).await
        }
        AdminCommand::Group(GroupCommand::TransferLeader { group, to }) => {
            let nodes = node_flags(&args.nodes)?;
            let deadline = Instant::now() + timeout;
            let (group, to) = (GroupId(group), to.map(NodeId));
            leaders::transfer(&nodes, tls.as_ref(), group, to, deadline, output).await
        }
    }
}

/// The storage nodes of --nodes, for the commands that talk to them directly.
fn node_flags(nodes: &[NodeAddress]) -> anyhow::Result<BTreeMap<NodeId, String>> {
    if nodes.is_empty() {
        bail!("this command talks to the storage nodes: give them as --nodes ID=HOST:PORT,...");
    }
    node_map(nodes).map_err(anyhow::Error::msg)
}

/// Writes one line of the command's output to stdout.
pub(crate) fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).context("writing to stdout")
}
