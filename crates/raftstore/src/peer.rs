//! [`Peer`]: this node's replica of one group: its Raft core, its state machine, and the
//! requests waiting on it.
//!
//! Invariants:
//! - `proposals` and `conf_changes` are ordered by index; every index is above `applied`.
//! - A proposal (a command or a membership change) is answered exactly once: with its output
//!   when the entry at its index and term is applied; `ProposalOverwritten` when another entry is
//!   applied at its index; `ProposalAbandoned` when this replica stops leading before applying
//!   it.
//! - A read is answered exactly once: `awaiting_leader` holds reads whose ReadIndex round is in
//!   flight (keyed by the context handed to Raft, ordered by their deadlines too), and fails
//!   those still unanswered [`READ_INDEX_TIMEOUT_ELECTIONS`] election timeouts later (a
//!   forwarded read's answer may be lost); `awaiting_apply` holds reads whose index is known
//!   and which are served once `applied` reaches it.
//! - `received_snapshot` holds the state of the snapshot Raft accepted and has not handed out
//!   in a `Ready` yet, keyed by its index and term; nothing else (a refused snapshot's state is
//!   dropped at once).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use mosaic_engine::{Engine, GroupId, KvEngine, ShardId, ShardRecord, WriteBatch};
use mosaic_raft::{
    ConfChange, ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, RawNode,
    ReadState, Role, Snapshot, Term,
};

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::leader_balance::{Handover, LeaderBalance, LeaderView, preferred_leader};
use crate::log_compaction::AppliedLog;
use crate::msg::{Callback, ReadOutput, ServedBy};
use crate::span::GroupSpan;
use crate::state_machine::StateMachine;
use crate::storage::GroupStorage;

/// A proposal waiting for its entry to be applied.
struct PendingProposal<T> {
    index: LogIndex,
    term: Term,
    callback: Callback<T>,
}

/// A ReadIndex read unanswered after this many election timeouts fails with
/// [`Error::Timeout`] (the client retries it): a leader answers or drops a read within one
/// election timeout, unless the answer to a forwarded read is lost on the way.
pub const READ_INDEX_TIMEOUT_ELECTIONS: u64 = 2;

/// A read of a group whose state machine is `SM`.
type Read<K, SM> = PendingRead<<SM as StateMachine<K>>::Query, <SM as StateMachine<K>>::ReadOutput>;

/// A read waiting for leadership confirmation or for the apply to catch up.
pub(crate) enum PendingRead<Q, T> {
    /// A query of the state machine; `leading` is the term this replica led in when the read
    /// started (a ReadIndex or lease read it confirms itself), `None` when it did not lead.
    Query { query: Q, callback: Callback<ReadOutput<T>>, leading: Option<Term> },
    /// The replica's Raft status, answered only while it still leads in `term` (a confirmed
    /// status, [`crate::StoreMsg::Status`]).
    Status { term: Term, callback: Callback<mosaic_raft::Status> },
}

impl<Q, T> PendingRead<Q, T> {
    /// Answers the read with `error`.
    pub(crate) fn fail(self, error: Error) {
        match self {
            Self::Query { callback, .. } => callback(Err(error)),
            Self::Status { callback, .. } => callback(Err(error)),
        }
    }
}

/// A quiescent leader wakes for a heartbeat round after this many election timeouts asleep
/// (30 s at the default tick): the bound on how long a leader replaced in its sleep, whose
/// notice from a follower was lost, goes on answering for its group as a leader.
const LEADER_RECHECK_ELECTIONS: u64 = 30;

/// One replica of one group on this node.
pub struct Peer<K: KvEngine, SM: StateMachine<K>> {
    group: GroupId,
    pub(crate) raft: RawNode<GroupStorage<K>>,
    pub(crate) state_machine: SM,
    applied: LogIndex,
    proposals: VecDeque<PendingProposal<SM::ApplyOutput>>,
    conf_changes: VecDeque<PendingProposal<ConfState>>,
    /// Reads by id, each with the tick at which it times out (ids and deadlines grow
    /// together).
    awaiting_leader: BTreeMap<u64, (u64, Read<K, SM>)>,
    awaiting_apply: VecDeque<(LogIndex, Read<K, SM>)>,
    next_read_id: u64,
    /// Ticks this replica has seen awake since it was loaded (read deadlines, idleness).
    ticks: u64,
    /// `ticks` when the last request reached this replica (when it may quiesce its group).
    last_request_tick: u64,
    /// Ticks counted quiescent in a row (a quiescent leader's recheck).
    asleep_ticks: u64,
    /// Ticks after which a ReadIndex read times out.
    read_timeout_ticks: u64,
    /// Ticks asleep after which a quiescent leader wakes for a heartbeat round.
    recheck_ticks: u64,
    /// The state of the snapshot Raft accepted, until it is installed.
    received_snapshot: Option<ReceivedSnapshot>,
    /// The term of the last hard state the store persisted (the count of term changes).
    pub(crate) observed_term: Term,
    /// What this replica applied since the log's compaction point (when to compact by bytes).
    pub(crate) applied_log: AppliedLog,
    /// Since when this replica leads (when to hand leadership to the preferred voter).
    leader_balance: LeaderBalance,
    /// The tracing span of this replica's work.
    span: GroupSpan,
}

/// The state of a snapshot Raft accepted, by its index and term.
struct ReceivedSnapshot {
    index: LogIndex,
    term: Term,
    records: Vec<(ShardId, ShardRecord)>,
}

impl<K: KvEngine, SM: StateMachine<K>> Peer<K, SM> {
    /// Wraps a Raft core and a loaded state machine; `applied` is the group's durable applied
    /// index, `election_ticks` the group's election timeout, `span` the replica's span.
    pub(crate) fn new(
        group: GroupId,
        raft: RawNode<GroupStorage<K>>,
        state_machine: SM,
        applied: LogIndex,
        election_ticks: u32,
        span: GroupSpan,
    ) -> Self {
        let observed_term = raft.term();
        Self {
            group,
            raft,
            state_machine,
            applied,
            proposals: VecDeque::new(),
            conf_changes: VecDeque::new(),
            awaiting_leader: BTreeMap::new(),
            awaiting_apply: VecDeque::new(),
            next_read_id: 1,
            ticks: 0,
            last_request_tick: 0,
            asleep_ticks: 0,
            read_timeout_ticks: READ_INDEX_TIMEOUT_ELECTIONS * u64::from(election_ticks),
            recheck_ticks: LEADER_RECHECK_ELECTIONS * u64::from(election_ticks),
            received_snapshot: None,
            observed_term,
            applied_log: AppliedLog::default(),
            leader_balance: LeaderBalance::default(),
            span,
        }
    }

    /// Enters the tracing span of this replica's work (`group`, with its current term), until
    /// the returned guard is dropped.
    pub(crate) fn enter_span(&mut self) -> tracing::span::EnteredSpan {
        self.span.enter(self.raft.term())
    }

    /// The group.
    #[must_use]
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The Raft status of this replica (role, term, commit, progress of followers), with the
    /// state machine's applied index (the membership is as of it; Raft learns of an apply
    /// only once the store has answered its reads).
    #[must_use]
    pub fn status(&self) -> mosaic_raft::Status {
        mosaic_raft::Status { applied: self.applied, ..self.raft.status() }
    }

    /// Answers `callback` with this replica's status once its leadership is confirmed: after a
    /// ReadIndex round of its term, once applied up to that round's index, so that the
    /// membership it shows is the group's latest. Fails with [`Error::NotLeader`] if it does
    /// not lead, or no longer in the same term.
    pub(crate) fn confirmed_status(&mut self, callback: Callback<mosaic_raft::Status>) {
        let status = self.status();
        if status.soft_state.role != Role::Leader {
            callback(Err(Error::NotLeader { group: self.group, leader: status.soft_state.leader }));
            return;
        }
        self.read_index(PendingRead::Status { term: status.hard_state.term, callback });
    }

    /// Whether this replica is quiescent: its group was idle, so it counts no ticks and sends
    /// no heartbeats until a request or a message wakes it (docs/raftstore.md "Quiescence").
    #[must_use]
    pub fn is_quiescent(&self) -> bool {
        self.raft.is_quiescent()
    }

    /// The state machine.
    #[must_use]
    pub fn state_machine(&self) -> &SM {
        &self.state_machine
    }

    /// The index of the last entry applied to the state machine.
    #[must_use]
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Notes a request: the group is not idle (the Raft core wakes on the request itself).
    fn on_request(&mut self) {
        self.last_request_tick = self.ticks;
    }

    /// Proposes a command; the callback is answered when it is applied (or fails).
    pub(crate) fn propose(&mut self, proposal: &SM::Proposal, callback: Callback<SM::ApplyOutput>) {
        self.on_request();
        if let Err(error) = self.state_machine.check_proposal(proposal) {
            callback(Err(error));
            return;
        }
        match self.raft.propose(SM::encode(proposal)) {
            Ok(index) => {
                let term = self.raft.term();
                push_pending(self.group, &mut self.proposals, index, term, callback);
            }
            Err(error) => callback(Err(Error::from_raft(self.group, error))),
        }
    }

    /// Proposes a membership change (if the membership has not changed after
    /// `unchanged_since`, see [`RawNode::propose_conf_change`]); the callback is answered with
    /// the new membership when it is applied (or fails as a proposal does).
    pub(crate) fn propose_conf_change(
        &mut self,
        change: ConfChange,
        unchanged_since: Option<LogIndex>,
        callback: Callback<ConfState>,
    ) {
        self.on_request();
        match self.raft.propose_conf_change(change, unchanged_since) {
            Ok(index) => {
                let term = self.raft.term();
                push_pending(self.group, &mut self.conf_changes, index, term, callback);
            }
            Err(error) => callback(Err(Error::from_raft(self.group, error))),
        }
    }

    /// The term this replica leads in, if it leads.
    fn leading_term(&self) -> Option<Term> {
        (self.raft.role() == Role::Leader).then(|| self.raft.term())
    }

    /// Starts a linearizable read: a ReadIndex round, then a local read once applied.
    pub(crate) fn read_index(&mut self, mut read: Read<K, SM>) {
        self.on_request();
        if let PendingRead::Query { leading, .. } = &mut read {
            *leading = self.leading_term();
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        match self.raft.read_index(Bytes::copy_from_slice(&id.to_be_bytes())) {
            Ok(()) => {
                let deadline = self.ticks + self.read_timeout_ticks;
                self.awaiting_leader.insert(id, (deadline, read));
            }
            Err(error) => read.fail(Error::from_raft(self.group, error)),
        }
    }

    /// Starts a lease read at time `now` (read from the clock as the read is handled, never
    /// earlier): served once applied up to the lease's read index; falls back to ReadIndex
    /// when the lease is not valid.
    pub(crate) fn lease_read(&mut self, engine: &Engine<K>, mut read: Read<K, SM>, now: Duration) {
        self.on_request();
        if let PendingRead::Query { leading, .. } = &mut read {
            *leading = self.leading_term();
        }
        match self.raft.lease_read(now) {
            Ok(index) => self.serve_at(engine, index, read),
            Err(mosaic_raft::Error::LeaseUnavailable { .. }) => self.read_index(read),
            Err(error) => read.fail(Error::from_raft(self.group, error)),
        }
    }

    /// Serves a read from what this replica has applied.
    pub(crate) fn stale_read(&self, engine: &Engine<K>, read: Read<K, SM>) {
        self.serve(engine, read);
    }

    fn serve(&self, engine: &Engine<K>, read: Read<K, SM>) {
        match read {
            PendingRead::Query { query, callback, leading } => {
                // Served by the leadership that started it only if this replica still leads
                // in that term (it may have stepped down, or been elected again, while the
                // read waited for the apply).
                let served_by = match leading {
                    Some(term) if self.leading_term() == Some(term) => ServedBy::Leader(term),
                    _ => ServedBy::Other { leader: self.raft.leader() },
                };
                callback(self.state_machine.read(engine, &query).map(|output| ReadOutput {
                    output,
                    applied_index: self.applied,
                    served_by,
                }));
            }
            PendingRead::Status { term, callback } => {
                let status = self.status();
                if status.soft_state.role == Role::Leader && status.hard_state.term == term {
                    callback(Ok(status));
                } else {
                    let leader = self.raft.leader();
                    callback(Err(Error::NotLeader { group: self.group, leader }));
                }
            }
        }
    }

    /// Serves `read` now if applied reaches `index`, or queues it until then.
    fn serve_at(&mut self, engine: &Engine<K>, index: LogIndex, read: Read<K, SM>) {
        if index <= self.applied {
            self.serve(engine, read);
        } else {
            self.awaiting_apply.push_back((index, read));
        }
    }

    /// Takes the results of ReadIndex rounds from a `Ready`.
    pub(crate) fn on_read_states(
        &mut self,
        engine: &Engine<K>,
        read_states: Vec<ReadState>,
        dropped: Vec<Bytes>,
    ) {
        for state in read_states {
            if let Some((_, read)) =
                read_id(&state.context).and_then(|id| self.awaiting_leader.remove(&id))
            {
                self.serve_at(engine, state.index, read);
            }
        }
        for context in dropped {
            if let Some((_, read)) =
                read_id(&context).and_then(|id| self.awaiting_leader.remove(&id))
            {
                let leader = self.raft.leader();
                read.fail(Error::NotLeader { group: self.group, leader });
            }
        }
    }

    /// Counts a tick of a quiescent replica with no read waiting, in the Raft core alone (a
    /// follower's election timer), and returns true; returns false, counting nothing, for a
    /// replica that needs [`Peer::tick`] (and a Ready pass after it).
    ///
    /// A quiescent replica wakes first when the nodes it depends on are `silent` (not heard
    /// for an election timeout): a follower whose leader's node is, so that it campaigns if no
    /// leader shows up; a leader that hears no majority of its voters' nodes, so that its
    /// CheckQuorum round steps it down as it would awake (no longer answering for the group,
    /// to `StoreMsg::ReadLeaders` among others, while another leader may have been elected).
    /// A leader also wakes after [`LEADER_RECHECK_ELECTIONS`] election timeouts asleep, for a
    /// heartbeat round: a follower woken by another candidate tells its leader (the Raft
    /// core), but that one message may be lost, and a leader replaced in its sleep would then
    /// answer for the group until a request came.
    pub(crate) fn tick_quiescent(&mut self, silent: impl Fn(NodeId) -> bool) -> bool {
        if !self.raft.is_quiescent() || !self.awaiting_leader.is_empty() {
            return false;
        }
        self.asleep_ticks += 1;
        let id = self.raft.id();
        let wake_for = if self.raft.role() == Role::Leader {
            let voters = &self.raft.conf_state().voters;
            let heard = voters.iter().filter(|voter| **voter == id || !silent(**voter)).count();
            if heard * 2 <= voters.len() {
                Some("a majority of the voters' nodes went silent")
            } else {
                (self.asleep_ticks >= self.recheck_ticks).then_some("a heartbeat round every while")
            }
        } else {
            self.raft.leader().is_some_and(&silent).then_some("the leader's node went silent")
        };
        if let Some(why) = wake_for {
            tracing::debug!(group_id = %self.group, "waking the quiescent group: {why}");
            self.raft.wake();
            return false;
        }
        self.raft.tick();
        true
    }

    /// Wakes this replica if it is a quiescent follower of a leader on `node`; returns whether
    /// it did.
    pub(crate) fn wake_if_led_from(&mut self, node: NodeId) -> bool {
        let led_from = self.raft.role() != Role::Leader && self.raft.leader() == Some(node);
        if led_from && self.raft.is_quiescent() {
            self.raft.wake();
            return true;
        }
        false
    }

    /// A leader whose group had no request for `quiesce_ticks` and has nothing waiting here
    /// quiesces it if the Raft core finds it at rest (`RawNode::quiesce`); while the leader
    /// balance is on, only the group's preferred voter does, so that a leadership to hand
    /// back stays awake to be handed back. Returns whether it quiesced now.
    pub(crate) fn quiesce_if_idle(&mut self, config: &StoreConfig) -> bool {
        let idle = self.ticks.saturating_sub(self.last_request_tick);
        if config.quiesce_ticks == 0
            || idle < u64::from(config.quiesce_ticks)
            || self.raft.role() != Role::Leader
            || self.raft.is_quiescent()
            || !self.proposals.is_empty()
            || !self.conf_changes.is_empty()
            || !self.awaiting_leader.is_empty()
            || !self.awaiting_apply.is_empty()
            || self.received_snapshot.is_some()
        {
            return false;
        }
        let voters = &self.raft.conf_state().voters;
        if config.leader_balance_ticks != 0
            && preferred_leader(self.group, voters) != Some(self.raft.id())
        {
            return false;
        }
        self.raft.quiesce()
    }

    /// Counts a tick at time `now`: ticks the Raft core and fails the ReadIndex reads whose
    /// deadline passed.
    pub(crate) fn tick(&mut self, now: Duration) {
        self.asleep_ticks = 0;
        self.raft.set_clock(now);
        self.raft.tick();
        self.ticks += 1;
        while let Some(entry) = self.awaiting_leader.first_entry() {
            if entry.get().0 > self.ticks {
                break;
            }
            let (_, read) = entry.remove();
            tracing::debug!(group_id = %self.group, "a read's leadership confirmation timed out");
            read.fail(Error::Timeout);
        }
    }

    /// On a tick of a leader: hands leadership to the group's preferred voter when
    /// [`LeaderBalance`] says it is time (`interval` ticks after leading began or the last ask,
    /// longer after asks that failed) and the voter is ready. Returns the voter asked.
    pub(crate) fn balance_leadership(&mut self, interval: u32) -> Option<NodeId> {
        if self.raft.role() != Role::Leader {
            return None;
        }
        let view = leader_view(self.group, &self.raft);
        let target =
            self.leader_balance.on_tick(self.ticks, u64::from(interval), &view, |node| {
                self.raft.peer_status(node)
            })?;
        match self.raft.transfer_leader(target) {
            Ok(()) => Some(target),
            Err(error) => {
                tracing::debug!(group_id = %self.group, %error, "leadership not handed over");
                None
            }
        }
    }

    /// An operator's request to hand this replica's leadership to `to` (the group's preferred
    /// voter when `None`) now: asked when that voter is ready (`crate::leader_balance`). Also
    /// returns whether a handover started now (not when the one asked was already pending).
    ///
    /// # Errors
    /// [`Error::NotLeader`] when this replica does not lead; [`Error::InvalidArgument`] when
    /// `to` is not a voter.
    pub(crate) fn transfer_leadership(&mut self, to: Option<NodeId>) -> Result<(Handover, bool)> {
        self.on_request();
        if self.raft.role() != Role::Leader {
            return Err(Error::NotLeader { group: self.group, leader: self.raft.leader() });
        }
        // A quiescent leader last heard from its voters when it quiesced: woken, it knows of
        // none as up until its next heartbeat round is answered (the voter is not ready yet).
        self.raft.wake();
        let view = leader_view(self.group, &self.raft);
        let pending = view.transferring_to.is_some();
        let handover = self
            .leader_balance
            .on_request(self.ticks, &view, to, |node| self.raft.peer_status(node))?;
        let started = matches!(handover, Handover::Asked { .. }) && !pending;
        if let (Handover::Asked { to }, true) = (&handover, started) {
            self.raft.transfer_leader(*to).map_err(Error::Raft)?;
        }
        Ok((handover, started))
    }

    /// Reacts to losing leadership: proposals in flight may or may not commit, so they are
    /// answered `ProposalAbandoned` (the client retries with the same session sequence).
    pub(crate) fn on_role_change(&mut self, role: Role) {
        let leader = self.raft.leader();
        let preferred_leads = leader.is_some_and(|leader| {
            leader != self.raft.id()
                && preferred_leader(self.group, &self.raft.conf_state().voters) == Some(leader)
        });
        self.leader_balance.on_role_change(role == Role::Leader, preferred_leads, self.ticks);
        if role == Role::Leader {
            return;
        }
        let abandoned = || Error::ProposalAbandoned { group: self.group, leader };
        for proposal in self.proposals.drain(..) {
            (proposal.callback)(Err(abandoned()));
        }
        for change in self.conf_changes.drain(..) {
            (change.callback)(Err(abandoned()));
        }
    }

    /// Applies committed entries into `batch` and records the applied index there; adds the
    /// answers to send once the batch is written to `answers`. Returns true when one of the
    /// entries changed the membership (the store then syncs the batch).
    ///
    /// # Errors
    /// Engine errors from the state machine.
    pub(crate) fn apply(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        entries: Vec<Entry>,
        answers: &mut Answers<SM::ApplyOutput>,
    ) -> Result<bool> {
        let Some(last) = entries.last() else {
            return Ok(false);
        };
        let last_index = last.index;
        let mut membership_changed = false;
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied.next(),
                "group {}: applying {} after {}",
                self.group,
                entry.index,
                self.applied
            );
            let (output, conf_state) = match entry.kind {
                EntryKind::Normal if entry.data.is_empty() => (None, None),
                EntryKind::Normal => {
                    (Some(self.state_machine.apply(engine, batch, entry.index, &entry.data)?), None)
                }
                EntryKind::ConfChange => {
                    membership_changed = true;
                    (None, self.apply_conf_change(batch, &entry))
                }
            };
            let (index, term) = (entry.index, entry.term);
            settle(self.group, &mut self.proposals, index, term, output, &mut answers.outputs);
            settle(
                self.group,
                &mut self.conf_changes,
                index,
                term,
                conf_state,
                &mut answers.conf_changes,
            );
            self.applied = entry.index;
        }
        batch.set_applied_index(self.group, last_index);
        Ok(membership_changed)
    }

    /// Applies a membership entry; returns the new membership, or `None` for an entry that
    /// does not decode.
    fn apply_conf_change(&mut self, batch: &mut WriteBatch, entry: &Entry) -> Option<ConfState> {
        match ConfChange::decode(&entry.data) {
            Ok(change) => {
                let conf_state = self.raft.apply_conf_change(entry.index, change);
                tracing::info!(group_id = %self.group, index = %entry.index, ?change,
                    voter_count = conf_state.voters.len(),
                    learner_count = conf_state.learners.len(), "membership changed");
                batch.set_conf_state(self.group, conf_state.clone());
                Some(conf_state)
            }
            Err(error) => {
                // Every replica sees the same bytes and skips the entry alike.
                tracing::error!(group_id = %self.group, index = %entry.index, %error,
                    "skipping a membership entry that does not decode");
                None
            }
        }
    }

    /// Steps a snapshot message into Raft and keeps its state (`records`) if Raft accepted it,
    /// for [`Peer::install_snapshot`]. Whatever Raft refused (an older or a stale snapshot, or
    /// one that comes after a newer accepted one in the same inbox drain) is dropped here, so
    /// the kept state is always the one of the snapshot the next `Ready` installs.
    pub(crate) fn receive_snapshot(
        &mut self,
        message: Message,
        records: Vec<(ShardId, ShardRecord)>,
    ) {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            unreachable!("the store passes snapshot messages only");
        };
        let (index, term) = (snapshot.metadata.index, snapshot.metadata.term);
        if let Err(error) = self.raft.step(message) {
            tracing::warn!(group_id = %self.group, %index, %term, %error,
                "raft refused a snapshot");
        }
        let accepted = self
            .raft
            .pending_snapshot()
            .is_some_and(|pending| pending.index == index && pending.term == term);
        if accepted {
            self.received_snapshot = Some(ReceivedSnapshot { index, term, records });
        } else {
            tracing::debug!(group_id = %self.group, %index, %term,
                "snapshot not accepted; its state is dropped");
        }
    }

    /// Puts a snapshot that Raft accepted into `batch`: the group's data replaced by the
    /// snapshot's, the log reset to its position, its membership and applied index, all in
    /// the one write that persists the `Ready` (so a crash leaves the old state or the new).
    ///
    /// # Panics
    /// If the state of that very snapshot (index and term) was not received first: Raft only
    /// accepts a snapshot through [`crate::StoreMsg::Snapshot`], which carries it.
    pub(crate) fn install_snapshot(&mut self, batch: &mut WriteBatch, snapshot: &Snapshot) {
        let metadata = &snapshot.metadata;
        let ReceivedSnapshot { index, term, records } =
            self.received_snapshot.take().unwrap_or_else(|| {
                panic!(
                    "group {}: raft accepted snapshot {} that never arrived",
                    self.group, metadata.index
                )
            });
        assert!(
            index == metadata.index && term == metadata.term,
            "group {}: the kept snapshot state is of {index}/{term}, raft installs {}/{}",
            self.group,
            metadata.index,
            metadata.term
        );
        batch.clear_group_data(self.group);
        let mut rest = &records[..];
        while let Some((shard, _)) = rest.first() {
            let run = rest.iter().take_while(|(s, _)| s == shard).count();
            let shard_records: Vec<ShardRecord> =
                rest[..run].iter().map(|(_, record)| record.clone()).collect();
            batch.put_shard_records(self.group, *shard, &shard_records);
            rest = &rest[run..];
        }
        batch.reset_log(self.group, metadata.clone());
        batch.set_conf_state(self.group, metadata.conf_state.clone());
        batch.set_applied_index(self.group, metadata.index);
    }

    /// Reloads the state machine after a snapshot was written.
    ///
    /// # Errors
    /// Engine errors.
    pub(crate) fn snapshot_installed(&mut self, engine: &Engine<K>, index: LogIndex) -> Result<()> {
        self.state_machine = SM::load(self.group, engine)?;
        self.applied = index;
        self.applied_log.reset();
        tracing::info!(group_id = %self.group, %index, "installed snapshot");
        Ok(())
    }

    /// Serves the reads whose index the apply has reached.
    pub(crate) fn serve_applied_reads(&mut self, engine: &Engine<K>) {
        while self.awaiting_apply.front().is_some_and(|(index, _)| *index <= self.applied) {
            let (_, read) = self.awaiting_apply.pop_front().expect("front exists");
            self.serve(engine, read);
        }
    }

    /// Answers every pending request with `error` (the store is stopping).
    pub(crate) fn fail_all(&mut self, error: &Error) {
        for proposal in self.proposals.drain(..) {
            (proposal.callback)(Err(error.clone()));
        }
        for change in self.conf_changes.drain(..) {
            (change.callback)(Err(error.clone()));
        }
        for (_, (_, read)) in std::mem::take(&mut self.awaiting_leader) {
            read.fail(error.clone());
        }
        for (_, read) in self.awaiting_apply.drain(..) {
            read.fail(error.clone());
        }
    }

    /// Requests waiting on this replica: proposals, membership changes and reads.
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        self.proposals.len()
            + self.conf_changes.len()
            + self.awaiting_leader.len()
            + self.awaiting_apply.len()
    }
}

/// An answer computed during apply, sent once the apply batch is written.
pub(crate) struct Answer<T> {
    callback: Callback<T>,
    result: Result<T>,
}

/// The answers of one apply pass: to commands, and to membership changes.
pub(crate) struct Answers<T> {
    outputs: Vec<Answer<T>>,
    conf_changes: Vec<Answer<ConfState>>,
}

impl<T> Answers<T> {
    pub(crate) fn new() -> Self {
        Self { outputs: Vec::new(), conf_changes: Vec::new() }
    }

    /// Calls every callback (once the apply batch is written).
    pub(crate) fn send(self) {
        for answer in self.outputs {
            (answer.callback)(answer.result);
        }
        for answer in self.conf_changes {
            (answer.callback)(answer.result);
        }
    }
}

/// Queues a proposal accepted by Raft at `index`.
fn push_pending<T>(
    group: GroupId,
    queue: &mut VecDeque<PendingProposal<T>>,
    index: LogIndex,
    term: Term,
    callback: Callback<T>,
) {
    if let Some(last) = queue.back() {
        assert!(
            last.index < index,
            "group {group}: proposal index {index} after pending {}",
            last.index
        );
    }
    queue.push_back(PendingProposal { index, term, callback });
}

/// Answers the proposals of `queue` up to the entry applied at `index` in `term`: the one
/// proposed as that entry gets `output`, earlier ones (overwritten by another leader) get
/// `ProposalOverwritten`. `output` is `None` when the entry was not of this queue's kind.
fn settle<T>(
    group: GroupId,
    queue: &mut VecDeque<PendingProposal<T>>,
    index: LogIndex,
    term: Term,
    mut output: Option<T>,
    answers: &mut Vec<Answer<T>>,
) {
    while queue.front().is_some_and(|front| front.index <= index) {
        let proposal = queue.pop_front().expect("front exists");
        let matches = proposal.index == index && proposal.term == term;
        // Only the proposal made as this very entry may take its output.
        let result = match output.take_if(|_| matches) {
            Some(output) => Ok(output),
            None => Err(Error::ProposalOverwritten { group }),
        };
        answers.push(Answer { callback: proposal.callback, result });
    }
}

fn read_id(context: &Bytes) -> Option<u64> {
    <[u8; 8]>::try_from(&context[..]).ok().map(u64::from_be_bytes)
}

/// What leader balance decides from: `raft`'s view as the leader of `group`.
fn leader_view<K: KvEngine>(group: GroupId, raft: &RawNode<GroupStorage<K>>) -> LeaderView<'_> {
    LeaderView {
        group,
        leader: raft.id(),
        voters: &raft.conf_state().voters,
        last_index: raft.last_entry().0,
        membership_change_pending: raft.membership_change_pending(),
        transferring_to: raft.lead_transferee(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The answers proposals got, with their indexes.
    type Results = Arc<Mutex<Vec<(u64, Result<u32>)>>>;

    /// Queues a proposal at `index` of term 2 whose answer lands in `results`.
    fn pending(index: u64, results: &Results) -> PendingProposal<u32> {
        let results = Arc::clone(results);
        let callback: Callback<u32> =
            Box::new(move |result| results.lock().unwrap().push((index, result)));
        PendingProposal { index: LogIndex(index), term: Term(2), callback }
    }

    #[test]
    fn only_the_proposal_made_as_the_applied_entry_gets_its_output() {
        let results = Arc::default();
        let mut queue: VecDeque<_> = [pending(5, &results), pending(6, &results)].into();
        let mut answers = Vec::new();
        settle(GroupId(1), &mut queue, LogIndex(6), Term(2), Some(42), &mut answers);
        assert!(queue.is_empty());
        for answer in answers {
            (answer.callback)(answer.result);
        }
        let results = results.lock().unwrap();
        assert!(matches!(results[0], (5, Err(Error::ProposalOverwritten { .. }))), "{results:?}");
        assert!(matches!(results[1], (6, Ok(42))), "{results:?}");
    }
}
