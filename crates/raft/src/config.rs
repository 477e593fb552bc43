//! The settings of one Raft replica. Every timeout is in ticks (and `tick_interval` says how
//! much real time a tick stands for); every limit names its unit.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::{LogIndex, NodeId};

/// Settings of one replica; see each field for its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica's node id (never 0).
    pub id: NodeId,
    /// A follower that hears no leader for a random number of ticks in
    /// `[election_ticks, 2 * election_ticks)` starts an election. Default 10.
    pub election_ticks: u32,
    /// A leader sends heartbeats every `heartbeat_ticks`. Must be below `election_ticks`.
    /// Default 2.
    pub heartbeat_ticks: u32,
    /// The index the application has applied (on restart). Default 0.
    pub applied: LogIndex,
    /// Entries per append message are capped at this many bytes (at least one entry is
    /// always sent). Default 1 MiB.
    pub entries_bytes_per_message_max: u64,
    /// Appends in flight to one follower, at most. Default 256.
    pub inflight_messages_max: usize,
    /// Bytes of entries in flight to one follower, at most. Default 32 MiB.
    pub inflight_bytes_max: u64,
    /// Bytes of appended but uncommitted entries a leader accepts before refusing proposals
    /// with [`Error::UncommittedLogFull`]. Default 64 MiB.
    pub uncommitted_bytes_max: u64,
    /// Bytes of committed entries handed out in one `Ready`. Default 16 MiB.
    pub committed_bytes_per_ready_max: u64,
    /// Read requests waiting for leadership confirmation, at most. Default 65,536.
    pub pending_reads_max: usize,
    /// PreVote (Raft dissertation §9.6): a node asks whether it could win before raising its
    /// term, so a rejoining partitioned node cannot disrupt a healthy leader. Default true.
    pub pre_vote: bool,
    /// CheckQuorum: a leader that has not heard from a majority for an election timeout steps
    /// down, and followers that heard from a leader within the election timeout ignore vote
    /// requests, as does every replica for an election timeout after it starts. Required for
    /// lease reads. Default true.
    pub check_quorum: bool,
    /// The lease is shorter than an election timeout by this many ticks (see
    /// [`Config::tick_interval`]): one tick for the phase of the followers' tick timers, the
    /// rest for the rates of the leader's clock and the followers' timers differing. At least
    /// 1, below `election_ticks`. Default 2.
    pub lease_margin_ticks: u32,
    /// Seed of the random election timeouts. Give each replica a different seed.
    pub seed: u64,
    /// The real time one tick stands for: the application promises never to tick more often
    /// than this (a tick may come late, never early). Default 100 ms.
    ///
    /// Lease reads (Raft dissertation §6.4.1) rest on it. A round of heartbeats that a
    /// majority acknowledged gives the leader a lease of
    /// `(election_ticks - lease_margin_ticks) * tick_interval` of the application's monotonic
    /// clock ([`crate::RawNode::set_clock`]), from when the round was created. That is safe
    /// because:
    ///
    /// - every follower that acknowledged the round ignores vote and pre-vote requests (other
    ///   than a leadership transfer's) until it has counted `election_ticks` of its own ticks
    ///   after receiving it, or after restarting if it crashed meanwhile; any new leader needs
    ///   the vote of one of them;
    /// - ticks never come faster than `tick_interval`, so those ticks span at least
    ///   `(election_ticks - 1) * tick_interval` of real time (the first may come at once);
    /// - `lease_margin_ticks` absorbs that first tick and the difference between the rate of
    ///   the leader's clock and that of the followers' tick timers.
    ///
    /// A leader whose thread stalls (SIGSTOP, a slow fsync) counts no ticks, but its clock
    /// runs on, so it wakes up with its lease expired.
    pub tick_interval: Duration,
}

impl Config {
    /// The defaults for replica `id`, with the seed derived from the id.
    #[must_use]
    pub fn new(id: u64) -> Self {
        Self {
            id: NodeId(id),
            election_ticks: 10,
            heartbeat_ticks: 2,
            applied: LogIndex(0),
            entries_bytes_per_message_max: 1 << 20,
            inflight_messages_max: 256,
            inflight_bytes_max: 32 << 20,
            uncommitted_bytes_max: 64 << 20,
            committed_bytes_per_ready_max: 16 << 20,
            pending_reads_max: 65_536,
            pre_vote: true,
            check_quorum: true,
            lease_margin_ticks: 2,
            seed: id,
            tick_interval: Duration::from_millis(100),
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first setting that is out of range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if self.id.0 == 0 {
            return invalid("id must not be 0".into());
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be at least 1".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid(format!(
                "election_ticks ({}) must be greater than heartbeat_ticks ({})",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.lease_margin_ticks == 0 || self.lease_margin_ticks >= self.election_ticks {
            return invalid(format!(
                "lease_margin_ticks ({}) must be at least 1 and below election_ticks ({}): a \
                 follower's first tick may come right after it acknowledges the leader",
                self.lease_margin_ticks, self.election_ticks
            ));
        }
        if self.tick_interval.is_zero() {
            return invalid("tick_interval must be above zero".into());
        }
        if self.tick_interval.checked_mul(self.election_ticks).is_none() {
            return invalid(format!(
                "tick_interval ({:?}) times election_ticks ({}) overflows",
                self.tick_interval, self.election_ticks
            ));
        }
        for (name, value) in [
            ("entries_bytes_per_message_max", self.entries_bytes_per_message_max),
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("uncommitted_bytes_max", self.uncommitted_bytes_max),
            ("committed_bytes_per_ready_max", self.committed_bytes_per_ready_max),
            ("pending_reads_max", self.pending_reads_max as u64),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}
