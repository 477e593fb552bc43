//! Why the controller refused a command. A refused command changes nothing.

use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::NodeId;

use crate::configuration::ConfigNum;
use crate::decommission::NodeState;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A command the controller refused, with what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved; node ids start at 1")]
    InvalidNodeId,
    /// A node address must be `host:port`.
    #[error("node address {address:?} is not host:port: {reason}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Group ids 0 and `u64::MAX` are reserved.
    #[error("group id {group} is reserved; use 1 to {}", u64::MAX - 1)]
    InvalidGroupId {
        /// The group id given.
        group: GroupId,
    },
    /// The group exists already, with other members.
    #[error("group {group} already exists with members {members:?}")]
    GroupExists {
        /// The group.
        group: GroupId,
        /// Its current members.
        members: Vec<NodeId>,
    },
    /// A group needs at least one member.
    #[error("group {group} has no members")]
    EmptyGroup {
        /// The group.
        group: GroupId,
    },
    /// A node is listed twice in one group.
    #[error("node {node} is listed twice in group {group}")]
    DuplicateMember {
        /// The group.
        group: GroupId,
        /// The node listed twice.
        node: NodeId,
    },
    /// A group names a node that never registered.
    #[error(
        "group {group} names node {node}, which is not registered (see `mosaic admin node list`)"
    )]
    UnregisteredMember {
        /// The group.
        group: GroupId,
        /// The unknown node.
        node: NodeId,
    },
    /// The command names a group that does not exist.
    #[error("group {group} does not exist")]
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// The command lists no group.
    #[error("the command names no group")]
    NoGroups,
    /// The shard is out of range.
    #[error("shard {shard} is out of range (the cluster has {shard_count} shards: 0 to {})", shard_count.saturating_sub(1))]
    ShardOutOfRange {
        /// The shard.
        shard: ShardId,
        /// The number of shards.
        shard_count: u32,
    },
    /// Removing these groups would leave shards that hold data without any owner.
    #[error(
        "removing every group would leave the cluster's shards without an owner; add a group first"
    )]
    RemovingEveryGroup,
    /// No such configuration.
    #[error("configuration {num} does not exist (latest is {latest})")]
    UnknownConfig {
        /// The number asked for.
        num: ConfigNum,
        /// The latest configuration.
        latest: ConfigNum,
    },
    /// A request older than the client's latest applied request (a delayed duplicate).
    #[error("request {seq} of client {client} is older than its latest ({latest})")]
    StaleRequest {
        /// The client.
        client: ClientId,
        /// The request's sequence number.
        seq: u64,
        /// The latest sequence number applied for this client.
        latest: u64,
    },
    /// The log entry does not decode as a request (it came through every replica's log alike,
    /// and changed nothing).
    #[error("the log entry is not a controller request: {reason}")]
    MalformedRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// A removed group cannot be added again: group ids are never reused, so that the
    /// replicas of a removed group can be destroyed once it has handed its shards off.
    #[error(
        "group {group} was removed in configuration {removed}; group ids are never reused, pick a new one"
    )]
    GroupRemoved {
        /// The group.
        group: GroupId,
        /// The configuration that removed it.
        removed: ConfigNum,
    },
    /// Only a group that configurations no longer list can retire.
    #[error("group {group} is in the latest configuration; only a removed group can retire")]
    GroupNotRemoved {
        /// The group.
        group: GroupId,
    },
    /// A node cannot replace itself.
    #[error("node {node} cannot replace itself; name another node to take its replicas")]
    SameNode {
        /// The node named twice.
        node: NodeId,
    },
    /// The node that would take the replicas never registered.
    #[error("node {node} is not registered (see `mosaic admin node list`)")]
    NodeNotRegistered {
        /// The unknown node.
        node: NodeId,
    },
    /// The node to replace is a member of no group of the latest configuration (or not of
    /// the group named).
    #[error(
        "node {node} is not a member of {} (`mosaic admin config show` lists the members)",
        match group {
            Some(group) => format!("group {group}"),
            None => "any group of the latest configuration".to_string(),
        }
    )]
    NotAMember {
        /// The node.
        node: NodeId,
        /// The group named, if one was.
        group: Option<GroupId>,
    },
    /// A group that would change lists the replacing node already: a group never has two
    /// replicas on one node.
    #[error(
        "group {group} already has a replica on node {node}, and a group never has two \
         replicas on one node; pick another node"
    )]
    AlreadyAMember {
        /// The group.
        group: GroupId,
        /// The node it lists already.
        node: NodeId,
    },
    /// No active node can take a group's replica from a node being decommissioned: every one
    /// is a member of the group already.
    #[error(
        "no node can take group {group}'s replica from node {node}: every active node is a \
         member of it already; register and start another node first"
    )]
    NoReplacement {
        /// The group.
        group: GroupId,
        /// The node being decommissioned.
        node: NodeId,
    },
    /// A node being decommissioned or retired takes no replica.
    #[error("node {node} is {state} and takes no replica; pick an active node")]
    NodeNotActive {
        /// The node.
        node: NodeId,
        /// Its state.
        state: NodeState,
    },
    /// Only a node being decommissioned can retire.
    #[error(
        "node {node} is not being decommissioned; `mosaic admin node decommission {node}` \
         moves its replicas away and then retires it"
    )]
    NotDecommissioning {
        /// The node.
        node: NodeId,
    },
    /// A removed group still handing its shards off listed the node (it may still have a
    /// replica there, and no one changes its members any more): the node cannot retire yet.
    #[error(
        "group {group}, removed but still handing its shards off, listed node {node} and may \
         still have a replica there; retire the node once the group has retired"
    )]
    NodeStillListed {
        /// The node.
        node: NodeId,
        /// A group that still lists it.
        group: GroupId,
    },
}
