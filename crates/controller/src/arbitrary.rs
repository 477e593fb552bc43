//! Proptest strategies for the controller's types, shared by the tests of every crate that
//! carries them: this crate's [`codec`](crate::codec) and the `Controller` service's wire
//! conversions in `mosaic-proto`. Compiled only with the `arbitrary` feature, which only tests
//! enable.
//!
//! Each strategy takes the [`Values`] it draws from: [`Values::Any`], every value the types can
//! hold (what an encoding of the controller's own state must carry, whether or not the state
//! machine would accept it), or [`Values::Valid`], only what the wire form accepts. Both lean on
//! the edge values (the smallest and largest id) and allow any other.
//!
//! [`error`] yields every [`Error`] variant. [`error_variant`] numbers them exhaustively, so
//! adding a variant stops this module compiling until [`ERROR_VARIANTS`] and [`error`] are
//! extended with it; tests check with them that every variant is generated and pinned.

use std::collections::BTreeMap;

use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::NodeId;
use proptest::prelude::*;

use crate::command::{Command, Outcome, Request};
use crate::configuration::{ConfigNum, Configuration, ShardMove};
use crate::decommission::NodeState;
use crate::error::{Error, Result};

/// Which values the strategies draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Every value of the type, reserved ids (node 0, groups 0 and `u64::MAX`) and values the
    /// state machine would refuse included: what the controller's codec must round-trip.
    Any,
    /// Only what the `Controller` service's wire form accepts: node ids from 1, group ids from 1
    /// to `u64::MAX - 1`, client ids and sequence numbers from 1, created configurations
    /// numbered from 1, shard moves that change the owner listed once each in shard order, and
    /// well-formed [configurations](configuration). Commands may still name empty or repeated
    /// members: the wire carries them and the state machine refuses them.
    Valid,
}

impl Values {
    /// The smallest node id, client id and sequence number allowed.
    fn least(self) -> u64 {
        match self {
            Self::Any => 0,
            Self::Valid => 1,
        }
    }

    /// The largest group id allowed.
    fn most_group(self) -> u64 {
        match self {
            Self::Any => u64::MAX,
            Self::Valid => u64::MAX - 1,
        }
    }
}

/// Any string of up to 24 characters, multi-byte ones included.
pub fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

/// Client ids, sequence numbers, created configuration numbers: the smallest and the largest
/// often.
pub fn number(values: Values) -> impl Strategy<Value = u64> {
    let least = values.least();
    prop_oneof![Just(least), Just(u64::MAX), least..100u64, least..=u64::MAX]
}

/// A node id, small ones often.
pub fn node(values: Values) -> impl Strategy<Value = NodeId> {
    let least = values.least();
    prop_oneof![least..10u64, least..=u64::MAX].prop_map(NodeId)
}

/// A group id, small ones and the largest often.
pub fn group(values: Values) -> impl Strategy<Value = GroupId> {
    let (least, most) = (values.least(), values.most_group());
    prop_oneof![least..10u64, Just(most), least..=most].prop_map(GroupId)
}

/// Up to three groups with up to three members each, members possibly repeated.
pub fn groups(values: Values) -> impl Strategy<Value = BTreeMap<GroupId, Vec<NodeId>>> {
    proptest::collection::btree_map(
        group(values),
        proptest::collection::vec(node(values), 0..4),
        0..4,
    )
}

/// A command's optional bound on shard moves, 0 and the largest often.
pub fn max_moves() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(prop_oneof![Just(0), Just(u32::MAX), any::<u32>()])
}

/// Any command a client can send. Groups may be empty and name members twice or none at all
/// (the state machine refuses those).
pub fn command(values: Values) -> impl Strategy<Value = Command> {
    prop_oneof![
        (node(values), text()).prop_map(|(node, address)| Command::RegisterNode { node, address }),
        (groups(values), max_moves())
            .prop_map(|(groups, max_moves)| Command::AddGroups { groups, max_moves }),
        (proptest::collection::vec(group(values), 0..4), max_moves())
            .prop_map(|(groups, max_moves)| Command::RemoveGroups { groups, max_moves }),
        (any::<u32>(), group(values))
            .prop_map(|(shard, group)| Command::MoveShard { shard: ShardId(shard), group }),
        max_moves().prop_map(|max_moves| Command::Rebalance { max_moves }),
        group(values).prop_map(|group| Command::RetireGroup { group }),
        (node(values), node(values), proptest::option::of(group(values)))
            .prop_map(|(node, with, group)| Command::ReplaceNode { node, with, group }),
        (node(values), proptest::collection::btree_set(node(values), 0..3))
            .prop_map(|(node, avoid)| Command::DecommissionNode { node, avoid }),
        node(values).prop_map(|node| Command::RetireNode { node }),
        (node(values), text())
            .prop_map(|(replica, address)| Command::SetControllerAddress { replica, address }),
    ]
}

/// A request: a [`command`] from some client with some sequence number.
pub fn request(values: Values) -> impl Strategy<Value = Request> {
    (number(values), number(values), command(values)).prop_map(|(client, seq, command)| Request {
        client: ClientId(client),
        seq,
        command,
    })
}

/// A shard move; with [`Values::Valid`] one that changes the owner.
pub fn shard_move(values: Values) -> impl Strategy<Value = ShardMove> {
    let owner = || proptest::option::of(group(values));
    (any::<u32>(), owner(), owner())
        .prop_filter("a move changes the owner", move |(_, from, to)| {
            values == Values::Any || from != to
        })
        .prop_map(|(shard, from, to)| ShardMove { shard: ShardId(shard), from, to })
}

/// Up to five [shard moves](shard_move); with [`Values::Valid`] of distinct shards, in shard
/// order.
pub fn shard_moves(values: Values) -> impl Strategy<Value = Vec<ShardMove>> {
    proptest::collection::vec(shard_move(values), 0..6).prop_map(move |mut moves| {
        if values == Values::Valid {
            moves.sort_by_key(|shard_move| shard_move.shard);
            moves.dedup_by_key(|shard_move| shard_move.shard);
        }
        moves
    })
}

/// Every [`Outcome`] variant.
pub fn outcome(values: Values) -> impl Strategy<Value = Outcome> {
    prop_oneof![
        node(values).prop_map(|node| Outcome::NodeRegistered { node }),
        (node(values), text())
            .prop_map(|(node, previous)| Outcome::NodeAddressChanged { node, previous }),
        (number(values), shard_moves(values))
            .prop_map(|(num, moves)| Outcome::ConfigCreated { num: ConfigNum(num), moves }),
        // Nothing changed: configuration 0 included.
        (number(Values::Any), text())
            .prop_map(|(num, reason)| Outcome::Unchanged { num: ConfigNum(num), reason }),
        group(values).prop_map(|group| Outcome::GroupRetired { group }),
        (
            node(values),
            number(Values::Any),
            proptest::collection::btree_map(group(values), node(values), 0..4)
        )
            .prop_map(|(node, num, replacements)| Outcome::NodeDecommissioning {
                node,
                num: ConfigNum(num),
                replacements
            }),
        node(values).prop_map(|node| Outcome::NodeRetired { node }),
        node(values).prop_map(|replica| Outcome::ControllerAddressRecorded { replica }),
    ]
}

/// A configuration. With [`Values::Any`], up to 19 shards owned by any group or none, listed or
/// not, and groups as [`groups`] makes them. With [`Values::Valid`], a well-formed one: at least
/// one shard, up to four groups of one to four distinct members (in any order), every owner a
/// listed group.
pub fn configuration(values: Values) -> BoxedStrategy<Configuration> {
    match values {
        Values::Any => any_configuration().boxed(),
        Values::Valid => valid_configuration().boxed(),
    }
}

fn any_configuration() -> impl Strategy<Value = Configuration> {
    let shards = proptest::collection::vec(proptest::option::of(group(Values::Any)), 0..20);
    (any::<u64>(), shards, groups(Values::Any)).prop_map(|(num, shards, groups)| Configuration {
        num: ConfigNum(num),
        shards,
        groups,
    })
}

fn valid_configuration() -> impl Strategy<Value = Configuration> {
    let members = proptest::collection::btree_set(node(Values::Valid), 1..5)
        .prop_map(|members| members.into_iter().collect::<Vec<_>>())
        .prop_shuffle();
    let groups = proptest::collection::btree_map(group(Values::Valid), members, 0..5);
    let owners =
        proptest::collection::vec(proptest::option::of(any::<proptest::sample::Index>()), 1..40);
    (any::<u64>(), groups, owners).prop_map(|(num, groups, owners)| {
        let ids: Vec<GroupId> = groups.keys().copied().collect();
        let shards = owners
            .into_iter()
            .map(|owner| owner.filter(|_| !ids.is_empty()).map(|index| ids[index.index(ids.len())]))
            .collect();
        Configuration { num: ConfigNum(num), shards, groups }
    })
}

/// Every [`Error`] variant, with any field values (a refusal is carried as it is, valid ids or
/// not). Extend it when [`error_variant`] gains a variant.
pub fn error() -> impl Strategy<Value = Error> {
    prop_oneof![
        Just(Error::InvalidNodeId),
        (text(), text()).prop_map(|(address, reason)| Error::InvalidAddress { address, reason }),
        group(Values::Any).prop_map(|group| Error::InvalidGroupId { group }),
        (group(Values::Any), proptest::collection::vec(node(Values::Any), 0..4))
            .prop_map(|(group, members)| Error::GroupExists { group, members }),
        group(Values::Any).prop_map(|group| Error::EmptyGroup { group }),
        (group(Values::Any), node(Values::Any))
            .prop_map(|(group, node)| Error::DuplicateMember { group, node }),
        (group(Values::Any), node(Values::Any))
            .prop_map(|(group, node)| Error::UnregisteredMember { group, node }),
        group(Values::Any).prop_map(|group| Error::UnknownGroup { group }),
        Just(Error::NoGroups),
        (any::<u32>(), any::<u32>()).prop_map(|(shard, shard_count)| Error::ShardOutOfRange {
            shard: ShardId(shard),
            shard_count
        }),
        Just(Error::RemovingEveryGroup),
        (any::<u64>(), any::<u64>()).prop_map(|(num, latest)| Error::UnknownConfig {
            num: ConfigNum(num),
            latest: ConfigNum(latest)
        }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(client, seq, latest)| {
            Error::StaleRequest { client: ClientId(client), seq, latest }
        }),
        text().prop_map(|reason| Error::MalformedRequest { reason }),
        (group(Values::Any), any::<u64>()).prop_map(|(group, removed)| Error::GroupRemoved {
            group,
            removed: ConfigNum(removed)
        }),
        group(Values::Any).prop_map(|group| Error::GroupNotRemoved { group }),
        node(Values::Any).prop_map(|node| Error::SameNode { node }),
        node(Values::Any).prop_map(|node| Error::NodeNotRegistered { node }),
        (node(Values::Any), proptest::option::of(group(Values::Any)))
            .prop_map(|(node, group)| Error::NotAMember { node, group }),
        (group(Values::Any), node(Values::Any))
            .prop_map(|(group, node)| Error::AlreadyAMember { group, node }),
        (group(Values::Any), node(Values::Any))
            .prop_map(|(group, node)| Error::NoReplacement { group, node }),
        (node(Values::Any), node_state())
            .prop_map(|(node, state)| Error::NodeNotActive { node, state }),
        node(Values::Any).prop_map(|node| Error::NotDecommissioning { node }),
        (node(Values::Any), group(Values::Any))
            .prop_map(|(node, group)| Error::NodeStillListed { node, group }),
    ]
}

/// Any node state.
pub fn node_state() -> impl Strategy<Value = NodeState> {
    prop_oneof![Just(NodeState::Active), Just(NodeState::Decommissioning), Just(NodeState::Retired)]
}

/// A command's result: an [`outcome`] or an [`error`].
pub fn result(values: Values) -> impl Strategy<Value = Result<Outcome>> {
    prop_oneof![outcome(values).prop_map(Ok), error().prop_map(Err)]
}

/// The number of [`Error`] variants: [`error_variant`] returns less than this.
pub const ERROR_VARIANTS: usize = 24;

/// Returns the number of `error`'s variant, from 0 in declaration order. Exhaustive on purpose:
/// a new variant stops this compiling until it is numbered, [`ERROR_VARIANTS`] counts it and
/// [`error`] generates it.
#[must_use]
pub fn error_variant(error: &Error) -> usize {
    match error {
        Error::InvalidNodeId => 0,
        Error::InvalidAddress { .. } => 1,
        Error::InvalidGroupId { .. } => 2,
        Error::GroupExists { .. } => 3,
        Error::EmptyGroup { .. } => 4,
        Error::DuplicateMember { .. } => 5,
        Error::UnregisteredMember { .. } => 6,
        Error::UnknownGroup { .. } => 7,
        Error::NoGroups => 8,
        Error::ShardOutOfRange { .. } => 9,
        Error::RemovingEveryGroup => 10,
        Error::UnknownConfig { .. } => 11,
        Error::StaleRequest { .. } => 12,
        Error::MalformedRequest { .. } => 13,
        Error::GroupRemoved { .. } => 14,
        Error::GroupNotRemoved { .. } => 15,
        Error::SameNode { .. } => 16,
        Error::NodeNotRegistered { .. } => 17,
        Error::NotAMember { .. } => 18,
        Error::AlreadyAMember { .. } => 19,
        Error::NoReplacement { .. } => 20,
        Error::NodeNotActive { .. } => 21,
        Error::NotDecommissioning { .. } => 22,
        Error::NodeStillListed { .. } => 23,
    }
}
