//! [`Node`]: a running node: its RocksDB store, the store thread, and the gRPC server on one
//! listening socket. A storage node serves KV, the Raft transport and node admin (and follows
//! the controller when given its addresses, see [`crate::agent_runner`]); a controller replica
//! serves the `Controller` service, the Raft transport of the controller group, and node admin
//! for that group alone ([`crate::controller_admin`]), following the controller replicas'
//! recorded addresses ([`crate::controller_peers`]).
//!
//! Every node may also serve plain HTTP for metrics and probes ([`crate::http`], with
//! `metrics-listen`).
//!
//! Start-up order: validate the config, open the data directory (refused if it belongs to
//! another node or is damaged), start the store thread (which recovers every hosted group),
//! then accept connections. Shutdown: stop accepting, give in-flight requests a grace period,
//! stop the store thread (requests still waiting are answered `Stopped`). A storage error on
//! the store thread stops the node with that error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mosaic_client::Tls;
use mosaic_controller::{ControllerMachine, controller_store_config};
use mosaic_engine::{ClusterId, NodeIdentity, WriteBatch, WriteOptions};
use mosaic_proto::node::SizeLimits;
use mosaic_proto::pb::{
    self, controller_server, controller_server::ControllerServer, kv_server, kv_server::KvServer,
    node_admin_server, node_admin_server::NodeAdminServer, raft_transport_server,
    raft_transport_server::RaftTransportServer, shard_migration_server,
    shard_migration_server::ShardMigrationServer,
};
use mosaic_raft::NodeId;
use mosaic_raftstore::{StateMachine, Store, StoreConfig};
use mosaic_shardkv::KvStateMachine;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Router;

use crate::admin_service::AdminService;
use crate::agent_runner::AgentRunner;
use crate::authorization::AuthorizeLayer;
use crate::backend::NodeEngine;
use crate::bootstrap::{Bootstrapper, WAITING_FOR_INIT};
use crate::config::{SHARD_CHUNK_BYTES_MAX, ServerConfig};
use crate::controller_admin::ControllerAdmin;
use crate::controller_peers;
use crate::controller_service::ControllerService;
use crate::disk::DiskGuard;
use crate::error::{Error, Result};
use crate::health::{self, Health};
use crate::http::{self, ControllerHttp, HttpEndpoint};
use crate::incoming;
use crate::kv_service::{KvLimits, KvService};
use crate::limits::Slots;
use crate::metrics::{ControllerGauges, NodeMetrics};
use crate::migration_service::{MigrationLimits, MigrationService};
use crate::pacing::Budget;
use crate::raft_service::{RaftService, SnapshotIntake};
use crate::repair_runner::RepairRunner;
use crate::runner::{self, MonotonicClock, StoreHandle, StoreRunner};
use crate::status::Directory;
use crate::status_page::StatusPage;
use crate::transport::{
    GrpcTransport, RAFT_MESSAGE_BYTES_MAX, TransportOptions, process_incarnation,
};
use mosaic_types::CONTROLLER_GROUP;

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often the server checks that the store thread is alive.
const STORE_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// A running node. Dropping it without [`Node::stop`] aborts the server task.
pub struct Node {
    node: NodeId,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl Node {
    /// Starts a node listening on `config.listen`.
    ///
    /// # Errors
    /// An invalid config; a data directory that cannot be opened; an address that cannot be
    /// bound.
    pub async fn start(config: ServerConfig) -> Result<Self> {
        let listener = Self::bind(&config).await?;
        Self::start_with_listener(config, listener).await
    }

    /// Binds `config.listen`.
    ///
    /// # Errors
    /// An invalid config; an address that cannot be bound.
    pub async fn bind(config: &ServerConfig) -> Result<TcpListener> {
        config.validate()?;
        let address = config.listen_addr()?;
        TcpListener::bind(address)
            .await
            .map_err(|source| Error::Listen { address: config.listen.clone(), source })
    }

    /// Starts a node serving on an already bound `listener` (tests bind port 0 first).
    ///
    /// # Errors
    /// As [`Node::start`].
    pub async fn start_with_listener(config: ServerConfig, listener: TcpListener) -> Result<Self> {
        let placement =
            |engine: &mosaic_engine::Engine<NodeEngine>| check_placement(engine, &config);
        let core =
            Core::<KvStateMachine>::open_with(&config, config.store_config(), listener, placement)?;
        let tls = core.tls.clone();
        let limits = KvLimits {
            sizes: SizeLimits {
                key_bytes_max: config.key_bytes_max,
                value_bytes_max: config.value_bytes_max,
            },
            request_timeout: config.request_timeout(),
        };
        let kv_message_bytes_max = limits.message_bytes_max();
        let kv = KvService::new(
            core.store.clone(),
            core.directory.clone(),
            limits,
            core.disk.clone(),
            core.metrics.requests.clone(),
        );
        let kv = KvServer::new(kv)
            .max_decoding_message_size(kv_message_bytes_max)
            .max_encoding_message_size(kv_message_bytes_max);
        let admin =
            NodeAdminServer::new(AdminService::new(core.store.clone(), core.directory.clone()));
        let migration = if config.controllers.is_empty() {
            None
        } else {
            let agent = AgentRunner::new(
                &config,
                tls,
                core.store.clone(),
                Arc::clone(&core.engine),
                core.directory.clone(),
                core.disk.clone(),
                core.metrics.transfers.clone(),
            )?;
            tokio::spawn(agent.run(core.closing.subscribe()));
            let limits = MigrationLimits {
                chunk_bytes_max: SHARD_CHUNK_BYTES_MAX,
                budget: Arc::clone(&core.budget),
                streams: Slots::new(
                    config.shard_streams_max,
                    "shard-streams-max",
                    "shard streams served",
                ),
                request_timeout: config.request_timeout(),
                transfers: core.metrics.transfers.clone(),
            };
            let service = MigrationService::new(core.store.clone(), core.directory.clone(), limits);
            Some(
                ShardMigrationServer::new(service)
                    .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX),
            )
        };
        let mut services = vec![kv_server::SERVICE_NAME, node_admin_server::SERVICE_NAME];
        if migration.is_some() {
            services.push(shard_migration_server::SERVICE_NAME);
        }
        // A storage node is ready as soon as it serves.
        let (_, ready) = watch::channel(true);
        Ok(core.serve(services, None, ready, |router| {
            router.add_service(kv).add_service(admin).add_optional_service(migration)
        }))
    }

    /// Starts a replica of the controller group on `listener`. With `bootstrap` (the first
    /// start of a new controller group), the empty data directory is initialised for a
    /// cluster of `shard_count` shards and the group is created with this node and
    /// `config.peers` as its members; every initial replica must be started so, with the same
    /// count. Without it, a data directory that holds the group is recovered (a restart), and
    /// an empty one waits for `mosaic admin init` ([`crate::bootstrap`]).
    ///
    /// # Errors
    /// As [`Node::start`]; a shard count of 0; [`Error::Config`] when `bootstrap` is given for
    /// a data directory that holds the group.
    pub async fn start_controller(
        config: ServerConfig,
        shard_count: u32,
        bootstrap: bool,
        listener: TcpListener,
    ) -> Result<Self> {
        if shard_count == 0 {
            return Err(Error::Config { reason: "the shard count must be at least 1".into() });
        }
        let mut members: Vec<NodeId> = config.peers.keys().map(|id| NodeId(*id)).collect();
        members.push(NodeId(config.node_id));
        members.sort_unstable();
        members.dedup();
        let storage_error = |source| Error::Storage { path: config.data_dir.clone(), source };
        let data_dir = config.data_dir.clone();
        let mut held = false;
        let prepare = |engine: &mosaic_engine::Engine<NodeEngine>| {
            held = engine.group_ids().map_err(storage_error)?.contains(&CONTROLLER_GROUP);
            if held && bootstrap {
                return Err(Error::Config {
                    reason: format!(
                        "--bootstrap is for the first start of a new controller group, and {} \
                         already holds it: start this replica without --bootstrap",
                        data_dir.display()
                    ),
                });
            }
            Ok(())
        };
        let store_config = controller_store_config(config.store_config());
        let mut core =
            Core::<ControllerMachine>::open_with(&config, store_config, listener, prepare)?;
        let bootstrapper = Arc::new(Bootstrapper::new(
            core.node,
            members,
            Arc::clone(&core.engine),
            core.store.clone(),
            held,
        ));
        if bootstrap {
            bootstrapper.bootstrap(shard_count, false).await?;
        } else if !held {
            tracing::warn!(node_id = %core.node, data_dir = %config.data_dir.display(),
                "{WAITING_FOR_INIT}");
        }
        let held = bootstrapper.held();
        let admin = ControllerAdmin::new(
            AdminService::new(core.store.clone(), core.directory.clone()),
            Arc::clone(&bootstrapper),
        );
        let service = ControllerService::new(
            core.node,
            core.store.clone(),
            core.directory.clone(),
            config.request_timeout(),
            bootstrapper,
            config.node_down_after(),
        );
        tokio::spawn(controller_peers::follow(
            core.node,
            core.store.clone(),
            core.directory.clone(),
            core.closing.subscribe(),
        ));
        let mut replicas: Vec<String> = config.peers.values().cloned().collect();
        replicas.push(config.advertised().to_string());
        replicas.sort();
        replicas.dedup();
        if let Some(after) = config.auto_repair_after() {
            let repair = RepairRunner::new(
                core.node,
                replicas.clone(),
                core.tls.clone(),
                core.store.clone(),
                config.request_timeout(),
                after,
            )
            .map_err(|error| Error::Config { reason: format!("controller peers: {error}") })?;
            tokio::spawn(repair.run(core.closing.subscribe()));
        }
        // The HTTP port's gauges and status page, if the replica serves one.
        let http = if config.metrics_listen.is_some() {
            let gauges = ControllerGauges::new(core.store.clone());
            core.metrics.register_controller(&gauges);
            let status = StatusPage::new(replicas, core.tls.clone(), config.request_timeout())
                .map_err(|error| Error::Config { reason: format!("controller peers: {error}") })?;
            Some(ControllerHttp { gauges, status })
        } else {
            None
        };
        let services = vec![controller_server::SERVICE_NAME, node_admin_server::SERVICE_NAME];
        Ok(core.serve(services, http, held, |router| {
            router
                .add_service(ControllerServer::new(service))
                .add_service(NodeAdminServer::new(admin))
        }))
    }

    /// This node.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.node
    }

    /// The address the node accepts connections on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the node's HTTP port (metrics and health), if it serves one.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops the node gracefully (see the module documentation).
    ///
    /// # Errors
    /// The error that had stopped the node, if one had.
    pub async fn stop(mut self) -> Result<()> {
        match self.shutdown.take() {
            Some(shutdown) => {
                let _ = shutdown.send(());
                self.wait_task().await
            }
            None => Ok(()),
        }
    }

    /// Waits until the node stops by itself (a storage error, or the server failing). Safe to
    /// cancel; after it returns, the node is stopped and must not be stopped again.
    ///
    /// # Errors
    /// What stopped it.
    pub async fn wait(&mut self) -> Result<()> {
        let result = self.wait_task().await;
        self.shutdown = None;
        result
    }

    async fn wait_task(&mut self) -> Result<()> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.shutdown.is_some() {
            self.task.abort();
        }
    }
}

/// Checks that a storage node's data directory matches how it is placed: a node that follows
/// a controller marks its store so (its groups then serve only the shards configurations give
/// them); a store so marked is refused without `--controllers`, and a store holding groups
/// created without a controller is refused with it, since neither could serve its data
/// correctly.
fn check_placement(
    engine: &mosaic_engine::Engine<NodeEngine>,
    config: &ServerConfig,
) -> Result<()> {
    let storage_error = |source| Error::Storage { path: config.data_dir.clone(), source };
    let placed = KvStateMachine::is_placed_by_controller(engine).map_err(|error| match error {
        mosaic_raftstore::Error::Engine(source) => storage_error(source),
        other => Error::Store(other),
    })?;
    let follows = !config.controllers.is_empty();
    let refuse = |reason: String| Err(Error::Config { reason });
    match (placed, follows) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => refuse(format!(
            "the data directory {} belongs to a node placed by a controller: start it with --controllers",
            config.data_dir.display()
        )),
        (false, true) if !engine.group_ids().map_err(storage_error)?.is_empty() => refuse(format!(
            "the data directory {} holds groups created without a controller; it cannot follow one (use a new data directory)",
            config.data_dir.display()
        )),
        (false, true) => {
            let mut batch = WriteBatch::new();
            KvStateMachine::mark_placed_by_controller(&mut batch);
            engine.write(&batch, WriteOptions { sync: true }).map_err(storage_error)
        }
    }
}

/// What every node runs, whatever its role: the data directory, the store thread of state
/// machine `SM`, the Raft transport, and the listener the gRPC server will serve.
struct Core<SM: StateMachine<NodeEngine>> {
    node: NodeId,
    local_addr: SocketAddr,
    listener: TcpListener,
    store: StoreHandle<NodeEngine, SM>,
    engine: Arc<mosaic_engine::Engine<NodeEngine>>,
    runner: StoreRunner,
    directory: Directory,
    raft: RaftTransportServer<RaftService<NodeEngine, SM>>,
    closing: watch::Sender<bool>,
    /// The node's TLS identity: every port it serves and every connection it makes use it.
    tls: Option<Tls>,
    /// The TLS handshake of every connection served, with the node's identity.
    acceptor: Option<TlsAcceptor>,
    /// The node's bandwidth for snapshots and shard streams, shared by all of them.
    budget: Arc<Budget>,
    /// Requests served at once on one connection, at most (the others wait).
    connection_requests_max: usize,
    /// The free space of the data directory: writes are refused while it is nearly full.
    disk: DiskGuard,
    /// Every metric of the node.
    metrics: NodeMetrics,
    /// The HTTP port for metrics and probes, if the node serves one.
    http_listener: Option<TcpListener>,
}

impl<SM: StateMachine<NodeEngine>> Core<SM> {
    /// Opens the data directory, runs `prepare` on the engine, then starts the store thread
    /// (which recovers every hosted group) with `store_config`.
    fn open_with(
        config: &ServerConfig,
        store_config: StoreConfig,
        listener: TcpListener,
        prepare: impl FnOnce(&mosaic_engine::Engine<NodeEngine>) -> Result<()>,
    ) -> Result<Self> {
        config.validate()?;
        let tls = config.load_tls()?;
        let acceptor = tls
            .as_ref()
            .map(incoming::acceptor)
            .transpose()
            .map_err(|reason| Error::Config { reason: format!("tls: {reason}") })?;
        let node = NodeId(config.node_id);
        let cluster = ClusterId(config.cluster_id);
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Listen { address: config.listen.clone(), source })?;
        let identity = NodeIdentity { cluster_id: cluster, node_id: node };
        let storage_error = |source| Error::Storage { path: config.data_dir.clone(), source };
        let engine = mosaic_engine_rocks::open(&config.data_dir, identity, &config.rocks_config())
            .map_err(storage_error)?;
        prepare(&engine)?;
        let engine = Arc::new(engine);

        let mut addresses: BTreeMap<NodeId, String> =
            config.peers.iter().map(|(id, address)| (NodeId(*id), address.clone())).collect();
        addresses.insert(node, config.advertised().to_string());
        let directory = Directory::new(addresses);

        let http_listener = bind_http(config)?;
        let (store, inbox) = runner::channel(config.store_inbox_capacity);
        let metrics = NodeMetrics::new(store.inbox_metrics(), config.store_inbox_capacity);
        let timing = pb::RaftTiming {
            tick_interval_ms: config.tick_interval_ms,
            election_ticks: config.raft.election_ticks,
        };
        let budget = Arc::new(Budget::new(config.snapshot_bytes_per_sec));
        let transport = GrpcTransport::new(
            TransportOptions {
                node,
                address: config.advertised().to_string(),
                cluster,
                timing,
                incarnation: process_incarnation(),
                peer_queue_batches: config.peer_queue_batches,
                snapshot_chunk_bytes_max: store_config.snapshot_chunk_bytes_max,
                budget: Arc::clone(&budget),
                snapshot_sends: Slots::new(
                    config.snapshot_sends_max,
                    "snapshot-sends-max",
                    "snapshots sent",
                ),
                tls: tls.clone(),
                transfers: metrics.transfers.clone(),
            },
            directory.clone(),
            tokio::runtime::Handle::current(),
            store.clone(),
        );
        let snapshot_bytes_max = store_config.snapshot_bytes_max;
        let store_engine = Arc::clone(&engine);
        let store_metrics = metrics.store.clone();
        let runner =
            runner::spawn(format!("store-{node}"), inbox, config.tick_interval(), move || {
                let clock = Box::new(MonotonicClock::new());
                Store::open(node, store_engine, store_config, transport, clock, store_metrics)
            })
            .map_err(|source| Error::Spawn { thread: format!("store-{node}"), source })?;
        let (closing, closing_received) = watch::channel(false);
        let disk = DiskGuard::new(&config.data_dir, config.disk_reserve_bytes);
        tokio::spawn(disk.clone().watch(closing.subscribe()));
        let raft_service = RaftService::new(
            node,
            cluster,
            timing,
            SnapshotIntake {
                bytes_max: snapshot_bytes_max,
                receives: Slots::new(
                    config.snapshot_receives_max,
                    "snapshot-receives-max",
                    "snapshots received",
                ),
                disk: disk.clone(),
                transfers: metrics.transfers.clone(),
            },
            store.clone(),
            directory.clone(),
            closing_received,
        );
        let raft = RaftTransportServer::new(raft_service)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        Ok(Self {
            node,
            local_addr,
            listener,
            store,
            engine,
            runner,
            directory,
            raft,
            closing,
            tls,
            acceptor,
            budget,
            connection_requests_max: config.connection_requests_max,
            disk,
            metrics,
            http_listener,
        })
    }

    /// Serves the Raft transport, the health and reflection services ([`crate::health`]) and
    /// the services `add` adds (the role's, named in `services`) on the listener (over mutual
    /// TLS when the node has an identity, every request authorized by the peer's role), and
    /// the HTTP port if there is one (with what a controller replica serves there), until the
    /// node is stopped. Health turns `SERVING` once `ready` is true.
    fn serve(
        self,
        mut services: Vec<&'static str>,
        controller: Option<ControllerHttp>,
        ready: watch::Receiver<bool>,
        add: impl FnOnce(Router<Authorized>) -> Router<Authorized>,
    ) -> Node {
        services.push(raft_transport_server::SERVICE_NAME);
        let (health, health_service) = Health::new(services.clone());
        let (reflection, reflection_v1alpha) = health::reflection(&services);
        let mut server = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(self.connection_requests_max)
            .http2_keepalive_interval(Some(mosaic_client::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(mosaic_client::KEEPALIVE_TIMEOUT))
            .layer(AuthorizeLayer);
        let router = server
            .add_service(self.raft)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha);
        let router = add(router);
        let (shutdown, shutdown_received) = oneshot::channel();
        let (stop_serving, serving_stopped) = oneshot::channel::<()>();
        let connections = incoming::incoming(self.listener, self.acceptor);
        let server = router.serve_with_incoming_shutdown(connections, async {
            let _ = serving_stopped.await;
        });
        let metrics_addr =
            self.http_listener.as_ref().and_then(|listener| listener.local_addr().ok());
        let http = self.http_listener.map(|listener| {
            let endpoint = HttpEndpoint {
                metrics: Arc::new(self.metrics),
                health: health.clone(),
                controller,
            };
            let (close, closed) = oneshot::channel();
            http::spawn(listener, endpoint, closed);
            close
        });
        let tls = self.tls.is_some();
        tracing::info!(node_id = %self.node, address = %self.local_addr, tls, metrics = ?metrics_addr,
            "node serving");
        let stop =
            StopServing { stop_serving: Some(stop_serving), closing: self.closing, health, http };
        let task =
            tokio::spawn(serve(self.node, server, self.runner, shutdown_received, ready, stop));
        Node {
            node: self.node,
            local_addr: self.local_addr,
            metrics_addr,
            shutdown: Some(shutdown),
            task,
        }
    }
}

/// How the server is told to stop: its health turns `NOT_SERVING`, the listener closes, and
/// long-lived streams end ([`StopServing::stop`]); the HTTP port closes last, once the store
/// thread has stopped, so that its `/health` answers `NOT_SERVING` meanwhile
/// ([`StopServing::stopped`]).
struct StopServing {
    stop_serving: Option<oneshot::Sender<()>>,
    closing: watch::Sender<bool>,
    health: Health,
    /// Closes the HTTP port, if the node serves one.
    http: Option<oneshot::Sender<()>>,
}

impl StopServing {
    async fn stop(&mut self) {
        self.health.not_serving().await;
        let _ = self.closing.send(true);
        if let Some(stop_serving) = self.stop_serving.take() {
            let _ = stop_serving.send(());
        }
    }

    /// The node has stopped: the HTTP port closes.
    fn stopped(self) {
        if let Some(http) = self.http {
            let _ = http.send(());
        }
    }
}

/// Serves until asked to stop or until the store thread ends, then stops the store thread.
async fn serve(
    node: NodeId,
    server: impl std::future::Future<Output = std::result::Result<(), tonic::transport::Error>>,
    runner: StoreRunner,
    shutdown: oneshot::Receiver<()>,
    mut ready: watch::Receiver<bool>,
    mut stop: StopServing,
) -> Result<()> {
    // Health turns SERVING when the node is ready, before the first request is served if it
    // is ready from the start (the server runs in this task); never once it stops.
    let health = stop.health.clone();
    let readiness = async move {
        // The health service starts with the overall entry SERVING: a node not ready yet (a
        // controller replica waiting for init) turns it off first.
        let ready_now = *ready.borrow();
        if !ready_now {
            health.not_serving().await;
        }
        if ready.wait_for(|ready| *ready).await.is_ok() {
            health.serving().await;
        }
        std::future::pending::<()>().await;
    };
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        biased;
        () = readiness => unreachable!("the readiness branch never ends"),
        result = &mut server => {
            stop.stop().await;
            result.map_err(Error::from)
        }
        () = store_ended(&runner) => {
            tracing::error!(node_id = %node, "the store thread stopped; shutting the node down");
            stop.stop().await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await;
            Ok(())
        }
        _ = shutdown => {
            tracing::info!(node_id = %node, "shutting down");
            stop.stop().await;
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => result.map_err(Error::from),
                // Long-lived peer streams keep connections open; they are cut here.
                Err(_) => Ok(()),
            }
        }
    };
    let stored = tokio::task::spawn_blocking(move || runner.join())
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
    tracing::info!(node_id = %node, "node stopped");
    stop.stopped();
    stored.map_err(Error::Store)?;
    served
}

/// Binds the HTTP port, if `config` asks for one.
fn bind_http(config: &ServerConfig) -> Result<Option<TcpListener>> {
    let Some(address) = config.metrics_addr()? else {
        return Ok(None);
    };
    let listen_error = |source| Error::Listen { address: address.to_string(), source };
    let listener = std::net::TcpListener::bind(address).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    TcpListener::from_std(listener).map(Some).map_err(listen_error)
}

/// The layer of every node's server: [`AuthorizeLayer`].
type Authorized = tower_layer::Stack<AuthorizeLayer, tower_layer::Identity>;

async fn store_ended(runner: &StoreRunner) {
    while !runner.is_finished() {
        tokio::time::sleep(STORE_WATCH_INTERVAL).await;
    }
}
