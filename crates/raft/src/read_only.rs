//! Linearizable reads without the log: ReadIndex rounds and the leader lease.
//!
//! Every heartbeat broadcast starts a new numbered round; followers echo the round. A read
//! request joins the next round that has not been sent yet, so all reads that arrive between
//! two `Ready`s share one heartbeat round (Raft dissertation §6.4). Once a majority of voters
//! acknowledged a round, every read waiting on it or an earlier round is released at the
//! commit index recorded when it arrived.
//!
//! The lease (§6.4.1) comes from the same rounds: a round acknowledged by a majority proves
//! that no other leader can be elected until an election timeout after the round was *sent*,
//! so the leader may serve reads locally until then, less a margin for clock drift. Each round
//! records the leader's monotonic clock when it was created (`Config::tick_interval` says why
//! that bounds the followers' ticks).
//!
//! Invariants: rounds strictly increase and their send times never decrease; `pending` is
//! ordered by round, with the reads that wait for the next round (round 0) at the back.

use std::collections::VecDeque;
use std::time::Duration;

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
    /// (round, the leader's clock when it was created), oldest first.
    sent_at: VecDeque<(u64, Duration)>,
    pub(crate) pending: VecDeque<PendingRead>,
    /// Reads queued since the last round was sent.
    pub(crate) unsent: usize,
}

impl ReadOnly {
    /// Starts a new round sent at `now`, assigning it to every read waiting for one; reads that
    /// arrived before the leader committed an entry of its term get `committed` as their index.
    ///
    /// `committed` is `None` while the leader has not committed an entry of its term: its
    /// commit index may then be behind its predecessor's (Raft dissertation §6.4, step 1), so
    /// the round confirms leadership (for the lease) but the waiting reads stay unsent.
    ///
    /// # Panics
    /// If `now` is before the previous round's send time (the clock went backwards).
    pub(crate) fn next_round(&mut self, now: Duration, committed: Option<LogIndex>) -> u64 {
        if let Some((last_round, last_sent)) = self.sent_at.back() {
            assert!(
                *last_sent <= now,
                "round {last_round} was sent at {last_sent:?}, after the new round's {now:?}"
            );
        }
        self.round += 1;
        let round = self.round;
        if self.sent_at.len() == ROUND_HISTORY_MAX {
            self.sent_at.pop_front();
        }
        self.sent_at.push_back((round, now));
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
        while self.sent_at.len() > 1 && self.sent_at[1].0 <= quorum_round {
            self.sent_at.pop_front();
        }
        released
    }

    /// The leader's clock when `round` was created, if still remembered.
    pub(crate) fn sent_at(&self, round: u64) -> Option<Duration> {
        self.sent_at.iter().find(|(r, _)| *r == round).map(|(_, sent)| *sent)
    }

    /// Drops every pending read (leadership lost) and returns them.
    pub(crate) fn drain(&mut self) -> Vec<PendingRead> {
        self.unsent = 0;
        self.sent_at.clear();
        self.pending.drain(..).collect()
    }
}
