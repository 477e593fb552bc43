//! Quiescence: a group with nothing to do stops ticking, so that many idle groups cost no
//! heartbeats (docs/raft.md "Quiescence").
//!
//! A leader quiesces when the application asks ([`Raft::quiesce`]) and the group is at rest:
//! every entry committed, persisted and applied, every peer caught up, applied to the end and
//! heard from in this check-quorum period, nothing pending (reads, a transfer, a membership
//! change). It sends a last round of heartbeats marked `quiesce` and counts no more ticks. A
//! follower that receives that round from its leader, newer than any round it heard, with its
//! log ending at the round's commit index, quiesces too.
//!
//! Any message wakes a quiescent replica, except the answers to a quiesced leader's round; so
//! do the application's requests (`RawNode` wakes it on every input but ticks, the clock and
//! lease reads). A woken replica goes on counting from where it stopped.
//!
//! Why this is safe: Raft's safety never depends on time. The lease does: a follower that
//! acknowledged a round must not vote for another candidate until it counted an election
//! timeout of its own ticks after receiving it. A quiescent follower counts no ticks, so it
//! votes later than it would have, never sooner; its election timer resumes from where it
//! stopped. The one exception is a vote asked by the leader of its term itself (`Raft::step`):
//! a node campaigns only once it no longer leads, so no lease of that term remains.
//!
//! What it costs: a quiescent group notices a lost leader only when something wakes it (a
//! request sent to a follower, a peer's message); it then elects as a group whose leader fell
//! silent.

use super::Raft;
use crate::message::{Message, MessageBody};
use crate::storage::Storage;
use crate::tracker::ProgressState;
use crate::types::{LogIndex, NodeId, Role};

impl<S: Storage> Raft<S> {
    /// Returns true if this replica counts no ticks.
    pub(crate) fn is_quiescent(&self) -> bool {
        self.quiescent
    }

    /// A leader at rest quiesces: it sends a quiescing round of heartbeats and stops ticking.
    /// Returns whether it is quiescent now.
    pub(crate) fn quiesce(&mut self) -> bool {
        if !self.quiescent && self.at_rest() {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(true);
            self.quiescent = true;
        }
        self.quiescent
    }

    /// Whether this leader's group is at rest: nothing in its log or in flight that a tick
    /// would move on, and every peer known to hold and have applied all of it.
    fn at_rest(&self) -> bool {
        let last = self.log.last_index();
        if self.role != Role::Leader
            || !self.committed_entry_in_current_term()
            || self.log.committed != last
            || self.log.last_stable_index() != last
            || self.log.applied != last
            || !self.read_only.pending.is_empty()
            || self.lead_transferee.is_some()
            || self.sent_timeout_now
            || self.removing_self
            || self.append_pending
            || self.pending_conf_index > self.log.applied
        {
            return false;
        }
        self.tracker.peers(self.id).into_iter().all(|id| {
            self.tracker.get(id).is_some_and(|progress| {
                progress.state == ProgressState::Replicate
                    && progress.match_index == last
                    && progress.applied >= last
                    && progress.recent_active
            })
        })
    }

    /// A tick while quiescent. A leader counts nothing. A follower counts its election timer
    /// on, as it would awake, but only up to `heartbeat_ticks + 1` short of an election
    /// timeout and without campaigning: woken, it then ignores votes for those few ticks more,
    /// in which a leader that is alive (woken by the same candidate, which asks every voter)
    /// heartbeats, and campaigns itself only once the leader stayed silent for that long
    /// and a random timeout more.
    pub(super) fn tick_quiescent(&mut self) {
        if self.role != Role::Leader {
            let cap = self.config.election_ticks.saturating_sub(self.config.heartbeat_ticks + 1);
            if self.election_elapsed < cap {
                self.election_elapsed += 1;
            }
        }
    }

    /// Wakes this replica for a request or the application: it counts ticks again from where
    /// it stopped. A leader restarts its CheckQuorum period (it must hear a majority within an
    /// election timeout again) and heartbeats at its next tick. A follower tells its leader,
    /// which wakes too (see `wake_by`).
    pub(crate) fn wake(&mut self) {
        self.wake_by(self.id);
    }

    /// Wakes this replica for a message from `from`. A follower woken by anything but its
    /// leader sends the leader an answer for its last entry (a message a quiescent leader
    /// wakes for): the leader's next heartbeat round then either holds the group or meets a
    /// newer term or no majority and steps down. Without it, a leader that slept through its
    /// replacement (cut off from the one follower that then elected another, while it still
    /// heard the other's node) went on leading in its old term for ever (found by review).
    pub(crate) fn wake_by(&mut self, from: NodeId) {
        if !self.quiescent {
            return;
        }
        self.quiescent = false;
        if self.role == Role::Leader {
            self.election_elapsed = 0;
            self.tracker.forget_activity(self.id);
            self.heartbeat_elapsed = self.config.heartbeat_ticks.saturating_sub(1);
        } else if let Some(leader) = self.leader.filter(|leader| *leader != from) {
            // Its log ends at what it last took from this leader in this term (it quiesced
            // with its log at the leader's commit index, and only this leader appends in the
            // term), so the answer claims nothing the leader's view of it does not hold.
            let body = MessageBody::AppendResponse { index: self.log.last_index(), reject: None };
            self.send(leader, self.term, body);
        }
    }

    /// Whether `m` leaves this quiescent replica quiescent: a follower's answer to the leader's
    /// rounds (the quiescing round's above all).
    pub(super) fn keeps_quiescent(&self, m: &Message) -> bool {
        self.role == Role::Leader
            && m.term == self.term
            && matches!(m.body, MessageBody::HeartbeatResponse { .. })
    }

    /// A follower heard round `round` from its leader, with commit index `commit`: it
    /// quiesces if the round quiesces, is the newest it heard, and its log ends at `commit`
    /// (so the leader's count of what it holds is right).
    pub(super) fn on_leader_round(&mut self, round: u64, commit: LogIndex, quiesce: bool) {
        let newest = round >= self.leader_round;
        self.leader_round = self.leader_round.max(round);
        if quiesce && newest && self.log.last_index() == commit && self.log.committed == commit {
            self.quiescent = true;
        }
    }
}
