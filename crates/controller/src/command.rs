//! The commands the controller group applies through its Raft log, and what they return.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::NodeId;

use crate::configuration::{ConfigNum, ShardMove};

/// A change to the controller's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Registers a node (or changes a registered node's address).
    RegisterNode {
        /// The node.
        node: NodeId,
        /// Where its peers and clients reach it: `host:port`.
        address: String,
    },
    /// Adds groups and rebalances.
    AddGroups {
        /// Each new group and the nodes that host it.
        groups: BTreeMap<GroupId, Vec<NodeId>>,
        /// At most this many shards move between existing groups (see
        /// [`crate::rebalance`]).
        max_moves: Option<u32>,
    },
    /// Removes groups and rebalances their shards onto the others.
    RemoveGroups {
        /// The groups.
        groups: Vec<GroupId>,
        /// At most this many shards move between remaining groups.
        max_moves: Option<u32>,
    },
    /// Gives one shard to one group (a later rebalance may move it again, as in 6.824).
    MoveShard {
        /// The shard.
        shard: ShardId,
        /// Its new owner.
        group: GroupId,
    },
    /// Rebalances the current assignment.
    Rebalance {
        /// At most this many shards move between groups.
        max_moves: Option<u32>,
    },
    /// Records that a removed group has handed every shard it held to the new owners, so its
    /// replicas may be destroyed (the group's leader sends it; docs/migration.md).
    RetireGroup {
        /// The group.
        group: GroupId,
    },
    /// Replaces `node` by `with` in the members of every group of the latest configuration
    /// that lists `node` (or only in `group`): one new configuration, the same shards, each
    /// changed group's members still sorted. The groups carry the change out themselves, one
    /// replica at a time (docs/controller.md "Replacing a node"). Groups that configurations
    /// no longer list (removed, still handing their shards off) are never changed.
    ReplaceNode {
        /// The node whose replicas move; it need not be registered or alive.
        node: NodeId,
        /// The registered node that takes its place.
        with: NodeId,
        /// Only this group; every group of the latest configuration that lists `node` for
        /// `None`.
        group: Option<GroupId>,
    },
    /// Starts retiring `node`: one new configuration gives each of its replicas to another
    /// active node not in `avoid` (the one hosting fewest replicas that the group does not
    /// list, [`crate::decommission`]), the same shards, and the node becomes
    /// [`crate::NodeState::Decommissioning`]: no later command may list it. The groups carry the
    /// change out as for [`Command::ReplaceNode`]. Sent again, it changes nothing.
    DecommissionNode {
        /// The registered node.
        node: NodeId,
        /// Nodes that take none of its replicas: those the sender holds down (the state
        /// machine reads no clock; `mosaic admin node decommission` passes the active nodes
        /// the controller's leader has not heard for longer than its `node-down-after-ms`).
        avoid: BTreeSet<NodeId>,
    },
    /// Marks a node being decommissioned [`crate::NodeState::Retired`] once no group lists it
    /// and no removed group still handing its shards off ever listed it (`mosaic admin node
    /// decommission` sends it after the groups' status shows the node in no membership).
    RetireNode {
        /// The node.
        node: NodeId,
    },
    /// Records where controller replica `replica` is reached, so that every replica's Raft
    /// transport reaches it and clients find it. A recorded address never changes (refused
    /// with [`crate::Error::InvalidAddress`]): two processes must never answer as one replica,
    /// so a replica on another host takes a new id.
    /// `mosaic admin controller add` sends it before the replica joins the controller group
    /// (docs/controller.md "Changing the controller's replicas"). It does not make the replica
    /// a member: the group's membership is in its Raft log, changed one replica at a time.
    SetControllerAddress {
        /// The controller replica (its `--id`; controller replicas and storage nodes number
        /// themselves apart).
        replica: NodeId,
        /// Where it is reached: `host:port`.
        address: String,
    },
}

/// A command with the client's identity, for deduplication: a retried request applies once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client that sent it.
    pub client: ClientId,
    /// The client's sequence number; each new request uses a higher one.
    pub seq: u64,
    /// The command.
    pub command: Command,
}

/// What an applied command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node was registered.
    NodeRegistered {
        /// The node.
        node: NodeId,
    },
    /// The node was registered before, at another address, which it now replaces.
    NodeAddressChanged {
        /// The node.
        node: NodeId,
        /// The address it had.
        previous: String,
    },
    /// A new configuration was created.
    ConfigCreated {
        /// Its number.
        num: ConfigNum,
        /// The shards that changed owner.
        moves: Vec<ShardMove>,
    },
    /// The removed group was marked retired: nodes destroy its replicas.
    GroupRetired {
        /// The group.
        group: GroupId,
    },
    /// The node is being decommissioned: configuration `num` gives each of its replicas to
    /// another node (the latest configuration, unchanged, when it hosted none).
    NodeDecommissioning {
        /// The node.
        node: NodeId,
        /// The configuration that moves its replicas, or the latest.
        num: ConfigNum,
        /// The node that takes the node's place in each group.
        replacements: BTreeMap<GroupId, NodeId>,
    },
    /// The node was marked retired.
    NodeRetired {
        /// The node.
        node: NodeId,
    },
    /// The controller replica's address was recorded.
    ControllerAddressRecorded {
        /// The replica.
        replica: NodeId,
    },
    /// Nothing needed to change (the node or groups already exist as asked, or the
    /// assignment is already balanced).
    Unchanged {
        /// The latest configuration.
        num: ConfigNum,
        /// Why nothing changed, in words.
        reason: String,
    },
}

/// One line for a log or a terminal: what happened, with counts rather than lists (a new
/// configuration's moves are counted, not listed).
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeRegistered { node } => write!(f, "node {node} registered"),
            Self::NodeAddressChanged { node, previous } => {
                write!(f, "node {node} registered, replacing address {previous}")
            }
            Self::ConfigCreated { num, moves } => {
                write!(f, "configuration {num} created, {} shards change owner", moves.len())
            }
            Self::GroupRetired { group } => write!(f, "group {group} retired"),
            Self::NodeDecommissioning { node, num, replacements } => write!(
                f,
                "node {node} decommissioning: configuration {num} moves its replicas of {} \
                 groups",
                replacements.len()
            ),
            Self::NodeRetired { node } => write!(f, "node {node} retired"),
            Self::ControllerAddressRecorded { replica } => {
                write!(f, "controller replica {replica}: address recorded")
            }
            Self::Unchanged { num, reason } => {
                write!(f, "unchanged at configuration {num}: {reason}")
            }
        }
    }
}
