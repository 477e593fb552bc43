//! What the agent asks its executor to do, and what comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mosaic_controller::{Command, ConfigNum, ControllerView, Outcome};
use mosaic_engine::{GroupId, ShardChunk, ShardCursor, ShardId};
use mosaic_raft::{ConfChange, ConfState, LogIndex, NodeId};
use mosaic_raftstore::membership::LeaderView;
use mosaic_raftstore::{LeaderTerm, ShownOut};
use mosaic_shardkv::{MigrationCommand, MigrationOutcome, Ownership};

/// Milliseconds on the executor's monotonic clock (virtual time in the simulator).
pub type Time = u64;

/// A request's id, unique within one agent.
pub type RequestId = u64;

/// What the executor does for the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Carry out `request` and hand its answer to [`crate::NodeAgent::on_answer`] with `id`.
    Send {
        /// The request's id.
        id: RequestId,
        /// What to do.
        request: Request,
    },
    /// Stop working on request `id`: the agent gave up on it, and ignores its answer.
    Cancel {
        /// The request's id.
        id: RequestId,
    },
}

/// One request of the agent. Each has exactly one answer: the [`Answer`] its documentation
/// names, or [`Answer::Failed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `Controller.Query`: configuration `num`, or the latest. Answered by [`Answer::View`].
    Query {
        /// The configuration; `None` for the latest.
        num: Option<ConfigNum>,
    },
    /// `Controller.Execute`. Answered by [`Answer::Executed`] or [`Answer::Refused`].
    Execute(Command),
    /// Record, synced in the store, the configuration number the store was born under
    /// ([`mosaic_shardkv::KvStateMachine::mark_placed_since`]). Answered by [`Answer::Done`].
    RecordBirth(ConfigNum),
    /// The groups the store hosts, and the ownership of every group this node leads.
    /// Answered by [`Answer::Local`].
    ReadLocal,
    /// Create this node's replica of a new group with `members` as its initial voters.
    /// Answered by [`Answer::Done`], or [`Answer::Refused`] when the store destroyed a
    /// replica of the group before.
    CreateGroup {
        /// The group.
        group: GroupId,
        /// Its initial voters.
        members: Vec<NodeId>,
    },
    /// Destroy this node's replica of a retired group, or of a group no longer placed here
    /// once its leader showed the node out (`shown_out`: the store refuses then if the replica
    /// was added back since). Answered by [`Answer::Done`], or [`Answer::Refused`] when the
    /// replica was added back.
    DestroyGroup {
        /// The group.
        group: GroupId,
        /// The leader's view that showed the node out, if that is why.
        shown_out: Option<ShownOut>,
    },
    /// `group`'s status at `node` (`NodeAdmin.GroupStatus` with `confirm_leadership`), to
    /// find the group's leader for a membership run. Answered by [`Answer::Leader`].
    GroupStatus {
        /// The node asked.
        node: NodeId,
        /// The group.
        group: GroupId,
    },
    /// Create `node`'s empty replica of an existing group, with no membership, starting in
    /// the term of the leader named (`NodeAdmin.JoinGroup`, `StoreMsg::JoinGroup` here).
    /// Answered by [`Answer::Done`].
    JoinGroup {
        /// The node joining (this one, or another one this node's group adds).
        node: NodeId,
        /// The group.
        group: GroupId,
        /// The leader and the term the replica starts in.
        leader: LeaderTerm,
    },
    /// Propose `change` to `group` at `leader`, refused there if the membership changed after
    /// `unchanged_since` (`NodeAdmin.ChangeMembership`). Answered by [`Answer::Done`] once it
    /// applied, or by [`Answer::Refused`] when it is invalid.
    ChangeMembership {
        /// The node asked: the group's leader when the change was planned.
        leader: NodeId,
        /// The group.
        group: GroupId,
        /// The change.
        change: ConfChange,
        /// The applied index of the leader's view it was planned from.
        unchanged_since: LogIndex,
    },
    /// Propose a migration step to `group` here and wait for it to apply. Answered by
    /// [`Answer::Applied`].
    Propose {
        /// The group.
        group: GroupId,
        /// The step.
        command: MigrationCommand,
    },
    /// One chunk, starting at `cursor`, of `shard` that group `from` sends to `to` in
    /// configuration `num`, read at `source`, a replica of `from`
    /// (`ShardMigration.PullShard`). Answered by [`Answer::Chunk`].
    PullChunk {
        /// The replica asked.
        source: NodeId,
        /// The sending group.
        from: GroupId,
        /// The pulling group.
        to: GroupId,
        /// The shard.
        shard: ShardId,
        /// The configuration that moved it.
        num: ConfigNum,
        /// Where the chunk starts.
        cursor: ShardCursor,
    },
    /// Have group `group`, through its replica at `source`, delete its copy of `shard`, sent
    /// in configuration `num` (`ShardMigration.DeleteShard`). Answered by
    /// [`Answer::Applied`].
    DeleteShard {
        /// The replica asked.
        source: NodeId,
        /// The group that sent the shard.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// The configuration that moved it.
        num: ConfigNum,
    },
}

/// What the store holds, for [`Request::ReadLocal`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalState {
    /// Every group with a replica here.
    pub hosted: BTreeSet<GroupId>,
    /// The ownership of every group led here that a controller places.
    pub led: BTreeMap<GroupId, Ownership>,
    /// The membership every group led here has applied.
    pub memberships: BTreeMap<GroupId, ConfState>,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug)]
pub enum Answer {
    /// A configuration and the controller's view around it.
    View(ControllerView),
    /// The controller applied the command.
    Executed(Outcome),
    /// The controller refused the command, or a node refused a membership change, for good
    /// (a definite answer: retrying cannot help).
    Refused(String),
    /// The status asked for, if the node confirmed that it leads the group.
    Leader(Option<LeaderView>),
    /// Done.
    Done,
    /// What the store holds.
    Local(LocalState),
    /// The migration step applied with this outcome.
    Applied(MigrationOutcome),
    /// A chunk of a shard.
    Chunk(ShardChunk),
    /// The request failed, or no answer came: it may or may not have taken effect.
    Failed(String),
    /// The node asked to delete a shard does not lead the group, and named this node as its
    /// leader (only for [`Request::DeleteShard`]; nothing was applied).
    Redirect(NodeId),
}

/// One line for a log: the kind of answer and its outcome or reason, with counts rather than
/// contents (never a whole configuration, chunk or listing).
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::View(view) => {
                write!(f, "configuration {} (latest {})", view.config.num, view.latest)
            }
            Self::Executed(outcome) => write!(f, "executed: {outcome}"),
            Self::Refused(reason) => write!(f, "refused: {reason}"),
            Self::Leader(Some(view)) => {
                write!(f, "led by node {} in term {}", view.leader, view.term)
            }
            Self::Leader(None) => write!(f, "not the leader"),
            Self::Done => write!(f, "done"),
            Self::Local(local) => {
                write!(f, "{} groups hosted, {} led", local.hosted.len(), local.led.len())
            }
            Self::Applied(MigrationOutcome::Done) => write!(f, "applied"),
            Self::Applied(MigrationOutcome::Stale(reason)) => write!(f, "stale: {reason}"),
            Self::Applied(MigrationOutcome::NotYet(reason)) => write!(f, "not yet: {reason}"),
            Self::Chunk(chunk) => {
                let last = if chunk.next.is_none() { ", the last" } else { "" };
                write!(f, "a chunk of {} records{last}", chunk.records.len())
            }
            Self::Failed(reason) => write!(f, "failed: {reason}"),
            Self::Redirect(leader) => write!(f, "not the leader: node {leader} is"),
        }
    }
}
