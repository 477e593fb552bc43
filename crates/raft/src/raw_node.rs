//! The public interface of the core: inputs (`tick`, `step`, `propose`, ...) and the
//! `Ready` / `advance` handshake that hands out what to persist, send and apply.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
use crate::error::Result;
use crate::message::Message;
use crate::raft::{CampaignKind, Raft};
use crate::storage::Storage;
use crate::tracker::{Progress, ProgressState};
use crate::types::{
    ConfChange, ConfState, Entry, HardState, LogIndex, NodeId, ReadState, Role, Snapshot,
    SnapshotMetadata, SoftState, Term,
};

/// Everything the application must do after feeding the core some input, in this order:
///
/// 1. Send [`Ready::messages`]. They may go out at once, before or while persisting: they are
///    a leader's appends and heartbeats, whose safety does not depend on the leader's own disk
///    (the leader counts itself towards a majority only once `advance` reports its entries
///    persisted).
/// 2. Persist, in one atomic (and, if [`Ready::must_sync`], synced) write:
///    [`Ready::snapshot`] (if any, after installing it into the state machine),
///    [`Ready::entries`] (replacing any stored entries from the first one's index on) and
///    [`Ready::hard_state`].
/// 3. Only then send [`Ready::persisted_messages`]: votes and acknowledgements, which promise
///    that what they acknowledge is durable (Raft Figure 2: "respond after persisting").
/// 4. Apply [`Ready::committed_entries`] in order (calling [`RawNode::apply_conf_change`] for
///    membership entries), answer [`Ready::read_states`] once applied up to their index, and
///    fail the reads in [`Ready::dropped_reads`].
/// 5. Call [`RawNode::advance`] (or [`RawNode::advance_append`] after step 2 and
///    [`RawNode::advance_apply_to`] after step 4 when applying happens elsewhere).
#[derive(Debug, Default)]
pub struct Ready {
    /// The new role and leader, if they changed.
    pub soft_state: Option<SoftState>,
    /// The new hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to storage.
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to install and persist.
    pub snapshot: Option<Snapshot>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Messages that may be sent right away.
    pub messages: Vec<Message>,
    /// Messages to send only after this `Ready` is persisted.
    pub persisted_messages: Vec<Message>,
    /// ReadIndex results: serve each read once applied up to its index.
    pub read_states: Vec<ReadState>,
    /// Contexts of reads that cannot be served here any more (leadership lost).
    pub dropped_reads: Vec<Bytes>,
    must_sync: bool,
}

impl Ready {
    /// Returns true if the write of this `Ready` must be synced to disk before the persisted
    /// messages go out: there are entries, a snapshot, or a new term or vote.
    #[must_use]
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }
}

/// The progress the leader tracks for one member, as reported by [`RawNode::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Highest index known replicated on the member.
    pub match_index: LogIndex,
    /// Next index the leader will send.
    pub next_index: LogIndex,
    /// Replication state.
    pub state: ProgressState,
    /// Learners do not vote.
    pub is_learner: bool,
    /// Heard from since the leader's last CheckQuorum round (every election timeout): a
    /// member that is down shows false within two election timeouts; one that is up may show
    /// false just after a round, until its next answer.
    pub recent_active: bool,
}

impl PeerStatus {
    fn of(progress: &Progress) -> Self {
        Self {
            match_index: progress.match_index,
            next_index: progress.next_index,
            state: progress.state,
            is_learner: progress.is_learner,
            recent_active: progress.recent_active,
        }
    }
}

/// A summary of a replica, for tests, logs and admin tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// Role and leader.
    pub soft_state: SoftState,
    /// Highest index applied by the application.
    pub applied: LogIndex,
    /// First index still in the log.
    pub first_index: LogIndex,
    /// Last index in the log.
    pub last_index: LogIndex,
    /// The membership.
    pub conf_state: ConfState,
    /// Per member progress; empty unless this replica leads.
    pub progress: BTreeMap<NodeId, PeerStatus>,
    /// True when this replica leads and has a membership change in its log that it has not
    /// applied yet (the membership above is about to change; no other change is accepted).
    pub membership_change_pending: bool,
    /// True when this replica leads and every voter has applied the change that made its
    /// membership, as their heartbeat answers report: a removed member may then be gone for
    /// good (no voter counts it any more, even after a crash).
    pub voters_applied_membership: bool,
}

/// What the last `ready()` handed out, settled by `advance`.
#[derive(Debug)]
struct ReadyMarks {
    last_entry: Option<(LogIndex, Term)>,
    snapshot_index: Option<LogIndex>,
    last_committed: Option<LogIndex>,
    hard_state: Option<HardState>,
}

/// One replica of a Raft group, driven by the application (see the crate docs).
pub struct RawNode<S> {
    raft: Raft<S>,
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
    marks: Option<ReadyMarks>,
}

impl<S: Storage> RawNode<S> {
    /// Opens a replica over `storage`, restarting from whatever it holds.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] for bad settings; storage errors as returned.
    pub fn new(config: Config, storage: S) -> Result<Self> {
        let raft = Raft::new(config, storage)?;
        let prev_soft_state = raft.soft_state();
        let prev_hard_state = raft.hard_state();
        Ok(Self { raft, prev_soft_state, prev_hard_state, marks: None })
    }

    /// Advances the logical clock by one tick (election and heartbeat timeouts count ticks).
    /// Call it at most once per [`Config::tick_interval`]: lease reads rely on ticks never
    /// coming faster. Calling [`RawNode::set_clock`] just before keeps the send times of
    /// heartbeat rounds, and so the lease, accurate.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Quiesces this leader if its group is at rest (docs/raft.md "Quiescence"): every entry
    /// committed, persisted and applied here, every peer caught up, applied to the end and
    /// heard from lately, no read, transfer or membership change pending. It then sends a
    /// last round of heartbeats that quiesces its followers, and ticks do nothing until a
    /// message or a request wakes it. Returns whether it is quiescent. Call it when the
    /// application knows the group is idle (no request for a while): a group with steady
    /// traffic would only wake again at once.
    pub fn quiesce(&mut self) -> bool {
        self.raft.quiesce()
    }

    /// Wakes this replica if it is quiescent, for a request the core does not see (an
    /// operator's question about its peers, which a quiescent leader last heard from when it
    /// quiesced): a leader starts a new CheckQuorum period, hearing from none of its peers yet,
    /// and heartbeats at its next tick.
    pub fn wake(&mut self) {
        self.raft.wake();
    }

    /// Returns true while this replica is quiescent: its ticks do nothing, so the application
    /// may skip them. Every input but [`RawNode::tick`], [`RawNode::set_clock`] and a lease
    /// read that is served wakes it, as does every message but the followers' answers to a
    /// quiescent leader's heartbeats.
    #[must_use]
    pub fn is_quiescent(&self) -> bool {
        self.raft.is_quiescent()
    }

    /// Starts an election now (with a pre-vote round first when PreVote is on).
    ///
    /// This replica's own vote does not wait out the leader lease: called within an election
    /// timeout of hearing a leader, it may void that leader's lease reads (Raft dissertation
    /// §6.4.1). To move leadership, use [`RawNode::transfer_leader`].
    pub fn campaign(&mut self) {
        self.raft.wake();
        let kind = if self.raft.config.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.raft.campaign(kind);
    }

    /// Feeds a message from another replica.
    ///
    /// # Errors
    /// [`crate::Error::MisroutedMessage`] for a message addressed to another node.
    pub fn step(&mut self, message: Message) -> Result<()> {
        self.raft.step(message)
    }

    /// Proposes one command; returns its log index. It is replicated with the next `Ready`.
    ///
    /// # Errors
    /// [`crate::Error::NotLeader`] (with the leader hint) on a non-leader;
    /// [`crate::Error::TransferInProgress`]; [`crate::Error::UncommittedLogFull`] when the
    /// uncommitted log is full.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex> {
        self.raft.wake();
        self.raft.propose(vec![data])
    }

    /// Proposes several commands at once; returns the index of the last. They share one
    /// append message per follower.
    ///
    /// # Errors
    /// As [`RawNode::propose`].
    pub fn propose_batch(&mut self, data: Vec<Bytes>) -> Result<LogIndex> {
        self.raft.wake();
        self.raft.propose(data)
    }

    /// Proposes a membership change (one node at a time). The leader accepts it only once an
    /// entry of its term has committed and no other change is pending (the fix for single
    /// server changes, Raft dissertation §4.1 and its errata), and promotes a learner only
    /// once it has caught up with the commit index.
    ///
    /// With `unchanged_since`, the change is accepted only if the membership has not changed
    /// after that index: a change planned from the membership as of an applied index (read
    /// from [`RawNode::status`], [`Status::applied`]) is refused once another change came
    /// between, however late its request arrives. A replica that restarted or installed a
    /// snapshot does not know when its membership was made and refuses plans older than that.
    ///
    /// # Errors
    /// [`crate::Error::ConfChangeRefused`] with the reason; the errors of `propose`.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        unchanged_since: Option<LogIndex>,
    ) -> Result<LogIndex> {
        self.raft.wake();
        self.raft.propose_conf_change(change, unchanged_since)
    }

    /// Applies the committed membership change at `index` (call it when applying the entry);
    /// returns the new membership, which the application persists with the applied index.
    ///
    /// # Panics
    /// If `index` is not a committed entry still to apply, or the replica has no membership
    /// (docs/raft.md, membership changes).
    pub fn apply_conf_change(&mut self, index: LogIndex, change: ConfChange) -> ConfState {
        self.raft.apply_conf_change(index, change)
    }

    /// Asks for a linearizable read (ReadIndex, Raft dissertation §6.4). The answer arrives as
    /// a [`ReadState`] carrying `context` in a later `Ready`, or the context comes back in
    /// [`Ready::dropped_reads`]. A follower forwards the request to its leader.
    ///
    /// # Errors
    /// [`crate::Error::NotLeader`] when no leader is known;
    /// [`crate::Error::TooManyPendingReads`] when the read queue is full.
    pub fn read_index(&mut self, context: Bytes) -> Result<()> {
        self.raft.wake();
        let id = self.raft.id;
        self.raft.read_index(context, id)
    }

    /// Returns the index to read at under the leader lease (Raft dissertation §6.4.1), without
    /// a round trip. First reports `now` as [`RawNode::set_clock`] does; the lease is valid
    /// while the clock is before the send time of the newest heartbeat round a majority
    /// acknowledged plus `(election_ticks - lease_margin_ticks) * tick_interval` (see
    /// [`Config::tick_interval`] for why). A group with a single voter always holds it.
    ///
    /// # Errors
    /// [`crate::Error::LeaseUnavailable`] when CheckQuorum is off, the lease expired, this
    /// leader has not committed an entry of its term yet, or a transfer is under way;
    /// [`crate::Error::NotLeader`] on a non-leader.
    pub fn lease_read(&mut self, now: Duration) -> Result<LogIndex> {
        let read = self.raft.lease_read(now);
        if read.is_err() {
            // Not served here: whatever serves it instead (a ReadIndex round, another
            // replica found through this one) needs the group awake.
            self.raft.wake();
        }
        read
    }

    /// Reports the time: `now` is the application's monotonic clock (such as
    /// `Instant::now()` less a fixed origin instant), never a wall clock. The core keeps the
    /// latest time reported; an earlier one is ignored. Heartbeat rounds are stamped with it,
    /// so report it before each [`RawNode::tick`]; a stale time only shortens the lease.
    pub fn set_clock(&mut self, now: Duration) {
        self.raft.set_clock(now);
    }

    /// Hands leadership to `target` (Raft dissertation §3.10): proposals are refused until the
    /// transfer completes or an election timeout passes.
    ///
    /// # Errors
    /// [`crate::Error::NotLeader`]; [`crate::Error::ConfChangeRefused`] if `target` does not
    /// vote.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<()> {
        self.raft.wake();
        self.raft.transfer_leader(target)
    }

    /// Reports whether a snapshot sent to `to` was delivered. The application must report
    /// every [`crate::MessageBody::InstallSnapshot`] it sends, success or failure: until then
    /// the leader sends `to` nothing else.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        self.raft.report_snapshot(to, success);
    }

    /// Reports that a message to `to` could not be delivered (the leader stops pipelining).
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.raft.report_unreachable(to);
    }

    /// Returns true if `ready` would hand out anything.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        let log = &raft.log;
        raft.append_pending
            || (raft.role == Role::Leader
                && raft.read_only.unsent > 0
                && raft.committed_entry_in_current_term())
            || !raft.msgs.is_empty()
            || !raft.msgs_after_persist.is_empty()
            || !log.unstable.entries.is_empty()
            || log.unstable.snapshot.is_some()
            || log.has_next_committed_entries()
            || !raft.read_states.is_empty()
            || !raft.dropped_reads.is_empty()
            || raft.soft_state() != self.prev_soft_state
            || raft.hard_state() != self.prev_hard_state
    }

    /// Returns what to persist, send and apply. Call `advance` before the next `ready`.
    ///
    /// # Panics
    /// If the previous `Ready` was not advanced.
    pub fn ready(&mut self) -> Ready {
        assert!(self.marks.is_none(), "ready() called again before advance()");
        let raft = &mut self.raft;
        if raft.append_pending {
            raft.broadcast_append();
        }
        raft.flush_reads();

        let entries = raft.log.unstable.entries.clone();
        let snapshot = raft.log.unstable.snapshot.clone();
        let committed_entries =
            raft.log.next_committed_entries(raft.config.committed_bytes_per_ready_max);
        if let Some(last) = committed_entries.last() {
            raft.log.applying_to(last.index);
        }
        raft.reduce_uncommitted(&committed_entries);

        let hard_state = raft.hard_state();
        let hard_state_changed = hard_state != self.prev_hard_state;
        let soft_state = raft.soft_state();
        let soft_state_changed = soft_state != self.prev_soft_state;
        self.prev_soft_state = soft_state;

        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hard_state.term != self.prev_hard_state.term
            || hard_state.vote != self.prev_hard_state.vote;

        self.marks = Some(ReadyMarks {
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot_index: snapshot.as_ref().map(|s| s.metadata.index),
            last_committed: committed_entries.last().map(|e| e.index),
            hard_state: hard_state_changed.then_some(hard_state),
        });
        Ready {
            soft_state: soft_state_changed.then_some(soft_state),
            hard_state: hard_state_changed.then_some(hard_state),
            entries,
            snapshot,
            committed_entries,
            messages: std::mem::take(&mut raft.msgs),
            persisted_messages: std::mem::take(&mut raft.msgs_after_persist),
            read_states: std::mem::take(&mut raft.read_states),
            dropped_reads: std::mem::take(&mut raft.dropped_reads),
            must_sync,
        }
    }

    /// Tells the core the last `Ready` was persisted and its committed entries applied.
    pub fn advance(&mut self) {
        let last_committed = self.marks.as_ref().and_then(|m| m.last_committed);
        self.advance_append();
        if let Some(index) = last_committed {
            self.advance_apply_to(index);
        }
    }

    /// Tells the core the last `Ready` was persisted (its committed entries are being applied
    /// elsewhere; report them with [`RawNode::advance_apply_to`]).
    ///
    /// # Panics
    /// If there is no `Ready` to advance.
    pub fn advance_append(&mut self) {
        let marks = self.marks.take().expect("advance without a ready");
        if let Some(hard_state) = marks.hard_state {
            self.prev_hard_state = hard_state;
        }
        if let Some(index) = marks.snapshot_index {
            self.raft.log.stable_snap_to(index);
        }
        if let Some((index, term)) = marks.last_entry {
            self.raft.on_persisted(index, term);
        }
    }

    /// Tells the core the application has applied every entry up to `index`.
    pub fn advance_apply_to(&mut self, index: LogIndex) {
        self.raft.log.applied_to(index);
    }

    /// Returns a summary of this replica.
    #[must_use]
    pub fn status(&self) -> Status {
        let raft = &self.raft;
        let progress = if raft.role == Role::Leader {
            raft.tracker.progress.iter().map(|(id, p)| (*id, PeerStatus::of(p))).collect()
        } else {
            BTreeMap::new()
        };
        Status {
            id: raft.id,
            hard_state: raft.hard_state(),
            soft_state: raft.soft_state(),
            applied: raft.log.applied,
            first_index: raft.log.first_index(),
            last_index: raft.log.last_index(),
            conf_state: raft.tracker.conf.clone(),
            progress,
            membership_change_pending: raft.membership_change_pending(),
            voters_applied_membership: raft.voters_applied_membership(),
        }
    }

    /// The progress this leader tracks for member `id`; `None` when this replica does not lead
    /// or `id` is not a member. The one-member part of [`RawNode::status`], without its copies.
    #[must_use]
    pub fn peer_status(&self, id: NodeId) -> Option<PeerStatus> {
        let raft = &self.raft;
        if raft.role != Role::Leader {
            return None;
        }
        raft.tracker.get(id).map(PeerStatus::of)
    }

    /// True when this replica leads and has a membership change it has not applied
    /// ([`Status::membership_change_pending`]).
    #[must_use]
    pub fn membership_change_pending(&self) -> bool {
        self.raft.membership_change_pending()
    }

    /// The voter this leader is handing its leadership to, while the transfer is pending
    /// ([`RawNode::transfer_leader`]).
    #[must_use]
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.raft.lead_transferee
    }

    /// This replica's node id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// The index and term of this replica's last log entry.
    #[must_use]
    pub fn last_entry(&self) -> (LogIndex, Term) {
        (self.raft.log.last_index(), self.raft.log.last_term())
    }

    /// True when this replica leads and every voter has applied the change that made its
    /// membership ([`Status::voters_applied_membership`]).
    #[must_use]
    pub fn voters_applied_membership(&self) -> bool {
        self.raft.voters_applied_membership()
    }

    /// The membership this replica has applied.
    #[must_use]
    pub fn conf_state(&self) -> &ConfState {
        &self.raft.tracker.conf
    }

    /// The current term.
    #[must_use]
    pub fn term(&self) -> Term {
        self.raft.term
    }

    /// The current role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.raft.role
    }

    /// The leader of the current term, if known.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader
    }

    /// The commit index.
    #[must_use]
    pub fn committed(&self) -> LogIndex {
        self.raft.log.committed
    }

    /// The storage beneath the log.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.raft.log.store
    }

    /// The storage beneath the log, for persisting a `Ready` and compacting.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.store
    }

    /// The metadata of the snapshot this replica accepted and has not handed out in a `Ready`
    /// yet (the next `Ready` carries it), if any.
    #[must_use]
    pub fn pending_snapshot(&self) -> Option<&SnapshotMetadata> {
        self.raft.log.unstable.snapshot.as_ref().map(|snapshot| &snapshot.metadata)
    }
}
