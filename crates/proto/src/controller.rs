//! Conversions between the controller's types ([`mosaic_controller`]) and the messages of the
//! `Controller` service (`proto/mosaic/v1/controller.proto`).
//!
//! Outgoing, every `*_to_pb` function is infallible: each value has a wire form. Incoming,
//! every `*_from_pb` function decodes untrusted network input: it accepts exactly the wire
//! messages that map onto a value the controller could have produced or could apply, and
//! answers anything else with a [`ConvertError`] naming the offending field. Bytes from the
//! network never cause a panic.
//!
//! Checked on the way in:
//! - a oneof that must be set is absent: `ExecuteRequest.command`, `ExecuteResponse.result`,
//!   `CommandOutcome.kind`, and `QueryResponse.config` (a variant of a kind this build does not
//!   know decodes as absent); `Refusal.kind` is empty;
//! - 0 in a field that must be at least 1: the client id and sequence number of a request, the
//!   number of a created configuration;
//! - node id 0 anywhere a node is named;
//! - a reserved group id: 0 and `u64::MAX` where a group is named, `u64::MAX` where 0 means
//!   "no group" (shard owners, the two sides of a shard move);
//! - a group listed twice in `AddGroups.groups` (the command holds them in a map);
//! - a configuration that breaks the invariant of [`Configuration`] or its wire order: no shards,
//!   groups not in strictly increasing order, a group without members or with a member twice, a
//!   shard owned by a group it does not list;
//! - a shard move that does not change the owner, and the moves of a created configuration not
//!   in strictly increasing shard order;
//! - a query response whose configuration is past the latest it reports, whose nodes are not in
//!   strictly increasing id order, or whose leader is node 0; a group life that does not hold
//!   together (`added < removed` where set, retired only once removed, no founder 0).
//!
//! What a well-formed command asks for is the state machine's to judge, not this module's: an
//! `AddGroups` with no groups, a group without members or with a member twice, an address that
//! is not `host:port`, a shard out of range, an unknown group all decode, and the controller
//! refuses them with a [`Refusal`](pb::Refusal) whose kind names the [`Error`] variant.
//!
//! Invariant: for every value that passes these checks, and so for every value the controller
//! produces, `x_from_pb(x_to_pb(&value)) == Ok(value)`. A refusal travels as its kind and
//! message only: [`execute_response_from_pb`] returns a [`RefusalInfo`], not the [`Error`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mosaic_controller::{
    Command, ConfigNum, Configuration, Error, GroupLife, NodeLiveness, NodeState, Outcome, Request,
    ShardMove,
};
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::NodeId;

use crate::convert::{ConvertError, Result, node_id_from_pb};
use crate::pb;
use crate::pb::command_outcome::Kind;
use crate::pb::execute_request::Command as PbCommand;
use crate::pb::execute_response::Result as PbResult;

// ---- Requests ------------------------------------------------------------------------------

/// Returns the wire form of a request.
#[must_use]
pub fn request_to_pb(request: &Request) -> pb::ExecuteRequest {
    let command = match &request.command {
        Command::RegisterNode { node, address } => {
            PbCommand::RegisterNode(pb::RegisterNode { node_id: node.0, address: address.clone() })
        }
        Command::AddGroups { groups, max_moves } => PbCommand::AddGroups(pb::AddGroups {
            groups: groups
                .iter()
                .map(|(group, members)| group_members_to_pb(*group, members))
                .collect(),
            max_moves: *max_moves,
        }),
        Command::RemoveGroups { groups, max_moves } => PbCommand::RemoveGroups(pb::RemoveGroups {
            group_ids: groups.iter().map(|group| group.0).collect(),
            max_moves: *max_moves,
        }),
        Command::MoveShard { shard, group } => {
            PbCommand::MoveShard(pb::MoveShard { shard: shard.0, group_id: group.0 })
        }
        Command::Rebalance { max_moves } => {
            PbCommand::Rebalance(pb::Rebalance { max_moves: *max_moves })
        }
        Command::RetireGroup { group } => {
            PbCommand::RetireGroup(pb::RetireGroup { group_id: group.0 })
        }
        Command::ReplaceNode { node, with, group } => PbCommand::ReplaceNode(pb::ReplaceNode {
            node_id: node.0,
            with_node_id: with.0,
            group_id: group.map(|group| group.0),
        }),
        Command::DecommissionNode { node, avoid } => {
            PbCommand::DecommissionNode(pb::DecommissionNode {
                node_id: node.0,
                avoid: avoid.iter().map(|node| node.0).collect(),
            })
        }
        Command::RetireNode { node } => PbCommand::RetireNode(pb::RetireNode { node_id: node.0 }),
        Command::SetControllerAddress { replica, address } => {
            PbCommand::SetControllerAddress(pb::SetControllerAddress {
                replica_id: replica.0,
                address: address.clone(),
            })
        }
    };
    pb::ExecuteRequest { client_id: request.client.0, seq: request.seq, command: Some(command) }
}

/// Returns the request a wire request carries.
///
/// # Errors
/// A [`ConvertError`] naming the first field that does not map onto a [`Request`]: a client id
/// or sequence number of 0, no command, node id 0, a reserved group id, a group listed twice in
/// `AddGroups.groups`. See the [module documentation](self) for what is left to the state
/// machine.
pub fn request_from_pb(request: pb::ExecuteRequest) -> Result<Request> {
    let client = ClientId(nonzero(request.client_id, "ExecuteRequest.client_id")?);
    let seq = nonzero(request.seq, "ExecuteRequest.seq")?;
    let command =
        request.command.ok_or(ConvertError::MissingField { field: "ExecuteRequest.command" })?;
    let command = match command {
        PbCommand::RegisterNode(register) => Command::RegisterNode {
            node: node_id_from_pb(register.node_id, "RegisterNode.node_id")?,
            address: register.address,
        },
        PbCommand::AddGroups(add) => {
            let mut groups = BTreeMap::new();
            for group in add.groups {
                let (group, members) = group_members_from_pb(group)?;
                if groups.insert(group, members).is_some() {
                    return Err(ConvertError::DuplicateGroup {
                        field: "AddGroups.groups",
                        group: group.0,
                    });
                }
            }
            Command::AddGroups { groups, max_moves: add.max_moves }
        }
        PbCommand::RemoveGroups(remove) => Command::RemoveGroups {
            groups: remove
                .group_ids
                .into_iter()
                .map(|group| group_id_from_pb(group, "RemoveGroups.group_ids"))
                .collect::<Result<_>>()?,
            max_moves: remove.max_moves,
        },
        PbCommand::MoveShard(move_shard) => Command::MoveShard {
            shard: ShardId(move_shard.shard),
            group: group_id_from_pb(move_shard.group_id, "MoveShard.group_id")?,
        },
        PbCommand::Rebalance(rebalance) => Command::Rebalance { max_moves: rebalance.max_moves },
        PbCommand::RetireGroup(retire) => Command::RetireGroup {
            group: group_id_from_pb(retire.group_id, "RetireGroup.group_id")?,
        },
        PbCommand::ReplaceNode(replace) => Command::ReplaceNode {
            node: node_id_from_pb(replace.node_id, "ReplaceNode.node_id")?,
            with: node_id_from_pb(replace.with_node_id, "ReplaceNode.with_node_id")?,
            group: replace
                .group_id
                .map(|group| group_id_from_pb(group, "ReplaceNode.group_id"))
                .transpose()?,
        },
        PbCommand::DecommissionNode(decommission) => Command::DecommissionNode {
            node: node_id_from_pb(decommission.node_id, "DecommissionNode.node_id")?,
            avoid: decommission
                .avoid
                .iter()
                .map(|node| node_id_from_pb(*node, "DecommissionNode.avoid"))
                .collect::<Result<_>>()?,
        },
        PbCommand::RetireNode(retire) => {
            Command::RetireNode { node: node_id_from_pb(retire.node_id, "RetireNode.node_id")? }
        }
        PbCommand::SetControllerAddress(set) => Command::SetControllerAddress {
            replica: node_id_from_pb(set.replica_id, "SetControllerAddress.replica_id")?,
            address: set.address,
        },
    };
    Ok(Request { client, seq, command })
}

impl From<&Request> for pb::ExecuteRequest {
    fn from(request: &Request) -> Self {
        request_to_pb(request)
    }
}

impl TryFrom<pb::ExecuteRequest> for Request {
    type Error = ConvertError;

    /// As [`request_from_pb`].
    fn try_from(request: pb::ExecuteRequest) -> Result<Self> {
        request_from_pb(request)
    }
}

// ---- Responses -----------------------------------------------------------------------------

/// A refused command as the client sees it: the refusal's kind and message, not the
/// controller's [`Error`] itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RefusalInfo {
    /// What kind of refusal, in kebab-case ([`refusal_kind`]); stable for scripts. A newer
    /// controller may send a kind this build does not know.
    pub kind: String,
    /// What was wrong and what to do, in words (the [`Error`]'s `Display`).
    pub message: String,
}

impl From<&Error> for RefusalInfo {
    /// The kind and message that [`refusal_to_pb`] sends for `error`.
    fn from(error: &Error) -> Self {
        Self { kind: refusal_kind(error).to_string(), message: error.to_string() }
    }
}

/// Returns the stable, kebab-case name of a refusal's kind, one per [`Error`] variant. Scripts
/// match on it: a name, once released, never changes.
#[must_use]
pub fn refusal_kind(error: &Error) -> &'static str {
    // Exhaustive on purpose: a new variant fails to compile here until it has a name.
    match error {
        Error::InvalidNodeId => "invalid-node-id",
        Error::InvalidAddress { .. } => "invalid-address",
        Error::InvalidGroupId { .. } => "invalid-group-id",
        Error::GroupExists { .. } => "group-exists",
        Error::EmptyGroup { .. } => "empty-group",
        Error::DuplicateMember { .. } => "duplicate-member",
        Error::UnregisteredMember { .. } => "unregistered-member",
        Error::UnknownGroup { .. } => "unknown-group",
        Error::NoGroups => "no-groups",
        Error::ShardOutOfRange { .. } => "shard-out-of-range",
        Error::RemovingEveryGroup => "removing-every-group",
        Error::UnknownConfig { .. } => "unknown-config",
        Error::StaleRequest { .. } => "stale-request",
        Error::MalformedRequest { .. } => "malformed-request",
        Error::GroupRemoved { .. } => "group-removed",
        Error::GroupNotRemoved { .. } => "group-not-removed",
        Error::SameNode { .. } => "same-node",
        Error::NodeNotRegistered { .. } => "node-not-registered",
        Error::NotAMember { .. } => "not-a-member",
        Error::AlreadyAMember { .. } => "already-a-member",
        Error::NoReplacement { .. } => "no-replacement",
        Error::NodeNotActive { .. } => "node-not-active",
        Error::NotDecommissioning { .. } => "not-decommissioning",
        Error::NodeStillListed { .. } => "node-still-listed",
    }
}

/// Returns the wire form of a refusal: its [kind](refusal_kind) and the error's `Display`.
#[must_use]
pub fn refusal_to_pb(error: &Error) -> pb::Refusal {
    pb::Refusal { kind: refusal_kind(error).to_string(), message: error.to_string() }
}

/// Returns the kind and message of a wire refusal. Kinds this build does not know are kept as
/// they are.
///
/// # Errors
/// [`ConvertError::MissingField`] if `Refusal.kind` is empty.
pub fn refusal_from_pb(refusal: pb::Refusal) -> Result<RefusalInfo> {
    if refusal.kind.is_empty() {
        return Err(ConvertError::MissingField { field: "Refusal.kind" });
    }
    Ok(RefusalInfo { kind: refusal.kind, message: refusal.message })
}

/// Returns the wire form of what an applied command did.
#[must_use]
pub fn outcome_to_pb(outcome: &Outcome) -> pb::CommandOutcome {
    let kind = match outcome {
        Outcome::NodeRegistered { node } => {
            Kind::NodeRegistered(pb::NodeRegistered { node_id: node.0 })
        }
        Outcome::NodeAddressChanged { node, previous } => {
            Kind::NodeAddressChanged(pb::NodeAddressChanged {
                node_id: node.0,
                previous: previous.clone(),
            })
        }
        Outcome::ConfigCreated { num, moves } => Kind::ConfigCreated(pb::ConfigCreated {
            num: num.0,
            moves: moves.iter().map(shard_move_to_pb).collect(),
        }),
        Outcome::Unchanged { num, reason } => {
            Kind::Unchanged(pb::Unchanged { num: num.0, reason: reason.clone() })
        }
        Outcome::GroupRetired { group } => {
            Kind::GroupRetired(pb::GroupRetired { group_id: group.0 })
        }
        Outcome::NodeDecommissioning { node, num, replacements } => {
            Kind::NodeDecommissioning(pb::NodeDecommissioning {
                node_id: node.0,
                num: num.0,
                replacements: replacements
                    .iter()
                    .map(|(group, with)| pb::GroupReplacement {
                        group_id: group.0,
                        with_node_id: with.0,
                    })
                    .collect(),
            })
        }
        Outcome::NodeRetired { node } => Kind::NodeRetired(pb::NodeRetired { node_id: node.0 }),
        Outcome::ControllerAddressRecorded { replica } => {
            Kind::ControllerAddressRecorded(pb::ControllerAddressRecorded { replica_id: replica.0 })
        }
    };
    pb::CommandOutcome { kind: Some(kind) }
}

/// Returns what an applied command did, from its wire form.
///
/// # Errors
/// A [`ConvertError`] naming the first field that does not map onto an [`Outcome`]: no kind,
/// node id 0, a created configuration numbered 0, a move that is invalid
/// ([`shard_move_from_pb`]) or out of shard order, a reserved group id or groups out of order
/// in a decommissioning's replacements.
pub fn outcome_from_pb(outcome: pb::CommandOutcome) -> Result<Outcome> {
    let kind = outcome.kind.ok_or(ConvertError::MissingField { field: "CommandOutcome.kind" })?;
    Ok(match kind {
        Kind::NodeRegistered(registered) => Outcome::NodeRegistered {
            node: node_id_from_pb(registered.node_id, "NodeRegistered.node_id")?,
        },
        Kind::NodeAddressChanged(changed) => Outcome::NodeAddressChanged {
            node: node_id_from_pb(changed.node_id, "NodeAddressChanged.node_id")?,
            previous: changed.previous,
        },
        Kind::ConfigCreated(created) => {
            let num = ConfigNum(nonzero(created.num, "ConfigCreated.num")?);
            let moves: Vec<ShardMove> =
                created.moves.into_iter().map(shard_move_from_pb).collect::<Result<_>>()?;
            if let Some(pair) = moves.windows(2).find(|pair| pair[0].shard >= pair[1].shard) {
                return Err(ConvertError::OutOfOrder {
                    field: "ConfigCreated.moves",
                    previous: pair[0].shard.0.into(),
                    value: pair[1].shard.0.into(),
                });
            }
            Outcome::ConfigCreated { num, moves }
        }
        Kind::Unchanged(unchanged) => {
            Outcome::Unchanged { num: ConfigNum(unchanged.num), reason: unchanged.reason }
        }
        Kind::GroupRetired(retired) => Outcome::GroupRetired {
            group: group_id_from_pb(retired.group_id, "GroupRetired.group_id")?,
        },
        Kind::NodeDecommissioning(decommissioning) => {
            let mut replacements: BTreeMap<GroupId, NodeId> = BTreeMap::new();
            for replacement in decommissioning.replacements {
                let group = group_id_from_pb(replacement.group_id, "GroupReplacement.group_id")?;
                check_order(&replacements, group, "NodeDecommissioning.replacements", |id| id.0)?;
                let with =
                    node_id_from_pb(replacement.with_node_id, "GroupReplacement.with_node_id")?;
                replacements.insert(group, with);
            }
            Outcome::NodeDecommissioning {
                node: node_id_from_pb(decommissioning.node_id, "NodeDecommissioning.node_id")?,
                num: ConfigNum(decommissioning.num),
                replacements,
            }
        }
        Kind::NodeRetired(retired) => {
            Outcome::NodeRetired { node: node_id_from_pb(retired.node_id, "NodeRetired.node_id")? }
        }
        Kind::ControllerAddressRecorded(recorded) => Outcome::ControllerAddressRecorded {
            replica: node_id_from_pb(recorded.replica_id, "ControllerAddressRecorded.replica_id")?,
        },
    })
}

impl From<&Outcome> for pb::CommandOutcome {
    fn from(outcome: &Outcome) -> Self {
        outcome_to_pb(outcome)
    }
}

impl TryFrom<pb::CommandOutcome> for Outcome {
    type Error = ConvertError;

    /// As [`outcome_from_pb`].
    fn try_from(outcome: pb::CommandOutcome) -> Result<Self> {
        outcome_from_pb(outcome)
    }
}

/// Returns the wire form of a command's result: its outcome, or its refusal
/// ([`refusal_to_pb`]).
#[must_use]
pub fn execute_response_to_pb(result: &std::result::Result<Outcome, Error>) -> pb::ExecuteResponse {
    let result = match result {
        Ok(outcome) => PbResult::Outcome(outcome_to_pb(outcome)),
        Err(error) => PbResult::Refused(refusal_to_pb(error)),
    };
    pb::ExecuteResponse { result: Some(result) }
}

/// Returns a command's result from its wire form: the outcome of an applied command, or the
/// kind and message of a refused one.
///
/// # Errors
/// A [`ConvertError`] if the response has no result, or its outcome or refusal does not decode
/// ([`outcome_from_pb`], [`refusal_from_pb`]).
pub fn execute_response_from_pb(
    response: pb::ExecuteResponse,
) -> Result<std::result::Result<Outcome, RefusalInfo>> {
    match response.result {
        None => Err(ConvertError::MissingField { field: "ExecuteResponse.result" }),
        Some(PbResult::Outcome(outcome)) => Ok(Ok(outcome_from_pb(outcome)?)),
        Some(PbResult::Refused(refusal)) => Ok(Err(refusal_from_pb(refusal)?)),
    }
}

// ---- Shard moves ---------------------------------------------------------------------------

/// Returns the wire form of a shard move (an unassigned side is group 0).
#[must_use]
pub fn shard_move_to_pb(shard_move: &ShardMove) -> pb::ShardMove {
    pb::ShardMove {
        shard: shard_move.shard.0,
        from_group: owner_to_pb(shard_move.from),
        to_group: owner_to_pb(shard_move.to),
    }
}

/// Returns the shard move a wire move carries (group 0 is an unassigned side).
///
/// # Errors
/// [`ConvertError::ReservedGroupId`] for group `u64::MAX` on either side,
/// [`ConvertError::UnchangedOwner`] if both sides are the same.
pub fn shard_move_from_pb(shard_move: pb::ShardMove) -> Result<ShardMove> {
    let from = owner_from_pb(shard_move.from_group, "ShardMove.from_group")?;
    let to = owner_from_pb(shard_move.to_group, "ShardMove.to_group")?;
    if from == to {
        return Err(ConvertError::UnchangedOwner {
            shard: shard_move.shard,
            group: shard_move.from_group,
        });
    }
    Ok(ShardMove { shard: ShardId(shard_move.shard), from, to })
}

impl From<&ShardMove> for pb::ShardMove {
    fn from(shard_move: &ShardMove) -> Self {
        shard_move_to_pb(shard_move)
    }
}

impl TryFrom<pb::ShardMove> for ShardMove {
    type Error = ConvertError;

    /// As [`shard_move_from_pb`].
    fn try_from(shard_move: pb::ShardMove) -> Result<Self> {
        shard_move_from_pb(shard_move)
    }
}

// ---- Configurations ------------------------------------------------------------------------

/// Returns the wire form of a configuration: an unassigned shard is group 0, groups go in id
/// order.
#[must_use]
pub fn configuration_to_pb(config: &Configuration) -> pb::Configuration {
    pb::Configuration {
        num: config.num.0,
        shards: config.shards.iter().map(|owner| owner_to_pb(*owner)).collect(),
        groups: config
            .groups
            .iter()
            .map(|(group, members)| group_members_to_pb(*group, members))
            .collect(),
    }
}

/// Returns the configuration a wire configuration carries, checked against the invariant of
/// [`Configuration`].
///
/// # Errors
/// A [`ConvertError`] naming what is wrong: no shards, a reserved group id, groups not in
/// strictly increasing order, a group without members or with a member twice, node id 0, a
/// shard owned by a group that is not listed.
pub fn configuration_from_pb(config: pb::Configuration) -> Result<Configuration> {
    const GROUPS_FIELD: &str = "Configuration.groups";
    if config.shards.is_empty() {
        return Err(ConvertError::NoShards);
    }
    let mut groups: BTreeMap<GroupId, Vec<NodeId>> = BTreeMap::new();
    for group in config.groups {
        let (group, members) = group_members_from_pb(group)?;
        if let Some((&previous, _)) = groups.last_key_value()
            && previous >= group
        {
            return Err(ConvertError::OutOfOrder {
                field: GROUPS_FIELD,
                previous: previous.0,
                value: group.0,
            });
        }
        if members.is_empty() {
            return Err(ConvertError::EmptyGroup { field: GROUPS_FIELD, group: group.0 });
        }
        let mut distinct = BTreeSet::new();
        if let Some(node) = members.iter().find(|node| !distinct.insert(**node)) {
            return Err(ConvertError::DuplicateMember {
                field: GROUPS_FIELD,
                group: group.0,
                node: node.0,
            });
        }
        groups.insert(group, members);
    }
    let shards = config
        .shards
        .into_iter()
        .enumerate()
        .map(|(shard, owner)| match owner_from_pb(owner, "Configuration.shards")? {
            Some(group) if !groups.contains_key(&group) => {
                Err(ConvertError::UnknownOwner { shard, group: group.0 })
            }
            owner => Ok(owner),
        })
        .collect::<Result<_>>()?;
    Ok(Configuration { num: ConfigNum(config.num), shards, groups })
}

impl From<&Configuration> for pb::Configuration {
    fn from(config: &Configuration) -> Self {
        configuration_to_pb(config)
    }
}

impl TryFrom<pb::Configuration> for Configuration {
    type Error = ConvertError;

    /// As [`configuration_from_pb`].
    fn try_from(config: pb::Configuration) -> Result<Self> {
        configuration_from_pb(config)
    }
}

// ---- Queries -------------------------------------------------------------------------------

/// Returns the wire form of a query for configuration `num`, or the latest for `None`, asked
/// by storage node `node` (its agent) or by anyone else (`None`).
#[must_use]
pub fn query_request_to_pb(num: Option<ConfigNum>, node: Option<NodeId>) -> pb::QueryRequest {
    pb::QueryRequest { num: num.map(|num| num.0), node_id: node.map_or(0, |node| node.0) }
}

/// Returns the configuration a wire query asks for (`None` for the latest) and the storage
/// node that asks, if one does. Every wire query is valid (a number past the latest is the
/// controller's to refuse, with [`Error::UnknownConfig`]).
#[must_use]
pub fn query_request_from_pb(request: pb::QueryRequest) -> (Option<ConfigNum>, Option<NodeId>) {
    (request.num.map(ConfigNum), (request.node_id != 0).then_some(NodeId(request.node_id)))
}

/// What a controller answers to a query: the [`pb::QueryResponse`] decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryAnswer {
    /// The configuration asked for.
    pub config: Configuration,
    /// The latest configuration's number (at least `config.num`).
    pub latest: ConfigNum,
    /// Every registered node and its address, in id order.
    pub nodes: BTreeMap<NodeId, String>,
    /// What the leader that answered can say of each registered node (of every one:
    /// [`NodeLiveness::Unknown`] where the answer says nothing).
    pub liveness: BTreeMap<NodeId, NodeLiveness>,
    /// The state of every registered node that is not [`NodeState::Active`].
    pub node_states: BTreeMap<NodeId, NodeState>,
    /// The controller replica that answered (the leader).
    pub leader: NodeId,
    /// Every group any configuration listed, in id order.
    pub lives: BTreeMap<GroupId, GroupLife>,
    /// The address recorded for each controller replica, in id order (empty from a
    /// controller older than the field).
    pub controllers: BTreeMap<NodeId, String>,
}

impl QueryAnswer {
    /// What the answering leader says of `node` ([`NodeLiveness::Unknown`] when nothing).
    #[must_use]
    pub fn liveness_of(&self, node: NodeId) -> NodeLiveness {
        self.liveness.get(&node).copied().unwrap_or(NodeLiveness::Unknown)
    }

    /// The state of `node` ([`NodeState::Active`] unless the answer says otherwise).
    #[must_use]
    pub fn state_of(&self, node: NodeId) -> NodeState {
        self.node_states.get(&node).copied().unwrap_or_default()
    }

    /// The wire form of this answer: a node `liveness` does not name goes as unspecified
    /// (decoded as [`NodeLiveness::Unknown`]), one `node_states` does not name as active.
    #[must_use]
    pub fn to_pb(&self) -> pb::QueryResponse {
        let Self { config, latest, nodes, liveness, node_states, leader, lives, controllers } =
            self;
        pb::QueryResponse {
            groups: lives
                .iter()
                .map(|(group, life)| pb::GroupLife {
                    group_id: group.0,
                    added: life.added.0,
                    founders: life.founders.iter().map(|node| node.0).collect(),
                    removed: life.removed.map_or(0, |num| num.0),
                    retired: life.retired,
                })
                .collect(),
            config: Some(configuration_to_pb(config)),
            latest_num: latest.0,
            nodes: nodes
                .iter()
                .map(|(node, address)| {
                    let (state, last_heard) =
                        liveness.get(node).map_or((pb::NodeLiveness::Unspecified, None), |said| {
                            liveness_to_pb(*said)
                        });
                    pb::NodeInfo {
                        node_id: node.0,
                        address: address.clone(),
                        liveness: state.into(),
                        last_heard_ms: last_heard.map(millis),
                        state: node_state_to_pb(node_states.get(node).copied().unwrap_or_default())
                            .into(),
                    }
                })
                .collect(),
            leader_id: leader.0,
            controllers: controllers
                .iter()
                .map(|(replica, address)| pb::ControllerReplica {
                    replica_id: replica.0,
                    address: address.clone(),
                })
                .collect(),
        }
    }
}

/// Refuses `key` unless it is above every key of `map`: `field`'s entries come in strictly
/// increasing order (`id` gives a key's number for the error).
fn check_order<K: Ord + Copy, V>(
    map: &BTreeMap<K, V>,
    key: K,
    field: &'static str,
    id: fn(K) -> u64,
) -> Result<()> {
    match map.last_key_value() {
        Some((&previous, _)) if previous >= key => {
            Err(ConvertError::OutOfOrder { field, previous: id(previous), value: id(key) })
        }
        _ => Ok(()),
    }
}

/// Returns the answer a wire query response carries.
///
/// # Errors
/// A [`ConvertError`] naming what is wrong: no configuration, a configuration that does not
/// decode ([`configuration_from_pb`]) or is past the latest, node id 0 (a node or the leader),
/// nodes or groups not in strictly increasing id order, a reserved group id, a group life
/// that does not hold together (added at 0, removed no later than added, retired but not
/// removed).
/// Addresses are passed on as they are.
pub fn query_response_from_pb(response: pb::QueryResponse) -> Result<QueryAnswer> {
    let config =
        response.config.ok_or(ConvertError::MissingField { field: "QueryResponse.config" })?;
    let config = configuration_from_pb(config)?;
    let latest = ConfigNum(response.latest_num);
    if config.num > latest {
        return Err(ConvertError::ConfigPastLatest { num: config.num.0, latest: latest.0 });
    }
    let mut nodes: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut liveness: BTreeMap<NodeId, NodeLiveness> = BTreeMap::new();
    let mut node_states: BTreeMap<NodeId, NodeState> = BTreeMap::new();
    for info in response.nodes {
        let node = node_id_from_pb(info.node_id, "NodeInfo.node_id")?;
        check_order(&nodes, node, "QueryResponse.nodes", |id| id.0)?;
        liveness.insert(node, liveness_from_pb(info.liveness(), info.last_heard_ms));
        let state = node_state_from_pb(info.state());
        if state != NodeState::Active {
            node_states.insert(node, state);
        }
        nodes.insert(node, info.address);
    }
    let leader = node_id_from_pb(response.leader_id, "QueryResponse.leader_id")?;
    let mut lives: BTreeMap<GroupId, GroupLife> = BTreeMap::new();
    for life in response.groups {
        let group = group_id_from_pb(life.group_id, "GroupLife.group_id")?;
        check_order(&lives, group, "QueryResponse.groups", |id| id.0)?;
        let removed = (life.removed != 0).then_some(ConfigNum(life.removed));
        if life.added == 0
            || removed.is_some_and(|removed| removed.0 <= life.added)
            || (life.retired && removed.is_none())
            || life.founders.contains(&0)
        {
            return Err(ConvertError::InvalidGroupLife { group: group.0 });
        }
        lives.insert(
            group,
            GroupLife {
                added: ConfigNum(life.added),
                founders: life.founders.into_iter().map(NodeId).collect(),
                removed,
                retired: life.retired,
            },
        );
    }
    let mut controllers: BTreeMap<NodeId, String> = BTreeMap::new();
    for replica in response.controllers {
        let id = node_id_from_pb(replica.replica_id, "ControllerReplica.replica_id")?;
        check_order(&controllers, id, "QueryResponse.controllers", |id| id.0)?;
        controllers.insert(id, replica.address);
    }
    Ok(QueryAnswer { config, latest, nodes, liveness, node_states, leader, lives, controllers })
}

/// The wire form of what a leader says of a node: the state, and the time since it heard it.
fn liveness_to_pb(liveness: NodeLiveness) -> (pb::NodeLiveness, Option<Duration>) {
    let state = match liveness {
        NodeLiveness::Up { .. } => pb::NodeLiveness::Up,
        NodeLiveness::Down { .. } => pb::NodeLiveness::Down,
        NodeLiveness::Unknown => pb::NodeLiveness::Unknown,
    };
    (state, liveness.last_heard())
}

/// What a wire node entry says of the node's liveness. An unspecified state (a controller
/// that does not report it) is [`NodeLiveness::Unknown`]; an up node without a time was heard
/// just now.
fn liveness_from_pb(state: pb::NodeLiveness, last_heard_ms: Option<u64>) -> NodeLiveness {
    let last_heard = last_heard_ms.map(Duration::from_millis);
    match state {
        pb::NodeLiveness::Up => NodeLiveness::Up { last_heard: last_heard.unwrap_or_default() },
        pb::NodeLiveness::Down => NodeLiveness::Down { last_heard },
        pb::NodeLiveness::Unspecified | pb::NodeLiveness::Unknown => NodeLiveness::Unknown,
    }
}

fn node_state_to_pb(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Active => pb::NodeState::Active,
        NodeState::Decommissioning => pb::NodeState::Decommissioning,
        NodeState::Retired => pb::NodeState::Retired,
    }
}

/// A wire node state; unspecified (a controller older than decommissioning) is active.
fn node_state_from_pb(state: pb::NodeState) -> NodeState {
    match state {
        pb::NodeState::Unspecified | pb::NodeState::Active => NodeState::Active,
        pb::NodeState::Decommissioning => NodeState::Decommissioning,
        pb::NodeState::Retired => NodeState::Retired,
    }
}

/// `duration` in whole milliseconds (saturating).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// ---- Fields --------------------------------------------------------------------------------

fn group_members_to_pb(group: GroupId, members: &[NodeId]) -> pb::GroupMembers {
    pb::GroupMembers { group_id: group.0, members: members.iter().map(|node| node.0).collect() }
}

/// Converts a group and its members, checking only the ids: the group is not reserved and no
/// member is node 0. Whether the members are acceptable is the caller's to check.
fn group_members_from_pb(group: pb::GroupMembers) -> Result<(GroupId, Vec<NodeId>)> {
    let id = group_id_from_pb(group.group_id, "GroupMembers.group_id")?;
    let members = group
        .members
        .into_iter()
        .map(|node| node_id_from_pb(node, "GroupMembers.members"))
        .collect::<Result<_>>()?;
    Ok((id, members))
}

/// Converts a field that names a group, which must be neither 0 nor [`GroupId::RESERVED`].
fn group_id_from_pb(id: u64, field: &'static str) -> Result<GroupId> {
    match owner_from_pb(id, field)? {
        Some(group) => Ok(group),
        None => Err(ConvertError::ReservedGroupId { field, group: id }),
    }
}

fn owner_to_pb(owner: Option<GroupId>) -> u64 {
    owner.map_or(0, |group| group.0)
}

/// Converts a field that names a group or, with 0, no group; [`GroupId::RESERVED`] is never
/// valid.
fn owner_from_pb(id: u64, field: &'static str) -> Result<Option<GroupId>> {
    match GroupId(id) {
        GroupId(0) => Ok(None),
        GroupId::RESERVED => Err(ConvertError::ReservedGroupId { field, group: id }),
        group => Ok(Some(group)),
    }
}

fn nonzero(value: u64, field: &'static str) -> Result<u64> {
    if value == 0 {
        return Err(ConvertError::ZeroField { field });
    }
    Ok(value)
}
