//! Conversions between the Raft core's messages ([`mosaic_raft::Message`]) and their wire form
//! ([`pb::RaftMessage`]).
//!
//! Outgoing, [`message_to_pb`] cannot fail: every message has a wire form. Incoming,
//! [`message_from_pb`] accepts exactly the wire messages that map onto a message the core can
//! step, and answers anything else with a [`ConvertError`] that names the offending field. Bytes
//! from the network never cause a panic.
//!
//! The wire allows what the core's types do not, so these are checked on the way in:
//! - a field that must be set is absent: the body, an InstallSnapshot's snapshot, a snapshot's
//!   metadata, the metadata's membership (a body of a kind this build does not know decodes as
//!   an absent body);
//! - node id 0 as sender, receiver or member;
//! - an entry kind that is unspecified or unknown to this build;
//! - entries of an append whose indexes do not run `prev_index + 1`, `prev_index + 2`, ... (the
//!   core relies on this to find conflicts; it also rules out entry index 0);
//! - a membership that names a node twice, or as both voter and learner (the invariant of
//!   [`ConfState`]).
//!
//! Invariant: for every message that passes these checks, and so for every message the core
//! sends, `message_from_pb(message_to_pb(&message)) == Ok(message)`.
//!
//! Payloads (entry data, snapshot data, read contexts) are [`bytes::Bytes`] on both sides:
//! [`message_to_pb`] shares them and [`message_from_pb`] moves them; neither copies them.

use std::collections::BTreeSet;

use mosaic_raft::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, RejectHint, Snapshot,
    SnapshotMetadata, Term,
};

use crate::pb;
use crate::pb::raft_message::Body;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, ConvertError>;

/// Why a wire message does not map onto the type it carries: a Raft message (this module) or a
/// controller request, outcome, configuration or query response ([`crate::controller`]).
/// Fields are named as in the .proto files (`Message.field`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A field that must be set is absent.
    #[error("missing field {field}")]
    MissingField {
        /// The absent field.
        field: &'static str,
    },
    /// A field that names a node holds 0, which is never a valid node.
    #[error("{field} holds node id 0, which is never a valid node")]
    ZeroNodeId {
        /// The field that holds 0.
        field: &'static str,
    },
    /// An entry of an append has kind `ENTRY_KIND_UNSPECIFIED` (its kind was not set).
    #[error("entry {position} of the append has no kind")]
    MissingEntryKind {
        /// The entry's position in `Append.entries`, from 0.
        position: usize,
    },
    /// An entry of an append has a kind this build does not know.
    #[error("entry {position} of the append has unknown kind {value}")]
    UnknownEntryKind {
        /// The entry's position in `Append.entries`, from 0.
        position: usize,
        /// The value of `Entry.kind`.
        value: i32,
    },
    /// An entry of an append is not at the index its position implies
    /// (`prev_index + 1 + position`); an entry without an index has index 0.
    #[error(
        "entry {position} of the append after prev_index {prev_index} has index {index}; \
         entries must follow prev_index one index apart"
    )]
    EntryIndexOutOfSequence {
        /// `Append.prev_index`.
        prev_index: u64,
        /// The entry's position in `Append.entries`, from 0.
        position: usize,
        /// The entry's `Entry.index`.
        index: u64,
    },
    /// A membership names the same node twice in one list.
    #[error("node {node} appears more than once in {field}")]
    DuplicateNode {
        /// The list (`ConfState.voters` or `ConfState.learners`).
        field: &'static str,
        /// The repeated node.
        node: u64,
    },
    /// A membership names a node as both voter and learner.
    #[error("node {node} is both a voter and a learner")]
    VoterAndLearner {
        /// The node in both lists.
        node: u64,
    },
    /// A field that must be at least 1 holds 0 (a client id, a sequence number, the number of a
    /// created configuration).
    #[error("{field} is 0; it must be at least 1")]
    ZeroField {
        /// The field that holds 0.
        field: &'static str,
    },
    /// A field that names a group holds a reserved group id: `u64::MAX` always, and 0 where 0
    /// does not mean "no group".
    #[error(
        "{field} holds group id {group}, which is reserved; group ids run from 1 to {}",
        u64::MAX - 1
    )]
    ReservedGroupId {
        /// The field.
        field: &'static str,
        /// The group id it holds.
        group: u64,
    },
    /// A list of groups names the same group twice.
    #[error("group {group} appears more than once in {field}")]
    DuplicateGroup {
        /// The list.
        field: &'static str,
        /// The repeated group.
        group: u64,
    },
    /// A list that must be in strictly increasing order (of group ids, node ids or shards) is
    /// not: it repeats a value or goes back.
    #[error("{field} lists {value} after {previous}; it must be in strictly increasing order")]
    OutOfOrder {
        /// The list.
        field: &'static str,
        /// The value before `value`.
        previous: u64,
        /// The value that is not greater than `previous`.
        value: u64,
    },
    /// A group of a configuration has no members.
    #[error("group {group} in {field} has no members")]
    EmptyGroup {
        /// The list of groups.
        field: &'static str,
        /// The group.
        group: u64,
    },
    /// A group of a configuration names the same member twice.
    #[error("node {node} appears more than once among the members of group {group} in {field}")]
    DuplicateMember {
        /// The list of groups.
        field: &'static str,
        /// The group.
        group: u64,
        /// The repeated member.
        node: u64,
    },
    /// A configuration gives a shard to a group it does not list.
    #[error(
        "Configuration.shards gives shard {shard} to group {group}, which is not in \
         Configuration.groups"
    )]
    UnknownOwner {
        /// The shard (its position in `Configuration.shards`).
        shard: usize,
        /// The owner named.
        group: u64,
    },
    /// A group's life does not hold together.
    #[error(
        "QueryResponse.groups: group {group} is added at 0, removed no later than added, \
         retired without being removed, or has its members changed no later than added or \
         not before removed"
    )]
    InvalidGroupLife {
        /// The group.
        group: u64,
    },
    /// A configuration has no shards (a cluster has at least one).
    #[error("Configuration.shards is empty; a cluster has at least one shard")]
    NoShards,
    /// A shard move whose owner is the same before and after.
    #[error("the move of shard {shard} has the same owner before and after: {group} (0 is none)")]
    UnchangedOwner {
        /// The shard.
        shard: u32,
        /// The owner on both sides; 0 for none.
        group: u64,
    },
    /// A query response carries a configuration newer than the latest one it reports.
    #[error("QueryResponse.config is configuration {num}, past the latest ({latest})")]
    ConfigPastLatest {
        /// `Configuration.num`.
        num: u64,
        /// `QueryResponse.latest_num`.
        latest: u64,
    },
}

/// Returns the wire form of a Raft message. Payloads are shared with `message`, not copied.
#[must_use]
pub fn message_to_pb(message: &Message) -> pb::RaftMessage {
    pb::RaftMessage {
        from: message.from.0,
        to: message.to.0,
        term: message.term.0,
        body: Some(body_to_pb(&message.body)),
    }
}

/// Returns the Raft message a wire message carries. Payloads move into the result without a
/// copy.
///
/// # Errors
/// A [`ConvertError`] naming the first field that does not map onto a valid
/// [`mosaic_raft::Message`]: see the [module documentation](self) for what is checked.
pub fn message_from_pb(message: pb::RaftMessage) -> Result<Message> {
    let from = node_id_from_pb(message.from, "RaftMessage.from")?;
    let to = node_id_from_pb(message.to, "RaftMessage.to")?;
    let body = message.body.ok_or(ConvertError::MissingField { field: "RaftMessage.body" })?;
    Ok(Message { from, to, term: Term(message.term), body: body_from_pb(body)? })
}

impl From<&Message> for pb::RaftMessage {
    fn from(message: &Message) -> Self {
        message_to_pb(message)
    }
}

impl TryFrom<pb::RaftMessage> for Message {
    type Error = ConvertError;

    /// As [`message_from_pb`].
    fn try_from(message: pb::RaftMessage) -> Result<Self> {
        message_from_pb(message)
    }
}

fn body_to_pb(body: &MessageBody) -> Body {
    match body {
        &MessageBody::RequestVote { pre_vote, last_index, last_term, leader_transfer } => {
            Body::RequestVote(pb::RequestVote {
                pre_vote,
                last_index: last_index.0,
                last_term: last_term.0,
                leader_transfer,
            })
        }
        &MessageBody::RequestVoteResponse { pre_vote, granted } => {
            Body::RequestVoteResponse(pb::RequestVoteResponse { pre_vote, granted })
        }
        MessageBody::Append { prev_index, prev_term, entries, commit } => {
            Body::Append(pb::Append {
                prev_index: prev_index.0,
                prev_term: prev_term.0,
                entries: entries.iter().map(entry_to_pb).collect(),
                commit: commit.0,
            })
        }
        &MessageBody::AppendResponse { index, reject } => {
            Body::AppendResponse(pb::AppendResponse {
                index: index.0,
                reject: reject
                    .map(|hint| pb::RejectHint { index: hint.index.0, term: hint.term.0 }),
            })
        }
        &MessageBody::Heartbeat { commit, round, quiesce } => {
            Body::Heartbeat(pb::Heartbeat { commit: commit.0, round, quiesce })
        }
        &MessageBody::HeartbeatResponse { round, applied } => {
            Body::HeartbeatResponse(pb::HeartbeatResponse { round, applied: applied.0 })
        }
        MessageBody::InstallSnapshot { snapshot } => {
            Body::InstallSnapshot(pb::InstallSnapshot { snapshot: Some(snapshot_to_pb(snapshot)) })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
        MessageBody::ReadIndex { context } => {
            Body::ReadIndex(pb::ReadIndex { context: context.clone() })
        }
        MessageBody::ReadIndexResponse { index, context } => {
            Body::ReadIndexResponse(pb::ReadIndexResponse {
                index: index.map(|index| index.0),
                context: context.clone(),
            })
        }
    }
}

fn body_from_pb(body: Body) -> Result<MessageBody> {
    Ok(match body {
        Body::RequestVote(vote) => MessageBody::RequestVote {
            pre_vote: vote.pre_vote,
            last_index: LogIndex(vote.last_index),
            last_term: Term(vote.last_term),
            leader_transfer: vote.leader_transfer,
        },
        Body::RequestVoteResponse(response) => MessageBody::RequestVoteResponse {
            pre_vote: response.pre_vote,
            granted: response.granted,
        },
        Body::Append(append) => {
            let prev_index = LogIndex(append.prev_index);
            MessageBody::Append {
                prev_index,
                prev_term: Term(append.prev_term),
                entries: entries_from_pb(prev_index, append.entries)?,
                commit: LogIndex(append.commit),
            }
        }
        Body::AppendResponse(response) => MessageBody::AppendResponse {
            index: LogIndex(response.index),
            reject: response
                .reject
                .map(|hint| RejectHint { index: LogIndex(hint.index), term: Term(hint.term) }),
        },
        Body::Heartbeat(heartbeat) => MessageBody::Heartbeat {
            commit: LogIndex(heartbeat.commit),
            round: heartbeat.round,
            quiesce: heartbeat.quiesce,
        },
        Body::HeartbeatResponse(response) => MessageBody::HeartbeatResponse {
            round: response.round,
            applied: LogIndex(response.applied),
        },
        Body::InstallSnapshot(install) => {
            let snapshot = install
                .snapshot
                .ok_or(ConvertError::MissingField { field: "InstallSnapshot.snapshot" })?;
            MessageBody::InstallSnapshot { snapshot: snapshot_from_pb(snapshot)? }
        }
        Body::TimeoutNow(pb::TimeoutNow {}) => MessageBody::TimeoutNow,
        Body::ReadIndex(read) => MessageBody::ReadIndex { context: read.context },
        Body::ReadIndexResponse(response) => MessageBody::ReadIndexResponse {
            index: response.index.map(LogIndex),
            context: response.context,
        },
    })
}

fn entry_to_pb(entry: &Entry) -> pb::Entry {
    let kind = match entry.kind {
        EntryKind::Normal => pb::EntryKind::Normal,
        EntryKind::ConfChange => pb::EntryKind::ConfChange,
    };
    pb::Entry {
        term: entry.term.0,
        index: entry.index.0,
        kind: kind.into(),
        data: entry.data.clone(),
    }
}

/// Converts the entries of an append that follow `prev_index`, checking that they sit at
/// `prev_index + 1`, `prev_index + 2`, ... in order.
fn entries_from_pb(prev_index: LogIndex, entries: Vec<pb::Entry>) -> Result<Vec<Entry>> {
    entries
        .into_iter()
        .enumerate()
        .map(|(position, entry)| {
            let expected_index = u64::try_from(position)
                .ok()
                .and_then(|offset| prev_index.0.checked_add(offset))
                .and_then(|index| index.checked_add(1));
            if expected_index != Some(entry.index) {
                return Err(ConvertError::EntryIndexOutOfSequence {
                    prev_index: prev_index.0,
                    position,
                    index: entry.index,
                });
            }
            let kind = match pb::EntryKind::try_from(entry.kind) {
                Ok(pb::EntryKind::Normal) => EntryKind::Normal,
                Ok(pb::EntryKind::ConfChange) => EntryKind::ConfChange,
                Ok(pb::EntryKind::Unspecified) => {
                    return Err(ConvertError::MissingEntryKind { position });
                }
                Err(_) => {
                    return Err(ConvertError::UnknownEntryKind { position, value: entry.kind });
                }
            };
            Ok(Entry {
                term: Term(entry.term),
                index: LogIndex(entry.index),
                kind,
                data: entry.data,
            })
        })
        .collect()
}

fn snapshot_to_pb(snapshot: &Snapshot) -> pb::Snapshot {
    let metadata = &snapshot.metadata;
    let conf_state = &metadata.conf_state;
    pb::Snapshot {
        metadata: Some(pb::SnapshotMetadata {
            index: metadata.index.0,
            term: metadata.term.0,
            conf_state: Some(pb::ConfState {
                voters: conf_state.voters.iter().map(|node| node.0).collect(),
                learners: conf_state.learners.iter().map(|node| node.0).collect(),
            }),
        }),
        data: snapshot.data.clone(),
    }
}

fn snapshot_from_pb(snapshot: pb::Snapshot) -> Result<Snapshot> {
    let metadata =
        snapshot.metadata.ok_or(ConvertError::MissingField { field: "Snapshot.metadata" })?;
    let conf_state = metadata
        .conf_state
        .ok_or(ConvertError::MissingField { field: "SnapshotMetadata.conf_state" })?;
    Ok(Snapshot {
        metadata: SnapshotMetadata {
            index: LogIndex(metadata.index),
            term: Term(metadata.term),
            conf_state: conf_state_from_pb(conf_state)?,
        },
        data: snapshot.data,
    })
}

fn conf_state_from_pb(conf_state: pb::ConfState) -> Result<ConfState> {
    let voters = node_set_from_pb(conf_state.voters, "ConfState.voters")?;
    let learners = node_set_from_pb(conf_state.learners, "ConfState.learners")?;
    if let Some(node) = voters.intersection(&learners).next() {
        return Err(ConvertError::VoterAndLearner { node: node.0 });
    }
    Ok(ConfState { voters, learners })
}

/// Converts a list of node ids in which each must be a valid node and appear once.
fn node_set_from_pb(ids: Vec<u64>, field: &'static str) -> Result<BTreeSet<NodeId>> {
    let mut nodes = BTreeSet::new();
    for id in ids {
        if !nodes.insert(node_id_from_pb(id, field)?) {
            return Err(ConvertError::DuplicateNode { field, node: id });
        }
    }
    Ok(nodes)
}

/// Converts a field that names a node, which must not be 0.
pub(crate) fn node_id_from_pb(id: u64, field: &'static str) -> Result<NodeId> {
    if id == 0 {
        return Err(ConvertError::ZeroNodeId { field });
    }
    Ok(NodeId(id))
}
