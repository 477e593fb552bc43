//! The settings of a store: Raft timing and limits shared by every group it hosts, and the
//! bounds of the store loop. Every timeout is in ticks; every limit names its unit.

use std::time::Duration;

use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

use crate::error::{Error, Result};

/// Settings of one store (one node's host of many groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// A follower that hears no leader for a random number of ticks in
    /// `[election_ticks, 2 * election_ticks)` campaigns. Default 10.
    pub election_ticks: u32,
    /// A leader heartbeats every this many ticks. Default 2.
    pub heartbeat_ticks: u32,
    /// The real time one tick stands for: the runner never ticks more often (see
    /// `mosaic_raft::Config::tick_interval`, which lease reads rest on). Every member of a
    /// group must use the same `tick_interval` and `election_ticks`. Default 100 ms.
    pub tick_interval: Duration,
    /// Bytes of entries per append message, at most (one entry is always sent). Default 1 MiB.
    pub entries_bytes_per_message_max: u64,
    /// Appends in flight to one follower of one group. Default 256.
    pub inflight_messages_max: usize,
    /// Bytes of uncommitted entries a leader accepts per group before refusing proposals with
    /// `ServerBusy`. Default 64 MiB.
    pub uncommitted_bytes_max: u64,
    /// Reads waiting for leadership confirmation per group. Default 4,096.
    pub pending_reads_max: usize,
    /// Ready passes over groups that still have work, per call to `Store::process`, before
    /// the store goes back to its inbox. Default 4.
    pub ready_passes_max: u32,
    /// A group compacts its log once it holds more than this many applied entries. Default
    /// 10,000.
    pub compact_log_after_entries: u64,
    /// Applied entries kept after a compaction, so followers that lag a little catch up from
    /// the log instead of a snapshot. Must be below `compact_log_after_entries`. Default 1,000.
    pub compact_log_keep_entries: u64,
    /// A group also compacts its log once the applied entries in it hold more than this many
    /// bytes (a log of few large entries never reaches the count). Default 64 MiB.
    pub compact_log_after_bytes: u64,
    /// Bytes of applied entries kept after a compaction, at most (a compaction keeps what fits
    /// both this and `compact_log_keep_entries`). Must be below `compact_log_after_bytes`.
    /// Default 16 MiB.
    pub compact_log_keep_bytes: u64,
    /// Bytes of records per snapshot chunk, at most (one record is always sent). Default 1 MiB.
    pub snapshot_chunk_bytes_max: u64,
    /// A received snapshot larger than this is refused (it is held in memory until it is
    /// installed in one write). Default 4 GiB.
    pub snapshot_bytes_max: u64,
    /// A leader that has led this many ticks hands its leadership to the group's preferred
    /// voter (caught up and heard lately), and asks again every this many ticks while it
    /// leads, so leaderships spread over the nodes and come back to a restarted node
    /// (`crate::leader_balance`). 0 turns it off; otherwise at least `election_ticks`.
    /// Default 100 (10 s at the default tick).
    pub leader_balance_ticks: u32,
    /// A leader whose group had no request (write, read, membership change, transfer) for this
    /// many ticks quiesces it once it is at rest (`mosaic_raft::RawNode::quiesce`): no more
    /// heartbeats until a request or a message wakes it, so idle groups cost next to nothing.
    /// While the leader balance is on, only a group's preferred voter quiesces it. 0 turns it
    /// off; otherwise at least `election_ticks`. Default 20 (2 s at the default tick).
    pub quiesce_ticks: u32,
    /// Mixed into every group's election-timeout seed (so a simulation seed changes them).
    pub seed: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            election_ticks: 10,
            heartbeat_ticks: 2,
            tick_interval: Duration::from_millis(100),
            entries_bytes_per_message_max: 1 << 20,
            inflight_messages_max: 256,
            uncommitted_bytes_max: 64 << 20,
            pending_reads_max: 4096,
            ready_passes_max: 4,
            compact_log_after_entries: 10_000,
            compact_log_keep_entries: 1_000,
            compact_log_after_bytes: 64 << 20,
            compact_log_keep_bytes: 16 << 20,
            snapshot_chunk_bytes_max: 1 << 20,
            snapshot_bytes_max: 4 << 30,
            leader_balance_ticks: 100,
            quiesce_ticks: 20,
            seed: 0,
        }
    }
}

impl StoreConfig {
    /// Checks every field (the Raft settings are checked again by the core).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidArgument { reason });
        if self.ready_passes_max == 0 {
            return invalid("ready_passes_max must be at least 1".into());
        }
        if self.compact_log_keep_entries >= self.compact_log_after_entries {
            return invalid(format!(
                "compact_log_keep_entries ({}) must be below compact_log_after_entries ({})",
                self.compact_log_keep_entries, self.compact_log_after_entries
            ));
        }
        if self.compact_log_keep_bytes >= self.compact_log_after_bytes {
            return invalid(format!(
                "compact_log_keep_bytes ({}) must be below compact_log_after_bytes ({})",
                self.compact_log_keep_bytes, self.compact_log_after_bytes
            ));
        }
        if self.leader_balance_ticks != 0 && self.leader_balance_ticks < self.election_ticks {
            return invalid(format!(
                "leader_balance_ticks ({}) must be 0 (off) or at least election_ticks ({}): a \
                 transfer may take an election timeout",
                self.leader_balance_ticks, self.election_ticks
            ));
        }
        if self.quiesce_ticks != 0 && self.quiesce_ticks < self.election_ticks {
            return invalid(format!(
                "quiesce_ticks ({}) must be 0 (off) or at least election_ticks ({})",
                self.quiesce_ticks, self.election_ticks
            ));
        }
        if self.snapshot_chunk_bytes_max == 0 || self.snapshot_bytes_max == 0 {
            return invalid(
                "snapshot_chunk_bytes_max and snapshot_bytes_max must be positive".into(),
            );
        }
        self.raft_config(NodeId(1), GroupId(1)).validate().map_err(Error::Raft)
    }

    /// The Raft settings of this node's replica of `group`.
    #[must_use]
    pub fn raft_config(&self, node: NodeId, group: GroupId) -> mosaic_raft::Config {
        let mut config = mosaic_raft::Config::new(node.0);
        config.election_ticks = self.election_ticks;
        config.heartbeat_ticks = self.heartbeat_ticks;
        config.tick_interval = self.tick_interval;
        config.entries_bytes_per_message_max = self.entries_bytes_per_message_max;
        config.inflight_messages_max = self.inflight_messages_max;
        config.uncommitted_bytes_max = self.uncommitted_bytes_max;
        config.pending_reads_max = self.pending_reads_max;
        config.seed = mix_seed(self.seed, node, group);
        config
    }
}

/// A per-replica seed: different for every node and group, fixed for a given store seed.
fn mix_seed(seed: u64, node: NodeId, group: GroupId) -> u64 {
    let mut z = seed ^ node.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ group.0.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_of_one_group_get_different_seeds() {
        let config = StoreConfig::default();
        let a = config.raft_config(NodeId(1), GroupId(7)).seed;
        let b = config.raft_config(NodeId(2), GroupId(7)).seed;
        let c = config.raft_config(NodeId(1), GroupId(8)).seed;
        assert!(a != b && a != c && b != c, "seeds {a} {b} {c}");
    }

    #[test]
    fn quiescence_is_off_or_waits_at_least_an_election_timeout() {
        let config = StoreConfig { quiesce_ticks: 5, ..StoreConfig::default() };
        let Err(Error::InvalidArgument { reason }) = config.validate() else {
            panic!("quiesce_ticks 5 accepted");
        };
        assert!(reason.contains("quiesce_ticks (5)"), "{reason}");
        for quiesce_ticks in [0, 10, 20] {
            assert!(StoreConfig { quiesce_ticks, ..StoreConfig::default() }.validate().is_ok());
        }
    }

    #[test]
    fn an_invalid_raft_setting_is_refused() {
        let config = StoreConfig { heartbeat_ticks: 10, ..StoreConfig::default() };
        assert!(matches!(config.validate(), Err(Error::Raft(_))), "{:?}", config.validate());
    }
}
