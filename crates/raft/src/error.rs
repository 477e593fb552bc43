//! The errors the Raft core returns. Variants that a caller acts on carry the facts it needs.

use crate::types::{LogIndex, NodeId, Term};

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An error from the Raft core or from the [`crate::Storage`] beneath it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Only the leader accepts proposals, reads and transfers; `leader` is the hint, if known.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader of the current term as far as this node knows.
        leader: Option<NodeId>,
    },
    /// The leader's uncommitted log is at its limit; try again once entries commit.
    #[error("uncommitted log is full ({uncommitted_bytes} of {limit_bytes} bytes)")]
    UncommittedLogFull {
        /// Bytes of entries appended but not yet committed.
        uncommitted_bytes: u64,
        /// The configured bound (`Config::uncommitted_bytes_max`).
        limit_bytes: u64,
    },
    /// Too many reads wait for leadership confirmation; try again shortly.
    #[error("too many pending reads (limit {limit})")]
    TooManyPendingReads {
        /// The configured bound (`Config::pending_reads_max`).
        limit: usize,
    },
    /// A lease read cannot be served; use a ReadIndex read instead.
    #[error("lease read unavailable: {reason}")]
    LeaseUnavailable {
        /// Why (lease expired, lease reads disabled, ...).
        reason: String,
    },
    /// A leadership transfer is in progress; proposals wait until it ends.
    #[error("leadership transfer to {target} in progress")]
    TransferInProgress {
        /// The node leadership is moving to.
        target: NodeId,
    },
    /// A membership change cannot be proposed now (one is pending, or the leader's term has no
    /// committed entry yet, or the change itself is not valid).
    #[error("membership change refused: {reason}")]
    ConfChangeRefused {
        /// Why, in words.
        reason: String,
    },
    /// Bytes that should hold an encoded membership change do not.
    #[error("invalid membership change encoding: {reason}")]
    InvalidConfChange {
        /// The offending bytes.
        reason: String,
    },
    /// The configuration is not valid.
    #[error("invalid raft config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A step was given a message for another node.
    #[error("message for node {to} stepped into node {node}")]
    MisroutedMessage {
        /// This node.
        node: NodeId,
        /// The message's destination.
        to: NodeId,
    },
    /// The storage holds no entries below this index any more (they were compacted).
    #[error("log compacted: entries below {first_index} are gone")]
    Compacted {
        /// The first index still available.
        first_index: LogIndex,
    },
    /// The requested index is past the end of the log.
    #[error("index {index} is unavailable (last index {last_index})")]
    Unavailable {
        /// The requested index.
        index: LogIndex,
        /// The last index in the log.
        last_index: LogIndex,
    },
    /// The snapshot is being built; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// A snapshot older than what is already there.
    #[error("snapshot at {index}@{term} is out of date")]
    SnapshotOutOfDate {
        /// The snapshot's index.
        index: LogIndex,
        /// The snapshot's term.
        term: Term,
    },
    /// The storage failed (IO error, corruption): the message says what and where.
    #[error("storage: {0}")]
    Storage(String),
}
