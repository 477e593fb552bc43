//! The storage node's configuration: a TOML file (kebab-case keys, unknown keys refused) plus
//! command-line flags that override it, checked by [`ServerConfig::validate`] before anything
//! starts. Every timeout and limit is a named field with its unit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mosaic_client::{Tls, TlsFiles};
use mosaic_engine_rocks::{RocksConfig, WalSyncPolicy};
use mosaic_raftstore::StoreConfig;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Everything a storage node needs to start.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's id (never 0), unique in the cluster. Required (here or as a flag).
    #[serde(default)]
    pub node_id: u64,
    /// The cluster this node belongs to; its data directory refuses to open in another.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: u64,
    /// Where to listen for gRPC (KV clients, peers, admin). Default `127.0.0.1:7100`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The address peers and clients reach this node at, if not `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where to serve plain HTTP for Prometheus (`/metrics`) and probes (`/health`), as
    /// `ip:port`; never TLS, so bind it to a private address. Absent: not served.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// The RocksDB directory: created if missing; refused if it belongs to another node.
    /// Required (here or as a flag).
    #[serde(default)]
    pub data_dir: PathBuf,
    /// Other nodes' ids and addresses (`host:port`). A storage node that follows the
    /// controller learns the others from it; a controller replica lists the other replicas.
    #[serde(default)]
    pub peers: BTreeMap<u64, String>,
    /// The controller replicas (`host:port`). When set, a storage node registers itself and
    /// creates the replicas the controller places on it. Empty: groups are created with
    /// `mosaic admin --nodes ... group create`.
    #[serde(default)]
    pub controllers: Vec<String>,
    /// The period of the node's logical clock, in milliseconds. Default 100.
    #[serde(default = "default_tick_interval_ms")]
    pub tick_interval_ms: u64,
    /// How long a KV request may wait for its answer, in milliseconds. Default 5,000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Largest key accepted, in bytes. Default 4 KiB.
    #[serde(default = "default_key_bytes_max")]
    pub key_bytes_max: usize,
    /// Largest value accepted, in bytes. Default 1 MiB.
    #[serde(default = "default_value_bytes_max")]
    pub value_bytes_max: usize,
    /// Messages waiting for the store thread, at most; past it requests get `ServerBusy` and
    /// Raft messages are dropped (Raft retries). Default 65,536.
    #[serde(default = "default_store_inbox_capacity")]
    pub store_inbox_capacity: usize,
    /// Batches of Raft messages queued per peer node, at most; past it they are dropped.
    /// Default 1,024.
    #[serde(default = "default_peer_queue_batches")]
    pub peer_queue_batches: usize,
    /// The node's bandwidth for moving state, in bytes per second: every snapshot it sends
    /// and every shard stream it serves share it. Default 64 MiB/s.
    #[serde(default = "default_snapshot_bytes_per_sec")]
    pub snapshot_bytes_per_sec: u64,
    /// Snapshots this node sends at once, at most (the others wait). Default 4.
    #[serde(default = "default_snapshot_sends_max")]
    pub snapshot_sends_max: usize,
    /// Snapshots this node receives at once, at most (one more is refused, and its leader
    /// sends it again later). Each is held in memory, up to `raft.snapshot-bytes-max`, until
    /// the store has it. Default 4.
    #[serde(default = "default_snapshot_receives_max")]
    pub snapshot_receives_max: usize,
    /// Shard streams this node serves at once, at most (one more is refused, and the puller
    /// asks another replica, then again later). Default 8.
    #[serde(default = "default_shard_streams_max")]
    pub shard_streams_max: usize,
    /// Requests served at once on one connection, at most (the others wait for one to end).
    /// Default 1,024.
    #[serde(default = "default_connection_requests_max")]
    pub connection_requests_max: usize,
    /// Bytes kept free in the data directory: below it the node refuses puts, appends, shard
    /// chunks and snapshots (`StorageFull`) and serves reads and deletes, until a quarter
    /// more is free again (docs/security.md "A full disk"). 0: never refuse. Default 512 MiB.
    #[serde(default = "default_disk_reserve_bytes")]
    pub disk_reserve_bytes: u64,
    /// The longest pause, in milliseconds, before a failing shard migration step (a switch,
    /// a pull, a handoff) starts again; the pause doubles from 100 ms with each failure in a
    /// row. Default 5,000.
    #[serde(default = "default_migration_retry_max_ms")]
    pub migration_retry_max_ms: u64,
    /// Shards this node pulls at once, at most (the others start as these end). Default 4.
    #[serde(default = "default_migration_pulls_max")]
    pub migration_pulls_max: usize,
    /// A controller replica: how long, in milliseconds, a storage node may go unheard (its
    /// agent reads the configuration several times a second) before the leader holds it down
    /// (`admin node list`, `admin status`, the status page). Default 10,000.
    #[serde(default = "default_node_down_after_ms")]
    pub node_down_after_ms: u64,
    /// A controller replica: automatic repair (docs/controller.md "Automatic repair"). Once
    /// its leader has not heard a storage node for this many milliseconds (and has itself seen
    /// it down for a grace of up to 30 s), it moves the node's replicas to other nodes and
    /// retires it. Ignored by a storage node. Absent (the default): off. At least
    /// `node-down-after-ms`; set the same on every replica (the leader's applies).
    #[serde(default)]
    pub auto_repair_after_ms: Option<u64>,
    /// Raft settings shared by every group on the node.
    #[serde(default)]
    pub raft: RaftSection,
    /// Storage settings.
    #[serde(default)]
    pub storage: StorageSection,
    /// Mutual TLS on every connection the node serves and makes (`[tls]`: `cert`, `key`,
    /// `ca`, PEM files). Absent: plaintext (docs/security.md).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// Raft settings (see `mosaic_raftstore::StoreConfig` for their meaning).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RaftSection {
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_ticks: u32,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u32,
    /// A group compacts its log past this many applied entries.
    pub compact_log_after_entries: u64,
    /// Applied entries kept after a compaction.
    pub compact_log_keep_entries: u64,
    /// A group also compacts its log past this many bytes of applied entries.
    pub compact_log_after_bytes: u64,
    /// Bytes of applied entries kept after a compaction, at most.
    pub compact_log_keep_bytes: u64,
    /// Bytes of uncommitted entries a leader accepts per group (`max-uncommitted-bytes`, the
    /// name of earlier releases, is still read).
    #[serde(alias = "max-uncommitted-bytes")]
    pub uncommitted_bytes_max: u64,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// Largest snapshot a replica accepts, in bytes.
    pub snapshot_bytes_max: u64,
    /// A leader hands its leadership to the group's preferred voter after leading this many
    /// ticks, and asks again every this many (0: off).
    pub leader_balance_ticks: u32,
    /// A leader quiesces its group (no heartbeats until a request or a message) once it had no
    /// request for this many ticks and is at rest (0: off).
    pub quiesce_ticks: u32,
}

impl Default for RaftSection {
    fn default() -> Self {
        let store = StoreConfig::default();
        Self {
            election_ticks: store.election_ticks,
            heartbeat_ticks: store.heartbeat_ticks,
            compact_log_after_entries: store.compact_log_after_entries,
            compact_log_keep_entries: store.compact_log_keep_entries,
            compact_log_after_bytes: store.compact_log_after_bytes,
            compact_log_keep_bytes: store.compact_log_keep_bytes,
            uncommitted_bytes_max: store.uncommitted_bytes_max,
            snapshot_chunk_bytes_max: store.snapshot_chunk_bytes_max,
            snapshot_bytes_max: store.snapshot_bytes_max,
            leader_balance_ticks: store.leader_balance_ticks,
            quiesce_ticks: store.quiesce_ticks,
        }
    }
}

/// Storage settings (see docs/storage.md for the defaults and why).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct StorageSection {
    /// RocksDB's shared block cache, in bytes.
    pub block_cache_bytes: usize,
    /// Memtable size per column family, in bytes.
    pub write_buffer_bytes: usize,
    /// The in-memory cache of recent log entries across all groups, in bytes.
    pub entry_cache_bytes: u64,
    /// `true` (default): synced writes fsync. `false` turns fsync off: only for throwaway
    /// clusters, a machine crash can then lose acknowledged writes.
    pub fsync: bool,
}

impl Default for StorageSection {
    fn default() -> Self {
        let rocks = RocksConfig::default();
        Self {
            block_cache_bytes: rocks.block_cache_bytes,
            write_buffer_bytes: rocks.write_buffer_bytes,
            entry_cache_bytes: rocks.engine.entry_cache_bytes_max,
            fsync: true,
        }
    }
}

fn default_cluster_id() -> u64 {
    1
}
fn default_listen() -> String {
    "127.0.0.1:7100".into()
}
fn default_tick_interval_ms() -> u64 {
    100
}
fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_key_bytes_max() -> usize {
    4 << 10
}
/// The records a storage node streams per chunk of a shard moving to another group, at most
/// (at least one record per chunk).
pub const SHARD_CHUNK_BYTES_MAX: u64 = 1 << 20;

fn default_value_bytes_max() -> usize {
    1 << 20
}
fn default_store_inbox_capacity() -> usize {
    65_536
}
fn default_peer_queue_batches() -> usize {
    1_024
}
fn default_snapshot_bytes_per_sec() -> u64 {
    64 << 20
}
fn default_snapshot_sends_max() -> usize {
    4
}
fn default_snapshot_receives_max() -> usize {
    4
}
fn default_shard_streams_max() -> usize {
    8
}
fn default_connection_requests_max() -> usize {
    1_024
}
fn default_disk_reserve_bytes() -> u64 {
    512 << 20
}
fn default_migration_retry_max_ms() -> u64 {
    mosaic_agent::DEFAULT_TASK_RETRY_MAX_MS
}
fn default_migration_pulls_max() -> usize {
    mosaic_agent::DEFAULT_PULLS_MAX
}
fn default_node_down_after_ms() -> u64 {
    u64::try_from(mosaic_controller::DEFAULT_NODE_DOWN_AFTER.as_millis()).unwrap_or(u64::MAX)
}

impl ServerConfig {
    /// The defaults for node `node_id` with its data in `data_dir`.
    #[must_use]
    pub fn new(node_id: u64, data_dir: PathBuf) -> Self {
        Self {
            node_id,
            cluster_id: default_cluster_id(),
            listen: default_listen(),
            advertise: None,
            metrics_listen: None,
            data_dir,
            peers: BTreeMap::new(),
            controllers: Vec::new(),
            tick_interval_ms: default_tick_interval_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            key_bytes_max: default_key_bytes_max(),
            value_bytes_max: default_value_bytes_max(),
            store_inbox_capacity: default_store_inbox_capacity(),
            peer_queue_batches: default_peer_queue_batches(),
            snapshot_bytes_per_sec: default_snapshot_bytes_per_sec(),
            snapshot_sends_max: default_snapshot_sends_max(),
            snapshot_receives_max: default_snapshot_receives_max(),
            shard_streams_max: default_shard_streams_max(),
            connection_requests_max: default_connection_requests_max(),
            disk_reserve_bytes: default_disk_reserve_bytes(),
            migration_retry_max_ms: default_migration_retry_max_ms(),
            migration_pulls_max: default_migration_pulls_max(),
            node_down_after_ms: default_node_down_after_ms(),
            auto_repair_after_ms: None,
            raft: RaftSection::default(),
            storage: StorageSection::default(),
            tls: None,
        }
    }

    /// The largest chunk a node streams to another: a snapshot chunk, a shard chunk
    /// ([`SHARD_CHUNK_BYTES_MAX`]), or a shard chunk of one record as large as a key and a
    /// value may be.
    #[must_use]
    pub fn transfer_chunk_bytes_max(&self) -> u64 {
        let record = (self.key_bytes_max + self.value_bytes_max) as u64;
        self.raft.snapshot_chunk_bytes_max.max(SHARD_CHUNK_BYTES_MAX).max(record)
    }

    /// Parses a TOML configuration.
    ///
    /// # Errors
    /// [`Error::Config`] with the parser's message (which names the line and the key).
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|error| Error::Config { reason: error.to_string() })
    }

    /// Checks every field and the relations between them.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::Config { reason });
        if self.node_id == 0 {
            return invalid(
                "node-id must be set (--id, or node-id in the config file) and not 0".into(),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid(
                "data-dir must be set (--data-dir, or data-dir in the config file)".into(),
            );
        }
        if self.cluster_id == 0 {
            return invalid("cluster-id must not be 0".into());
        }
        self.listen_addr()?;
        self.metrics_addr()?;
        for (id, address) in &self.peers {
            if *id == 0 {
                return invalid(format!("peer id 0 (address {address}) is not valid"));
            }
            if address.trim().is_empty() || !address.contains(':') {
                return invalid(format!("peer {id} address {address:?} is not host:port"));
            }
        }
        for address in &self.controllers {
            if address.trim().is_empty() || !address.contains(':') {
                return invalid(format!("controller address {address:?} is not host:port"));
            }
        }
        for (name, value) in [
            ("tick-interval-ms", self.tick_interval_ms),
            ("request-timeout-ms", self.request_timeout_ms),
            ("key-bytes-max", self.key_bytes_max as u64),
            ("value-bytes-max", self.value_bytes_max as u64),
            ("store-inbox-capacity", self.store_inbox_capacity as u64),
            ("peer-queue-batches", self.peer_queue_batches as u64),
            ("snapshot-bytes-per-sec", self.snapshot_bytes_per_sec),
            ("snapshot-sends-max", self.snapshot_sends_max as u64),
            ("snapshot-receives-max", self.snapshot_receives_max as u64),
            ("shard-streams-max", self.shard_streams_max as u64),
            ("connection-requests-max", self.connection_requests_max as u64),
            ("migration-retry-max-ms", self.migration_retry_max_ms),
            ("migration-pulls-max", self.migration_pulls_max as u64),
            ("node-down-after-ms", self.node_down_after_ms),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        let chunk_max = self.transfer_chunk_bytes_max();
        if self.snapshot_bytes_per_sec / 4 < chunk_max {
            return invalid(format!(
                "snapshot-bytes-per-sec ({}) must be at least 4 times the largest chunk a node \
                 streams ({chunk_max} bytes: raft.snapshot-chunk-bytes-max, a 1 MiB shard \
                 chunk, or one record of key-bytes-max and value-bytes-max), so that a chunk \
                 waits at most a quarter second of it",
                self.snapshot_bytes_per_sec
            ));
        }
        if let Some(after) = self.auto_repair_after_ms
            && after < self.node_down_after_ms
        {
            return invalid(format!(
                "auto-repair-after-ms ({after}) must be at least node-down-after-ms ({}): a node \
                 is repaired only once the controller's leader holds it down",
                self.node_down_after_ms
            ));
        }
        self.store_config()
            .validate()
            .map_err(|error| Error::Config { reason: format!("raft: {error}") })?;
        self.rocks_config()
            .validate()
            .map_err(|error| Error::Config { reason: format!("storage: {error}") })?;
        Ok(())
    }

    /// The TLS identity of the node, read and checked; `None` without `[tls]`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file that cannot be used.
    pub fn load_tls(&self) -> Result<Option<Tls>> {
        self.tls
            .as_ref()
            .map(|files| {
                Tls::load(files).map_err(|error| Error::Config { reason: format!("tls: {error}") })
            })
            .transpose()
    }

    /// The address of the HTTP port, if it is served.
    ///
    /// # Errors
    /// [`Error::Config`] when `metrics-listen` is not `ip:port`.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>> {
        let Some(address) = &self.metrics_listen else {
            return Ok(None);
        };
        address.parse().map(Some).map_err(|error| Error::Config {
            reason: format!("metrics-listen address {address:?} is not ip:port: {error}"),
        })
    }

    /// The address to listen on.
    ///
    /// # Errors
    /// [`Error::Config`] when `listen` is not `ip:port`.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen.parse().map_err(|error| Error::Config {
            reason: format!("listen address {:?} is not ip:port: {error}", self.listen),
        })
    }

    /// The address others reach this node at.
    #[must_use]
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// The store's settings.
    #[must_use]
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            election_ticks: self.raft.election_ticks,
            heartbeat_ticks: self.raft.heartbeat_ticks,
            tick_interval: self.tick_interval(),
            compact_log_after_entries: self.raft.compact_log_after_entries,
            compact_log_keep_entries: self.raft.compact_log_keep_entries,
            compact_log_after_bytes: self.raft.compact_log_after_bytes,
            compact_log_keep_bytes: self.raft.compact_log_keep_bytes,
            uncommitted_bytes_max: self.raft.uncommitted_bytes_max,
            snapshot_chunk_bytes_max: self.raft.snapshot_chunk_bytes_max,
            snapshot_bytes_max: self.raft.snapshot_bytes_max,
            leader_balance_ticks: self.raft.leader_balance_ticks,
            quiesce_ticks: self.raft.quiesce_ticks,
            seed: self.node_id,
            ..StoreConfig::default()
        }
    }

    /// RocksDB's settings.
    #[must_use]
    pub fn rocks_config(&self) -> RocksConfig {
        let mut rocks = RocksConfig {
            block_cache_bytes: self.storage.block_cache_bytes,
            write_buffer_bytes: self.storage.write_buffer_bytes,
            wal_sync: if self.storage.fsync {
                WalSyncPolicy::AsRequested
            } else {
                WalSyncPolicy::NeverUnsafe
            },
            ..RocksConfig::default()
        };
        rocks.engine.entry_cache_bytes_max = self.storage.entry_cache_bytes;
        rocks
    }

    /// The tick period.
    #[must_use]
    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.tick_interval_ms)
    }

    /// How long a KV request may wait.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long a storage node may go unheard before a controller leader holds it down.
    #[must_use]
    pub fn node_down_after(&self) -> Duration {
        Duration::from_millis(self.node_down_after_ms)
    }

    /// How long a controller leader holds a storage node down before it repairs it; `None`:
    /// no automatic repair.
    #[must_use]
    pub fn auto_repair_after(&self) -> Option<Duration> {
        self.auto_repair_after_ms.map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_every_section_parses() {
        let config = ServerConfig::from_toml(
            r#"
            node-id = 2
            data-dir = "/var/lib/mosaic"
            listen = "0.0.0.0:7102"
            advertise = "node2:7102"
            peers = { 1 = "node1:7101", 3 = "node3:7103" }
            [raft]
            election-ticks = 20
            [storage]
            block-cache-bytes = 1073741824
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.advertised(), "node2:7102");
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.store_config().election_ticks, 20);
        assert_eq!(config.rocks_config().block_cache_bytes, 1 << 30);
    }

    /// The example in docs/raftstore.md lists every key with its default: it must parse, and
    /// every value it shows must be the default the code uses.
    #[test]
    fn the_documented_example_parses_and_shows_the_defaults() {
        let doc = include_str!("../../../docs/raftstore.md");
        let start = doc.find("```toml\nnode-id").expect("the example in docs/raftstore.md");
        let example = &doc[start + "```toml\n".len()..];
        let example = &example[..example.find("```").expect("the example's end")];
        let parsed = ServerConfig::from_toml(example).unwrap();
        parsed.validate().unwrap();
        let mut expected = ServerConfig::new(1, "/var/lib/mosaic/node-1".into());
        expected.advertise = Some("node1:7100".into());
        expected.metrics_listen = Some("127.0.0.1:9100".into());
        expected.peers = [(2, "node2:7100".to_string()), (3, "node3:7100".to_string())].into();
        expected.controllers = ["ctl1:7000", "ctl2:7000", "ctl3:7000"].map(String::from).into();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn the_earlier_name_of_the_uncommitted_bound_is_still_read() {
        let old = "node-id = 1\ndata-dir = \"d\"\n[raft]\nmax-uncommitted-bytes = 1024\n";
        assert_eq!(ServerConfig::from_toml(old).unwrap().raft.uncommitted_bytes_max, 1024);
        let new = "node-id = 1\ndata-dir = \"d\"\n[raft]\nuncommitted-bytes-max = 2048\n";
        assert_eq!(ServerConfig::from_toml(new).unwrap().raft.uncommitted_bytes_max, 2048);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        let unknown = ServerConfig::from_toml("node-id = 1\ndata-dir = \"d\"\nlisten-port = 3\n");
        assert!(
            matches!(&unknown, Err(Error::Config { reason }) if reason.contains("listen-port"))
        );
        let mut config = ServerConfig::new(1, "d".into());
        config.listen = "localhost".into();
        assert!(
            matches!(config.validate(), Err(Error::Config { reason }) if reason.contains("listen"))
        );
        let mut config = ServerConfig::new(1, "d".into());
        config.metrics_listen = Some("localhost:9100".into());
        assert!(
            matches!(config.validate(), Err(Error::Config { reason }) if reason.contains("metrics-listen"))
        );
        let mut config = ServerConfig::new(1, "d".into());
        config.raft.heartbeat_ticks = 50;
        assert!(
            matches!(config.validate(), Err(Error::Config { reason }) if reason.contains("raft"))
        );
        let config = ServerConfig::new(0, "d".into());
        assert!(
            matches!(config.validate(), Err(Error::Config { reason }) if reason.contains("node-id"))
        );
    }

    #[test]
    fn an_automatic_repair_sooner_than_a_node_is_held_down_is_refused() {
        let text = "node-id = 1\ndata-dir = \"d\"\nauto-repair-after-ms = 600000\n";
        let mut config = ServerConfig::from_toml(text).unwrap();
        assert_eq!(config.auto_repair_after(), Some(Duration::from_secs(600)));
        config.validate().unwrap();
        config.auto_repair_after_ms = Some(config.node_down_after_ms - 1);
        let refused = config.validate().unwrap_err().to_string();
        assert!(
            refused.contains("auto-repair-after-ms (9999) must be at least node-down-after-ms"),
            "{refused}"
        );
        assert_eq!(ServerConfig::new(1, "d".into()).auto_repair_after(), None);
    }

    /// Found in review: at a rate under a chunk per deadline, a pull's chunk waited past the
    /// puller's deadline every time, and the pull never finished.
    #[test]
    fn a_transfer_rate_under_four_largest_chunks_a_second_is_refused() {
        let mut config = ServerConfig::new(1, "d".into());
        config.snapshot_bytes_per_sec = 4 * config.transfer_chunk_bytes_max();
        config.validate().unwrap();
        config.snapshot_bytes_per_sec -= 1;
        let refused = config.validate().unwrap_err().to_string();
        assert!(
            refused.contains("snapshot-bytes-per-sec (4210687) must be at least 4 times"),
            "{refused}"
        );
        config.value_bytes_max = 4 << 20;
        config.snapshot_bytes_per_sec = 16 << 20;
        assert!(config.validate().is_err(), "a record of the largest value is a chunk");
    }
}
