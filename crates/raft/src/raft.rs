//! The Raft state machine: elections, replication, commitment, snapshots, reads, leadership
//! transfer and membership, driven by `tick` and `step` and producing messages.
//!
//! Invariants (checked where they are established):
//! - At most one leader per term (Raft §5.2): a node votes at most once per term, and the vote
//!   is persisted before the vote response is sent (it travels in `msgs_after_persist`).
//! - A leader only ever appends to its log (Raft §5.3).
//! - A leader commits by counting replicas only for entries of its current term (§5.4.2).

use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody, RejectHint};
use crate::read_only::{PendingRead, ReadOnly};
use crate::rng::SplitMix64;
use crate::storage::Storage;
use crate::tracker::{ProgressState, ProgressTracker, VoteResult};
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, ReadState, Role,
    Snapshot, SoftState, Term,
};

mod quiescence;

/// Why a node campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    /// A pre-vote round first (when PreVote is on).
    PreElection,
    /// A real election.
    Election,
    /// The leader asked this node to take over: skip the pre-vote and the lease.
    Transfer,
}

/// The fewest values a replica's first election timeout after a start with a term is drawn
/// from (`Raft::new`): that draw spans half an election timeout, but at least this many ticks,
/// or the whole usual range when the election timeout is shorter.
const FIRST_TIMEOUT_SPREAD_MIN_TICKS: u32 = 4;

pub(crate) struct Raft<S> {
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) log: RaftLog<S>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) tracker: ProgressTracker,

    /// Messages that may be sent before this `Ready` is persisted (a leader's appends).
    pub(crate) msgs: Vec<Message>,
    /// Messages that may be sent only after this `Ready` is persisted (votes, acks).
    pub(crate) msgs_after_persist: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) dropped_reads: Vec<Bytes>,

    /// The latest time the application reported (`RawNode::set_clock`): its monotonic clock,
    /// from an arbitrary origin. Kept as the maximum seen, so it never goes backwards. Times
    /// heartbeat rounds for the lease (Raft dissertation §6.4.1).
    now: Duration,
    election_elapsed: u32,
    /// Ticks this replica still ignores vote and pre-vote requests (other than a leadership
    /// transfer's) for because it started: every start with a term may be a restart right
    /// after it acknowledged a leader's round, and that leader's lease relies on it ignoring
    /// votes for an election timeout of its ticks (Raft dissertation §6.4.1). Starts at
    /// `election_ticks` (0 without CheckQuorum, or at term 0: a replica that never saw a term
    /// acknowledged nothing), counts down with ticks, and drops to 0 once it hears a leader,
    /// whose lease the usual rule then protects.
    start_quiet_ticks: u32,
    heartbeat_elapsed: u32,
    randomized_election_ticks: u32,
    rng: SplitMix64,
    /// This replica counts no ticks: its group is idle (`quiescence`). Any message (but the
    /// answers to a quiesced leader's round) or request wakes it.
    quiescent: bool,
    /// A follower's newest heartbeat round from the leader of its term: a quiesce round older
    /// than that arrived out of order and does not quiesce it.
    leader_round: u64,

    /// The node leadership is being transferred to.
    pub(crate) lead_transferee: Option<NodeId>,
    /// Ticks since the pending transfer was asked for (`lead_transferee` set from none): it is
    /// given up after an election timeout. Its own count, not `election_elapsed`, so that asks
    /// never postpone the leader's CheckQuorum round (found by review: asks for alternating
    /// voters, each restarting the election timer, kept a leader that heard no one leading).
    transfer_elapsed: u32,
    /// Index of the latest membership change in the log, while it may be unapplied.
    pending_conf_index: LogIndex,
    /// This leader has a change in its log that removes it, not applied yet (appended now, or
    /// found there when it became leader): it takes no proposal until it steps down, so that
    /// its log ends with its removal (and, re-elected, its term's no-op). A removed leader
    /// whose log ran past what the voters have would refuse them its vote, which they may need
    /// (they count it until they apply the removal): with one of them down, no leader again.
    removing_self: bool,
    /// The applied membership has not changed after this index: the index of the change that
    /// made it, or a later index where that is not known (the applied index at a restart, a
    /// snapshot's index). Never below the real one, so a change planned from the membership
    /// as of an index at or above it was planned from the membership in effect.
    conf_index: LogIndex,
    /// Bytes of entries appended by this leader that are not yet committed.
    pub(crate) uncommitted_bytes: u64,
    /// Set once this leader sent TimeoutNow in its term: its lease no longer holds.
    sent_timeout_now: bool,
    /// Proposals appended since the last broadcast (sent when the `Ready` is built).
    pub(crate) append_pending: bool,
    pub(crate) read_only: ReadOnly,
    pub(crate) config: Config,
}

impl<S: Storage> Raft<S> {
    pub(crate) fn new(config: Config, store: S) -> Result<Self> {
        config.validate()?;
        let state = store.initial_state()?;
        let log = RaftLog::new(store, state.hard_state.commit, config.applied)?;
        let mut raft = Self {
            id: config.id,
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            log,
            role: Role::Follower,
            leader: None,
            tracker: ProgressTracker::new(config.inflight_messages_max, config.inflight_bytes_max),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            now: Duration::ZERO,
            election_elapsed: 0,
            // A replica that never saw a term (term 0) acknowledged no leader: it has no lease
            // to honour, and a new group elects its first leader without waiting.
            start_quiet_ticks: if config.check_quorum && state.hard_state.term.0 > 0 {
                config.election_ticks
            } else {
                0
            },
            heartbeat_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            rng: SplitMix64::new(config.seed),
            quiescent: false,
            leader_round: 0,
            lead_transferee: None,
            transfer_elapsed: 0,
            pending_conf_index: LogIndex(0),
            removing_self: false,
            conf_index: LogIndex(0),
            uncommitted_bytes: 0,
            sent_timeout_now: false,
            append_pending: false,
            read_only: ReadOnly::default(),
            config,
        };
        let next = raft.log.last_index().next();
        raft.tracker.set_conf(state.conf_state, next);
        // The stored membership is the one applied; when it was made is not stored.
        raft.conf_index = raft.log.applied;
        raft.become_follower(raft.term, None);
        if raft.start_quiet_ticks > 0 {
            // Nobody who started with this replica grants a vote before its quiet period ends,
            // so a campaign earlier is wasted; a narrower spread after it elects sooner when a
            // whole group starts at once (a cluster restarted). Never under
            // `FIRST_TIMEOUT_SPREAD_MIN_TICKS` values (all of them below that): with fewer,
            // replicas that start together tie, and a tie is a split vote (found by review:
            // with 3 election ticks every whole-group restart split its first election).
            let ticks = raft.config.election_ticks;
            let spread = (ticks / 2).max(ticks.min(FIRST_TIMEOUT_SPREAD_MIN_TICKS));
            raft.randomized_election_ticks = raft.rng.in_range(ticks, ticks + spread);
        }
        info!(
            node_id = %raft.id, term = %raft.term, commit_index = %raft.log.committed,
            last_index = %raft.log.last_index(), "raft replica started"
        );
        Ok(raft)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader, role: self.role }
    }

    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let message = Message { from: self.id, to, term, body };
        if message.is_from_leader() {
            self.msgs.push(message);
        } else {
            self.msgs_after_persist.push(message);
        }
    }

    // ---- Roles -------------------------------------------------------------------------------

    fn reset(&mut self, term: Term) {
        // Reads queued while leading are rejected in the term they were queued in, before the
        // term changes: a rejection is a message only a leader sends, so stamped with the new
        // term it would make its receiver take this node for that term's leader and ignore the
        // real candidates (CheckQuorum's lease, dissertation §6.2).
        for read in self.read_only.drain() {
            self.drop_read(read);
        }
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.quiescent = false;
        self.leader_round = 0;
        self.randomized_election_ticks =
            self.rng.in_range(self.config.election_ticks, 2 * self.config.election_ticks);
        self.lead_transferee = None;
        self.tracker.votes.clear();
        self.tracker.reset_all(self.log.last_index().next());
        self.pending_conf_index = LogIndex(0);
        self.removing_self = false;
        self.uncommitted_bytes = 0;
        self.append_pending = false;
        self.sent_timeout_now = false;
    }

    fn drop_read(&mut self, read: PendingRead) {
        if read.from == self.id {
            self.dropped_reads.push(read.context);
        } else {
            let body = MessageBody::ReadIndexResponse { index: None, context: read.context };
            self.send(read.from, self.term, body);
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        if leader.is_some() {
            self.start_quiet_ticks = 0;
        }
        debug!(
            node_id = %self.id, term = %self.term,
            leader = leader.map(tracing::field::display), "became follower"
        );
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a pre-candidate");
        // A pre-candidate keeps its term and vote; it only collects pre-votes.
        self.tracker.votes.clear();
        self.leader = None;
        self.role = Role::PreCandidate;
        debug!(node_id = %self.id, term = %self.term, "became pre-candidate");
    }

    /// Becomes a candidate in the next term (the caller checked that there is one).
    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a candidate");
        self.reset(Term(self.term.0 + 1));
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        debug!(node_id = %self.id, term = %self.term, "became candidate");
    }

    fn become_leader(&mut self) {
        assert_ne!(self.role, Role::Follower, "a follower cannot become leader directly");
        self.reset(self.term);
        self.leader = Some(self.id);
        self.role = Role::Leader;
        let stable = self.log.last_stable_index();
        let id = self.id;
        if let Some(progress) = self.tracker.get_mut(id) {
            progress.become_replicate();
            progress.maybe_update(stable);
            progress.recent_active = true;
        }
        // Any membership change in the log may still be unapplied: treat it as pending.
        self.pending_conf_index = self.log.last_index();
        // Its own removal, proposed while it led before (a restart or a step-down forgot it),
        // may be among them: then it takes no proposal after this term's no-op either.
        self.removing_self = self.has_unapplied_removal_of_self();
        // The no-op of this term (Raft §8): committing it commits everything before it and
        // tells the leader its commit index.
        self.append_entries(vec![(EntryKind::Normal, Bytes::new())]);
        info!(node_id = %self.id, term = %self.term, "became leader");
    }

    fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id) && self.log.unstable.snapshot.is_none()
    }

    /// Returns true if a committed membership change has not been applied yet: campaigning
    /// then could use a stale membership.
    fn has_unapplied_conf_change(&self) -> bool {
        let low = self.log.applied.next().max(self.log.first_index());
        let high = self.log.committed.next();
        if low >= high {
            return false;
        }
        match self.log.slice(low, high, None) {
            Ok(entries) => entries.iter().any(|e| e.kind == EntryKind::ConfChange),
            Err(_) => true,
        }
    }

    /// Returns true if the log holds a change removing this replica that is not applied yet
    /// (false, with a warning, if the log cannot be read: refusing every proposal of a term
    /// would be worse).
    fn has_unapplied_removal_of_self(&self) -> bool {
        let low = self.log.applied.next().max(self.log.first_index());
        let high = self.log.last_index().next();
        if low >= high {
            return false;
        }
        let removal = ConfChange::RemoveNode(self.id);
        match self.log.slice(low, high, None) {
            Ok(entries) => entries.iter().any(|entry| {
                entry.kind == EntryKind::ConfChange
                    && ConfChange::decode(&entry.data).is_ok_and(|change| change == removal)
            }),
            Err(error) => {
                warn!(node_id = %self.id, %error,
                    "cannot read the unapplied log for a removal of this replica");
                false
            }
        }
    }

    pub(crate) fn campaign(&mut self, kind: CampaignKind) {
        if self.role == Role::Leader {
            debug!(node_id = %self.id, "already leader: no campaign");
            return;
        }
        if !self.promotable() {
            debug!(node_id = %self.id, "not a voter: will not campaign");
            return;
        }
        if self.has_unapplied_conf_change() {
            debug!(node_id = %self.id, "unapplied membership change: will not campaign");
            return;
        }
        // A campaign needs the next term. Only a peer's (or an operator's) message can bring a
        // term this far: the node stays a follower rather than wrap around to term 0.
        let Some(next_term) = self.term.0.checked_add(1).map(Term) else {
            warn!(node_id = %self.id, term = %self.term, "no term left to campaign in");
            return;
        };
        let (vote_term, pre_vote) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (next_term, true)
        } else {
            self.become_candidate();
            (self.term, false)
        };
        self.tracker.record_vote(self.id, true);
        if self.tracker.tally_votes() == VoteResult::Won {
            // A group of one wins at once.
            if pre_vote {
                self.campaign(CampaignKind::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        let voters: Vec<NodeId> =
            self.tracker.conf.voters.iter().copied().filter(|id| *id != self.id).collect();
        for to in voters {
            let body = MessageBody::RequestVote {
                pre_vote,
                last_index,
                last_term,
                leader_transfer: kind == CampaignKind::Transfer,
            };
            self.send(to, vote_term, body);
        }
    }

    // ---- Ticks -------------------------------------------------------------------------------

    pub(crate) fn tick(&mut self) {
        if self.quiescent {
            self.tick_quiescent();
            return;
        }
        self.start_quiet_ticks = self.start_quiet_ticks.saturating_sub(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_ticks {
            self.election_elapsed = 0;
            let kind = if self.config.pre_vote {
                CampaignKind::PreElection
            } else {
                CampaignKind::Election
            };
            self.campaign(kind);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.tracker.quorum_active(self.id) {
                info!(node_id = %self.id, term = %self.term, "no quorum heard: stepping down");
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.lead_transferee.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_ticks
                && let Some(target) = self.lead_transferee.take()
            {
                info!(node_id = %self.id, peer = %target, "leadership transfer timed out");
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(false);
        }
    }

    /// Sends a new round to every peer; with `quiesce`, the round tells them to stop ticking.
    fn broadcast_heartbeat(&mut self, quiesce: bool) {
        // A periodic heartbeat may come before this leader's first commit: its commit index
        // could then be stale, and reads must wait for that commit (Raft dissertation §6.4).
        let committed = self.committed_entry_in_current_term().then_some(self.log.committed);
        // The round is stamped with the latest time the application reported, which may be
        // older than the real time of sending: that only makes the lease end sooner, which is
        // safe (the followers' election timers start when they receive the round, later still).
        let round = self.read_only.next_round(self.now, committed);
        for to in self.tracker.peers(self.id) {
            let progress = self.tracker.get(to).expect("peer has progress");
            let commit = progress.match_index.min(self.log.committed);
            self.send(to, self.term, MessageBody::Heartbeat { commit, round, quiesce });
        }
        // A group of one confirms its own rounds.
        self.release_reads();
    }

    // ---- Messages ----------------------------------------------------------------------------

    pub(crate) fn step(&mut self, m: Message) -> Result<()> {
        if m.to != self.id {
            return Err(Error::MisroutedMessage { node: self.id, to: m.to });
        }
        if self.quiescent && !self.keeps_quiescent(&m) {
            self.wake_by(m.from);
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::RequestVote { pre_vote, leader_transfer, .. } => {
                    // The leader of our term asking for a vote no longer leads in it (a node
                    // campaigns only when it does not lead), so its lease is gone: only it
                    // could have held one in this term (a leader restarted, say, whose
                    // followers quiesced and heard nothing since).
                    let leader_heard_recently = self.leader.is_some_and(|leader| leader != m.from)
                        && self.election_elapsed < self.config.election_ticks;
                    let in_lease = self.config.check_quorum
                        && (leader_heard_recently || self.start_quiet_ticks > 0);
                    if !leader_transfer && in_lease {
                        // CheckQuorum's lease: a leader was heard recently, so this candidate
                        // cannot be needed; ignoring it keeps a rejoining node from disrupting,
                        // and the leader may serve lease reads (dissertation §6.4.1). A replica
                        // that just (re)started may have acknowledged a leader right before:
                        // it waits out an election timeout too. A transfer's candidate was
                        // sent by the leader, which gave up its lease.
                        debug!(
                            node_id = %self.id, peer = %m.from,
                            start_quiet_ticks = self.start_quiet_ticks, "vote ignored: leader lease"
                        );
                        return Ok(());
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                MessageBody::RequestVoteResponse { pre_vote: true, granted: true } => {
                    // Pre-vote grants carry the future term; they do not change ours.
                }
                _ => {
                    let leader = m.is_from_leader().then_some(m.from);
                    self.become_follower(m.term, leader);
                }
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader: our higher term in the answer makes it step down. Without
                    // this, a partitioned old leader under CheckQuorum/PreVote could stall.
                    let body = MessageBody::AppendResponse { index: LogIndex(0), reject: None };
                    self.send(m.from, self.term, body);
                }
                MessageBody::RequestVote { pre_vote: true, .. } => {
                    let body = MessageBody::RequestVoteResponse { pre_vote: true, granted: false };
                    self.send(m.from, self.term, body);
                }
                MessageBody::ReadIndexResponse { context, .. } => {
                    // A leader of an older term answered a read this node forwarded (it
                    // rejects them in the term it led when it steps down). The read is handed
                    // back rather than lost; it is not served, the application retries it.
                    self.dropped_reads.push(context.clone());
                }
                _ => {}
            }
            return Ok(());
        }

        if let MessageBody::RequestVote { pre_vote, last_index, last_term, .. } = m.body {
            self.handle_vote_request(m.from, m.term, pre_vote, last_index, last_term);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
        Ok(())
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_index: LogIndex,
        last_term: Term,
    ) {
        // A replica with no membership never votes: it joined with an empty log (perhaps a
        // wiped replica, with no memory of the votes it gave), which could otherwise elect a
        // leader missing committed entries. It learns its membership from the leader's
        // snapshot, and only then has a log worth comparing.
        // A learner does answer (as in etcd): it may have been promoted without knowing yet,
        // and without its vote a group whose leader removed itself right after promoting it
        // could be left without a majority to elect anyone. A candidate counts only the votes
        // of its own voters, so a real learner's vote changes nothing.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let member = !self.tracker.conf.voters.is_empty();
        if can_vote && member && self.log.is_up_to_date(last_index, last_term) {
            // A pre-vote grant answers in the term the candidate asked about.
            self.send(from, term, MessageBody::RequestVoteResponse { pre_vote, granted: true });
            if !pre_vote {
                self.election_elapsed = 0;
                self.vote = Some(from);
            }
        } else {
            let body = MessageBody::RequestVoteResponse { pre_vote, granted: false };
            self.send(from, self.term, body);
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.heard_from_leader(m.from);
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat { commit, round, quiesce } => {
                self.heard_from_leader(m.from);
                self.handle_heartbeat(m.from, commit, round);
                self.on_leader_round(round, commit, quiesce);
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.heard_from_leader(m.from);
                self.handle_snapshot(m.from, snapshot);
            }
            MessageBody::TimeoutNow => {
                info!(node_id = %self.id, peer = %m.from, "asked to take over leadership");
                self.campaign(CampaignKind::Transfer);
            }
            MessageBody::ReadIndex { context } => {
                // The sender thinks we lead; we do not.
                let body = MessageBody::ReadIndexResponse { index: None, context };
                self.send(m.from, self.term, body);
            }
            MessageBody::ReadIndexResponse { index, context } => match index {
                Some(index) => self.read_states.push(ReadState { index, context }),
                None => self.dropped_reads.push(context),
            },
            _ => {}
        }
    }

    /// A follower heard from the leader of its term: its election timer restarts, and the
    /// quiet period after a start gives way to the usual lease rule.
    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader = Some(leader);
        self.start_quiet_ticks = 0;
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.become_follower(m.term, Some(m.from));
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat { commit, round, .. } => {
                self.become_follower(m.term, Some(m.from));
                self.handle_heartbeat(m.from, commit, round);
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.become_follower(m.term, Some(m.from));
                self.handle_snapshot(m.from, snapshot);
            }
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                if pre_vote != (self.role == Role::PreCandidate) {
                    return;
                }
                self.tracker.record_vote(m.from, granted);
                match self.tracker.tally_votes() {
                    VoteResult::Won if pre_vote => self.campaign(CampaignKind::Election),
                    VoteResult::Won => {
                        self.become_leader();
                        self.broadcast_append();
                    }
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            MessageBody::ReadIndex { context } => {
                let body = MessageBody::ReadIndexResponse { index: None, context };
                self.send(m.from, self.term, body);
            }
            MessageBody::ReadIndexResponse { context, .. } => self.dropped_reads.push(context),
            _ => {}
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: &[Entry],
        commit: LogIndex,
    ) {
        if prev_index < self.log.committed {
            let body = MessageBody::AppendResponse { index: self.log.committed, reject: None };
            self.send(from, self.term, body);
            return;
        }
        if let Some(last_new) = self.log.maybe_append(prev_index, prev_term, commit, entries) {
            let body = MessageBody::AppendResponse { index: last_new, reject: None };
            self.send(from, self.term, body);
            return;
        }
        // Fast backtracking: tell the leader the last index whose term could match, so it
        // skips a whole term of entries per round trip.
        let (hint_index, hint_term) =
            self.log.find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
        debug!(
            node_id = %self.id, peer = %from, %prev_index, %prev_term, %hint_index, %hint_term,
            "append rejected"
        );
        let reject = Some(RejectHint { index: hint_index, term: hint_term });
        self.send(from, self.term, MessageBody::AppendResponse { index: prev_index, reject });
    }

    fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, round: u64) {
        self.log.commit_to(commit.min(self.log.last_index()));
        let applied = self.log.applied;
        self.send(from, self.term, MessageBody::HeartbeatResponse { round, applied });
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        let answer = if self.restore(snapshot) {
            info!(node_id = %self.id, peer = %from, %index, "installing snapshot");
            self.log.last_index()
        } else {
            self.log.committed
        };
        self.send(from, self.term, MessageBody::AppendResponse { index: answer, reject: None });
    }

    /// Installs a snapshot from the leader; returns false if it brings nothing new.
    fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = &snapshot.metadata;
        if meta.index <= self.log.committed {
            return false;
        }
        if self.log.match_term(meta.index, meta.term) {
            // The log already has the snapshot's last entry: just fast-forward the commit.
            self.log.commit_to(meta.index);
            return false;
        }
        let conf = meta.conf_state.clone();
        self.conf_index = meta.index;
        self.log.restore(snapshot);
        self.tracker.set_conf(conf, self.log.last_index().next());
        true
    }

    fn step_leader(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::AppendResponse { index, reject } => {
                let Some(progress) = self.tracker.get_mut(from) else { return };
                progress.recent_active = true;
                match reject {
                    Some(hint) => self.handle_append_rejection(from, index, hint),
                    None => self.handle_append_success(from, index),
                }
            }
            MessageBody::HeartbeatResponse { round, applied } => {
                let last_index = self.log.last_index();
                let Some(progress) = self.tracker.get_mut(from) else { return };
                progress.recent_active = true;
                progress.applied = progress.applied.max(applied);
                progress.probe_sent = false;
                progress.acked_round = progress.acked_round.max(round);
                // The leader retries AppendEntries until the follower has every entry (Raft
                // Figure 2). Appends may have been lost: with the window full nothing more
                // would go out, so free one slot (as etcd does), and send even an empty append,
                // whose answer tells where the follower's log really ends.
                if progress.state == ProgressState::Replicate && progress.inflights.full() {
                    progress.inflights.free_first_one();
                }
                let lagging = progress.match_index < last_index;
                if lagging {
                    self.send_append(from, true);
                }
                self.release_reads();
            }
            MessageBody::ReadIndex { context } => {
                if let Err(error) = self.read_index(context.clone(), from) {
                    debug!(node_id = %self.id, peer = %from, %error, "forwarded read refused");
                    let body = MessageBody::ReadIndexResponse { index: None, context };
                    self.send(from, self.term, body);
                }
            }
            _ => {}
        }
    }

    fn handle_append_rejection(&mut self, from: NodeId, rejected: LogIndex, hint: RejectHint) {
        let next_probe = if hint.term.0 > 0 {
            self.log.find_conflict_by_term(hint.index, hint.term).0
        } else {
            hint.index
        };
        let progress = self.tracker.get_mut(from).expect("checked by the caller");
        if progress.maybe_decrease_to(rejected, next_probe) {
            if progress.state == ProgressState::Replicate {
                progress.become_probe();
            }
            self.send_append(from, true);
        }
    }

    fn handle_append_success(&mut self, from: NodeId, index: LogIndex) {
        let progress = self.tracker.get_mut(from).expect("checked by the caller");
        let was_paused = progress.is_paused();
        if !progress.maybe_update(index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot { pending } if progress.match_index >= pending => {
                progress.become_probe();
                progress.become_replicate();
            }
            ProgressState::Snapshot { .. } => {}
            ProgressState::Replicate => progress.inflights.free_le(index),
        }
        if self.maybe_commit() {
            self.broadcast_append();
        } else if was_paused {
            self.send_append(from, false);
        }
        // Fill the window: pipelined appends up to the in-flight limits.
        while self.send_append(from, false) {}
        if self.lead_transferee == Some(from) {
            let caught_up =
                self.tracker.get(from).is_some_and(|p| p.match_index == self.log.last_index());
            if caught_up {
                self.send_timeout_now(from);
            }
        }
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.sent_timeout_now = true;
        self.send(to, self.term, MessageBody::TimeoutNow);
    }

    /// Advances the commit index to what a majority has; returns true if it moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let index = self.tracker.committed_index();
        self.log.maybe_commit(index, self.term)
    }

    /// Sends an append (or a snapshot) to `to` if its progress allows; returns true if it sent
    /// something.
    pub(crate) fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(progress) = self.tracker.get(to) else { return false };
        if progress.is_paused() {
            return false;
        }
        let next = progress.next_index;
        let prev_index = next.prev();
        let prev_term = self.log.term(prev_index);
        let entries = self.log.entries(next, Some(self.config.entries_bytes_per_message_max));
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(term), Ok(entries)) => (term, entries),
            (Err(Error::Compacted { .. }), _) | (_, Err(Error::Compacted { .. })) => {
                return self.send_snapshot(to, next);
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(node_id = %self.id, peer = %to, %error, "cannot read the log");
                return false;
            }
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let progress = self.tracker.get_mut(to).expect("checked above");
        match progress.state {
            ProgressState::Replicate => {
                if let Some(last) = entries.last() {
                    let bytes = entries.iter().map(Entry::size_bytes).sum();
                    progress.optimistic_update(last.index);
                    progress.inflights.add(last.index, bytes);
                }
            }
            ProgressState::Probe => progress.probe_sent = true,
            ProgressState::Snapshot { .. } => unreachable!("a paused progress sends nothing"),
        }
        let commit = self.log.committed;
        self.send(to, self.term, MessageBody::Append { prev_index, prev_term, entries, commit });
        true
    }

    fn send_snapshot(&mut self, to: NodeId, next: LogIndex) -> bool {
        let snapshot = match self.log.snapshot(next, to) {
            Ok(snapshot) => snapshot,
            Err(Error::SnapshotTemporarilyUnavailable) => {
                debug!(node_id = %self.id, peer = %to, "snapshot not ready yet");
                return false;
            }
            Err(error) => {
                tracing::error!(node_id = %self.id, peer = %to, %error, "cannot get a snapshot");
                return false;
            }
        };
        assert!(!snapshot.is_empty(), "storage returned an empty snapshot for {to}");
        let index = snapshot.metadata.index;
        info!(node_id = %self.id, peer = %to, %index, "sending snapshot");
        self.tracker.get_mut(to).expect("caller checked").become_snapshot(index);
        self.send(to, self.term, MessageBody::InstallSnapshot { snapshot });
        true
    }

    pub(crate) fn broadcast_append(&mut self) {
        self.append_pending = false;
        for to in self.tracker.peers(self.id) {
            self.send_append(to, true);
        }
    }

    // ---- Proposals ---------------------------------------------------------------------------

    /// Appends entries of this leader's term; returns the index of the last one.
    fn append_entries(&mut self, entries: Vec<(EntryKind, Bytes)>) -> LogIndex {
        let mut index = self.log.last_index();
        let term = self.term;
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|(kind, data)| {
                index = index.next();
                Entry { term, index, kind, data }
            })
            .collect();
        self.log.append(&entries);
        self.append_pending = true;
        index
    }

    fn check_can_propose(&self) -> Result<()> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader: self.leader });
        }
        if let Some(target) = self.lead_transferee {
            return Err(Error::TransferInProgress { target });
        }
        if self.removing_self {
            // Stepping down once its removal applies; no leader to name yet.
            return Err(Error::NotLeader { leader: None });
        }
        Ok(())
    }

    /// Appends application entries; returns the index of the last one.
    pub(crate) fn propose(&mut self, data: Vec<Bytes>) -> Result<LogIndex> {
        self.check_can_propose()?;
        let bytes: u64 =
            data.iter().map(|d| d.len() as u64 + crate::types::ENTRY_OVERHEAD_BYTES).sum();
        let limit = self.config.uncommitted_bytes_max;
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + bytes > limit {
            return Err(Error::UncommittedLogFull {
                uncommitted_bytes: self.uncommitted_bytes,
                limit_bytes: limit,
            });
        }
        self.uncommitted_bytes += bytes;
        Ok(self.append_entries(data.into_iter().map(|d| (EntryKind::Normal, d)).collect()))
    }

    /// Gives back the uncommitted allowance of entries that were handed out as committed.
    pub(crate) fn reduce_uncommitted(&mut self, entries: &[Entry]) {
        if self.role != Role::Leader {
            return;
        }
        let bytes: u64 = entries.iter().filter(|e| !e.is_noop()).map(Entry::size_bytes).sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
    }

    pub(crate) fn committed_entry_in_current_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    /// True when this replica leads with a membership change in its log not applied yet (or,
    /// just elected, entries of earlier terms that may hold one).
    pub(crate) fn membership_change_pending(&self) -> bool {
        self.role == Role::Leader && self.pending_conf_index > self.log.applied
    }

    /// True when this replica leads and every voter of its membership has applied the change
    /// that made it (as the voters' heartbeat answers report): none of them counts a member
    /// this membership left out any more, even after a crash. Only then may a removed member
    /// be gone for good: a voter that has not applied its removal still needs its vote.
    pub(crate) fn voters_applied_membership(&self) -> bool {
        self.role == Role::Leader
            && self.tracker.conf.voters.iter().all(|voter| {
                let applied = if *voter == self.id {
                    self.log.applied
                } else {
                    self.tracker.get(*voter).map_or(LogIndex(0), |progress| progress.applied)
                };
                applied >= self.conf_index
            })
    }

    pub(crate) fn propose_conf_change(
        &mut self,
        change: ConfChange,
        unchanged_since: Option<LogIndex>,
    ) -> Result<LogIndex> {
        self.check_can_propose()?;
        let refuse = |reason: String| Err(Error::ConfChangeRefused { reason });
        if self.pending_conf_index > self.log.applied {
            return refuse(format!(
                "the change at index {} is not applied yet (applied {})",
                self.pending_conf_index, self.log.applied
            ));
        }
        // With nothing pending, every membership change in the log is applied: the applied
        // membership is the latest, and it is the one planned from unless it changed after.
        if let Some(since) = unchanged_since.filter(|since| self.conf_index > *since) {
            return refuse(format!(
                "the membership changed after index {since} (it is as of index {}): plan \
                 again from the current one",
                self.conf_index
            ));
        }
        if !self.committed_entry_in_current_term() {
            return refuse("the leader has not committed an entry of its term yet".into());
        }
        let conf = &self.tracker.conf;
        match change {
            ConfChange::AddLearner(id) if conf.learners.contains(&id) => {
                return refuse(format!("{id} is already a learner"));
            }
            ConfChange::AddLearner(id) if id == self.id => {
                return refuse("the leader cannot demote itself; transfer leadership first".into());
            }
            ConfChange::AddVoter(id) if conf.voters.contains(&id) => {
                return refuse(format!("{id} is already a voter"));
            }
            ConfChange::AddVoter(id) if !conf.learners.contains(&id) => {
                return refuse(format!("{id} must join as a learner and catch up first"));
            }
            ConfChange::AddVoter(id) => {
                let matched = self.tracker.get(id).map_or(LogIndex(0), |p| p.match_index);
                if matched < self.log.committed {
                    return refuse(format!(
                        "learner {id} has not caught up (match {matched}, commit {})",
                        self.log.committed
                    ));
                }
            }
            ConfChange::RemoveNode(id) if !conf.contains(id) => {
                return refuse(format!("{id} is not a member"));
            }
            ConfChange::RemoveNode(id) if conf.voters.len() == 1 && conf.voters.contains(&id) => {
                return refuse(format!("{id} is the last voter"));
            }
            _ => {}
        }
        let index = self.append_entries(vec![(EntryKind::ConfChange, change.encode())]);
        self.pending_conf_index = index;
        self.removing_self = change == ConfChange::RemoveNode(self.id);
        Ok(index)
    }

    /// Applies a committed membership change; returns the new membership.
    ///
    /// # Panics
    /// If this replica has no membership: it joined with none and is catching up from a log
    /// that does not carry the group's initial membership, so any membership it computed would
    /// be wrong (it could believe itself the only voter and elect itself alone). The initial
    /// membership must reach a replica in a snapshot: the application starts every group from
    /// a snapshot carrying it, so a replica that needs the first entries gets a snapshot.
    /// Also if `index` is not that of a committed entry still to apply.
    pub(crate) fn apply_conf_change(&mut self, index: LogIndex, change: ConfChange) -> ConfState {
        assert!(
            index > self.log.applied && index <= self.log.committed,
            "node {}: applying a membership change at index {index}, outside the entries to \
             apply ({} to {})",
            self.id,
            self.log.applied.next(),
            self.log.committed
        );
        assert!(
            !self.tracker.conf.voters.is_empty(),
            "node {}: applying {change:?} to an empty membership: the group's initial \
             membership must reach every replica in a snapshot (docs/raft.md, membership changes)",
            self.id
        );
        let conf = change.applied_to(&self.tracker.conf);
        self.conf_index = index;
        info!(
            node_id = %self.id, %index, ?change, voter_count = conf.voters.len(),
            learner_count = conf.learners.len(), "membership changed"
        );
        self.tracker.set_conf(conf.clone(), self.log.last_index().next());
        if self.role != Role::Leader {
            return conf;
        }
        if self.lead_transferee.is_some_and(|t| !conf.voters.contains(&t)) {
            self.lead_transferee = None;
        }
        if !conf.voters.contains(&self.id) {
            self.step_down_after_removal();
            return conf;
        }
        // The majority may have changed size: commitment may move, and new members need
        // the log.
        if self.maybe_commit() {
            self.broadcast_append();
        } else {
            self.append_pending = true;
        }
        conf
    }

    /// A leader removed from the voters hands over to its most up-to-date voter, then
    /// steps down.
    fn step_down_after_removal(&mut self) {
        let last_index = self.log.last_index();
        let successor = self
            .tracker
            .conf
            .voters
            .iter()
            .filter_map(|id| self.tracker.get(*id).map(|p| (p.match_index, *id)))
            .max();
        if let Some((matched, id)) = successor
            && matched == last_index
        {
            self.send_timeout_now(id);
        }
        info!(node_id = %self.id, "removed from the group: stepping down");
        self.become_follower(self.term, None);
    }

    pub(crate) fn transfer_leader(&mut self, target: NodeId) -> Result<()> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader: self.leader });
        }
        if target == self.id || self.lead_transferee == Some(target) {
            return Ok(());
        }
        if !self.tracker.is_voter(target) {
            return Err(Error::ConfChangeRefused {
                reason: format!("cannot transfer leadership to {target}: not a voter"),
            });
        }
        info!(node_id = %self.id, peer = %target, "transferring leadership");
        // The transfer must finish within an election timeout of the first ask: asking for
        // another voter meanwhile does not extend it (the leader takes no proposals until then).
        if self.lead_transferee.is_none() {
            self.transfer_elapsed = 0;
        }
        self.lead_transferee = Some(target);
        let caught_up =
            self.tracker.get(target).is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    // ---- Reads -------------------------------------------------------------------------------

    /// Queues a ReadIndex read for this node (`from == id`) or a follower.
    pub(crate) fn read_index(&mut self, context: Bytes, from: NodeId) -> Result<()> {
        if self.role != Role::Leader {
            let Some(leader) = self.leader else {
                return Err(Error::NotLeader { leader: None });
            };
            assert_eq!(from, self.id, "only a leader serves forwarded reads");
            self.send(leader, self.term, MessageBody::ReadIndex { context });
            return Ok(());
        }
        if self.read_only.pending.len() >= self.config.pending_reads_max {
            return Err(Error::TooManyPendingReads { limit: self.config.pending_reads_max });
        }
        let committed = self.committed_entry_in_current_term();
        if committed && self.tracker.conf.voters.len() == 1 {
            // A group of one needs no confirmation.
            self.answer_read(PendingRead { context, from, index: self.log.committed, round: 0 });
            return Ok(());
        }
        let index = if committed { self.log.committed } else { LogIndex(0) };
        self.read_only.push(PendingRead { context, from, index, round: 0 });
        Ok(())
    }

    /// Sends a round for the reads queued since the last one, once this term has a commit.
    pub(crate) fn flush_reads(&mut self) {
        if self.role == Role::Leader
            && self.read_only.unsent > 0
            && self.committed_entry_in_current_term()
        {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(false);
        }
    }

    fn quorum_round(&self) -> u64 {
        let own = self.read_only.round;
        self.tracker.quorum_value(|id, p| if id == self.id { own } else { p.acked_round })
    }

    fn release_reads(&mut self) {
        let quorum_round = self.quorum_round();
        for read in self.read_only.release(quorum_round) {
            self.answer_read(read);
        }
    }

    fn answer_read(&mut self, read: PendingRead) {
        if read.from == self.id {
            self.read_states.push(ReadState { index: read.index, context: read.context });
        } else {
            let body =
                MessageBody::ReadIndexResponse { index: Some(read.index), context: read.context };
            self.send(read.from, self.term, body);
        }
    }

    /// The application's monotonic clock reads `now`; an earlier time than one reported before
    /// is ignored (the clock never goes backwards).
    pub(crate) fn set_clock(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// The lease of a round a majority acknowledged: `(election_ticks - lease_margin_ticks) *
    /// tick_interval` from the round's send time (see `Config::tick_interval`).
    fn lease_duration(&self) -> Duration {
        let config = &self.config;
        config.tick_interval * (config.election_ticks - config.lease_margin_ticks)
    }

    /// Returns the commit index if this leader's lease is valid at `now` (Raft dissertation
    /// §6.4.1): `now` (after `set_clock`) is before the send time of the newest round a
    /// majority acknowledged, plus the lease.
    pub(crate) fn lease_read(&mut self, now: Duration) -> Result<LogIndex> {
        self.set_clock(now);
        if !self.config.check_quorum {
            return Err(Error::LeaseUnavailable { reason: "lease reads need check_quorum".into() });
        }
        if self.role != Role::Leader {
            return Err(Error::NotLeader { leader: self.leader });
        }
        if !self.committed_entry_in_current_term() {
            return Err(Error::LeaseUnavailable {
                reason: "the leader has not committed an entry of its term yet".into(),
            });
        }
        if self.lead_transferee.is_some() || self.sent_timeout_now {
            // Votes for a transfer target ignore the lease, so it no longer protects us.
            return Err(Error::LeaseUnavailable { reason: "leadership transfer".into() });
        }
        let valid = if self.tracker.conf.voters.len() == 1 {
            true
        } else {
            let lease = self.lease_duration();
            self.read_only
                .sent_at(self.quorum_round())
                .is_some_and(|sent| self.now < sent.saturating_add(lease))
        };
        if valid {
            Ok(self.log.committed)
        } else {
            Err(Error::LeaseUnavailable { reason: "lease expired".into() })
        }
    }

    // ---- Persistence feedback ----------------------------------------------------------------

    /// The application persisted entries up to `index` of `term`.
    pub(crate) fn on_persisted(&mut self, index: LogIndex, term: Term) {
        self.log.stable_to(index, term);
        if self.role == Role::Leader && self.log.last_stable_index() >= index {
            let id = self.id;
            if let Some(progress) = self.tracker.get_mut(id) {
                progress.maybe_update(index);
            }
            if self.maybe_commit() {
                self.broadcast_append();
            }
        }
    }

    pub(crate) fn report_snapshot(&mut self, to: NodeId, success: bool) {
        let Some(progress) = self.tracker.get_mut(to) else { return };
        if let ProgressState::Snapshot { .. } = progress.state {
            if !success {
                // Forget the failed snapshot: probe from the last known match.
                progress.state = ProgressState::Probe;
            }
            // Wait for the follower's answer (or the next heartbeat) before sending more.
            progress.become_probe();
            progress.probe_sent = true;
        }
    }

    pub(crate) fn report_unreachable(&mut self, to: NodeId) {
        if let Some(progress) = self.tracker.get_mut(to)
            && progress.state == ProgressState::Replicate
        {
            progress.become_probe();
        }
    }
}
