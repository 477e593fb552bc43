//! What a leader knows about each member's log: match and next index, the replication state
//! machine (probe / replicate / snapshot) and the in-flight window; plus quorum arithmetic.
//!
//! Invariant: `match_index < next_index` for every member.

use std::collections::{BTreeMap, VecDeque};

use crate::types::{ConfState, LogIndex, NodeId};

/// How the leader is replicating to one member (etcd's progress states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the member's log matches: one append at a time.
    Probe,
    /// The member's log is known: appends are pipelined, bounded by the in-flight window.
    Replicate,
    /// A snapshot at `pending` is on its way; nothing else is sent until it is acknowledged.
    Snapshot {
        /// The index of the snapshot sent.
        pending: LogIndex,
    },
}

/// The sliding window of appends sent but not acknowledged, bounded by count and bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// (last index of the message, bytes of its entries), in send order.
    window: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    max_messages: usize,
    max_bytes: u64,
}

impl Inflights {
    pub(crate) fn new(max_messages: usize, max_bytes: u64) -> Self {
        Self { window: VecDeque::new(), bytes: 0, max_messages, max_bytes }
    }

    pub(crate) fn add(&mut self, last_index: LogIndex, bytes: u64) {
        assert!(!self.full(), "inflight window overflow at {last_index}");
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is at or below `index`.
    pub(crate) fn free_le(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message (its answer is presumed lost).
    pub(crate) fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.window.len() >= self.max_messages || self.bytes >= self.max_bytes
    }

    pub(crate) fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }
}

/// The leader's view of one member.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated on the member.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Replication state.
    pub state: ProgressState,
    /// In probe state: an append was sent and its answer is awaited.
    pub probe_sent: bool,
    /// The in-flight window (used in replicate state).
    pub inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// Highest heartbeat round the member acknowledged.
    pub acked_round: u64,
    /// The highest applied index the member reported (in its heartbeat answers).
    pub applied: LogIndex,
    /// Learners receive the log but do not vote.
    pub is_learner: bool,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, inflights: Inflights, is_learner: bool) -> Self {
        Self {
            match_index: LogIndex(0),
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights,
            recent_active: false,
            acked_round: 0,
            applied: LogIndex(0),
            is_learner,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.reset();
    }

    pub(crate) fn become_probe(&mut self) {
        let next = match self.state {
            ProgressState::Snapshot { pending } => self.match_index.max(pending).next(),
            _ => self.match_index.next(),
        };
        self.reset_state(ProgressState::Probe);
        self.next_index = next;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index.next();
    }

    pub(crate) fn become_snapshot(&mut self, pending: LogIndex) {
        self.reset_state(ProgressState::Snapshot { pending });
    }

    /// Records that the member has everything up to `index`; returns true if that is news.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = self.match_index < index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        updated
    }

    /// After an append was sent optimistically up to `last_index`.
    pub(crate) fn optimistic_update(&mut self, last_index: LogIndex) {
        self.next_index = last_index.next();
    }

    /// Handles a rejection of the append at `rejected`; `hint` is where the leader's own log
    /// says to try next. Returns false if the rejection is stale.
    pub(crate) fn maybe_decrease_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index.next();
            return true;
        }
        if self.next_index.prev() != rejected {
            return false;
        }
        self.next_index = rejected.min(hint.next()).max(self.match_index.next());
        self.probe_sent = false;
        true
    }

    /// Returns true when the leader must not send appends to this member now.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }
}

/// The progress of every member and the quorum arithmetic over the voters.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    pub(crate) conf: ConfState,
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) votes: BTreeMap<NodeId, bool>,
    inflight_messages_max: usize,
    inflight_bytes_max: u64,
}

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

impl ProgressTracker {
    pub(crate) fn new(inflight_messages_max: usize, inflight_bytes_max: u64) -> Self {
        Self {
            conf: ConfState::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            inflight_messages_max,
            inflight_bytes_max,
        }
    }

    /// Sets the membership, keeping the progress of members that stay and starting new
    /// members at `next_index`.
    pub(crate) fn set_conf(&mut self, conf: ConfState, next_index: LogIndex) {
        self.progress.retain(|id, _| conf.contains(*id));
        for id in conf.members() {
            let is_learner = conf.learners.contains(&id);
            let inflights = Inflights::new(self.inflight_messages_max, self.inflight_bytes_max);
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next_index, inflights, is_learner))
                .is_learner = is_learner;
        }
        self.conf = conf;
    }

    /// Resets every member's progress (a new term).
    pub(crate) fn reset_all(&mut self, next_index: LogIndex) {
        for progress in self.progress.values_mut() {
            let inflights = Inflights::new(self.inflight_messages_max, self.inflight_bytes_max);
            *progress = Progress::new(next_index, inflights, progress.is_learner);
        }
    }

    fn majority(&self) -> usize {
        self.conf.voters.len() / 2 + 1
    }

    /// Returns the largest value that a majority of voters have reached, where `value` gives
    /// each voter's value.
    pub(crate) fn quorum_value(&self, value: impl Fn(NodeId, &Progress) -> u64) -> u64 {
        if self.conf.voters.is_empty() {
            return 0;
        }
        let mut values: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|id| self.progress.get(id).map_or(0, |p| value(*id, p)))
            .collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[self.majority() - 1]
    }

    /// The highest index replicated on a majority of voters.
    pub(crate) fn committed_index(&self) -> LogIndex {
        LogIndex(self.quorum_value(|_, p| p.match_index.0))
    }

    pub(crate) fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub(crate) fn tally_votes(&self) -> VoteResult {
        let granted =
            self.conf.voters.iter().filter(|id| self.votes.get(id) == Some(&true)).count();
        let rejected =
            self.conf.voters.iter().filter(|id| self.votes.get(id) == Some(&false)).count();
        let majority = self.majority();
        if granted >= majority {
            VoteResult::Won
        } else if rejected > self.conf.voters.len() - majority {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// Returns true if a majority of voters (counting `self_id`) were recently active, and
    /// clears the flags for the next round.
    pub(crate) fn quorum_active(&mut self, self_id: NodeId) -> bool {
        let active = self
            .conf
            .voters
            .iter()
            .filter(|id| **id == self_id || self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        self.forget_activity(self_id);
        active >= self.majority()
    }

    /// Clears every peer's recent activity (all but `self_id`): a new CheckQuorum period.
    pub(crate) fn forget_activity(&mut self, self_id: NodeId) {
        for (id, progress) in &mut self.progress {
            progress.recent_active = *id == self_id;
        }
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.conf.voters.contains(&id)
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.progress.get_mut(&id)
    }

    /// Every member other than `self_id`, in id order.
    pub(crate) fn peers(&self, self_id: NodeId) -> Vec<NodeId> {
        self.progress.keys().copied().filter(|id| *id != self_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_are_bounded_by_count_and_bytes() {
        let mut inflights = Inflights::new(3, 100);
        inflights.add(LogIndex(1), 10);
        inflights.add(LogIndex(2), 10);
        assert!(!inflights.full());
        inflights.add(LogIndex(3), 10);
        assert!(inflights.full(), "three messages is the count limit");
        inflights.free_le(LogIndex(2));
        assert!(!inflights.full());
        inflights.add(LogIndex(9), 100);
        assert!(inflights.full(), "bytes limit reached");
        inflights.free_le(LogIndex(9));
        assert_eq!(inflights.bytes, 0);
    }

    #[test]
    fn probe_backs_off_to_the_hint_but_not_below_match() {
        let mut progress = Progress::new(LogIndex(11), Inflights::new(4, 1 << 20), false);
        progress.match_index = LogIndex(3);
        // The append at 10 was rejected; the hint says try from 5.
        assert!(progress.maybe_decrease_to(LogIndex(10), LogIndex(5)));
        assert_eq!(progress.next_index, LogIndex(6));
        // A stale rejection (not of the last probe) is ignored.
        assert!(!progress.maybe_decrease_to(LogIndex(10), LogIndex(1)));
        assert!(progress.maybe_decrease_to(LogIndex(5), LogIndex(0)));
        assert_eq!(progress.next_index, LogIndex(4), "never below match + 1");
    }

    #[test]
    fn committed_index_is_the_majority_match() {
        let mut tracker = ProgressTracker::new(4, 1 << 20);
        let conf = ConfState::with_voters([1, 2, 3, 4, 5]);
        tracker.set_conf(conf, LogIndex(1));
        for (id, matched) in [(1, 9), (2, 7), (3, 5), (4, 3), (5, 1)] {
            tracker.get_mut(NodeId(id)).unwrap().match_index = LogIndex(matched);
        }
        assert_eq!(tracker.committed_index(), LogIndex(5));
    }

    #[test]
    fn learners_do_not_count_towards_the_majority() {
        let mut tracker = ProgressTracker::new(4, 1 << 20);
        let mut conf = ConfState::with_voters([1, 2, 3]);
        conf.learners.insert(NodeId(4));
        conf.learners.insert(NodeId(5));
        tracker.set_conf(conf, LogIndex(1));
        for (id, matched) in [(1, 9), (2, 1), (3, 1), (4, 9), (5, 9)] {
            tracker.get_mut(NodeId(id)).unwrap().match_index = LogIndex(matched);
        }
        assert_eq!(tracker.committed_index(), LogIndex(1));
        tracker.record_vote(NodeId(4), true);
        tracker.record_vote(NodeId(5), true);
        tracker.record_vote(NodeId(1), true);
        assert_eq!(tracker.tally_votes(), VoteResult::Pending);
        tracker.record_vote(NodeId(2), false);
        tracker.record_vote(NodeId(3), false);
        assert_eq!(tracker.tally_votes(), VoteResult::Lost);
    }
}
