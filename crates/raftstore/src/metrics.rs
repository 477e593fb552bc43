//! [`StoreMetrics`]: what a store counts and times, kept in Prometheus metric types (shared,
//! atomic handles) so that a server can register them and serve them while the store thread
//! updates them. Every metric is for the node as a whole: a node with 10,000 groups exports the
//! same series as a node with one (per-group detail is `mosaic admin group status`).
//!
//! The store only observes here; nothing it decides reads a metric. Durations come from the
//! store's [`Clock`](crate::Clock) (monotonic time in production, virtual time in the
//! simulator). [`StoreStats`](crate::StoreStats) is read from these same counters.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Durations from 50 µs to about 3.3 s, doubling.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// Counts from 1 to 16,384, doubling.
fn count_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// A store's metrics. Clones share the same values.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    pub(crate) ready_passes: Counter,
    pub(crate) readies: Counter,
    pub(crate) synced_writes: Counter,
    pub(crate) unsynced_writes: Counter,
    pub(crate) messages_sent: Counter,
    pub(crate) messages_dropped: Counter,
    pub(crate) snapshots_sent: Counter,
    pub(crate) snapshots_installed: Counter,
    pub(crate) log_compactions: Counter,
    pub(crate) proposals: Counter,
    pub(crate) applied_entries: Counter,
    pub(crate) elections: Counter,
    pub(crate) leaderships: Counter,
    pub(crate) term_changes: Counter,
    pub(crate) leader_transfers: Counter,
    pub(crate) quiescences: Counter,
    pub(crate) groups: Gauge,
    pub(crate) groups_leading: Gauge,
    pub(crate) groups_quiescent: Gauge,
    pub(crate) sync_seconds: Histogram,
    pub(crate) sync_groups: Histogram,
    pub(crate) ready_pass_seconds: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            ready_passes: Counter::default(),
            readies: Counter::default(),
            synced_writes: Counter::default(),
            unsynced_writes: Counter::default(),
            messages_sent: Counter::default(),
            messages_dropped: Counter::default(),
            snapshots_sent: Counter::default(),
            snapshots_installed: Counter::default(),
            log_compactions: Counter::default(),
            proposals: Counter::default(),
            applied_entries: Counter::default(),
            elections: Counter::default(),
            leaderships: Counter::default(),
            term_changes: Counter::default(),
            leader_transfers: Counter::default(),
            quiescences: Counter::default(),
            groups: Gauge::default(),
            groups_leading: Gauge::default(),
            groups_quiescent: Gauge::default(),
            sync_seconds: seconds_buckets(),
            sync_groups: count_buckets(),
            ready_pass_seconds: seconds_buckets(),
        }
    }
}

impl StoreMetrics {
    /// Registers every metric in `registry` (names as docs/operations.md "Metrics" lists them,
    /// under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "store_ready_passes",
                "Ready passes that persisted or applied something",
                &self.ready_passes,
            ),
            ("store_readies", "Readies handled (one per busy group per pass)", &self.readies),
            (
                "store_synced_writes",
                "Synced engine writes (at most one per Ready pass)",
                &self.synced_writes,
            ),
            (
                "store_unsynced_writes",
                "Unsynced engine writes (applied state)",
                &self.unsynced_writes,
            ),
            ("raft_messages_sent", "Raft messages handed to the transport", &self.messages_sent),
            (
                "raft_messages_dropped",
                "Raft messages dropped on arrival (unknown group, misaddressed)",
                &self.messages_dropped,
            ),
            ("raft_snapshots_sent", "Snapshots handed to the transport", &self.snapshots_sent),
            ("raft_snapshots_installed", "Snapshots installed", &self.snapshots_installed),
            ("raft_log_compactions", "Log compactions", &self.log_compactions),
            (
                "raft_proposals",
                "Proposals handed to a hosted group (a follower refuses them)",
                &self.proposals,
            ),
            ("raft_applied_entries", "Log entries applied", &self.applied_entries),
            (
                "raft_elections",
                "Elections started here (a replica campaigned in a new term)",
                &self.elections,
            ),
            ("raft_leaderships", "Times a replica here became leader", &self.leaderships),
            ("raft_term_changes", "Times a replica here moved to a new term", &self.term_changes),
            (
                "raft_leader_transfers",
                "Leaderships handed from here to a group's preferred voter (transfers started)",
                &self.leader_transfers,
            ),
            (
                "raft_quiescences",
                "Times a leader here quiesced its idle group (docs/raftstore.md \"Quiescence\")",
                &self.quiescences,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register("store_groups", "Groups hosted", self.groups.clone());
        registry.register("store_groups_leading", "Groups led here", self.groups_leading.clone());
        registry.register(
            "store_groups_quiescent",
            "Groups whose replica here is quiescent (no ticks, no heartbeats), as of the last tick",
            self.groups_quiescent.clone(),
        );
        registry.register_with_unit(
            "store_sync_write",
            "Duration of the synced write of a Ready pass (the fsync of a group commit)",
            Unit::Seconds,
            self.sync_seconds.clone(),
        );
        registry.register(
            "store_sync_write_groups",
            "Groups persisted by one synced write (the group commit's batch)",
            self.sync_groups.clone(),
        );
        registry.register_with_unit(
            "store_ready_pass",
            "Duration of a Ready pass (send, persist, apply, answer)",
            Unit::Seconds,
            self.ready_pass_seconds.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn every_metric_is_exported_once_with_its_help() {
        let metrics = StoreMetrics::default();
        metrics.proposals.inc_by(3);
        metrics.sync_seconds.observe(0.002);
        let mut registry = Registry::with_prefix("mosaic");
        metrics.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("# HELP mosaic_raft_proposals Proposals handed"), "{text}");
        assert!(text.contains("mosaic_raft_proposals_total 3\n"), "{text}");
        assert!(text.contains("mosaic_store_sync_write_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("mosaic_store_sync_write_seconds_bucket{le=\"0.0032\"} 1\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE").count(), 22, "{text}");
    }
}
