//! The errors of the node runtime. Every variant a client acts on carries the hint it needs
//! (DESIGN.md "Errors on the wire"); the server converts them to `tonic::Status` in one place.

use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::NodeId;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An error from the store, or the refusal of a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This replica does not lead its group; nothing was proposed. Retry at `leader` (if known).
    #[error("not the leader of group {group} (leader hint: {leader:?})")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader of the current term as far as this replica knows.
        leader: Option<NodeId>,
    },
    /// The proposal entered the log, but this replica lost leadership (or its entry was
    /// replaced) before it was applied here. It may or may not be applied: retry with the same
    /// `(client, seq)`, which the state machine applies at most once.
    #[error("group {group}: leadership changed before the proposal was applied; outcome unknown")]
    ProposalAbandoned {
        /// The group.
        group: GroupId,
        /// The new leader, if known.
        leader: Option<NodeId>,
    },
    /// The proposal's entry was overwritten by another leader's entry: it was not applied.
    #[error("group {group}: the proposal was overwritten by a new leader and not applied")]
    ProposalOverwritten {
        /// The group.
        group: GroupId,
    },
    /// This node hosts no replica of the group.
    #[error("group {group} is not hosted on this node")]
    GroupNotFound {
        /// The group.
        group: GroupId,
    },
    /// The group does not own the shard in the configuration it has applied; refresh the
    /// configuration (`config_num` is the one this group has applied).
    #[error("wrong group (the group has applied configuration {config_num})")]
    WrongGroup {
        /// The configuration the group has applied.
        config_num: u64,
    },
    /// The request names a shard its key does not hash to (in the cluster's shard count, which
    /// the group records with its configuration): the sender's shard count or hash differs from
    /// the cluster's, a client bug. Nothing was read or written; retrying cannot help.
    #[error(
        "wrong shard: the key is in shard {key_shard} of {shard_count}, the request names shard \
         {named}"
    )]
    WrongShard {
        /// The shard the request named.
        named: ShardId,
        /// The shard the key hashes to.
        key_shard: ShardId,
        /// The cluster's shard count.
        shard_count: u32,
    },
    /// The node's disk is nearly full: it takes no writes until space is freed (reads are
    /// served). Nothing was written.
    #[error(
        "storage full: {available_bytes} bytes free, below the node's reserve of \
         {reserve_bytes}; writes resume when space is freed"
    )]
    StorageFull {
        /// Bytes free in the data directory when the node last looked.
        available_bytes: u64,
        /// The reserve the node keeps free.
        reserve_bytes: u64,
    },
    /// The group owns the shard but its data has not arrived yet; retry shortly.
    #[error("shard not ready (migration in progress)")]
    ShardNotReady,
    /// A write that expected its client's session in the shard found none: the session was
    /// evicted (or never existed). The write was not applied. An earlier attempt of it may
    /// have been, before the eviction: its outcome is unknown unless no earlier attempt was
    /// sent; a later write starts a new session (without expecting one).
    #[error("session expired: shard {shard} has no session of client {client}")]
    SessionExpired {
        /// The shard.
        shard: ShardId,
        /// The client.
        client: ClientId,
    },
    /// A watch asked for changes of a shard that the replica no longer keeps: read afresh,
    /// then watch from that read's revision. Nothing was registered.
    #[error(
        "compacted: the oldest revision this replica can watch from is {oldest_revision}; read \
         afresh and watch from that read's revision"
    )]
    Compacted {
        /// The oldest revision a watch can start from at the replica now.
        oldest_revision: u64,
    },
    /// A queue or a limit is full; retry after a short backoff.
    #[error("server busy: {reason}")]
    ServerBusy {
        /// Which limit was hit.
        reason: String,
    },
    /// The request is malformed or exceeds a limit; it changed nothing.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// The deadline passed before an answer arrived.
    #[error("timed out")]
    Timeout,
    /// The store is shutting down.
    #[error("the store is stopping")]
    Stopped,
    /// The storage engine failed. The store stops: a node that cannot persist must not go on.
    #[error("storage engine: {0}")]
    Engine(#[from] mosaic_engine::Error),
    /// The Raft core refused something the store asked of it.
    #[error("raft: {0}")]
    Raft(mosaic_raft::Error),
}

impl Error {
    /// Maps an error of a group's Raft core to the store's error for a client.
    #[must_use]
    pub fn from_raft(group: GroupId, error: mosaic_raft::Error) -> Self {
        match error {
            mosaic_raft::Error::NotLeader { leader } => Self::NotLeader { group, leader },
            mosaic_raft::Error::UncommittedLogFull { uncommitted_bytes, limit_bytes } => {
                Self::ServerBusy {
                    reason: format!(
                        "group {group}: uncommitted log full ({uncommitted_bytes} of \
                         {limit_bytes} bytes)"
                    ),
                }
            }
            mosaic_raft::Error::TooManyPendingReads { limit } => Self::ServerBusy {
                reason: format!("group {group}: {limit} reads already wait for the leader"),
            },
            mosaic_raft::Error::TransferInProgress { target } => {
                Self::NotLeader { group, leader: Some(target) }
            }
            other => Self::Raft(other),
        }
    }

    /// Returns true when the request was certainly not applied (a client may report failure
    /// rather than "outcome unknown").
    #[must_use]
    pub fn is_definitely_not_applied(&self) -> bool {
        !matches!(
            self,
            Self::ProposalAbandoned { .. } | Self::Timeout | Self::Stopped | Self::Engine(_)
        )
    }
}
