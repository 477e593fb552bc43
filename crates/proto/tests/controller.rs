//! Conversions between the controller's types and the `Controller` service's messages: every
//! request, outcome, refusal, configuration and query answer round-trips (directly and through
//! protobuf bytes), refusal kinds are stable, and malformed wire messages are rejected with an
//! error that names what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use mosaic_controller::arbitrary::{self, ERROR_VARIANTS, Values, error_variant};
use mosaic_controller::{
    Command, ConfigNum, Configuration, ControllerState, Error, GroupLife, NodeLiveness, NodeState,
    Outcome, Request, ShardMove,
};
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_proto::controller::{
    QueryAnswer, RefusalInfo, configuration_from_pb, configuration_to_pb, execute_response_from_pb,
    execute_response_to_pb, outcome_from_pb, outcome_to_pb, query_request_from_pb,
    query_request_to_pb, query_response_from_pb, refusal_from_pb, refusal_kind, refusal_to_pb,
    request_from_pb, request_to_pb, shard_move_from_pb, shard_move_to_pb,
};
use mosaic_proto::pb::command_outcome::Kind;
use mosaic_proto::pb::execute_request::Command as PbCommand;
use mosaic_proto::pb::execute_response::Result as PbResult;
use mosaic_proto::{ConvertError, pb};
use mosaic_raft::{LogIndex, NodeId};
use proptest::prelude::*;
use prost::Message as _;

// ---- Helpers -------------------------------------------------------------------------------

/// Returns `message` after a trip through protobuf bytes; panics if it does not decode.
fn through_bytes<M: prost::Message + Default + PartialEq + Debug>(message: &M) -> M {
    let encoded = Bytes::from(message.encode_to_vec());
    let decoded = M::decode(encoded.clone())
        .unwrap_or_else(|error| panic!("decoding {message:?} from {encoded:02x?}: {error}"));
    assert_eq!(&decoded, message, "protobuf round trip");
    decoded
}

/// Panics unless `value` survives `to_pb` then `from_pb`, directly and through protobuf bytes.
fn assert_round_trips<T, W>(
    value: &T,
    to_pb: impl Fn(&T) -> W,
    from_pb: impl Fn(W) -> Result<T, ConvertError>,
) where
    T: Debug + PartialEq,
    W: prost::Message + Default + PartialEq + Clone + Debug,
{
    let wire = to_pb(value);
    assert_eq!(from_pb(wire.clone()).as_ref(), Ok(value), "direct round trip via {wire:?}");
    assert_eq!(from_pb(through_bytes(&wire)).as_ref(), Ok(value), "round trip through bytes");
}

/// Converts a wire message that must be rejected, and returns the error.
fn must_reject<W: Debug + Clone, T: Debug>(
    wire: W,
    from_pb: impl Fn(W) -> Result<T, ConvertError>,
) -> ConvertError {
    match from_pb(wire.clone()) {
        Ok(value) => panic!("{wire:?} was accepted as {value:?}"),
        Err(error) => error,
    }
}

fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn request(command: Command) -> Request {
    Request { client: ClientId(7), seq: 3, command }
}

/// The wire form of `request` after `edit` has changed it.
fn edited_request(
    request: &Request,
    edit: impl FnOnce(&mut pb::ExecuteRequest),
) -> pb::ExecuteRequest {
    let mut wire = request_to_pb(request);
    edit(&mut wire);
    wire
}

fn add_groups(groups: &[(u64, &[u64])]) -> Request {
    request(Command::AddGroups {
        groups: groups.iter().map(|(group, members)| (GroupId(*group), nodes(members))).collect(),
        max_moves: None,
    })
}

/// The `AddGroups.groups` of a wire request; panics if it is not an `AddGroups`.
fn wire_added_groups(wire: &mut pb::ExecuteRequest) -> &mut Vec<pb::GroupMembers> {
    match &mut wire.command {
        Some(PbCommand::AddGroups(add)) => &mut add.groups,
        other => panic!("not an AddGroups: {other:?}"),
    }
}

/// Names the kind of a command. Exhaustive on purpose: a new command fails to compile here
/// until the tests below cover it.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::RegisterNode { .. } => "RegisterNode",
        Command::AddGroups { .. } => "AddGroups",
        Command::RemoveGroups { .. } => "RemoveGroups",
        Command::MoveShard { .. } => "MoveShard",
        Command::Rebalance { .. } => "Rebalance",
        Command::RetireGroup { .. } => "RetireGroup",
        Command::ReplaceNode { .. } => "ReplaceNode",
        Command::DecommissionNode { .. } => "DecommissionNode",
        Command::RetireNode { .. } => "RetireNode",
        Command::SetControllerAddress { .. } => "SetControllerAddress",
    }
}

/// Representative requests of every command, with the edge values of each field.
fn representative_requests() -> Vec<Request> {
    vec![
        request(Command::RegisterNode { node: NodeId(1), address: "127.0.0.1:7101".into() }),
        request(Command::RegisterNode { node: NodeId(u64::MAX), address: String::new() }),
        add_groups(&[(1, &[1, 2, 3]), (u64::MAX - 1, &[9])]),
        request(Command::AddGroups {
            groups: BTreeMap::from([(GroupId(5), nodes(&[3, 1, 2]))]),
            max_moves: Some(0),
        }),
        request(Command::RemoveGroups { groups: vec![GroupId(4), GroupId(2)], max_moves: None }),
        request(Command::RemoveGroups { groups: vec![GroupId(1)], max_moves: Some(u32::MAX) }),
        request(Command::MoveShard { shard: ShardId(0), group: GroupId(1) }),
        request(Command::MoveShard { shard: ShardId(u32::MAX), group: GroupId(u64::MAX - 1) }),
        request(Command::Rebalance { max_moves: None }),
        Request {
            client: ClientId(u64::MAX),
            seq: u64::MAX,
            command: Command::Rebalance { max_moves: Some(3) },
        },
        request(Command::RetireGroup { group: GroupId(1) }),
        request(Command::RetireGroup { group: GroupId(u64::MAX - 1) }),
        request(replace(3, 5, None)),
        request(replace(u64::MAX, 1, Some(u64::MAX - 1))),
        request(replace(1, u64::MAX, Some(1))),
        request(decommission(1, &[])),
        request(decommission(u64::MAX, &[1, u64::MAX - 1])),
        request(Command::RetireNode { node: NodeId(1) }),
        request(Command::RetireNode { node: NodeId(u64::MAX) }),
        request(Command::SetControllerAddress {
            replica: NodeId(1),
            address: "127.0.0.1:7004".into(),
        }),
        request(Command::SetControllerAddress {
            replica: NodeId(u64::MAX),
            address: String::new(),
        }),
    ]
}

fn decommission(node: u64, avoid: &[u64]) -> Command {
    Command::DecommissionNode {
        node: NodeId(node),
        avoid: avoid.iter().copied().map(NodeId).collect(),
    }
}

fn replace(node: u64, with: u64, group: Option<u64>) -> Command {
    Command::ReplaceNode { node: NodeId(node), with: NodeId(with), group: group.map(GroupId) }
}

fn shard_move(shard: u32, from: Option<u64>, to: Option<u64>) -> ShardMove {
    ShardMove { shard: ShardId(shard), from: from.map(GroupId), to: to.map(GroupId) }
}

/// Names the kind of an outcome; exhaustive on purpose, as [`command_name`].
fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::NodeRegistered { .. } => "NodeRegistered",
        Outcome::NodeAddressChanged { .. } => "NodeAddressChanged",
        Outcome::ConfigCreated { .. } => "ConfigCreated",
        Outcome::Unchanged { .. } => "Unchanged",
        Outcome::GroupRetired { .. } => "GroupRetired",
        Outcome::NodeDecommissioning { .. } => "NodeDecommissioning",
        Outcome::NodeRetired { .. } => "NodeRetired",
        Outcome::ControllerAddressRecorded { .. } => "ControllerAddressRecorded",
    }
}

fn representative_outcomes() -> Vec<Outcome> {
    vec![
        Outcome::NodeRegistered { node: NodeId(1) },
        Outcome::NodeAddressChanged { node: NodeId(u64::MAX), previous: "h:1".into() },
        Outcome::ConfigCreated { num: ConfigNum(1), moves: vec![] },
        Outcome::ConfigCreated {
            num: ConfigNum(u64::MAX),
            moves: vec![
                shard_move(0, None, Some(1)),
                shard_move(1, Some(1), Some(u64::MAX - 1)),
                shard_move(u32::MAX, Some(2), None),
            ],
        },
        Outcome::Unchanged { num: ConfigNum(0), reason: String::new() },
        Outcome::Unchanged { num: ConfigNum(4), reason: "the shards are already balanced".into() },
        Outcome::GroupRetired { group: GroupId(u64::MAX - 1) },
        Outcome::NodeDecommissioning {
            node: NodeId(3),
            num: ConfigNum(0),
            replacements: BTreeMap::new(),
        },
        Outcome::NodeDecommissioning {
            node: NodeId(u64::MAX),
            num: ConfigNum(u64::MAX),
            replacements: BTreeMap::from([
                (GroupId(1), NodeId(u64::MAX)),
                (GroupId(u64::MAX - 1), NodeId(1)),
            ]),
        },
        Outcome::NodeRetired { node: NodeId(1) },
        Outcome::ControllerAddressRecorded { replica: NodeId(1) },
        Outcome::ControllerAddressRecorded { replica: NodeId(u64::MAX) },
    ]
}

/// A representative refusal of every `Error` variant, with the kind it travels as: the released
/// names, pinned independently of the crate under test. Scripts match on them, so a name never
/// changes; [`every_error_variant_has_a_pinned_kind`] fails until a new variant is listed.
fn pinned_refusal_kinds() -> Vec<(Error, &'static str)> {
    let group = GroupId(3);
    vec![
        (Error::InvalidNodeId, "invalid-node-id"),
        (
            Error::InvalidAddress { address: "nohost".into(), reason: "no port".into() },
            "invalid-address",
        ),
        (Error::InvalidGroupId { group: GroupId(0) }, "invalid-group-id"),
        (Error::GroupExists { group, members: nodes(&[1, 2]) }, "group-exists"),
        (Error::EmptyGroup { group }, "empty-group"),
        (Error::DuplicateMember { group, node: NodeId(2) }, "duplicate-member"),
        (Error::UnregisteredMember { group, node: NodeId(9) }, "unregistered-member"),
        (Error::UnknownGroup { group }, "unknown-group"),
        (Error::NoGroups, "no-groups"),
        (Error::ShardOutOfRange { shard: ShardId(64), shard_count: 64 }, "shard-out-of-range"),
        (Error::RemovingEveryGroup, "removing-every-group"),
        (Error::UnknownConfig { num: ConfigNum(9), latest: ConfigNum(4) }, "unknown-config"),
        (Error::StaleRequest { client: ClientId(1), seq: 2, latest: 5 }, "stale-request"),
        (Error::MalformedRequest { reason: "truncated".into() }, "malformed-request"),
        (Error::GroupRemoved { group, removed: ConfigNum(4) }, "group-removed"),
        (Error::GroupNotRemoved { group }, "group-not-removed"),
        (Error::SameNode { node: NodeId(2) }, "same-node"),
        (Error::NodeNotRegistered { node: NodeId(9) }, "node-not-registered"),
        (Error::NotAMember { node: NodeId(2), group: Some(group) }, "not-a-member"),
        (Error::AlreadyAMember { group, node: NodeId(2) }, "already-a-member"),
        (Error::NoReplacement { group, node: NodeId(2) }, "no-replacement"),
        (Error::NodeNotActive { node: NodeId(2), state: NodeState::Retired }, "node-not-active"),
        (Error::NotDecommissioning { node: NodeId(2) }, "not-decommissioning"),
        (Error::NodeStillListed { node: NodeId(2), group }, "node-still-listed"),
    ]
}

/// The pinned kind of `error`'s variant; panics if none is pinned.
fn pinned_kind(error: &Error) -> &'static str {
    pinned_refusal_kinds()
        .into_iter()
        .find(|(pinned, _)| error_variant(pinned) == error_variant(error))
        .map(|(_, kind)| kind)
        .unwrap_or_else(|| panic!("no refusal kind is pinned for {error:?}"))
}

/// A valid configuration: shards 0..4 over groups 1 and 2, shard 3 unassigned.
fn configuration() -> Configuration {
    Configuration {
        num: ConfigNum(5),
        shards: vec![Some(GroupId(1)), Some(GroupId(2)), Some(GroupId(1)), None],
        groups: BTreeMap::from([(GroupId(1), nodes(&[1, 2, 3])), (GroupId(2), nodes(&[4]))]),
    }
}

/// The wire form of `config` after `edit` has changed it.
fn edited_configuration(
    config: &Configuration,
    edit: impl FnOnce(&mut pb::Configuration),
) -> pb::Configuration {
    let mut wire = configuration_to_pb(config);
    edit(&mut wire);
    wire
}

fn registry() -> BTreeMap<NodeId, String> {
    BTreeMap::from([
        (NodeId(1), "10.0.0.1:7101".to_string()),
        (NodeId(2), "10.0.0.2:7101".to_string()),
        (NodeId(4), "[::1]:7104".to_string()),
    ])
}

/// What a leader says of each node of [`registry`]: one of each kind.
fn liveness() -> BTreeMap<NodeId, NodeLiveness> {
    BTreeMap::from([
        (NodeId(1), NodeLiveness::Up { last_heard: Duration::from_millis(120) }),
        (NodeId(2), NodeLiveness::Down { last_heard: Some(Duration::from_millis(15_001)) }),
        (NodeId(4), NodeLiveness::Down { last_heard: None }),
    ])
}

/// Every node of `nodes` [`NodeLiveness::Unknown`], as an answer that says nothing of them
/// decodes.
fn unknown(nodes: &BTreeMap<NodeId, String>) -> BTreeMap<NodeId, NodeLiveness> {
    nodes.keys().map(|node| (*node, NodeLiveness::Unknown)).collect()
}

fn answer() -> QueryAnswer {
    QueryAnswer {
        config: configuration(),
        latest: ConfigNum(7),
        nodes: registry(),
        liveness: liveness(),
        node_states: BTreeMap::from([
            (NodeId(2), NodeState::Decommissioning),
            (NodeId(4), NodeState::Retired),
        ]),
        leader: NodeId(2),
        lives: BTreeMap::from([
            (GroupId(1), life(1, None, false)),
            (GroupId(2), life(2, None, false)),
            (GroupId(5), life(3, Some(4), false)),
            (GroupId(6), life(3, Some(6), true)),
        ]),
        controllers: BTreeMap::from([
            (NodeId(4), "10.0.0.4:7000".into()),
            (NodeId(u64::MAX), "[::1]:7005".into()),
        ]),
    }
}

fn life(added: u64, removed: Option<u64>, retired: bool) -> GroupLife {
    GroupLife {
        added: ConfigNum(added),
        founders: vec![NodeId(1), NodeId(added + 1)],
        removed: removed.map(ConfigNum),
        retired,
    }
}

/// A controller from before `ReplaceNode` sends no founders: decoded as none (a node then
/// reads them from the configuration that added the group). A founder 0 is refused.
#[test]
fn group_lives_carry_their_founders() {
    let wire = answer_to_pb(&answer());
    assert_eq!(wire.groups[0].founders, [1, 2]);
    let decoded = query_response_from_pb(through_bytes(&wire)).expect("decodes");
    assert_eq!(decoded.lives[&GroupId(1)].founders, [NodeId(1), NodeId(2)]);
    let old = edited_answer(|wire| wire.groups.iter_mut().for_each(|life| life.founders.clear()));
    let decoded = query_response_from_pb(old).expect("decodes");
    assert!(decoded.lives.values().all(|life| life.founders.is_empty()), "{decoded:?}");
    let zero = edited_answer(|wire| wire.groups[0].founders = vec![0]);
    let group = zero.groups[0].group_id;
    assert_eq!(must_reject(zero, query_response_from_pb), ConvertError::InvalidGroupLife { group });
}

/// A controller from before `SetControllerAddress` sends no controller replicas: decoded as
/// none. A replica 0, or replicas out of order, are refused.
#[test]
fn answers_carry_the_controller_replicas_addresses() {
    let wire = answer_to_pb(&answer());
    assert_eq!(wire.controllers[0].replica_id, 4);
    assert_eq!(wire.controllers[0].address, "10.0.0.4:7000");
    let old = edited_answer(|wire| wire.controllers.clear());
    assert!(query_response_from_pb(old).expect("decodes").controllers.is_empty());
    let zero = edited_answer(|wire| wire.controllers[0].replica_id = 0);
    assert_eq!(
        must_reject(zero, query_response_from_pb),
        ConvertError::ZeroNodeId { field: "ControllerReplica.replica_id" }
    );
    let swapped = edited_answer(|wire| wire.controllers.swap(0, 1));
    assert!(matches!(
        must_reject(swapped, query_response_from_pb),
        ConvertError::OutOfOrder { field: "QueryResponse.controllers", .. }
    ));
}

fn answer_to_pb(answer: &QueryAnswer) -> pb::QueryResponse {
    answer.to_pb()
}

/// The wire form of [`answer`] after `edit` has changed it.
fn edited_answer(edit: impl FnOnce(&mut pb::QueryResponse)) -> pb::QueryResponse {
    let mut wire = answer_to_pb(&answer());
    edit(&mut wire);
    wire
}

// ---- Round trips ---------------------------------------------------------------------------

#[test]
fn representative_values_cover_every_kind() {
    let commands: BTreeSet<_> =
        representative_requests().iter().map(|r| command_name(&r.command)).collect();
    assert_eq!(commands.len(), 10, "commands covered: {commands:?}");
    let outcomes: BTreeSet<_> = representative_outcomes().iter().map(outcome_name).collect();
    assert_eq!(outcomes.len(), 8, "outcomes covered: {outcomes:?}");
}

#[test]
fn every_error_variant_has_a_pinned_kind() {
    let pinned = pinned_refusal_kinds();
    let variants: BTreeSet<usize> = pinned.iter().map(|(error, _)| error_variant(error)).collect();
    assert_eq!(variants.len(), ERROR_VARIANTS, "variants pinned: {variants:?}");
    assert_eq!(pinned.len(), ERROR_VARIANTS, "one representative a variant: {pinned:?}");
}

#[test]
fn every_command_round_trips() {
    for request in representative_requests() {
        assert_round_trips(&request, request_to_pb, request_from_pb);
    }
}

#[test]
fn add_groups_go_out_in_group_order() {
    let wire = request_to_pb(&add_groups(&[(9, &[1]), (2, &[3, 1]), (5, &[2])]));
    let Some(PbCommand::AddGroups(add)) = wire.command else { panic!("{wire:?}") };
    let ids: Vec<u64> = add.groups.iter().map(|group| group.group_id).collect();
    assert_eq!(ids, [2, 5, 9]);
    assert_eq!(add.groups[0].members, [3, 1], "members keep the order they were given in");
}

#[test]
fn add_groups_in_any_order_on_the_wire_are_accepted() {
    let wire = edited_request(&add_groups(&[(2, &[1]), (9, &[1])]), |wire| {
        wire_added_groups(wire).reverse();
    });
    assert_eq!(request_from_pb(wire), Ok(add_groups(&[(2, &[1]), (9, &[1])])));
}

#[test]
fn every_outcome_round_trips() {
    for outcome in representative_outcomes() {
        assert_round_trips(&outcome, outcome_to_pb, outcome_from_pb);
        let result = Ok(outcome.clone());
        let wire = through_bytes(&execute_response_to_pb(&result));
        assert_eq!(execute_response_from_pb(wire), Ok(Ok(outcome)));
    }
}

#[test]
fn every_refusal_has_its_stable_kind_and_the_error_as_message() {
    for (error, kind) in pinned_refusal_kinds() {
        assert_eq!(refusal_kind(&error), kind, "{error:?}");
        let refusal = refusal_to_pb(&error);
        assert_eq!(refusal.kind, kind);
        assert_eq!(refusal.message, error.to_string());
        let info = RefusalInfo { kind: refusal.kind.clone(), message: refusal.message.clone() };
        assert_eq!(RefusalInfo::from(&error), info);
        assert_eq!(info.to_string(), error.to_string(), "a refusal displays as its message");
        let wire = through_bytes(&execute_response_to_pb(&Err(error.clone())));
        assert_eq!(wire.result, Some(PbResult::Refused(refusal)));
        assert_eq!(execute_response_from_pb(wire), Ok(Err(info)));
    }
}

#[test]
fn refusal_kinds_are_distinct_kebab_case_names() {
    let kinds: Vec<&str> = pinned_refusal_kinds().iter().map(|(_, kind)| *kind).collect();
    let distinct: BTreeSet<&str> = kinds.iter().copied().collect();
    assert_eq!(distinct.len(), kinds.len(), "{kinds:?}");
    for kind in kinds {
        let kebab = kind
            .split('-')
            .all(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase()));
        assert!(kebab, "{kind:?} is not kebab-case");
    }
}

#[test]
fn refusal_of_a_kind_this_build_does_not_know_is_kept() {
    let refusal = pb::Refusal { kind: "quota-exceeded".into(), message: "too many".into() };
    assert_eq!(
        refusal_from_pb(refusal),
        Ok(RefusalInfo { kind: "quota-exceeded".into(), message: "too many".into() })
    );
}

#[test]
fn configurations_round_trip() {
    assert_round_trips(&configuration(), configuration_to_pb, configuration_from_pb);
    assert_round_trips(&Configuration::initial(1), configuration_to_pb, configuration_from_pb);
    assert_round_trips(&Configuration::initial(64), configuration_to_pb, configuration_from_pb);
    let unsorted_members = Configuration {
        num: ConfigNum(u64::MAX),
        shards: vec![Some(GroupId(u64::MAX - 1))],
        groups: BTreeMap::from([(GroupId(u64::MAX - 1), nodes(&[u64::MAX, 1]))]),
    };
    assert_round_trips(&unsorted_members, configuration_to_pb, configuration_from_pb);
}

#[test]
fn configuration_marks_unassigned_shards_with_group_zero() {
    let wire = configuration_to_pb(&configuration());
    assert_eq!(wire.shards, [1, 2, 1, 0]);
    assert_eq!(wire.groups.iter().map(|g| g.group_id).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn query_responses_round_trip() {
    assert_round_trips(&answer(), answer_to_pb, query_response_from_pb);
    let at_latest = QueryAnswer {
        config: Configuration::initial(8),
        latest: ConfigNum(0),
        nodes: BTreeMap::new(),
        liveness: BTreeMap::new(),
        node_states: BTreeMap::new(),
        leader: NodeId(u64::MAX),
        lives: BTreeMap::new(),
        controllers: BTreeMap::new(),
    };
    assert_round_trips(&at_latest, answer_to_pb, query_response_from_pb);
}

#[test]
fn query_requests_keep_latest_and_configuration_zero_apart() {
    for num in [None, Some(ConfigNum(0)), Some(ConfigNum(u64::MAX))] {
        for node in [None, Some(NodeId(1)), Some(NodeId(u64::MAX))] {
            let wire = through_bytes(&query_request_to_pb(num, node));
            assert_eq!(query_request_from_pb(wire), (num, node));
        }
    }
}

/// A controller that says nothing of a node's liveness (one from before it did) leaves it
/// unknown, and a node said to be up without a time was heard just now.
#[test]
fn a_node_entry_without_liveness_is_unknown() {
    let answer = answer();
    let said_nothing = edited_answer(|wire| {
        for node in &mut wire.nodes {
            node.liveness = 0;
            node.last_heard_ms = None;
        }
    });
    let decoded = query_response_from_pb(said_nothing).unwrap();
    assert_eq!(decoded.liveness, unknown(&answer.nodes));
    let up_now = edited_answer(|wire| wire.nodes[0].last_heard_ms = None);
    let decoded = query_response_from_pb(up_now).unwrap();
    assert_eq!(decoded.liveness[&NodeId(1)], NodeLiveness::Up { last_heard: Duration::ZERO });
}

#[test]
fn shard_moves_round_trip() {
    for shard_move in [
        shard_move(0, None, Some(1)),
        shard_move(7, Some(1), None),
        shard_move(u32::MAX, Some(u64::MAX - 1), Some(1)),
    ] {
        assert_round_trips(&shard_move, shard_move_to_pb, shard_move_from_pb);
    }
}

#[test]
fn trait_conversions_agree_with_the_functions() {
    let request = add_groups(&[(1, &[1, 2])]);
    assert_eq!(pb::ExecuteRequest::from(&request), request_to_pb(&request));
    assert_eq!(Request::try_from(request_to_pb(&request)), Ok(request));
    let config = configuration();
    assert_eq!(pb::Configuration::from(&config), configuration_to_pb(&config));
    assert_eq!(Configuration::try_from(configuration_to_pb(&config)), Ok(config));
    let outcome = Outcome::NodeRegistered { node: NodeId(3) };
    assert_eq!(pb::CommandOutcome::from(&outcome), outcome_to_pb(&outcome));
    assert_eq!(Outcome::try_from(outcome_to_pb(&outcome)), Ok(outcome));
    let shard_move = shard_move(2, None, Some(4));
    assert_eq!(pb::ShardMove::from(&shard_move), shard_move_to_pb(&shard_move));
    assert_eq!(ShardMove::try_from(shard_move_to_pb(&shard_move)), Ok(shard_move));
}

/// What the controller itself produces goes over the wire and back unchanged, and what it
/// refuses arrives as the refusal kind of its error.
#[test]
fn what_the_controller_produces_round_trips() {
    let mut state = ControllerState::new(8, 16);
    let mut index = 0;
    let mut apply = |state: &mut ControllerState, command: Command| {
        index += 1;
        let request = Request { client: ClientId(1), seq: index, command };
        let wire = through_bytes(&request_to_pb(&request));
        let request = request_from_pb(wire).expect("a request the client built decodes");
        let result = state.apply(LogIndex(index), request);
        let expected = result.clone().map_err(|error| RefusalInfo::from(&error));
        let wire = through_bytes(&execute_response_to_pb(&result));
        assert_eq!(execute_response_from_pb(wire), Ok(expected));
        result
    };
    for node in 1..=4 {
        let address = format!("10.0.0.{node}:7101");
        apply(&mut state, Command::RegisterNode { node: NodeId(node), address })
            .expect("registers");
    }
    let groups = BTreeMap::from([(GroupId(1), nodes(&[1, 2])), (GroupId(2), nodes(&[3, 4]))]);
    let created = apply(&mut state, Command::AddGroups { groups, max_moves: None });
    assert!(matches!(created, Ok(Outcome::ConfigCreated { ref moves, .. }) if moves.len() == 8));
    apply(&mut state, Command::MoveShard { shard: ShardId(0), group: GroupId(2) }).expect("moves");
    let refused = apply(&mut state, Command::MoveShard { shard: ShardId(8), group: GroupId(2) });
    assert_eq!(refused.map_err(|error| refusal_kind(&error)), Err("shard-out-of-range"));
    let replaced = apply(&mut state, replace(1, 3, Some(1))).expect("replaces");
    assert!(matches!(replaced, Outcome::ConfigCreated { ref moves, .. } if moves.is_empty()));
    let refused = apply(&mut state, replace(2, 3, None));
    assert_eq!(refused.map_err(|error| refusal_kind(&error)), Err("already-a-member"));
    let refused = apply(&mut state, replace(1, 4, None));
    assert_eq!(refused.map_err(|error| refusal_kind(&error)), Err("not-a-member"));

    let latest = state.latest().clone();
    assert_round_trips(&latest, configuration_to_pb, configuration_from_pb);
    let answer = QueryAnswer {
        config: latest.clone(),
        latest: latest.num,
        nodes: state.nodes().clone(),
        liveness: unknown(state.nodes()),
        node_states: state.node_states().clone(),
        leader: NodeId(9),
        lives: state.lives().clone(),
        controllers: state.controllers().clone(),
    };
    assert_round_trips(&answer, answer_to_pb, query_response_from_pb);
}

/// A well-formed command that the controller refuses decodes, so that its refusal reaches the
/// client with the kind that says what is wrong.
#[test]
fn commands_the_controller_refuses_decode_and_are_refused_with_their_kind() {
    let cases = [
        (add_groups(&[]), "no-groups"),
        (add_groups(&[(1, &[])]), "empty-group"),
        (add_groups(&[(1, &[2, 2])]), "duplicate-member"),
        (add_groups(&[(1, &[5])]), "unregistered-member"),
        (request(Command::RemoveGroups { groups: vec![], max_moves: None }), "no-groups"),
        (
            request(Command::RemoveGroups { groups: vec![GroupId(4)], max_moves: None }),
            "unknown-group",
        ),
        (
            request(Command::MoveShard { shard: ShardId(4), group: GroupId(1) }),
            "shard-out-of-range",
        ),
        (request(Command::MoveShard { shard: ShardId(0), group: GroupId(1) }), "unknown-group"),
        (
            request(Command::RegisterNode { node: NodeId(1), address: "no-port".into() }),
            "invalid-address",
        ),
        (request(replace(1, 1, None)), "same-node"),
        (request(replace(1, 2, Some(1))), "node-not-registered"),
    ];
    for (request, kind) in cases {
        let decoded = request_from_pb(through_bytes(&request_to_pb(&request)))
            .unwrap_or_else(|error| panic!("{request:?} does not decode: {error}"));
        assert_eq!(decoded, request);
        let refused = ControllerState::new(4, 16).apply(LogIndex(1), decoded);
        assert_eq!(refused.as_ref().map_err(refusal_kind), Err(kind), "{request:?}: {refused:?}");
    }
}

// ---- Rejections: requests ------------------------------------------------------------------

#[test]
fn request_from_client_zero_or_with_seq_zero_is_rejected() {
    let rebalance = request(Command::Rebalance { max_moves: None });
    assert_eq!(
        must_reject(edited_request(&rebalance, |wire| wire.client_id = 0), request_from_pb),
        ConvertError::ZeroField { field: "ExecuteRequest.client_id" }
    );
    assert_eq!(
        must_reject(edited_request(&rebalance, |wire| wire.seq = 0), request_from_pb),
        ConvertError::ZeroField { field: "ExecuteRequest.seq" }
    );
}

#[test]
fn request_without_command_is_rejected() {
    let wire = edited_request(&request(Command::Rebalance { max_moves: None }), |wire| {
        wire.command = None;
    });
    assert_eq!(
        must_reject(wire, request_from_pb),
        ConvertError::MissingField { field: "ExecuteRequest.command" }
    );
}

#[test]
fn command_of_a_kind_this_build_does_not_know_is_rejected_as_missing() {
    // client_id 1, seq 1, then an unknown field 99 (length-delimited, empty) where a newer
    // client would put a command this build does not know.
    let encoded = [1 << 3, 1, 2 << 3, 1, 0x9a, 0x06, 0];
    let wire = pb::ExecuteRequest::decode(&encoded[..]).expect("unknown fields are skipped");
    assert_eq!(
        must_reject(wire, request_from_pb),
        ConvertError::MissingField { field: "ExecuteRequest.command" }
    );
}

#[test]
fn registering_node_zero_is_rejected() {
    let register = request(Command::RegisterNode { node: NodeId(1), address: "h:1".into() });
    let wire = edited_request(&register, |wire| {
        let Some(PbCommand::RegisterNode(register)) = &mut wire.command else { panic!() };
        register.node_id = 0;
    });
    assert_eq!(
        must_reject(wire, request_from_pb),
        ConvertError::ZeroNodeId { field: "RegisterNode.node_id" }
    );
}

#[test]
fn added_group_with_a_reserved_id_or_member_zero_is_rejected() {
    for reserved in [0, u64::MAX] {
        let wire = edited_request(&add_groups(&[(1, &[1])]), |wire| {
            wire_added_groups(wire)[0].group_id = reserved;
        });
        assert_eq!(
            must_reject(wire, request_from_pb),
            ConvertError::ReservedGroupId { field: "GroupMembers.group_id", group: reserved }
        );
    }
    let wire = edited_request(&add_groups(&[(1, &[1, 2])]), |wire| {
        wire_added_groups(wire)[0].members[1] = 0;
    });
    assert_eq!(
        must_reject(wire, request_from_pb),
        ConvertError::ZeroNodeId { field: "GroupMembers.members" }
    );
}

#[test]
fn group_added_twice_in_one_request_is_rejected() {
    let wire = edited_request(&add_groups(&[(3, &[1])]), |wire| {
        let groups = wire_added_groups(wire);
        groups.push(pb::GroupMembers { group_id: 3, members: vec![2] });
    });
    assert_eq!(
        must_reject(wire, request_from_pb),
        ConvertError::DuplicateGroup { field: "AddGroups.groups", group: 3 }
    );
}

#[test]
fn removing_or_moving_to_a_reserved_group_is_rejected() {
    for reserved in [0, u64::MAX] {
        let remove = request(Command::RemoveGroups {
            groups: vec![GroupId(1), GroupId(reserved)],
            max_moves: None,
        });
        assert_eq!(
            must_reject(request_to_pb(&remove), request_from_pb),
            ConvertError::ReservedGroupId { field: "RemoveGroups.group_ids", group: reserved }
        );
        let move_shard =
            request(Command::MoveShard { shard: ShardId(1), group: GroupId(reserved) });
        assert_eq!(
            must_reject(request_to_pb(&move_shard), request_from_pb),
            ConvertError::ReservedGroupId { field: "MoveShard.group_id", group: reserved }
        );
    }
}

#[test]
fn replacing_with_node_zero_or_in_a_reserved_group_is_rejected() {
    let wire = |node_id: u64, with_node_id: u64, group_id: Option<u64>| pb::ExecuteRequest {
        client_id: 1,
        seq: 1,
        command: Some(PbCommand::ReplaceNode(pb::ReplaceNode { node_id, with_node_id, group_id })),
    };
    assert_eq!(
        must_reject(wire(0, 2, None), request_from_pb),
        ConvertError::ZeroNodeId { field: "ReplaceNode.node_id" }
    );
    assert_eq!(
        must_reject(wire(1, 0, None), request_from_pb),
        ConvertError::ZeroNodeId { field: "ReplaceNode.with_node_id" }
    );
    for reserved in [0, u64::MAX] {
        assert_eq!(
            must_reject(wire(1, 2, Some(reserved)), request_from_pb),
            ConvertError::ReservedGroupId { field: "ReplaceNode.group_id", group: reserved }
        );
    }
    // An absent group is every group; a present one is that group.
    assert_eq!(request_from_pb(wire(1, 2, None)).map(|r| r.command), Ok(replace(1, 2, None)));
    assert_eq!(request_from_pb(wire(1, 2, Some(4))).map(|r| r.command), Ok(replace(1, 2, Some(4))));
}

#[test]
fn decommissioning_or_retiring_node_zero_or_avoiding_it_is_rejected() {
    let wire = |command| pb::ExecuteRequest { client_id: 1, seq: 1, command: Some(command) };
    assert_eq!(
        must_reject(
            wire(PbCommand::DecommissionNode(pb::DecommissionNode { node_id: 0, avoid: vec![] })),
            request_from_pb
        ),
        ConvertError::ZeroNodeId { field: "DecommissionNode.node_id" }
    );
    let avoiding_zero = pb::DecommissionNode { node_id: 1, avoid: vec![2, 0] };
    assert_eq!(
        must_reject(wire(PbCommand::DecommissionNode(avoiding_zero)), request_from_pb),
        ConvertError::ZeroNodeId { field: "DecommissionNode.avoid" }
    );
    // A node to avoid named twice counts once.
    let twice = pb::DecommissionNode { node_id: 1, avoid: vec![3, 2, 3] };
    let command = request_from_pb(wire(PbCommand::DecommissionNode(twice))).unwrap().command;
    assert_eq!(command, decommission(1, &[2, 3]));
    assert_eq!(
        must_reject(wire(PbCommand::RetireNode(pb::RetireNode { node_id: 0 })), request_from_pb),
        ConvertError::ZeroNodeId { field: "RetireNode.node_id" }
    );
    let set = pb::SetControllerAddress { replica_id: 0, address: "h:1".into() };
    assert_eq!(
        must_reject(wire(PbCommand::SetControllerAddress(set)), request_from_pb),
        ConvertError::ZeroNodeId { field: "SetControllerAddress.replica_id" }
    );
}

/// A controller older than decommissioning says nothing of a node's state: every node is
/// active. Only the states that are not active travel into `node_states`.
#[test]
fn node_states_travel_and_an_older_controller_means_active() {
    let wire = answer_to_pb(&answer());
    let states: Vec<i32> = wire.nodes.iter().map(|info| info.state).collect();
    assert_eq!(
        states,
        [
            pb::NodeState::Active as i32,
            pb::NodeState::Decommissioning as i32,
            pb::NodeState::Retired as i32
        ]
    );
    let old = edited_answer(|wire| wire.nodes.iter_mut().for_each(|info| info.state = 0));
    let decoded = query_response_from_pb(old).expect("decodes");
    assert!(decoded.node_states.is_empty(), "{decoded:?}");
    assert_eq!(decoded.state_of(NodeId(4)), NodeState::Active);
}

#[test]
fn a_decommissioning_with_a_reserved_group_or_out_of_order_is_rejected() {
    let outcome = |replacements: Vec<(u64, u64)>| pb::CommandOutcome {
        kind: Some(Kind::NodeDecommissioning(pb::NodeDecommissioning {
            node_id: 3,
            num: 2,
            replacements: replacements
                .into_iter()
                .map(|(group_id, with_node_id)| pb::GroupReplacement { group_id, with_node_id })
                .collect(),
        })),
    };
    for reserved in [0, u64::MAX] {
        assert_eq!(
            must_reject(outcome(vec![(reserved, 4)]), outcome_from_pb),
            ConvertError::ReservedGroupId { field: "GroupReplacement.group_id", group: reserved }
        );
    }
    assert_eq!(
        must_reject(outcome(vec![(1, 0)]), outcome_from_pb),
        ConvertError::ZeroNodeId { field: "GroupReplacement.with_node_id" }
    );
    assert_eq!(
        must_reject(outcome(vec![(2, 4), (1, 5)]), outcome_from_pb),
        ConvertError::OutOfOrder {
            field: "NodeDecommissioning.replacements",
            previous: 2,
            value: 1
        }
    );
}

// ---- Rejections: responses -----------------------------------------------------------------

#[test]
fn response_without_result_or_outcome_without_kind_is_rejected() {
    assert_eq!(
        must_reject(pb::ExecuteResponse { result: None }, execute_response_from_pb),
        ConvertError::MissingField { field: "ExecuteResponse.result" }
    );
    let wire =
        pb::ExecuteResponse { result: Some(PbResult::Outcome(pb::CommandOutcome { kind: None })) };
    assert_eq!(
        must_reject(wire, execute_response_from_pb),
        ConvertError::MissingField { field: "CommandOutcome.kind" }
    );
}

#[test]
fn refusal_without_kind_is_rejected() {
    let wire = pb::ExecuteResponse {
        result: Some(PbResult::Refused(pb::Refusal { kind: String::new(), message: "x".into() })),
    };
    assert_eq!(
        must_reject(wire, execute_response_from_pb),
        ConvertError::MissingField { field: "Refusal.kind" }
    );
}

#[test]
fn outcome_naming_node_zero_is_rejected() {
    let registered =
        pb::CommandOutcome { kind: Some(Kind::NodeRegistered(pb::NodeRegistered { node_id: 0 })) };
    assert_eq!(
        must_reject(registered, outcome_from_pb),
        ConvertError::ZeroNodeId { field: "NodeRegistered.node_id" }
    );
    let changed = pb::CommandOutcome {
        kind: Some(Kind::NodeAddressChanged(pb::NodeAddressChanged {
            node_id: 0,
            previous: "h:1".into(),
        })),
    };
    assert_eq!(
        must_reject(changed, outcome_from_pb),
        ConvertError::ZeroNodeId { field: "NodeAddressChanged.node_id" }
    );
}

fn config_created(num: u64, moves: Vec<pb::ShardMove>) -> pb::CommandOutcome {
    pb::CommandOutcome { kind: Some(Kind::ConfigCreated(pb::ConfigCreated { num, moves })) }
}

fn wire_move(shard: u32, from_group: u64, to_group: u64) -> pb::ShardMove {
    pb::ShardMove { shard, from_group, to_group }
}

#[test]
fn created_configuration_zero_is_rejected() {
    assert_eq!(
        must_reject(config_created(0, vec![]), outcome_from_pb),
        ConvertError::ZeroField { field: "ConfigCreated.num" }
    );
}

#[test]
fn created_configuration_with_moves_out_of_shard_order_is_rejected() {
    let backwards = config_created(2, vec![wire_move(3, 0, 1), wire_move(1, 0, 1)]);
    assert_eq!(
        must_reject(backwards, outcome_from_pb),
        ConvertError::OutOfOrder { field: "ConfigCreated.moves", previous: 3, value: 1 }
    );
    let twice = config_created(2, vec![wire_move(3, 0, 1), wire_move(3, 1, 2)]);
    assert_eq!(
        must_reject(twice, outcome_from_pb),
        ConvertError::OutOfOrder { field: "ConfigCreated.moves", previous: 3, value: 3 }
    );
}

#[test]
fn shard_move_that_changes_nothing_or_names_the_reserved_group_is_rejected() {
    assert_eq!(
        must_reject(wire_move(5, 2, 2), shard_move_from_pb),
        ConvertError::UnchangedOwner { shard: 5, group: 2 }
    );
    assert_eq!(
        must_reject(wire_move(5, 0, 0), shard_move_from_pb),
        ConvertError::UnchangedOwner { shard: 5, group: 0 }
    );
    assert_eq!(
        must_reject(wire_move(5, u64::MAX, 1), shard_move_from_pb),
        ConvertError::ReservedGroupId { field: "ShardMove.from_group", group: u64::MAX }
    );
    assert_eq!(
        must_reject(wire_move(5, 1, u64::MAX), shard_move_from_pb),
        ConvertError::ReservedGroupId { field: "ShardMove.to_group", group: u64::MAX }
    );
    // Inside an outcome, too.
    assert_eq!(
        must_reject(config_created(2, vec![wire_move(0, 1, 1)]), outcome_from_pb),
        ConvertError::UnchangedOwner { shard: 0, group: 1 }
    );
}

// ---- Rejections: configurations and query responses ----------------------------------------

#[test]
fn configuration_without_shards_is_rejected() {
    let wire = edited_configuration(&Configuration::initial(1), |wire| wire.shards.clear());
    assert_eq!(must_reject(wire, configuration_from_pb), ConvertError::NoShards);
}

#[test]
fn configuration_with_a_reserved_group_is_rejected() {
    for reserved in [0, u64::MAX] {
        let wire =
            edited_configuration(&configuration(), |wire| wire.groups[1].group_id = reserved);
        assert_eq!(
            must_reject(wire, configuration_from_pb),
            ConvertError::ReservedGroupId { field: "GroupMembers.group_id", group: reserved }
        );
    }
    let wire = edited_configuration(&configuration(), |wire| wire.shards[3] = u64::MAX);
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::ReservedGroupId { field: "Configuration.shards", group: u64::MAX }
    );
}

#[test]
fn configuration_with_groups_out_of_order_or_twice_is_rejected() {
    let wire = edited_configuration(&configuration(), |wire| wire.groups.reverse());
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::OutOfOrder { field: "Configuration.groups", previous: 2, value: 1 }
    );
    let wire = edited_configuration(&configuration(), |wire| {
        let first = wire.groups[0].clone();
        wire.groups.insert(1, first);
    });
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::OutOfOrder { field: "Configuration.groups", previous: 1, value: 1 }
    );
}

#[test]
fn configuration_with_an_empty_group_is_rejected() {
    let wire = edited_configuration(&configuration(), |wire| wire.groups[1].members.clear());
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::EmptyGroup { field: "Configuration.groups", group: 2 }
    );
}

#[test]
fn configuration_with_a_member_twice_or_member_zero_is_rejected() {
    let wire = edited_configuration(&configuration(), |wire| wire.groups[0].members.push(2));
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::DuplicateMember { field: "Configuration.groups", group: 1, node: 2 }
    );
    let wire = edited_configuration(&configuration(), |wire| wire.groups[0].members[0] = 0);
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::ZeroNodeId { field: "GroupMembers.members" }
    );
}

#[test]
fn configuration_giving_a_shard_to_an_unlisted_group_is_rejected() {
    let wire = edited_configuration(&configuration(), |wire| wire.shards[3] = 6);
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::UnknownOwner { shard: 3, group: 6 }
    );
    let wire = edited_configuration(&configuration(), |wire| {
        wire.groups.remove(1);
    });
    assert_eq!(
        must_reject(wire, configuration_from_pb),
        ConvertError::UnknownOwner { shard: 1, group: 2 }
    );
}

#[test]
fn query_response_without_a_valid_configuration_is_rejected() {
    assert_eq!(
        must_reject(edited_answer(|wire| wire.config = None), query_response_from_pb),
        ConvertError::MissingField { field: "QueryResponse.config" }
    );
    let wire = edited_answer(|wire| wire.config.as_mut().expect("set").shards.clear());
    assert_eq!(must_reject(wire, query_response_from_pb), ConvertError::NoShards);
}

#[test]
fn query_response_with_a_configuration_past_the_latest_is_rejected() {
    let wire = edited_answer(|wire| wire.latest_num = 4);
    assert_eq!(
        must_reject(wire, query_response_from_pb),
        ConvertError::ConfigPastLatest { num: 5, latest: 4 }
    );
}

#[test]
fn query_response_with_node_zero_or_nodes_out_of_order_is_rejected() {
    assert_eq!(
        must_reject(edited_answer(|wire| wire.nodes[0].node_id = 0), query_response_from_pb),
        ConvertError::ZeroNodeId { field: "NodeInfo.node_id" }
    );
    assert_eq!(
        must_reject(edited_answer(|wire| wire.leader_id = 0), query_response_from_pb),
        ConvertError::ZeroNodeId { field: "QueryResponse.leader_id" }
    );
    assert_eq!(
        must_reject(edited_answer(|wire| wire.nodes.swap(1, 2)), query_response_from_pb),
        ConvertError::OutOfOrder { field: "QueryResponse.nodes", previous: 4, value: 2 }
    );
    let twice = edited_answer(|wire| {
        let first = wire.nodes[0].clone();
        wire.nodes.insert(1, first);
    });
    assert_eq!(
        must_reject(twice, query_response_from_pb),
        ConvertError::OutOfOrder { field: "QueryResponse.nodes", previous: 1, value: 1 }
    );
}

#[test]
fn conversion_errors_name_the_offending_field() {
    let error = ConvertError::ReservedGroupId { field: "MoveShard.group_id", group: 0 };
    assert_eq!(
        error.to_string(),
        "MoveShard.group_id holds group id 0, which is reserved; group ids run from 1 to \
         18446744073709551614"
    );
    let error = ConvertError::UnknownOwner { shard: 3, group: 6 };
    assert_eq!(
        error.to_string(),
        "Configuration.shards gives shard 3 to group 6, which is not in Configuration.groups"
    );
    let error = ConvertError::OutOfOrder { field: "QueryResponse.nodes", previous: 4, value: 2 };
    assert_eq!(
        error.to_string(),
        "QueryResponse.nodes lists 2 after 4; it must be in strictly increasing order"
    );
}

// ---- Properties ----------------------------------------------------------------------------

/// What a leader may say of a node (times in whole milliseconds, as the wire carries them).
fn liveness_strategy() -> impl Strategy<Value = NodeLiveness> {
    let heard = any::<u32>().prop_map(|ms| Duration::from_millis(u64::from(ms)));
    prop_oneof![
        heard.clone().prop_map(|last_heard| NodeLiveness::Up { last_heard }),
        prop::option::of(heard).prop_map(|last_heard| NodeLiveness::Down { last_heard }),
        Just(NodeLiveness::Unknown),
    ]
}

/// A valid query answer: a valid configuration, a latest number at most two past it, and any
/// registered nodes (with what the leader says of each) and leader.
fn answer_strategy() -> impl Strategy<Value = QueryAnswer> {
    let nodes = prop::collection::btree_map(
        arbitrary::node(Values::Valid),
        (arbitrary::text(), liveness_strategy(), arbitrary::node_state()),
        0..6,
    );
    let config = arbitrary::configuration(Values::Valid);
    (config, any::<u64>(), nodes, arbitrary::node(Values::Valid)).prop_map(
        |(config, newer, nodes, leader)| QueryAnswer {
            latest: ConfigNum(config.num.0.saturating_add(newer % 3)),
            config,
            liveness: nodes.iter().map(|(node, (_, liveness, _))| (*node, *liveness)).collect(),
            node_states: nodes
                .iter()
                .filter(|(_, (_, _, state))| *state != NodeState::Active)
                .map(|(node, (_, _, state))| (*node, *state))
                .collect(),
            nodes: nodes.into_iter().map(|(node, (address, _, _))| (node, address)).collect(),
            leader,
            lives: BTreeMap::new(),
            controllers: BTreeMap::new(),
        },
    )
}

/// Decodes `bytes` as `W` and converts it; whatever converts must convert back to a wire
/// message that converts to the same value. Never panics on the way.
fn check_arbitrary_bytes<T, W>(
    bytes: &[u8],
    to_pb: impl Fn(&T) -> W,
    from_pb: impl Fn(W) -> Result<T, ConvertError>,
) -> Result<(), TestCaseError>
where
    T: Debug + PartialEq,
    W: prost::Message + Default,
{
    if let Ok(wire) = W::decode(bytes)
        && let Ok(value) = from_pb(wire)
    {
        prop_assert_eq!(from_pb(to_pb(&value)), Ok(value));
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_requests_round_trip(request in arbitrary::request(Values::Valid)) {
        let wire = request_to_pb(&request);
        prop_assert_eq!(request_from_pb(wire.clone()), Ok(request.clone()));
        let decoded = pb::ExecuteRequest::decode(Bytes::from(wire.encode_to_vec()))
            .map_err(|error| TestCaseError::fail(format!("decoding {wire:?}: {error}")))?;
        prop_assert_eq!(request_from_pb(decoded), Ok(request));
    }

    #[test]
    fn arbitrary_outcomes_round_trip(outcome in arbitrary::outcome(Values::Valid)) {
        prop_assert_eq!(outcome_from_pb(outcome_to_pb(&outcome)), Ok(outcome.clone()));
        let wire = execute_response_to_pb(&Ok(outcome.clone()));
        let decoded = pb::ExecuteResponse::decode(Bytes::from(wire.encode_to_vec()))
            .map_err(|error| TestCaseError::fail(format!("decoding {wire:?}: {error}")))?;
        prop_assert_eq!(execute_response_from_pb(decoded), Ok(Ok(outcome)));
    }

    #[test]
    fn arbitrary_refusals_arrive_as_their_kind_and_message(error in arbitrary::error()) {
        let wire = execute_response_to_pb(&Err(error.clone()));
        let decoded = pb::ExecuteResponse::decode(Bytes::from(wire.encode_to_vec()))
            .map_err(|error| TestCaseError::fail(format!("decoding {wire:?}: {error}")))?;
        let info = RefusalInfo { kind: pinned_kind(&error).into(), message: error.to_string() };
        prop_assert_eq!(execute_response_from_pb(decoded), Ok(Err(info)));
    }

    #[test]
    fn arbitrary_shard_moves_round_trip(shard_move in arbitrary::shard_move(Values::Valid)) {
        prop_assert_eq!(shard_move_from_pb(shard_move_to_pb(&shard_move)), Ok(shard_move));
    }

    #[test]
    fn arbitrary_configurations_round_trip(config in arbitrary::configuration(Values::Valid)) {
        let wire = configuration_to_pb(&config);
        prop_assert_eq!(configuration_from_pb(wire.clone()), Ok(config.clone()));
        let decoded = pb::Configuration::decode(Bytes::from(wire.encode_to_vec()))
            .map_err(|error| TestCaseError::fail(format!("decoding {wire:?}: {error}")))?;
        prop_assert_eq!(configuration_from_pb(decoded), Ok(config));
    }

    #[test]
    fn arbitrary_query_responses_round_trip(answer in answer_strategy()) {
        let wire = answer_to_pb(&answer);
        prop_assert_eq!(query_response_from_pb(wire.clone()), Ok(answer.clone()));
        let decoded = pb::QueryResponse::decode(Bytes::from(wire.encode_to_vec()))
            .map_err(|error| TestCaseError::fail(format!("decoding {wire:?}: {error}")))?;
        prop_assert_eq!(query_response_from_pb(decoded), Ok(answer));
    }

    #[test]
    fn arbitrary_query_requests_round_trip(
        num in prop::option::of(any::<u64>()),
        node in prop::option::of(arbitrary::node(Values::Valid)),
    ) {
        let num = num.map(ConfigNum);
        prop_assert_eq!(query_request_from_pb(query_request_to_pb(num, node)), (num, node));
    }

    #[test]
    fn arbitrary_bytes_are_rejected_or_converted_but_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        check_arbitrary_bytes(&bytes, request_to_pb, request_from_pb)?;
        check_arbitrary_bytes(&bytes, execute_response_to_pb_of_outcome, execute_response_from_pb)?;
        check_arbitrary_bytes(&bytes, configuration_to_pb, configuration_from_pb)?;
        check_arbitrary_bytes(&bytes, answer_to_pb, query_response_from_pb)?;
    }

    #[test]
    fn corrupted_configurations_are_rejected_or_converted_but_never_panic(
        config in arbitrary::configuration(Values::Valid),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut encoded = configuration_to_pb(&config).encode_to_vec();
        for (position, value) in flips {
            let position = position.index(encoded.len());
            encoded[position] ^= value;
        }
        encoded.truncate(cut.index(encoded.len() + 1));
        check_arbitrary_bytes(&encoded, configuration_to_pb, configuration_from_pb)?;
    }
}

/// [`execute_response_to_pb`] for the decoded form of a response (a refusal re-encodes as its
/// kind and message as they came).
fn execute_response_to_pb_of_outcome(result: &Result<Outcome, RefusalInfo>) -> pb::ExecuteResponse {
    match result {
        Ok(outcome) => execute_response_to_pb(&Ok(outcome.clone())),
        Err(info) => pb::ExecuteResponse {
            result: Some(PbResult::Refused(pb::Refusal {
                kind: info.kind.clone(),
                message: info.message.clone(),
            })),
        },
    }
}
