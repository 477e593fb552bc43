//! The controller's binary encodings: the log entry of a [`Request`], and the records its
//! state is stored as (configurations, node addresses, the meta record, client sessions with
//! their [`Result<Outcome>`]).
//!
//! Format (version [`FORMAT_VERSION`]): every top-level encoding starts with the format
//! version byte. Integers are fixed-width big-endian (`u8`, `u32` for shards, counts and
//! lengths, `u64` for every other id and number). A string is its length (`u32`) and its UTF-8
//! bytes; a list is its count (`u32`) and its elements; a map is a list of pairs whose keys
//! strictly increase; an option is `0`, or `1` and the value; an enum is a one-byte tag
//! (listed at each `*_TAG` constant) and its fields in declaration order.
//!
//! A tag, once written, keeps its meaning for ever; a new variant takes the next free tag
//! within the same format version (`ReplaceNode` took command tag 7, its refusals error tags
//! 17 to 20; `DecommissionNode` and `RetireNode` command tags 8 and 9, outcome tags 6 and 7,
//! error tags 21 to 24; `DecommissionNode` with nodes to avoid command tag 10, so that a
//! decommission avoiding none is still written as the release before it reads it;
//! `SetControllerAddress` command tag 11, outcome tag 8). A build that does not know a tag refuses the bytes: a controller replica from
//! before a new command answers its log entry `MalformedRequest` while newer replicas apply
//! it, and refuses to load a session that remembers a new refusal. So every controller
//! replica runs the newer build before anyone sends the new command (docs/controller.md).
//!
//! Invariants: decoding never panics whatever the bytes, never allocates more than the input
//! could hold, and refuses trailing bytes; `decode(encode(x)) == x` for every value.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::{LogIndex, NodeId};

use crate::command::{Command, Outcome, Request};
use crate::configuration::{ConfigNum, Configuration, ShardMove};
use crate::decommission::NodeState;
use crate::error::{Error, Result};
use crate::state::Session;

/// The version byte every encoding starts with. Decoders refuse any other.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes that do not decode, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// The result of a decode.
pub type DecodeResult<T> = std::result::Result<T, DecodeError>;

// Command tags.
const REGISTER_NODE_TAG: u8 = 1;
const ADD_GROUPS_TAG: u8 = 2;
const REMOVE_GROUPS_TAG: u8 = 3;
const MOVE_SHARD_TAG: u8 = 4;
const REBALANCE_TAG: u8 = 5;
const RETIRE_GROUP_TAG: u8 = 6;
const REPLACE_NODE_TAG: u8 = 7;
const DECOMMISSION_NODE_TAG: u8 = 8;
const RETIRE_NODE_TAG: u8 = 9;
const DECOMMISSION_NODE_AVOIDING_TAG: u8 = 10;
const SET_CONTROLLER_ADDRESS_TAG: u8 = 11;

// Outcome tags.
const NODE_REGISTERED_TAG: u8 = 1;
const NODE_ADDRESS_CHANGED_TAG: u8 = 2;
const CONFIG_CREATED_TAG: u8 = 3;
const UNCHANGED_TAG: u8 = 4;
const GROUP_RETIRED_TAG: u8 = 5;
const NODE_DECOMMISSIONING_TAG: u8 = 6;
const NODE_RETIRED_TAG: u8 = 7;
const CONTROLLER_ADDRESS_RECORDED_TAG: u8 = 8;

// Node state tags.
const NODE_ACTIVE_TAG: u8 = 0;
const NODE_DECOMMISSIONING_STATE_TAG: u8 = 1;
const NODE_RETIRED_STATE_TAG: u8 = 2;

// Result tags.
const OK_TAG: u8 = 0;
const ERR_TAG: u8 = 1;

// Error tags.
const INVALID_NODE_ID_TAG: u8 = 1;
const INVALID_ADDRESS_TAG: u8 = 2;
const INVALID_GROUP_ID_TAG: u8 = 3;
const GROUP_EXISTS_TAG: u8 = 4;
const EMPTY_GROUP_TAG: u8 = 5;
const DUPLICATE_MEMBER_TAG: u8 = 6;
const UNREGISTERED_MEMBER_TAG: u8 = 7;
const UNKNOWN_GROUP_TAG: u8 = 8;
const NO_GROUPS_TAG: u8 = 9;
const SHARD_OUT_OF_RANGE_TAG: u8 = 10;
const REMOVING_EVERY_GROUP_TAG: u8 = 11;
const UNKNOWN_CONFIG_TAG: u8 = 12;
const STALE_REQUEST_TAG: u8 = 13;
const MALFORMED_REQUEST_TAG: u8 = 14;
const GROUP_REMOVED_TAG: u8 = 15;
const GROUP_NOT_REMOVED_TAG: u8 = 16;
const SAME_NODE_TAG: u8 = 17;
const NODE_NOT_REGISTERED_TAG: u8 = 18;
const NOT_A_MEMBER_TAG: u8 = 19;
const ALREADY_A_MEMBER_TAG: u8 = 20;
const NO_REPLACEMENT_TAG: u8 = 21;
const NODE_NOT_ACTIVE_TAG: u8 = 22;
const NOT_DECOMMISSIONING_TAG: u8 = 23;
const NODE_STILL_LISTED_TAG: u8 = 24;

/// Encodes a request as the data of a log entry:
/// `version ‖ client u64 ‖ seq u64 ‖ command`.
#[must_use]
pub fn encode_request(request: &Request) -> Bytes {
    let mut out = versioned();
    out.put_u64(request.client.0);
    out.put_u64(request.seq);
    put_command(&mut out, &request.command);
    out.freeze()
}

/// Decodes what [`encode_request`] wrote.
///
/// # Errors
/// [`DecodeError`] for bytes of another version, truncated, malformed or with trailing bytes.
pub fn decode_request(bytes: &[u8]) -> DecodeResult<Request> {
    let mut reader = Reader::versioned(bytes, "request")?;
    let client = ClientId(reader.u64()?);
    let seq = reader.u64()?;
    let command = reader.command()?;
    reader.finish()?;
    Ok(Request { client, seq, command })
}

/// Encodes a configuration: `version ‖ num u64 ‖ shards (list of optional group) ‖ groups
/// (map of group to list of nodes)`.
#[must_use]
pub fn encode_configuration(config: &Configuration) -> Bytes {
    let mut out = versioned();
    out.put_u64(config.num.0);
    put_len(&mut out, config.shards.len());
    for owner in &config.shards {
        put_option_group(&mut out, *owner);
    }
    put_groups(&mut out, &config.groups);
    out.freeze()
}

/// Decodes what [`encode_configuration`] wrote. The configuration's invariant is not checked
/// here (see [`Configuration`]).
///
/// # Errors
/// As [`decode_request`].
pub fn decode_configuration(bytes: &[u8]) -> DecodeResult<Configuration> {
    let mut reader = Reader::versioned(bytes, "configuration")?;
    let num = ConfigNum(reader.u64()?);
    let count = reader.count(1)?;
    let mut shards = Vec::with_capacity(count);
    for _ in 0..count {
        shards.push(reader.option_group()?);
    }
    let groups = reader.groups()?;
    reader.finish()?;
    Ok(Configuration { num, shards, groups })
}

/// Encodes the result of a command: `version ‖ 0 ‖ outcome` or `version ‖ 1 ‖ error`.
#[must_use]
pub fn encode_result(result: &Result<Outcome>) -> Bytes {
    let mut out = versioned();
    put_result(&mut out, result);
    out.freeze()
}

/// Decodes what [`encode_result`] wrote.
///
/// # Errors
/// As [`decode_request`].
pub fn decode_result(bytes: &[u8]) -> DecodeResult<Result<Outcome>> {
    let mut reader = Reader::versioned(bytes, "result")?;
    let result = reader.result()?;
    reader.finish()?;
    Ok(result)
}

/// Encodes a client's session record: `version ‖ seq u64 ‖ last index u64 ‖ result` (the
/// result without a version byte of its own).
pub(crate) fn encode_session(session: &Session) -> Bytes {
    let mut out = versioned();
    out.put_u64(session.seq);
    out.put_u64(session.last_index.0);
    put_result(&mut out, &session.result);
    out.freeze()
}

/// Decodes what [`encode_session`] wrote.
pub(crate) fn decode_session(bytes: &[u8]) -> DecodeResult<Session> {
    let mut reader = Reader::versioned(bytes, "session")?;
    let seq = reader.u64()?;
    let last_index = LogIndex(reader.u64()?);
    let result = reader.result()?;
    reader.finish()?;
    Ok(Session { seq, result, last_index })
}

/// Encodes a node's record: `version ‖ address string`.
pub(crate) fn encode_node_address(address: &str) -> Bytes {
    let mut out = versioned();
    put_string(&mut out, address);
    out.freeze()
}

/// Decodes what [`encode_node_address`] wrote.
pub(crate) fn decode_node_address(bytes: &[u8]) -> DecodeResult<String> {
    let mut reader = Reader::versioned(bytes, "node record")?;
    let address = reader.string()?;
    reader.finish()?;
    Ok(address)
}

/// Encodes a node's state record: `version ‖ state tag`.
pub(crate) fn encode_node_state(state: NodeState) -> Bytes {
    let mut out = versioned();
    put_node_state(&mut out, state);
    out.freeze()
}

/// Decodes what [`encode_node_state`] wrote.
pub(crate) fn decode_node_state(bytes: &[u8]) -> DecodeResult<NodeState> {
    let mut reader = Reader::versioned(bytes, "node state record")?;
    let state = reader.node_state()?;
    reader.finish()?;
    Ok(state)
}

/// Encodes a record whose presence is its meaning (a retired group): `version` alone.
pub(crate) fn encode_marker() -> Bytes {
    versioned().freeze()
}

/// Decodes what [`encode_marker`] wrote.
pub(crate) fn decode_marker(bytes: &[u8]) -> DecodeResult<()> {
    Reader::versioned(bytes, "marker record")?.finish()
}

/// Encodes the meta record: `version ‖ shard count u32 ‖ max sessions u64`.
pub(crate) fn encode_meta(shard_count: u32, max_sessions: usize) -> Bytes {
    let mut out = versioned();
    out.put_u32(shard_count);
    out.put_u64(max_sessions as u64);
    out.freeze()
}

/// Decodes what [`encode_meta`] wrote: `(shard count, max sessions)`, both at least 1.
pub(crate) fn decode_meta(bytes: &[u8]) -> DecodeResult<(u32, usize)> {
    let mut reader = Reader::versioned(bytes, "meta record")?;
    let shard_count = reader.u32()?;
    let max_sessions = reader.u64()?;
    reader.finish()?;
    let max_sessions = usize::try_from(max_sessions)
        .map_err(|_| DecodeError(format!("max sessions {max_sessions} does not fit in usize")))?;
    if shard_count == 0 || max_sessions == 0 {
        return Err(DecodeError(format!(
            "meta record: shard count {shard_count} and max sessions {max_sessions} must be \
             at least 1"
        )));
    }
    Ok((shard_count, max_sessions))
}

fn versioned() -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT_VERSION);
    out
}

/// Puts a length or count.
///
/// # Panics
/// Over `u32::MAX` (4 Gi elements or bytes; no log entry or record comes near).
pub fn put_len(out: &mut BytesMut, len: usize) {
    let len = u32::try_from(len).unwrap_or_else(|_| panic!("length {len} exceeds u32::MAX"));
    out.put_u32(len);
}

fn put_string(out: &mut BytesMut, value: &str) {
    put_len(out, value.len());
    out.put_slice(value.as_bytes());
}

fn put_option_u32(out: &mut BytesMut, value: Option<u32>) {
    match value {
        None => out.put_u8(0),
        Some(value) => {
            out.put_u8(1);
            out.put_u32(value);
        }
    }
}

/// Puts an optional group id.
pub fn put_option_group(out: &mut BytesMut, value: Option<GroupId>) {
    match value {
        None => out.put_u8(0),
        Some(group) => {
            out.put_u8(1);
            out.put_u64(group.0);
        }
    }
}

fn put_nodes(out: &mut BytesMut, nodes: &[NodeId]) {
    put_len(out, nodes.len());
    for node in nodes {
        out.put_u64(node.0);
    }
}

/// Puts a map of groups to their member nodes.
pub fn put_groups(out: &mut BytesMut, groups: &BTreeMap<GroupId, Vec<NodeId>>) {
    put_len(out, groups.len());
    for (group, members) in groups {
        out.put_u64(group.0);
        put_nodes(out, members);
    }
}

fn put_node_state(out: &mut BytesMut, state: NodeState) {
    out.put_u8(match state {
        NodeState::Active => NODE_ACTIVE_TAG,
        NodeState::Decommissioning => NODE_DECOMMISSIONING_STATE_TAG,
        NodeState::Retired => NODE_RETIRED_STATE_TAG,
    });
}

fn put_command(out: &mut BytesMut, command: &Command) {
    match command {
        Command::RegisterNode { node, address } => {
            out.put_u8(REGISTER_NODE_TAG);
            out.put_u64(node.0);
            put_string(out, address);
        }
        Command::AddGroups { groups, max_moves } => {
            out.put_u8(ADD_GROUPS_TAG);
            put_groups(out, groups);
            put_option_u32(out, *max_moves);
        }
        Command::RemoveGroups { groups, max_moves } => {
            out.put_u8(REMOVE_GROUPS_TAG);
            put_len(out, groups.len());
            for group in groups {
                out.put_u64(group.0);
            }
            put_option_u32(out, *max_moves);
        }
        Command::MoveShard { shard, group } => {
            out.put_u8(MOVE_SHARD_TAG);
            out.put_u32(shard.0);
            out.put_u64(group.0);
        }
        Command::Rebalance { max_moves } => {
            out.put_u8(REBALANCE_TAG);
            put_option_u32(out, *max_moves);
        }
        Command::RetireGroup { group } => {
            out.put_u8(RETIRE_GROUP_TAG);
            out.put_u64(group.0);
        }
        Command::ReplaceNode { node, with, group } => {
            out.put_u8(REPLACE_NODE_TAG);
            out.put_u64(node.0);
            out.put_u64(with.0);
            put_option_group(out, *group);
        }
        Command::DecommissionNode { node, avoid } if avoid.is_empty() => {
            out.put_u8(DECOMMISSION_NODE_TAG);
            out.put_u64(node.0);
        }
        Command::DecommissionNode { node, avoid } => {
            out.put_u8(DECOMMISSION_NODE_AVOIDING_TAG);
            out.put_u64(node.0);
            put_nodes(out, &avoid.iter().copied().collect::<Vec<_>>());
        }
        Command::RetireNode { node } => {
            out.put_u8(RETIRE_NODE_TAG);
            out.put_u64(node.0);
        }
        Command::SetControllerAddress { replica, address } => {
            out.put_u8(SET_CONTROLLER_ADDRESS_TAG);
            out.put_u64(replica.0);
            put_string(out, address);
        }
    }
}

fn put_result(out: &mut BytesMut, result: &Result<Outcome>) {
    match result {
        Ok(outcome) => {
            out.put_u8(OK_TAG);
            put_outcome(out, outcome);
        }
        Err(error) => {
            out.put_u8(ERR_TAG);
            put_error(out, error);
        }
    }
}

fn put_outcome(out: &mut BytesMut, outcome: &Outcome) {
    match outcome {
        Outcome::NodeRegistered { node } => {
            out.put_u8(NODE_REGISTERED_TAG);
            out.put_u64(node.0);
        }
        Outcome::NodeAddressChanged { node, previous } => {
            out.put_u8(NODE_ADDRESS_CHANGED_TAG);
            out.put_u64(node.0);
            put_string(out, previous);
        }
        Outcome::ConfigCreated { num, moves } => {
            out.put_u8(CONFIG_CREATED_TAG);
            out.put_u64(num.0);
            put_len(out, moves.len());
            for shard_move in moves {
                out.put_u32(shard_move.shard.0);
                put_option_group(out, shard_move.from);
                put_option_group(out, shard_move.to);
            }
        }
        Outcome::Unchanged { num, reason } => {
            out.put_u8(UNCHANGED_TAG);
            out.put_u64(num.0);
            put_string(out, reason);
        }
        Outcome::GroupRetired { group } => {
            out.put_u8(GROUP_RETIRED_TAG);
            out.put_u64(group.0);
        }
        Outcome::NodeDecommissioning { node, num, replacements } => {
            out.put_u8(NODE_DECOMMISSIONING_TAG);
            out.put_u64(node.0);
            out.put_u64(num.0);
            put_len(out, replacements.len());
            for (group, with) in replacements {
                out.put_u64(group.0);
                out.put_u64(with.0);
            }
        }
        Outcome::NodeRetired { node } => {
            out.put_u8(NODE_RETIRED_TAG);
            out.put_u64(node.0);
        }
        Outcome::ControllerAddressRecorded { replica } => {
            out.put_u8(CONTROLLER_ADDRESS_RECORDED_TAG);
            out.put_u64(replica.0);
        }
    }
}

fn put_error(out: &mut BytesMut, error: &Error) {
    match error {
        Error::InvalidNodeId => out.put_u8(INVALID_NODE_ID_TAG),
        Error::InvalidAddress { address, reason } => {
            out.put_u8(INVALID_ADDRESS_TAG);
            put_string(out, address);
            put_string(out, reason);
        }
        Error::InvalidGroupId { group } => {
            out.put_u8(INVALID_GROUP_ID_TAG);
            out.put_u64(group.0);
        }
        Error::GroupExists { group, members } => {
            out.put_u8(GROUP_EXISTS_TAG);
            out.put_u64(group.0);
            put_nodes(out, members);
        }
        Error::EmptyGroup { group } => {
            out.put_u8(EMPTY_GROUP_TAG);
            out.put_u64(group.0);
        }
        Error::DuplicateMember { group, node } => {
            out.put_u8(DUPLICATE_MEMBER_TAG);
            out.put_u64(group.0);
            out.put_u64(node.0);
        }
        Error::UnregisteredMember { group, node } => {
            out.put_u8(UNREGISTERED_MEMBER_TAG);
            out.put_u64(group.0);
            out.put_u64(node.0);
        }
        Error::UnknownGroup { group } => {
            out.put_u8(UNKNOWN_GROUP_TAG);
            out.put_u64(group.0);
        }
        Error::NoGroups => out.put_u8(NO_GROUPS_TAG),
        Error::ShardOutOfRange { shard, shard_count } => {
            out.put_u8(SHARD_OUT_OF_RANGE_TAG);
            out.put_u32(shard.0);
            out.put_u32(*shard_count);
        }
        Error::RemovingEveryGroup => out.put_u8(REMOVING_EVERY_GROUP_TAG),
        Error::UnknownConfig { num, latest } => {
            out.put_u8(UNKNOWN_CONFIG_TAG);
            out.put_u64(num.0);
            out.put_u64(latest.0);
        }
        Error::StaleRequest { client, seq, latest } => {
            out.put_u8(STALE_REQUEST_TAG);
            out.put_u64(client.0);
            out.put_u64(*seq);
            out.put_u64(*latest);
        }
        Error::MalformedRequest { reason } => {
            out.put_u8(MALFORMED_REQUEST_TAG);
            put_string(out, reason);
        }
        Error::GroupRemoved { group, removed } => {
            out.put_u8(GROUP_REMOVED_TAG);
            out.put_u64(group.0);
            out.put_u64(removed.0);
        }
        Error::GroupNotRemoved { group } => {
            out.put_u8(GROUP_NOT_REMOVED_TAG);
            out.put_u64(group.0);
        }
        Error::SameNode { node } => {
            out.put_u8(SAME_NODE_TAG);
            out.put_u64(node.0);
        }
        Error::NodeNotRegistered { node } => {
            out.put_u8(NODE_NOT_REGISTERED_TAG);
            out.put_u64(node.0);
        }
        Error::NotAMember { node, group } => {
            out.put_u8(NOT_A_MEMBER_TAG);
            out.put_u64(node.0);
            put_option_group(out, *group);
        }
        Error::AlreadyAMember { group, node } => {
            out.put_u8(ALREADY_A_MEMBER_TAG);
            out.put_u64(group.0);
            out.put_u64(node.0);
        }
        Error::NoReplacement { group, node } => {
            out.put_u8(NO_REPLACEMENT_TAG);
            out.put_u64(group.0);
            out.put_u64(node.0);
        }
        Error::NodeNotActive { node, state } => {
            out.put_u8(NODE_NOT_ACTIVE_TAG);
            out.put_u64(node.0);
            put_node_state(out, *state);
        }
        Error::NotDecommissioning { node } => {
            out.put_u8(NOT_DECOMMISSIONING_TAG);
            out.put_u64(node.0);
        }
        Error::NodeStillListed { node, group } => {
            out.put_u8(NODE_STILL_LISTED_TAG);
            out.put_u64(node.0);
            out.put_u64(group.0);
        }
    }
}

/// Reads an encoding front to back; every read checks that the bytes are there.
/// Reads the encodings of this module (and of storage groups' migration entries, which use the
/// same conventions) field by field; every method refuses truncated or malformed input.
pub struct Reader<'a> {
    bytes: &'a [u8],
    /// What is being decoded, for error messages.
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes` from their first byte; `what` names them in errors.
    #[must_use]
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    /// A reader of `bytes`, after checking and skipping the version byte.
    fn versioned(bytes: &'a [u8], what: &'static str) -> DecodeResult<Self> {
        let mut reader = Self { bytes, what };
        let version = reader.u8()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError(format!(
                "{what}: format version {version}, expected {FORMAT_VERSION}"
            )));
        }
        Ok(reader)
    }

    /// An error about the bytes being read.
    pub fn error(&self, reason: impl std::fmt::Display) -> DecodeError {
        DecodeError(format!("{}: {reason}", self.what))
    }

    /// Takes the next `len` bytes.
    pub fn take(&mut self, len: usize) -> DecodeResult<&'a [u8]> {
        if self.bytes.len() < len {
            return Err(self.error(format_args!(
                "truncated: needs {len} more bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// Reads a byte.
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a count of elements that take at least `element_bytes_min` bytes each, refusing
    /// a count the remaining bytes cannot hold (so no allocation exceeds the input).
    pub fn count(&mut self, element_bytes_min: usize) -> DecodeResult<usize> {
        let count = self.u32()? as usize;
        if count.saturating_mul(element_bytes_min) > self.bytes.len() {
            return Err(self.error(format_args!(
                "a count of {count} elements does not fit in the {} bytes left",
                self.bytes.len()
            )));
        }
        Ok(count)
    }

    fn string(&mut self) -> DecodeResult<String> {
        let len = self.count(1)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|error| self.error(error))
    }

    fn option_u32(&mut self) -> DecodeResult<Option<u32>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u32()?)),
            tag => Err(self.error(format_args!("option tag {tag}"))),
        }
    }

    /// Reads an optional group id.
    pub fn option_group(&mut self) -> DecodeResult<Option<GroupId>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(GroupId(self.u64()?))),
            tag => Err(self.error(format_args!("option tag {tag}"))),
        }
    }

    fn nodes(&mut self) -> DecodeResult<Vec<NodeId>> {
        let count = self.count(8)?;
        (0..count).map(|_| Ok(NodeId(self.u64()?))).collect()
    }

    /// Reads a map of groups to member nodes (groups in strictly increasing order).
    pub fn groups(&mut self) -> DecodeResult<BTreeMap<GroupId, Vec<NodeId>>> {
        let count = self.count(12)?;
        let mut groups = BTreeMap::new();
        for _ in 0..count {
            let group = GroupId(self.u64()?);
            let members = self.nodes()?;
            if groups.last_key_value().is_some_and(|(last, _)| *last >= group) {
                return Err(self.error(format_args!("group {group} out of order")));
            }
            groups.insert(group, members);
        }
        Ok(groups)
    }

    fn command(&mut self) -> DecodeResult<Command> {
        let command = match self.u8()? {
            REGISTER_NODE_TAG => {
                Command::RegisterNode { node: NodeId(self.u64()?), address: self.string()? }
            }
            ADD_GROUPS_TAG => {
                Command::AddGroups { groups: self.groups()?, max_moves: self.option_u32()? }
            }
            REMOVE_GROUPS_TAG => {
                let count = self.count(8)?;
                let groups =
                    (0..count).map(|_| Ok(GroupId(self.u64()?))).collect::<DecodeResult<_>>()?;
                Command::RemoveGroups { groups, max_moves: self.option_u32()? }
            }
            MOVE_SHARD_TAG => {
                Command::MoveShard { shard: ShardId(self.u32()?), group: GroupId(self.u64()?) }
            }
            REBALANCE_TAG => Command::Rebalance { max_moves: self.option_u32()? },
            RETIRE_GROUP_TAG => Command::RetireGroup { group: GroupId(self.u64()?) },
            REPLACE_NODE_TAG => Command::ReplaceNode {
                node: NodeId(self.u64()?),
                with: NodeId(self.u64()?),
                group: self.option_group()?,
            },
            DECOMMISSION_NODE_TAG => {
                Command::DecommissionNode { node: NodeId(self.u64()?), avoid: BTreeSet::new() }
            }
            DECOMMISSION_NODE_AVOIDING_TAG => {
                let node = NodeId(self.u64()?);
                let listed = self.nodes()?;
                let avoid: BTreeSet<NodeId> = listed.iter().copied().collect();
                // Canonical: strictly increasing, and not empty (that is tag 8's).
                if avoid.is_empty() || !listed.is_sorted() || avoid.len() != listed.len() {
                    return Err(self.error(format_args!("nodes to avoid {listed:?}")));
                }
                Command::DecommissionNode { node, avoid }
            }
            RETIRE_NODE_TAG => Command::RetireNode { node: NodeId(self.u64()?) },
            SET_CONTROLLER_ADDRESS_TAG => Command::SetControllerAddress {
                replica: NodeId(self.u64()?),
                address: self.string()?,
            },
            tag => return Err(self.error(format_args!("unknown command tag {tag}"))),
        };
        Ok(command)
    }

    fn result(&mut self) -> DecodeResult<Result<Outcome>> {
        match self.u8()? {
            OK_TAG => Ok(Ok(self.outcome()?)),
            ERR_TAG => Ok(Err(self.error_value()?)),
            tag => Err(self.error(format_args!("unknown result tag {tag}"))),
        }
    }

    fn outcome(&mut self) -> DecodeResult<Outcome> {
        let outcome = match self.u8()? {
            NODE_REGISTERED_TAG => Outcome::NodeRegistered { node: NodeId(self.u64()?) },
            NODE_ADDRESS_CHANGED_TAG => {
                Outcome::NodeAddressChanged { node: NodeId(self.u64()?), previous: self.string()? }
            }
            CONFIG_CREATED_TAG => {
                let num = ConfigNum(self.u64()?);
                let count = self.count(6)?;
                let mut moves = Vec::with_capacity(count);
                for _ in 0..count {
                    let shard = ShardId(self.u32()?);
                    let from = self.option_group()?;
                    let to = self.option_group()?;
                    moves.push(ShardMove { shard, from, to });
                }
                Outcome::ConfigCreated { num, moves }
            }
            UNCHANGED_TAG => {
                Outcome::Unchanged { num: ConfigNum(self.u64()?), reason: self.string()? }
            }
            GROUP_RETIRED_TAG => Outcome::GroupRetired { group: GroupId(self.u64()?) },
            NODE_DECOMMISSIONING_TAG => {
                let node = NodeId(self.u64()?);
                let num = ConfigNum(self.u64()?);
                let count = self.count(16)?;
                let mut replacements = BTreeMap::new();
                for _ in 0..count {
                    let group = GroupId(self.u64()?);
                    if replacements.last_key_value().is_some_and(|(last, _)| *last >= group) {
                        return Err(self.error(format_args!("group {group} out of order")));
                    }
                    replacements.insert(group, NodeId(self.u64()?));
                }
                Outcome::NodeDecommissioning { node, num, replacements }
            }
            NODE_RETIRED_TAG => Outcome::NodeRetired { node: NodeId(self.u64()?) },
            CONTROLLER_ADDRESS_RECORDED_TAG => {
                Outcome::ControllerAddressRecorded { replica: NodeId(self.u64()?) }
            }
            tag => return Err(self.error(format_args!("unknown outcome tag {tag}"))),
        };
        Ok(outcome)
    }

    fn error_value(&mut self) -> DecodeResult<Error> {
        let error = match self.u8()? {
            INVALID_NODE_ID_TAG => Error::InvalidNodeId,
            INVALID_ADDRESS_TAG => {
                Error::InvalidAddress { address: self.string()?, reason: self.string()? }
            }
            INVALID_GROUP_ID_TAG => Error::InvalidGroupId { group: GroupId(self.u64()?) },
            GROUP_EXISTS_TAG => {
                Error::GroupExists { group: GroupId(self.u64()?), members: self.nodes()? }
            }
            EMPTY_GROUP_TAG => Error::EmptyGroup { group: GroupId(self.u64()?) },
            DUPLICATE_MEMBER_TAG => {
                Error::DuplicateMember { group: GroupId(self.u64()?), node: NodeId(self.u64()?) }
            }
            UNREGISTERED_MEMBER_TAG => {
                Error::UnregisteredMember { group: GroupId(self.u64()?), node: NodeId(self.u64()?) }
            }
            UNKNOWN_GROUP_TAG => Error::UnknownGroup { group: GroupId(self.u64()?) },
            NO_GROUPS_TAG => Error::NoGroups,
            SHARD_OUT_OF_RANGE_TAG => {
                Error::ShardOutOfRange { shard: ShardId(self.u32()?), shard_count: self.u32()? }
            }
            REMOVING_EVERY_GROUP_TAG => Error::RemovingEveryGroup,
            UNKNOWN_CONFIG_TAG => {
                Error::UnknownConfig { num: ConfigNum(self.u64()?), latest: ConfigNum(self.u64()?) }
            }
            STALE_REQUEST_TAG => Error::StaleRequest {
                client: ClientId(self.u64()?),
                seq: self.u64()?,
                latest: self.u64()?,
            },
            MALFORMED_REQUEST_TAG => Error::MalformedRequest { reason: self.string()? },
            GROUP_REMOVED_TAG => {
                Error::GroupRemoved { group: GroupId(self.u64()?), removed: ConfigNum(self.u64()?) }
            }
            GROUP_NOT_REMOVED_TAG => Error::GroupNotRemoved { group: GroupId(self.u64()?) },
            SAME_NODE_TAG => Error::SameNode { node: NodeId(self.u64()?) },
            NODE_NOT_REGISTERED_TAG => Error::NodeNotRegistered { node: NodeId(self.u64()?) },
            NOT_A_MEMBER_TAG => {
                Error::NotAMember { node: NodeId(self.u64()?), group: self.option_group()? }
            }
            ALREADY_A_MEMBER_TAG => {
                Error::AlreadyAMember { group: GroupId(self.u64()?), node: NodeId(self.u64()?) }
            }
            NO_REPLACEMENT_TAG => {
                Error::NoReplacement { group: GroupId(self.u64()?), node: NodeId(self.u64()?) }
            }
            NODE_NOT_ACTIVE_TAG => {
                Error::NodeNotActive { node: NodeId(self.u64()?), state: self.node_state()? }
            }
            NOT_DECOMMISSIONING_TAG => Error::NotDecommissioning { node: NodeId(self.u64()?) },
            NODE_STILL_LISTED_TAG => {
                Error::NodeStillListed { node: NodeId(self.u64()?), group: GroupId(self.u64()?) }
            }
            tag => return Err(self.error(format_args!("unknown error tag {tag}"))),
        };
        Ok(error)
    }

    fn node_state(&mut self) -> DecodeResult<NodeState> {
        match self.u8()? {
            NODE_ACTIVE_TAG => Ok(NodeState::Active),
            NODE_DECOMMISSIONING_STATE_TAG => Ok(NodeState::Decommissioning),
            NODE_RETIRED_STATE_TAG => Ok(NodeState::Retired),
            tag => Err(self.error(format_args!("unknown node state tag {tag}"))),
        }
    }

    /// Checks that every byte was read.
    pub fn finish(self) -> DecodeResult<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.error(format_args!("{} trailing bytes", self.bytes.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_record_round_trips_and_garbage_is_refused() {
        let session = Session {
            seq: 9,
            result: Err(Error::UnknownGroup { group: GroupId(4) }),
            last_index: LogIndex(77),
        };
        let bytes = encode_session(&session);
        assert_eq!(decode_session(&bytes), Ok(session));
        for len in 0..bytes.len() {
            assert!(decode_session(&bytes[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(decode_session(&longer).is_err(), "a trailing byte is refused");
        let mut other_version = bytes.to_vec();
        other_version[0] = FORMAT_VERSION + 1;
        assert!(decode_session(&other_version).is_err());
    }

    /// The tags of `ReplaceNode` and its refusals are part of the stored format: pinned.
    #[test]
    fn a_replace_node_request_and_its_refusals_keep_their_tags() {
        let request = Request {
            client: ClientId(1),
            seq: 2,
            command: Command::ReplaceNode {
                node: NodeId(3),
                with: NodeId(5),
                group: Some(GroupId(7)),
            },
        };
        let bytes = encode_request(&request);
        let mut expected = vec![FORMAT_VERSION];
        for value in [1u64, 2] {
            expected.extend_from_slice(&value.to_be_bytes());
        }
        expected.push(7);
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.push(1);
        expected.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert_eq!(decode_request(&bytes), Ok(request));
        let refusals = [
            (Error::SameNode { node: NodeId(3) }, SAME_NODE_TAG, 17),
            (Error::NodeNotRegistered { node: NodeId(3) }, NODE_NOT_REGISTERED_TAG, 18),
            (Error::NotAMember { node: NodeId(3), group: None }, NOT_A_MEMBER_TAG, 19),
            (
                Error::AlreadyAMember { group: GroupId(1), node: NodeId(3) },
                ALREADY_A_MEMBER_TAG,
                20,
            ),
        ];
        for (error, tag, pinned) in refusals {
            assert_eq!(tag, pinned, "{error:?}");
            let bytes = encode_result(&Err(error.clone()));
            assert_eq!(&bytes[..3], &[FORMAT_VERSION, ERR_TAG, pinned], "{error:?}");
            assert_eq!(decode_result(&bytes), Ok(Err(error)));
        }
    }

    /// The tags of `DecommissionNode`, `RetireNode`, their outcomes and refusals and of the
    /// node states are part of the stored format: pinned.
    #[test]
    fn decommission_and_retire_keep_their_tags() {
        let avoid = BTreeSet::from([NodeId(4), NodeId(6)]);
        let commands = [
            (
                Command::DecommissionNode { node: NodeId(3), avoid: BTreeSet::new() },
                DECOMMISSION_NODE_TAG,
                8,
            ),
            (Command::RetireNode { node: NodeId(3) }, RETIRE_NODE_TAG, 9),
            (
                Command::DecommissionNode { node: NodeId(3), avoid },
                DECOMMISSION_NODE_AVOIDING_TAG,
                10,
            ),
        ];
        for (command, tag, pinned) in commands {
            assert_eq!(tag, pinned, "{command:?}");
            let request = Request { client: ClientId(1), seq: 2, command };
            let bytes = encode_request(&request);
            assert_eq!(bytes[17], pinned, "{request:?}");
            assert_eq!(decode_request(&bytes), Ok(request));
        }
        let outcomes = [
            (
                Outcome::NodeDecommissioning {
                    node: NodeId(3),
                    num: ConfigNum(4),
                    replacements: BTreeMap::from([(GroupId(1), NodeId(5))]),
                },
                NODE_DECOMMISSIONING_TAG,
                6,
            ),
            (Outcome::NodeRetired { node: NodeId(3) }, NODE_RETIRED_TAG, 7),
        ];
        for (outcome, tag, pinned) in outcomes {
            assert_eq!(tag, pinned, "{outcome:?}");
            let bytes = encode_result(&Ok(outcome.clone()));
            assert_eq!(&bytes[..3], &[FORMAT_VERSION, OK_TAG, pinned], "{outcome:?}");
            assert_eq!(decode_result(&bytes), Ok(Ok(outcome)));
        }
        let refusals = [
            (Error::NoReplacement { group: GroupId(1), node: NodeId(3) }, NO_REPLACEMENT_TAG, 21),
            (
                Error::NodeNotActive { node: NodeId(3), state: NodeState::Retired },
                NODE_NOT_ACTIVE_TAG,
                22,
            ),
            (Error::NotDecommissioning { node: NodeId(3) }, NOT_DECOMMISSIONING_TAG, 23),
            (
                Error::NodeStillListed { node: NodeId(3), group: GroupId(1) },
                NODE_STILL_LISTED_TAG,
                24,
            ),
        ];
        for (error, tag, pinned) in refusals {
            assert_eq!(tag, pinned, "{error:?}");
            let bytes = encode_result(&Err(error.clone()));
            assert_eq!(&bytes[..3], &[FORMAT_VERSION, ERR_TAG, pinned], "{error:?}");
            assert_eq!(decode_result(&bytes), Ok(Err(error)));
        }
        for (state, pinned) in
            [(NodeState::Active, 0), (NodeState::Decommissioning, 1), (NodeState::Retired, 2)]
        {
            let bytes = encode_node_state(state);
            assert_eq!(bytes.as_ref(), &[FORMAT_VERSION, pinned]);
            assert_eq!(decode_node_state(&bytes), Ok(state));
        }
        assert!(decode_node_state(&[FORMAT_VERSION, 3]).is_err(), "an unknown state is refused");
    }

    /// `SetControllerAddress` and its outcome keep their tags (the stored format): pinned.
    #[test]
    fn set_controller_address_keeps_its_tags() {
        assert_eq!(SET_CONTROLLER_ADDRESS_TAG, 11);
        let command =
            Command::SetControllerAddress { replica: NodeId(4), address: "h:7004".into() };
        let request = Request { client: ClientId(1), seq: 2, command };
        let bytes = encode_request(&request);
        assert_eq!(bytes[17], 11);
        assert_eq!(&bytes[18..26], &4u64.to_be_bytes());
        assert_eq!(decode_request(&bytes), Ok(request));
        assert_eq!(CONTROLLER_ADDRESS_RECORDED_TAG, 8);
        let outcome = Outcome::ControllerAddressRecorded { replica: NodeId(4) };
        let bytes = encode_result(&Ok(outcome.clone()));
        assert_eq!(&bytes[..3], &[FORMAT_VERSION, OK_TAG, 8]);
        assert_eq!(decode_result(&bytes), Ok(Ok(outcome)));
    }

    /// A decommission's nodes to avoid are written in one way only: strictly increasing and
    /// not empty (no nodes to avoid is tag 8's encoding); any other list is refused.
    #[test]
    fn nodes_to_avoid_that_are_not_canonical_are_refused() {
        let encoded = |nodes: &[u64]| {
            let mut bytes = vec![FORMAT_VERSION];
            bytes.extend_from_slice(&1u64.to_be_bytes());
            bytes.extend_from_slice(&2u64.to_be_bytes());
            bytes.push(DECOMMISSION_NODE_AVOIDING_TAG);
            bytes.extend_from_slice(&3u64.to_be_bytes());
            bytes.extend_from_slice(&(nodes.len() as u32).to_be_bytes());
            for node in nodes {
                bytes.extend_from_slice(&node.to_be_bytes());
            }
            bytes
        };
        let avoid = BTreeSet::from([NodeId(4), NodeId(6)]);
        let command = Command::DecommissionNode { node: NodeId(3), avoid };
        let request = Request { client: ClientId(1), seq: 2, command };
        assert_eq!(encode_request(&request).as_ref(), encoded(&[4, 6]).as_slice());
        for nodes in [&[][..], &[6, 4], &[4, 4]] {
            assert!(decode_request(&encoded(nodes)).is_err(), "{nodes:?}");
        }
    }

    #[test]
    fn node_and_meta_records_round_trip() {
        assert_eq!(
            decode_node_address(&encode_node_address("[::1]:7000")),
            Ok("[::1]:7000".into())
        );
        assert_eq!(decode_meta(&encode_meta(64, 10_000)), Ok((64, 10_000)));
        assert!(decode_meta(&encode_meta(0, 10)).is_err(), "zero shards are refused");
        assert!(decode_meta(&encode_meta(10, 0)).is_err(), "zero sessions are refused");
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let error = decode_configuration(&bytes).unwrap_err();
        assert!(error.0.contains("does not fit"), "{error}");
    }

    #[test]
    fn groups_out_of_order_are_refused() {
        let mut out = versioned();
        out.put_u64(1);
        put_len(&mut out, 0);
        put_len(&mut out, 2);
        for group in [5u64, 3] {
            out.put_u64(group);
            put_nodes(&mut out, &[NodeId(1)]);
        }
        let error = decode_configuration(&out).unwrap_err();
        assert!(error.0.contains("out of order"), "{error}");
    }
}
