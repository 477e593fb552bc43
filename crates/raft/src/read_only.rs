//! Linearizable reads without the log: ReadIndex rounds and the leader lease.
//!
//! Every heartbeat broadcast starts a new numbered round; followers echo the round. A read
//! request joins the next round that has not been sent yet, so all reads that arrive between
//! two `Ready`s share one heartbeat round (Raft dissertation §6.4). Once a majority of voters
//! acknowledged a round, every read waiting on it or an earlier round is released at the
//! commit index recorded when it arrived.
//!
//! The lease (§6.4.1) comes from the same rounds: a round acknowledged by a majority proves
//! that no other leader can be elected until `election_ticks` after the round was *sent*, so
//! the leader may serve reads locally until then, less a margin for clock drift.
//!
//! Invariants: rounds strictly increase; `pending` is ordered by round, with the reads that
//! wait for the next round (round 0) at the back.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::types::{LogIndex, NodeId};

/// Rounds kept for the lease computation, at most.
const ROUND_HISTORY_MAX: usize = 1024;

/// A read waiting for its round to be acknowledged.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub(crate) context: Bytes,
    /// Who asked: this node or a follower that forwarded the request.
    pub(crate) from: NodeId,
    /// The commit index when leadership is confirmed for this read.
    pub(crate) index: LogIndex,
    /// The heartbeat round that confirms it; 0 until the round is sent.
    pub(crate) round: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// The last round sent.
    pub(crate) round: u64,
    /// (round, tick it was sent), oldest first.
    sent_ticks: VecDeque<(u64, u64)>,
    pub(crate) pending: VecDeque<PendingRead>,
    /// Reads queued since the last round was sent.
    pub(crate) unsent: usize,
}

impl ReadOnly {
    /// Starts a new round at `tick`, assigning it to every read waiting for one; reads that
    /// arrived before the leader committed an entry of its term get `committed` as their index.
    ///
    /// `committed` is `None` while the leader has not committed an entry of its term: its
    /// commit index may then be behind its predecessor's (Raft dissertation §6.4, step 1), so
    /// the round confirms leadership (for the lease) but the waiting reads stay unsent.
    pub(crate) fn next_round(&mut self, tick: u64, committed: Option<LogIndex>) -> u64 {
        self.round += 1;
        let round = self.round;
        if self.sent_ticks.len() == ROUND_HISTORY_MAX {
            self.sent_ticks.pop_front();
        }
        self.sent_ticks.push_back((round, tick));
        let Some(committed) = committed else { return round };
        for read in self.pending.iter_mut().rev().take(self.unsent) {
            read.round = round;
            if read.index == LogIndex(0) {
                read.index = committed;
            }
        }
        self.unsent = 0;
        round
    }

    pub(crate) fn push(&mut self, read: PendingRead) {
        self.pending.push_back(read);
        self.unsent += 1;
    }

    /// Removes and returns the reads confirmed by `quorum_round`.
    pub(crate) fn release(&mut self, quorum_round: u64) -> Vec<PendingRead> {
        let mut released = Vec::new();
        while let Some(front) = self.pending.front() {
            if front.round == 0 || front.round > quorum_round {
                break;
            }
            released.extend(self.pending.pop_front());
        }
        while self.sent_ticks.len() > 1 && self.sent_ticks[1].0 <= quorum_round {
            self.sent_ticks.pop_front();
        }
        released
    }

    /// The tick at which `round` was sent, if still remembered.
    pub(crate) fn sent_tick(&self, round: u64) -> Option<u64> {
        self.sent_ticks.iter().find(|(r, _)| *r == round).map(|(_, tick)| *tick)
    }

    /// Drops every pending read (leadership lost) and returns them.
    pub(crate) fn drain(&mut self) -> Vec<PendingRead> {
        self.unsent = 0;
        self.sent_ticks.clear();
        self.pending.drain(..).collect()
    }
}
