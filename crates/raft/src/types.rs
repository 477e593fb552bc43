//! The nouns of Raft: ids, log entries, hard state, membership and snapshots.
//!
//! Every id is its own newtype so that a term can never be passed where an index is expected.
//! Index 0 and term 0 mean "nothing": the first real entry has index 1, and a log that holds
//! nothing has last index 0 and last term 0.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

id_newtype!(
    /// A node (process) that hosts replicas. Unique in the cluster; 0 is never a valid node.
    NodeId
);
id_newtype!(
    /// A Raft term (Raft §5.1). Starts at 0 and only grows.
    Term
);
id_newtype!(
    /// The position of an entry in a Raft log. The first entry has index 1.
    LogIndex
);

impl LogIndex {
    /// Returns the index just after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// Returns the index just before this one (0 stays 0).
    #[must_use]
    pub fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data (empty data: the no-op a new leader appends, Raft §5.4.2 / §8).
    Normal,
    /// An encoded [`ConfChange`]; the application calls `RawNode::apply_conf_change` once it
    /// applies the entry.
    ConfChange,
}

/// One entry of the replicated log.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// What `data` holds.
    pub kind: EntryKind,
    /// The payload: application command, or an encoded [`ConfChange`].
    pub data: Bytes,
}

impl Entry {
    /// Bytes that count against size limits (payload plus a fixed per-entry overhead).
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// Returns true for the empty entry a new leader appends.
    #[must_use]
    pub fn is_noop(&self) -> bool {
        self.kind == EntryKind::Normal && self.data.is_empty()
    }
}

/// The fixed cost counted per entry (term, index, kind) in size limits.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry({}@{} {:?} {}B)", self.index, self.term, self.kind, self.data.len())
    }
}

/// The state that must be durable before a node answers anything (Raft Figure 2: currentTerm,
/// votedFor, plus the commit index so a restart does not re-apply from zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known to be committed.
    pub commit: LogIndex,
}

/// The membership of a group: who votes and who only receives the log.
///
/// Invariant: `voters` and `learners` are disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    /// Nodes whose acknowledgement counts towards a majority.
    pub voters: BTreeSet<NodeId>,
    /// Nodes that receive the log but neither vote nor count towards commitment.
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    /// A membership of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = u64>) -> Self {
        Self { voters: voters.into_iter().map(NodeId).collect(), learners: BTreeSet::new() }
    }

    /// Returns true if `id` is a voter or a learner.
    #[must_use]
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first, each in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// A change of membership, one node at a time (Raft dissertation §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Adds a new learner, or makes a voter a learner.
    AddLearner(NodeId),
    /// Adds a voter. The node must already be a learner that has caught up with the log.
    AddVoter(NodeId),
    /// Removes a voter or a learner.
    RemoveNode(NodeId),
}

impl ConfChange {
    /// Encoded size: one tag byte and the node id.
    pub const ENCODED_BYTES: usize = 9;

    /// The node this change is about.
    #[must_use]
    pub fn node_id(self) -> NodeId {
        match self {
            Self::AddLearner(id) | Self::AddVoter(id) | Self::RemoveNode(id) => id,
        }
    }

    /// Encodes the change as the data of a [`EntryKind::ConfChange`] entry.
    #[must_use]
    pub fn encode(self) -> Bytes {
        let (tag, id) = match self {
            Self::AddLearner(id) => (1u8, id),
            Self::AddVoter(id) => (2u8, id),
            Self::RemoveNode(id) => (3u8, id),
        };
        let mut out = Vec::with_capacity(Self::ENCODED_BYTES);
        out.push(tag);
        out.extend_from_slice(&id.0.to_be_bytes());
        Bytes::from(out)
    }

    /// Decodes what [`ConfChange::encode`] produced.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfChange`] when the bytes are not an encoded change.
    pub fn decode(data: &[u8]) -> crate::Result<Self> {
        let invalid = || crate::Error::InvalidConfChange { reason: format!("{data:02x?}") };
        if data.len() != Self::ENCODED_BYTES {
            return Err(invalid());
        }
        let mut id_bytes = [0u8; 8];
        id_bytes.copy_from_slice(&data[1..]);
        let id = NodeId(u64::from_be_bytes(id_bytes));
        match data[0] {
            1 => Ok(Self::AddLearner(id)),
            2 => Ok(Self::AddVoter(id)),
            3 => Ok(Self::RemoveNode(id)),
            _ => Err(invalid()),
        }
    }

    /// Returns the membership that results from applying this change to `conf`.
    #[must_use]
    pub fn applied_to(self, conf: &ConfState) -> ConfState {
        let mut next = conf.clone();
        match self {
            Self::AddLearner(id) => {
                next.voters.remove(&id);
                next.learners.insert(id);
            }
            Self::AddVoter(id) => {
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            Self::RemoveNode(id) => {
                next.voters.remove(&id);
                next.learners.remove(&id);
            }
        }
        next
    }
}

/// Where a snapshot sits in the log, and the membership as of that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMetadata {
    /// The last index the snapshot covers.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
    /// Membership as of `index`.
    pub conf_state: ConfState,
}

/// A point-in-time image of the state machine up to `metadata.index`.
///
/// `data` is opaque to Raft. An application whose state is large may put only a descriptor in
/// it and stream the state itself out of band.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Position and membership.
    pub metadata: SnapshotMetadata,
    /// The application's image (or a descriptor of it).
    pub data: Bytes,
}

impl Snapshot {
    /// Returns true for the empty snapshot (index 0).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.metadata.index == LogIndex(0)
    }
}

/// The answer to a `read_index` request: once the application has applied up to `index`, a
/// read done locally is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index at the time leadership was confirmed.
    pub index: LogIndex,
    /// The context passed to `read_index`, returned unchanged.
    pub context: Bytes,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks for pre-votes without raising its term (Raft dissertation §9.6).
    PreCandidate,
    /// Asks for votes in a new term.
    Candidate,
    /// Replicates its log to the others.
    Leader,
}

/// State that changes without being persisted: the role and the leader hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The known leader of the current term, if any.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}
