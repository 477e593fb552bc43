//! The node's Prometheus metrics ([`NodeMetrics`]): the store thread's own
//! ([`StoreMetrics`]), the store inbox's depth, the KV requests served ([`RequestMetrics`]),
//! the bytes of snapshots and shards moved ([`TransferMetrics`]) and, on a controller replica,
//! the state of the cluster as the replica has applied it ([`ControllerGauges`]). Every series
//! is for the node as a whole, so their number does not grow with the groups it hosts.
//! [`crate::http`] serves them; docs/operations.md "Metrics" lists them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mosaic_controller::ControllerMachine;
use mosaic_raftstore::{Consistency, StoreMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tonic::Status;

use crate::backend::NodeEngine;
use crate::runner::{InboxMetrics, StoreHandle};

/// A controller replica reads its state for its gauges at most this often, however many
/// scrapes come (a flood of scrapes must not flood the store thread).
const CONTROLLER_READ_INTERVAL: Duration = Duration::from_secs(1);

/// Every metric of one node, registered under the prefix `mosaic`.
#[derive(Debug)]
pub struct NodeMetrics {
    /// The store thread's metrics (handed to the store when it opens).
    pub store: StoreMetrics,
    /// KV requests served.
    pub requests: RequestMetrics,
    /// Snapshots and shards moved.
    pub transfers: TransferMetrics,
    registry: Registry,
}

impl NodeMetrics {
    /// The metrics of a node whose store inbox holds at most `inbox_capacity` messages and
    /// counts `inbox`.
    #[must_use]
    pub fn new(inbox: InboxMetrics, inbox_capacity: usize) -> Self {
        let mut registry = Registry::with_prefix("mosaic");
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The version of the running binary (always 1)", build);
        let store = StoreMetrics::default();
        store.register(&mut registry);
        registry.register(
            "store_inbox_messages",
            "Messages waiting for the store thread",
            inbox.depth,
        );
        registry.register(
            "store_inbox_refusals",
            "Messages refused because the store inbox was full (requests answered ServerBusy, Raft messages dropped)",
            inbox.refused,
        );
        let capacity: Gauge = Gauge::default();
        capacity.set(i64::try_from(inbox_capacity).unwrap_or(i64::MAX));
        registry.register(
            "store_inbox_capacity_messages",
            "Messages the store inbox holds at most (past it, requests are refused ServerBusy)",
            capacity,
        );
        let requests = RequestMetrics::default();
        requests.register(&mut registry);
        let transfers = TransferMetrics::default();
        transfers.register(&mut registry);
        Self { store, requests, transfers, registry }
    }

    /// Adds the gauges of a controller replica.
    pub fn register_controller(&mut self, gauges: &ControllerGauges) {
        gauges.register(&mut self.registry);
    }

    /// The metrics in the OpenMetrics text format (which Prometheus reads).
    ///
    /// # Panics
    /// Never: writing into a `String` cannot fail.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing into a String does not fail");
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// What a request did, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `get`, `put`, `append`, `delete`, `batch` or `scan`.
    kind: &'static str,
    /// A read's level: `linearizable`, `lease` or `stale`; empty for a write (or a read too
    /// malformed to have one).
    consistency: &'static str,
}

/// Why a request was refused, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    kind: &'static str,
    /// [`mosaic_client::classify::Failure::name`] of the answer, or `cancelled` for a
    /// request dropped before it was answered.
    reason: &'static str,
}

/// The KV requests a storage node served: their latency by kind and read level, and the
/// refusals by reason. The label values are a fixed set.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    refusals: Family<RefusalLabels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        let buckets: fn() -> Histogram = || Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        Self { latency: Family::new_with_constructor(buckets), refusals: Family::default() }
    }
}

impl RequestMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "kv_request",
            "KV requests served, from arrival to answer (refusals included)",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "kv_refusals",
            "KV requests answered with an error, by reason",
            self.refusals.clone(),
        );
    }

    /// Starts recording a request of `kind` arriving now. It is recorded when
    /// [`RequestRecord::finish`] is called, or as `cancelled` if it is dropped before (the
    /// client gave up waiting, and the handler was dropped with its connection or deadline).
    #[must_use]
    pub fn start(&self, kind: &'static str) -> RequestRecord<'_> {
        RequestRecord { metrics: self, kind, consistency: "", started: Instant::now(), done: false }
    }

    fn record(&self, record: &RequestRecord<'_>, reason: Option<&'static str>) {
        let labels = RequestLabels { kind: record.kind, consistency: record.consistency };
        self.latency.get_or_create(&labels).observe(record.started.elapsed().as_secs_f64());
        if let Some(reason) = reason {
            self.refusals.get_or_create(&RefusalLabels { kind: record.kind, reason }).inc();
        }
    }
}

/// One request being served; see [`RequestMetrics::start`].
pub struct RequestRecord<'a> {
    metrics: &'a RequestMetrics,
    kind: &'static str,
    consistency: &'static str,
    started: Instant,
    done: bool,
}

impl RequestRecord<'_> {
    /// The read level the request asked for.
    pub fn read_level(&mut self, consistency: Consistency) {
        self.consistency = match consistency {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        };
    }

    /// Records the request, answered `result`.
    pub fn finish<T>(mut self, result: &Result<T, Status>) {
        self.done = true;
        let reason = result
            .as_ref()
            .err()
            .map(|status| mosaic_client::classify::classify_status(status).name());
        self.metrics.record(&self, reason);
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.record(self, Some("cancelled"));
        }
    }
}

/// Bulk data moved between nodes: snapshots (Raft's, to a replica that fell behind) and shards
/// (between groups, when a configuration moves them).
#[derive(Clone, Debug, Default)]
pub struct TransferMetrics {
    /// Snapshot bytes streamed to other nodes.
    pub snapshot_bytes_sent: Counter,
    /// Snapshots received whole and handed to the store.
    pub snapshots_received: Counter,
    /// Bytes of the snapshots received whole.
    pub snapshot_bytes_received: Counter,
    /// Shard record bytes streamed to pulling groups.
    pub shard_bytes_sent: Counter,
    /// Shard streams sent to their last chunk.
    pub shards_sent: Counter,
    /// Shard record bytes pulled from other groups.
    pub shard_bytes_received: Counter,
    /// Shard pulls that reached their last chunk.
    pub shards_received: Counter,
}

impl TransferMetrics {
    fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "snapshot_sent_bytes",
                "Snapshot bytes streamed to other nodes",
                &self.snapshot_bytes_sent,
            ),
            ("snapshots_received", "Snapshots received whole", &self.snapshots_received),
            (
                "snapshot_received_bytes",
                "Bytes of the snapshots received whole",
                &self.snapshot_bytes_received,
            ),
            (
                "shard_sent_bytes",
                "Shard record bytes streamed to pulling groups",
                &self.shard_bytes_sent,
            ),
            ("shards_sent", "Shard streams sent to their last chunk", &self.shards_sent),
            (
                "shard_received_bytes",
                "Shard record bytes pulled from other groups",
                &self.shard_bytes_received,
            ),
            ("shards_received", "Shard pulls that reached their last chunk", &self.shards_received),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }
}

/// A controller replica's view of the cluster, read from its applied state at each scrape
/// (a replica behind its leader shows an older configuration: compare the replicas').
#[derive(Clone)]
pub struct ControllerGauges {
    store: StoreHandle<NodeEngine, ControllerMachine>,
    config_num: Gauge,
    nodes: Gauge,
    groups: Gauge,
    shards: Gauge,
    shards_unassigned: Gauge,
    /// Scrapes whose read of the state failed (the gauges then keep their last values).
    read_failures: Counter,
    /// When the state was last read; one read at a time.
    last_read: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl ControllerGauges {
    /// The gauges of the replica that `store` runs.
    #[must_use]
    pub fn new(store: StoreHandle<NodeEngine, ControllerMachine>) -> Self {
        Self {
            store,
            config_num: Gauge::default(),
            nodes: Gauge::default(),
            groups: Gauge::default(),
            shards: Gauge::default(),
            shards_unassigned: Gauge::default(),
            read_failures: Counter::default(),
            last_read: Arc::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        let gauges = [
            (
                "controller_config_num",
                "The latest configuration this replica applied",
                &self.config_num,
            ),
            ("controller_nodes", "Storage nodes registered", &self.nodes),
            ("controller_groups", "Groups in the latest configuration", &self.groups),
            ("controller_shards", "Shards of the cluster", &self.shards),
            (
                "controller_shards_unassigned",
                "Shards no group owns in the latest configuration",
                &self.shards_unassigned,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "controller_state_read_failures",
            "Scrapes that could not read this replica's state (its gauges kept their values)",
            self.read_failures.clone(),
        );
    }

    /// Reads this replica's applied state (a stale read: no quorum needed) into the gauges,
    /// unless it was read less than [`CONTROLLER_READ_INTERVAL`] ago.
    pub async fn refresh(&self) {
        let mut last_read = self.last_read.lock().await;
        if last_read.is_some_and(|at| at.elapsed() < CONTROLLER_READ_INTERVAL) {
            return;
        }
        *last_read = Some(Instant::now());
        let view = match crate::controller_peers::read_applied(&self.store).await {
            Ok(view) => view,
            Err(error) => {
                tracing::debug!(%error, "cannot read the controller state for metrics");
                self.read_failures.inc();
                return;
            }
        };
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.config_num.set(i64::try_from(view.latest.0).unwrap_or(i64::MAX));
        self.nodes.set(count(view.nodes.len()));
        self.groups.set(count(view.config.groups.len()));
        self.shards.set(count(view.config.shards.len()));
        self.shards_unassigned
            .set(count(view.config.shards.iter().filter(|g| g.is_none()).count()));
    }
}

impl std::fmt::Debug for ControllerGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerGauges").field("config_num", &self.config_num.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn a_refusal_is_counted_by_its_reason_and_the_latency_by_kind_and_level() {
        let metrics = NodeMetrics::new(InboxMetrics::default(), 8);
        let mut get = metrics.requests.start("get");
        get.read_level(Consistency::Lease);
        get.finish(&Ok::<(), Status>(()));
        let busy = mosaic_client::refusal::to_status(
            &mosaic_raftstore::Error::ServerBusy { reason: "full".into() },
            |_| String::new(),
        );
        metrics.requests.start("put").finish::<()>(&Err(busy));
        metrics.requests.start("put").finish::<()>(&Err(Status::new(Code::Unavailable, "x")));
        drop(metrics.requests.start("delete"));
        let text = metrics.encode();
        let build = format!("mosaic_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&build), "{text}");
        assert!(
            text.contains(
                "mosaic_kv_request_seconds_count{kind=\"get\",consistency=\"lease\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("mosaic_kv_request_seconds_count{kind=\"put\",consistency=\"\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("mosaic_kv_refusals_total{kind=\"put\",reason=\"server_busy\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mosaic_kv_refusals_total{kind=\"put\",reason=\"unreachable\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mosaic_kv_refusals_total{kind=\"delete\",reason=\"cancelled\"} 1\n"),
            "a request dropped before its answer: {text}"
        );
        assert!(text.contains("mosaic_store_inbox_capacity_messages 8\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
