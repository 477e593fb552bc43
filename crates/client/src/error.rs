//! The errors a client operation ends with, and what a failed write's status is.
//!
//! A write that got an explicit success is `Ok`. Every error says, through
//! [`ClientError::outcome`], whether the write it ended can have been applied: callers retry a
//! [`WriteOutcome::NotApplied`] write freely, and check the key before retrying a
//! [`WriteOutcome::Unknown`] one (a retry carries a new sequence number, so it would apply
//! again). The same holds for the commands of a [`crate::ControllerClient`]: check the
//! controller's state (a query) before repeating a command whose outcome is unknown.
//!
//! [`Progress`] is what one operation has been through, from which its error is built.

use std::fmt;
use std::time::Duration;

use mosaic_controller::ConfigNum;
use mosaic_engine::{GroupId, ShardId};
use mosaic_raft::NodeId;

use crate::classify::Failure;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Whether a write that did not succeed can have been applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteOutcome {
    /// Certainly not applied: every attempt was refused before it entered a Raft log, or was
    /// never sent. Always the outcome of a failed read.
    NotApplied,
    /// Perhaps applied: some attempt was sent and no answer said it was refused (the connection
    /// broke, the attempt timed out, or the node said the outcome is unknown).
    Unknown,
}

impl fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotApplied => "not applied",
            Self::Unknown => "may have been applied",
        })
    }
}

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A node or controller refused the request as malformed (an empty or oversized key, an
    /// oversized value, a command that does not decode, ...). Retrying the same request will
    /// not help.
    #[error("the request is invalid: {reason}")]
    InvalidArgument {
        /// What the node said is wrong.
        reason: String,
        /// Whether an earlier attempt of the same write may have been applied (only possible if
        /// nodes disagree about what is valid).
        outcome: WriteOutcome,
    },
    /// A node found that the key is not in the shard this client computed: the client's shard
    /// count (or hash) is not the cluster's, a bug or a wrong `--shard-count`. Nothing was read
    /// or written by that request; retrying it will not help.
    #[error(
        "the key is in shard {key_shard} of the cluster's {shard_count}, but this client put it \
         in shard {named}: the client's shard count is not the cluster's"
    )]
    WrongShard {
        /// The shard this client computed.
        named: ShardId,
        /// The shard the node computed.
        key_shard: ShardId,
        /// The cluster's shard count.
        shard_count: u32,
        /// Whether an earlier attempt of the write may have been applied.
        outcome: WriteOutcome,
    },
    /// The node's disk is nearly full: it takes no writes until space is freed (reads are
    /// served). Nothing was applied by that request; retry once the operator freed space.
    #[error(
        "the node's disk is nearly full ({available_bytes} bytes free, below its reserve of \
         {reserve_bytes}): it takes no writes until space is freed"
    )]
    StorageFull {
        /// Bytes free in the node's data directory.
        available_bytes: u64,
        /// The reserve the node keeps free.
        reserve_bytes: u64,
        /// Whether an earlier attempt of the write may have been applied.
        outcome: WriteOutcome,
    },
    /// A watch asked for changes the replica no longer keeps (a revision too old, or one from
    /// before the replica's state was last replaced): read afresh, then watch from that read's
    /// revision.
    #[error(
        "the changes asked for{} are compacted: the oldest revision that can be watched from is \
         {oldest_revision}; read afresh and watch from that read's revision",
        shard.map(|shard| format!(" of shard {shard}")).unwrap_or_default()
    )]
    Compacted {
        /// The shard, when known.
        shard: Option<ShardId>,
        /// The oldest revision a watch could start from at the replica that refused.
        oldest_revision: u64,
    },
    /// A node or controller refused who this client is: it requires mutual TLS and the
    /// client connected without it, or the client's certificate lacks the role the request
    /// needs. Nothing was applied by that request; retrying it will not help.
    #[error("access denied: {message}")]
    AccessDenied {
        /// What the node said is missing.
        message: String,
        /// Whether an earlier attempt of the write may have been applied.
        outcome: WriteOutcome,
    },
    /// The write's session in its shard was evicted (the group keeps a bounded number of
    /// sessions per shard) after an earlier attempt of the write was sent that may have been
    /// applied: the node refused to apply it again, so its outcome is unknown (it was not
    /// applied twice). Always [`WriteOutcome::Unknown`].
    #[error("the write's session expired after an attempt that may have been applied")]
    SessionExpired {
        /// Whether the write may have been applied.
        outcome: WriteOutcome,
    },
    /// The operation's deadline ([`crate::ClientOptions::timeout`]) passed before any node
    /// (or controller replica) gave a final answer.
    #[error(
        "no final answer within {timeout:?} after {attempts} attempt(s) (last failure: \
         {last_failure})"
    )]
    Timeout {
        /// Whether the write may have been applied.
        outcome: WriteOutcome,
        /// The deadline the operation had.
        timeout: Duration,
        /// How many requests were sent or tried.
        attempts: u32,
        /// What went wrong with the last attempt, for people.
        last_failure: String,
    },
    /// No usable placement: the routing source failed before the first request
    /// ([`RoutingError::Source`]), or gave a placement that breaks an invariant.
    #[error("cannot route: {reason}")]
    Routing {
        /// What is wrong.
        reason: RoutingError,
    },
    /// The key's shard is owned by no group, in the placement the client had and in the one
    /// its routing source gave when asked again: the cluster has no group to serve it yet
    /// (configuration 0), or no longer has one. Retrying helps once a group owns the shard.
    #[error(
        "shard {shard} is not assigned to any group in configuration {config_num}: the cluster \
         has no group to serve it yet"
    )]
    ShardUnassigned {
        /// The key's shard.
        shard: ShardId,
        /// The configuration that leaves it unassigned.
        config_num: u64,
        /// Whether the write may have been applied (by an earlier attempt, when the shard was
        /// still assigned).
        outcome: WriteOutcome,
    },
    /// The controller has no configuration of the number a query asked for (it is past the
    /// latest).
    #[error("the controller has no configuration {num}: {message}")]
    UnknownConfig {
        /// The number asked for.
        num: ConfigNum,
        /// What the controller said.
        message: String,
    },
    /// A controller answered with a response that does not decode (a bug, or a controller of
    /// an incompatible version). Retrying will not help.
    #[error("malformed response from the controller: {reason}")]
    MalformedResponse {
        /// What is wrong with the response.
        reason: String,
        /// Whether the command may have been applied: [`WriteOutcome::Unknown`] for a command
        /// (the controller handled it, and its answer was lost), [`WriteOutcome::NotApplied`]
        /// for a query.
        outcome: WriteOutcome,
    },
    /// The list of controller addresses is empty, names an address twice, or holds an address
    /// that is not `host:port`.
    #[error("invalid controller addresses: {reason}")]
    InvalidControllerAddresses {
        /// What is wrong with the list.
        reason: String,
    },
    /// The [`crate::ClientOptions`] are inconsistent.
    #[error("invalid client options: {reason}")]
    InvalidOptions {
        /// What is wrong with them.
        reason: String,
    },
    /// The operating system's random number generator failed, so no session id could be drawn.
    #[error("cannot draw a client session id: {reason}")]
    Randomness {
        /// The error the operating system gave.
        reason: String,
    },
}

impl ClientError {
    /// Whether the write this error ended can have been applied. For reads, and for errors
    /// raised before any request was sent, always [`WriteOutcome::NotApplied`].
    #[must_use]
    pub fn outcome(&self) -> WriteOutcome {
        match self {
            Self::InvalidArgument { outcome, .. }
            | Self::WrongShard { outcome, .. }
            | Self::StorageFull { outcome, .. }
            | Self::AccessDenied { outcome, .. }
            | Self::Timeout { outcome, .. }
            | Self::ShardUnassigned { outcome, .. }
            | Self::SessionExpired { outcome }
            | Self::MalformedResponse { outcome, .. } => *outcome,
            Self::Routing { .. }
            | Self::Compacted { .. }
            | Self::UnknownConfig { .. }
            | Self::InvalidControllerAddresses { .. }
            | Self::InvalidOptions { .. }
            | Self::Randomness { .. } => WriteOutcome::NotApplied,
        }
    }
}

/// What one operation has been through so far: the error it ends with is built from it.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Whether the operation writes (only a write can have been applied).
    is_write: bool,
    /// How many attempts were sent or tried.
    pub(crate) attempts: u32,
    /// Whether some attempt of the write may have been applied.
    may_have_applied: bool,
    /// The last failure and where it happened, for people.
    last_failure: String,
}

impl Progress {
    /// An operation that has made no attempt yet.
    pub(crate) fn new(is_write: bool) -> Self {
        Self {
            is_write,
            attempts: 0,
            may_have_applied: false,
            last_failure: String::from("no attempt was made"),
        }
    }

    /// Records that an attempt at `place` (a node, a replica) failed with `failure`.
    pub(crate) fn record_failure(&mut self, failure: &Failure, place: &str) {
        if self.is_write && failure.may_have_applied() {
            self.may_have_applied = true;
        }
        self.last_failure = format!("{place}: {failure}");
    }

    /// Whether an earlier attempt of the write may have been applied.
    pub(crate) fn may_have_applied(&self) -> bool {
        self.may_have_applied
    }

    /// Whether the write may have been applied so far.
    pub(crate) fn outcome(&self) -> WriteOutcome {
        if self.may_have_applied { WriteOutcome::Unknown } else { WriteOutcome::NotApplied }
    }

    /// The error of an operation whose deadline, `timeout` after its start, has passed.
    pub(crate) fn timed_out(&self, timeout: Duration) -> ClientError {
        ClientError::Timeout {
            outcome: self.outcome(),
            timeout,
            attempts: self.attempts,
            last_failure: self.last_failure.clone(),
        }
    }

    /// The error of an operation that ends on `failure`, a failure retrying cannot help
    /// ([`crate::classify::Action::Fail`]).
    pub(crate) fn failed(&self, failure: Failure) -> ClientError {
        match failure {
            Failure::UnknownConfig { num, message } => ClientError::UnknownConfig { num, message },
            Failure::InvalidArgument { reason } => {
                ClientError::InvalidArgument { reason, outcome: self.outcome() }
            }
            Failure::SessionExpired => ClientError::SessionExpired { outcome: self.outcome() },
            Failure::AccessDenied { message } => {
                ClientError::AccessDenied { message, outcome: self.outcome() }
            }
            Failure::WrongShard { named, key_shard, shard_count } => {
                ClientError::WrongShard { named, key_shard, shard_count, outcome: self.outcome() }
            }
            Failure::StorageFull { available_bytes, reserve_bytes } => {
                ClientError::StorageFull { available_bytes, reserve_bytes, outcome: self.outcome() }
            }
            Failure::Compacted { oldest_revision } => {
                ClientError::Compacted { shard: None, oldest_revision }
            }
            other => {
                ClientError::InvalidArgument { reason: other.to_string(), outcome: self.outcome() }
            }
        }
    }
}

/// Why a placement cannot be routed by.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// The placement has no shards.
    #[error("the routing has no shards; a cluster has at least one")]
    NoShards,
    /// `shard_count` differs from the number of entries in the shard table.
    #[error("the shard count is {shard_count} but the shard table has {shard_table_len} entries")]
    ShardCountMismatch {
        /// The shard count given.
        shard_count: u32,
        /// The number of entries in the shard table.
        shard_table_len: usize,
    },
    /// A shard is owned by a group that is not listed (group 0 is never listed).
    #[error("shard {shard} is owned by group {group}, which the routing does not list")]
    UnknownGroup {
        /// The shard.
        shard: ShardId,
        /// The group the shard table names.
        group: GroupId,
    },
    /// A group id that is never valid: 0, or the reserved [`GroupId::RESERVED`].
    #[error("group id {group} is not valid (0 and {} are reserved)", GroupId::RESERVED)]
    InvalidGroupId {
        /// The group id.
        group: GroupId,
    },
    /// A group has no members.
    #[error("group {group} has no member nodes")]
    GroupWithoutMembers {
        /// The group.
        group: GroupId,
    },
    /// A group lists the same node twice.
    #[error("group {group} lists node {node} more than once")]
    DuplicateMember {
        /// The group.
        group: GroupId,
        /// The repeated node.
        node: NodeId,
    },
    /// Node id 0, which is never a valid node.
    #[error("node id 0 is never a valid node")]
    ZeroNodeId,
    /// A group member has no address.
    #[error("node {node}, a member of group {group}, has no address")]
    MemberWithoutAddress {
        /// The group.
        group: GroupId,
        /// The member without an address.
        node: NodeId,
    },
    /// A node's address is not one a gRPC channel can be built for.
    #[error("node {node} has address {address:?}, which is not HOST:PORT: {reason}")]
    InvalidAddress {
        /// The node.
        node: NodeId,
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The routing source could not produce a routing.
    #[error("the routing source failed: {reason}")]
    Source {
        /// What went wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_reports_the_write_status_each_error_carries() {
        let timeout = |outcome| ClientError::Timeout {
            outcome,
            timeout: Duration::from_secs(1),
            attempts: 3,
            last_failure: "node 1 unreachable".into(),
        };
        assert_eq!(timeout(WriteOutcome::Unknown).outcome(), WriteOutcome::Unknown);
        assert_eq!(timeout(WriteOutcome::NotApplied).outcome(), WriteOutcome::NotApplied);
        let invalid = ClientError::InvalidArgument {
            reason: "the key is empty".into(),
            outcome: WriteOutcome::NotApplied,
        };
        assert_eq!(invalid.outcome(), WriteOutcome::NotApplied);
        let routing = ClientError::Routing { reason: RoutingError::NoShards };
        assert_eq!(routing.outcome(), WriteOutcome::NotApplied);
        let unknown = ClientError::UnknownConfig { num: ConfigNum(9), message: "none".into() };
        assert_eq!(unknown.outcome(), WriteOutcome::NotApplied);
        let malformed = ClientError::MalformedResponse {
            reason: "no result".into(),
            outcome: WriteOutcome::Unknown,
        };
        assert_eq!(malformed.outcome(), WriteOutcome::Unknown);
        for outcome in [WriteOutcome::NotApplied, WriteOutcome::Unknown] {
            let unassigned =
                ClientError::ShardUnassigned { shard: ShardId(3), config_num: 0, outcome };
            assert_eq!(unassigned.outcome(), outcome);
        }
    }

    #[test]
    fn a_read_never_becomes_an_unknown_outcome() {
        let mut progress = Progress::new(false);
        progress.record_failure(&Failure::AttemptTimedOut, "node 1");
        assert_eq!(progress.outcome(), WriteOutcome::NotApplied);
        let mut progress = Progress::new(true);
        progress.record_failure(&Failure::ServerBusy, "node 1");
        assert_eq!(progress.outcome(), WriteOutcome::NotApplied);
        progress.record_failure(&Failure::AttemptTimedOut, "node 2");
        progress.record_failure(&Failure::ServerBusy, "node 1");
        assert_eq!(progress.outcome(), WriteOutcome::Unknown, "an unknown outcome stays unknown");
        let ClientError::Timeout { last_failure, .. } = progress.timed_out(Duration::from_secs(1))
        else {
            panic!("timed_out gives a timeout");
        };
        assert_eq!(last_failure, "node 1: overloaded");
    }
}
