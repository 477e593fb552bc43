//! What reaches a store (its inbox) and what leaves it (the [`Transport`]).
//!
//! A request carries a [`Callback`] that the store calls exactly once, on its own thread: with
//! the answer, or with the error that ended the request. A runner that stops drops its store,
//! and every pending callback is then called with [`crate::Error::Stopped`].

use mosaic_engine::{GroupId, KvEngine};
use mosaic_raft::{ConfChange, ConfState, LogIndex, Message, NodeId, Term};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::snapshot::SnapshotReader;
use crate::state_machine::StateMachine;

/// Called once with the outcome of a request.
pub type Callback<T> = Box<dyn FnOnce(Result<T>) + Send>;

/// How fresh a read must be (DESIGN.md "Reads").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// ReadIndex: the leader confirms its leadership with a heartbeat round, then reads once
    /// it has applied up to the commit index it had.
    #[default]
    Linearizable,
    /// The leader reads under its lease without a round trip (falls back to `Linearizable`
    /// when the lease is not valid).
    Lease,
    /// Any replica reads what it has applied.
    Stale,
}

/// The view in which a group's leader showed a node out of the group (see
/// [`StoreMsg::DestroyGroup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShownOut {
    /// The leader's term.
    pub term: Term,
    /// The leader's last log index then.
    pub last_index: LogIndex,
}

/// One led group's answer to [`StoreMsg::ReadLeaders`].
#[derive(Debug)]
pub struct LeaderRead<O> {
    /// The membership the leader has applied (a change it proposed may be on its way).
    pub conf_state: ConfState,
    /// Every voter has applied that membership: a member it left out is out for good
    /// (`mosaic_raft::Status::voters_applied_membership`).
    pub voters_applied_membership: bool,
    /// What the read returned.
    pub output: Result<O>,
}

impl<O> LeaderRead<O> {
    /// The same answer with the output mapped by `f`.
    pub fn map<P>(self, f: impl FnOnce(O) -> P) -> LeaderRead<P> {
        LeaderRead {
            conf_state: self.conf_state,
            voters_applied_membership: self.voters_applied_membership,
            output: self.output.map(f),
        }
    }
}

/// The answer to a read.
#[derive(Debug)]
pub struct ReadOutput<T> {
    /// What the state machine returned.
    pub output: T,
    /// The index the replica had applied when it read (how fresh a stale read is).
    pub applied_index: LogIndex,
    /// Whose leadership served the read.
    pub served_by: ServedBy,
}

impl<T> ReadOutput<T> {
    /// The same answer with its output turned by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> ReadOutput<U> {
        ReadOutput {
            output: f(self.output),
            applied_index: self.applied_index,
            served_by: self.served_by,
        }
    }

    /// The output of a read that this replica's own leadership served, with the term it
    /// leads in: for a service that answers only at the leader (the controller's queries).
    ///
    /// # Errors
    /// [`Error::NotLeader`] naming the leader the replica knew of, for any other read.
    pub fn at_leader(self, group: GroupId) -> Result<(T, Term)> {
        match self.served_by {
            ServedBy::Leader(term) => Ok((self.output, term)),
            ServedBy::Other { leader } => Err(Error::NotLeader { group, leader }),
        }
    }
}

/// Whose leadership served a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedBy {
    /// This replica, leading in this term both when the read started and when it served it:
    /// a linearizable or lease read its own leadership confirmed.
    Leader(Term),
    /// Not this replica's leadership: a stale read, a ReadIndex read a follower had the
    /// leader confirm, or a read whose replica stopped leading in its term meanwhile.
    Other {
        /// The leader the replica knew of when it served the read.
        leader: Option<NodeId>,
    },
}

impl ServedBy {
    /// The term this replica led in, if its leadership served the read.
    #[must_use]
    pub fn led(self) -> Option<Term> {
        match self {
            Self::Leader(term) => Some(term),
            Self::Other { .. } => None,
        }
    }
}

/// A group's leader and its term, as seen when a node was about to join the group.
///
/// A joined replica starts in that term, having voted for that leader: it refuses messages of
/// earlier terms and votes for no one else in that term. A node that lost its data may have
/// voted and acknowledged entries in earlier terms as the group's member; starting later keeps
/// the new replica from repeating a vote or counting for a deposed leader that still takes it
/// for a voter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderTerm {
    /// The leader.
    pub leader: NodeId,
    /// Its term.
    pub term: Term,
}

/// A message to a store.
pub enum StoreMsg<K: KvEngine, SM: StateMachine<K>> {
    /// Raft messages from another node, for the groups named; none is the sender's node
    /// heartbeat (docs/raftstore.md "Quiescence").
    Raft {
        /// The sending node.
        from: NodeId,
        /// Which start of the sending node's process sent them (a new number each start).
        incarnation: u64,
        /// The messages, each for one group.
        messages: Vec<(GroupId, Message)>,
    },
    /// Replicates a command through a group's log and answers once it is applied.
    Propose {
        /// The group.
        group: GroupId,
        /// The command.
        proposal: SM::Proposal,
        /// Called with the state machine's answer.
        callback: Callback<SM::ApplyOutput>,
    },
    /// Reads a group's applied state.
    Read {
        /// The group.
        group: GroupId,
        /// The read.
        query: SM::Query,
        /// How fresh it must be.
        consistency: Consistency,
        /// Called with the answer.
        callback: Callback<ReadOutput<SM::ReadOutput>>,
    },
    /// Reads what every group this node leads has applied (no leadership round: a deposed
    /// leader may answer for a moment), in group order, with the membership each has applied.
    /// For a node's background work over all its groups, such as moving shards and keeping
    /// memberships as configured, in one message rather than one per group.
    ReadLeaders {
        /// The read, run against each group.
        query: SM::Query,
        /// Called with each led group's answer.
        callback: Callback<Vec<(GroupId, LeaderRead<SM::ReadOutput>)>>,
    },
    /// A complete snapshot from another node: the `InstallSnapshot` message and the chunks of
    /// the group state it describes (see [`crate::snapshot`]).
    Snapshot {
        /// The sending node.
        from: NodeId,
        /// The group.
        group: GroupId,
        /// The `InstallSnapshot` message.
        message: Message,
        /// The encoded chunks, in order.
        chunks: Vec<Bytes>,
    },
    /// Whether a snapshot this node sent was delivered (the transport reports every one).
    SnapshotStatus {
        /// The group.
        group: GroupId,
        /// The node it was sent to.
        to: NodeId,
        /// True when the receiver got every chunk.
        delivered: bool,
    },
    /// One tick of the node's logical clock, for every group.
    Tick,
    /// Creates this node's replica of a new group whose initial voters are `members` (this node
    /// among them). Creating a group that exists with the same members succeeds and changes
    /// nothing; creating a group whose replica this store destroyed before is refused
    /// ([`crate::Error::InvalidArgument`]): that replica may have voted and acknowledged
    /// entries, and a node comes back to a group it left only through [`StoreMsg::JoinGroup`].
    CreateGroup {
        /// The group.
        group: GroupId,
        /// Its initial voters.
        members: Vec<NodeId>,
        /// Called once the replica exists (its membership is durable).
        callback: Callback<()>,
    },
    /// Creates an empty replica of an existing group on this node, with no membership: it
    /// votes for no one and campaigns never, and waits for the group's leader to add it as a
    /// learner ([`StoreMsg::ChangeMembership`]) and send it a snapshot. The way a new node,
    /// or a node whose data was lost (once the group removed it), joins a group
    /// ([`crate::membership`]). Joining a group already hosted here succeeds and changes
    /// nothing.
    JoinGroup {
        /// The group.
        group: GroupId,
        /// The term the replica starts in (see [`LeaderTerm`]); `None` starts it at term 0.
        leader: Option<LeaderTerm>,
        /// Called once the replica exists (durably).
        callback: Callback<()>,
    },
    /// Destroys this node's replica of a group (unless it was added back after `shown_out`):
    /// its log, Raft state, data and sessions are
    /// removed in one synced write that also records the destruction (the store never creates
    /// the group again), and its waiting requests fail with
    /// [`crate::Error::GroupNotFound`]. Whether the group is finished is the caller's to
    /// decide (a storage group is destroyed once the controller has retired it,
    /// docs/migration.md). Destroying a group not hosted here succeeds and changes nothing.
    DestroyGroup {
        /// The group.
        group: GroupId,
        /// When given, the view of the group's leader that showed this node out of the group:
        /// a replica whose last entry is past that view's (a later term, or the same term and
        /// a later index) was added back since (no leader sends entries to a node out of its
        /// membership), and is not destroyed ([`crate::Error::InvalidArgument`]).
        shown_out: Option<ShownOut>,
        /// Called once the replica is gone (durably).
        callback: Callback<()>,
    },
    /// Changes a group's membership by one node, through its log (this node must lead the
    /// group). Answered with the new membership once the change is applied here.
    ChangeMembership {
        /// The group.
        group: GroupId,
        /// The change.
        change: ConfChange,
        /// Refuse the change if the membership changed after this index (the applied index
        /// of the status it was planned from): a late request must not undo a later plan.
        unchanged_since: Option<LogIndex>,
        /// Called with the membership after the change.
        callback: Callback<ConfState>,
    },
    /// Asks the group's leader (this node must lead it) to hand its leadership to `to`, or to
    /// the group's preferred voter when `None`, now rather than after the automatic handover's
    /// wait (`crate::leader_balance`). Answered at once with what it did.
    TransferLeader {
        /// The group.
        group: GroupId,
        /// The voter to hand over to; `None`: the preferred voter.
        to: Option<NodeId>,
        /// Called with what the leader did.
        callback: Callback<crate::Handover>,
    },
    /// Messages to `node` could not be delivered; its groups stop pipelining to it.
    Unreachable {
        /// The node.
        node: NodeId,
    },
    /// Asks for a group's status.
    Status {
        /// The group.
        group: GroupId,
        /// Answer only once this replica's leadership is confirmed by a ReadIndex round of its
        /// term, with the status read after what was committed before the round is applied:
        /// the membership it shows is then the group's latest (a deposed leader's is not).
        /// Fails with [`crate::Error::NotLeader`] on a replica that does not lead, or lost
        /// its leadership meanwhile.
        confirm: bool,
        /// Called with the status.
        callback: Callback<mosaic_raft::Status>,
    },
}

impl<K: KvEngine, SM: StateMachine<K>> StoreMsg<K, SM> {
    /// Answers the request this message carries (if any) with `error` instead of handling it:
    /// what a runner does with a message it cannot queue.
    pub fn refuse(self, error: crate::Error) {
        match self {
            Self::Propose { callback, .. } => callback(Err(error)),
            Self::Read { callback, .. } => callback(Err(error)),
            Self::ReadLeaders { callback, .. } => callback(Err(error)),
            Self::CreateGroup { callback, .. }
            | Self::JoinGroup { callback, .. }
            | Self::DestroyGroup { callback, .. } => {
                callback(Err(error));
            }
            Self::ChangeMembership { callback, .. } => callback(Err(error)),
            Self::Status { callback, .. } => callback(Err(error)),
            Self::TransferLeader { callback, .. } => callback(Err(error)),
            Self::Raft { .. }
            | Self::Snapshot { .. }
            | Self::SnapshotStatus { .. }
            | Self::Tick
            | Self::Unreachable { .. } => {}
        }
    }
}

/// Where a store sends Raft messages. Implementations never block the store: they queue
/// (boundedly) and may drop messages when a peer is slow or gone, which Raft tolerates (it
/// retries); they report undeliverable peers back as [`StoreMsg::Unreachable`].
pub trait Transport<K: KvEngine> {
    /// Sends a batch of messages, all for node `to`, in order. Never an `InstallSnapshot`.
    fn send(&mut self, to: NodeId, messages: Vec<(GroupId, Message)>);

    /// Streams a snapshot of `group` to `to`: the `InstallSnapshot` message and every chunk
    /// `reader` yields, delivered to the receiving store as one [`StoreMsg::Snapshot`]. The
    /// transport must report the outcome to the sending store as [`StoreMsg::SnapshotStatus`]
    /// (the Raft core sends that follower nothing else until then).
    fn send_snapshot(
        &mut self,
        to: NodeId,
        group: GroupId,
        message: Message,
        reader: SnapshotReader<K::Snapshot>,
    );
}
