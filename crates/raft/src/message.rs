//! Messages between the replicas of one group.
//!
//! Every message carries the sender's term. A message from a higher term makes the receiver
//! adopt that term (Raft §5.1), except for pre-votes, which never change anyone's term.

use bytes::Bytes;

use crate::types::{Entry, LogIndex, NodeId, Snapshot, Term};

/// One message from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message (Raft Figure 2, plus PreVote, ReadIndex and leadership transfer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote (Raft §5.2), or a pre-vote (dissertation §9.6) when `pre_vote` is set.
    RequestVote {
        /// A pre-vote asks "would you vote for me?" without changing any term.
        pre_vote: bool,
        /// Index of the candidate's last entry.
        last_index: LogIndex,
        /// Term of the candidate's last entry.
        last_term: Term,
        /// Set when the leader asked this candidate to campaign (leadership transfer): voters
        /// then disregard the leader lease of CheckQuorum.
        leader_transfer: bool,
    },
    /// The answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (Raft §5.3): entries after `prev_index`, and the leader's commit index.
    Append {
        /// Index of the entry just before `entries`.
        prev_index: LogIndex,
        /// Term of the entry at `prev_index`.
        prev_term: Term,
        /// Entries to append, in order; may be empty (a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: LogIndex,
    },
    /// The answer to [`MessageBody::Append`] (and to a snapshot).
    AppendResponse {
        /// On success: the last index now known to match the leader. On rejection: the
        /// `prev_index` that did not match.
        index: LogIndex,
        /// Set on rejection: where the leader should look next.
        reject: Option<RejectHint>,
    },
    /// Heartbeat: asserts leadership, carries the commit index and a round number that
    /// confirms leadership for reads.
    Heartbeat {
        /// The commit index, capped at what the follower is known to have.
        commit: LogIndex,
        /// The leader's heartbeat round; echoed in the response.
        round: u64,
        /// The leader quiesced with this round: a follower whose log ends at `commit` stops
        /// counting ticks until a message or a request wakes it (docs/raft.md "Quiescence").
        quiesce: bool,
    },
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The round being acknowledged.
        round: u64,
        /// The follower's applied index: what it applied is written (a membership change
        /// durably, docs/raftstore.md), so its voters are those of its membership as of there.
        applied: LogIndex,
    },
    /// InstallSnapshot (Raft §7): the follower's log is replaced by the snapshot.
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Asks the receiver to campaign at once (leadership transfer, dissertation §3.10).
    TimeoutNow,
    /// A follower forwards a read request to the leader.
    ReadIndex {
        /// The application's context for the read.
        context: Bytes,
    },
    /// The leader answers a forwarded read request.
    ReadIndexResponse {
        /// The read index, or `None` when the leader could not serve it (it stepped down).
        index: Option<LogIndex>,
        /// The context of the request.
        context: Bytes,
    },
}

/// Where a follower's log diverges, so the leader can skip a whole term per round trip instead
/// of one entry (the "fast backup" of 6.824 Lab 2 and etcd's conflict hints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The largest index at or below the rejected `prev_index` whose term is at most
    /// `prev_term` of the rejected append (or the follower's last index, if smaller).
    pub index: LogIndex,
    /// The follower's term at `index`.
    pub term: Term,
}

impl Message {
    /// Bytes this message roughly occupies on the wire (entries' payload plus overheads).
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 32;
        HEADER_BYTES
            + match &self.body {
                MessageBody::Append { entries, .. } => entries.iter().map(Entry::size_bytes).sum(),
                MessageBody::InstallSnapshot { snapshot } => snapshot.data.len() as u64,
                MessageBody::ReadIndex { context }
                | MessageBody::ReadIndexResponse { context, .. } => context.len() as u64,
                _ => 0,
            }
    }

    /// Returns true for messages that only a leader sends.
    #[must_use]
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow
                | MessageBody::ReadIndexResponse { .. }
        )
    }
}
