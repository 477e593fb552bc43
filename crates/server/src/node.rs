//! [`Node`]: a running storage node: its RocksDB store, the store thread, and the gRPC server
//! (KV, Raft transport, node admin) on one listening socket.
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

use mosaic_engine::{ClusterId, NodeIdentity};
use mosaic_engine_rocks::RocksKv;
use mosaic_proto::pb::{
    kv_server::KvServer, node_admin_server::NodeAdminServer,
    raft_transport_server::RaftTransportServer,
};
use mosaic_raft::NodeId;
use mosaic_raftstore::Store;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::admin_service::AdminService;
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::kv_service::{KvLimits, KvService};
use crate::raft_service::RaftService;
use crate::runner::{self, StoreRunner};
use crate::status::Directory;
use crate::transport::{GrpcTransport, RAFT_MESSAGE_BYTES_MAX, TransportOptions};

/// The storage engine backend of a node.
pub type NodeEngine = RocksKv;

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often the server checks that the store thread is alive.
const STORE_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Room for a KV request's fields around its key and value.
const KV_REQUEST_OVERHEAD_BYTES: usize = 1024;

/// A running node. Dropping it without [`Node::stop`] aborts the server task.
pub struct Node {
    node: NodeId,
    local_addr: SocketAddr,
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
        config.validate()?;
        let address = config.listen_addr()?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Listen { address: config.listen.clone(), source })?;
        Self::start_with_listener(config, listener).await
    }

    /// Starts a node serving on an already bound `listener` (tests bind port 0 first).
    ///
    /// # Errors
    /// As [`Node::start`].
    pub async fn start_with_listener(config: ServerConfig, listener: TcpListener) -> Result<Self> {
        config.validate()?;
        let node = NodeId(config.node_id);
        let cluster = ClusterId(config.cluster_id);
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Listen { address: config.listen.clone(), source })?;
        let identity = NodeIdentity { cluster_id: cluster, node_id: node };
        let engine = mosaic_engine_rocks::open(&config.data_dir, identity, &config.rocks_config())
            .map_err(|source| Error::Storage { path: config.data_dir.clone(), source })?;
        let engine = Arc::new(engine);

        let mut addresses: BTreeMap<NodeId, String> =
            config.peers.iter().map(|(id, address)| (NodeId(*id), address.clone())).collect();
        addresses.insert(node, config.advertised().to_string());
        let directory = Directory::new(addresses);

        let (store_handle, inbox) = runner::channel(config.store_inbox_capacity);
        let store_config = config.store_config();
        let transport = GrpcTransport::new(
            TransportOptions {
                node,
                cluster,
                peer_queue_batches: config.peer_queue_batches,
                snapshot_chunk_bytes_max: store_config.snapshot_chunk_bytes_max,
                snapshot_bytes_per_sec: config.snapshot_bytes_per_sec,
            },
            directory.clone(),
            tokio::runtime::Handle::current(),
            store_handle.clone(),
        );
        let snapshot_bytes_max = store_config.snapshot_bytes_max;
        let runner =
            runner::spawn(format!("store-{node}"), inbox, config.tick_interval(), move || {
                Store::open(node, engine, store_config, transport)
            })
            .map_err(|source| Error::Listen { address: "store thread".into(), source })?;

        let limits = KvLimits {
            key_bytes_max: config.key_bytes_max,
            value_bytes_max: config.value_bytes_max,
            request_timeout: config.request_timeout(),
        };
        let kv_message_bytes_max =
            config.key_bytes_max + config.value_bytes_max + KV_REQUEST_OVERHEAD_BYTES;
        let kv = KvServer::new(KvService::new(store_handle.clone(), directory.clone(), limits))
            .max_decoding_message_size(kv_message_bytes_max)
            .max_encoding_message_size(kv_message_bytes_max);
        let (closing, closing_received) = watch::channel(false);
        let raft_service = RaftService::new(
            node,
            cluster,
            snapshot_bytes_max,
            store_handle.clone(),
            closing_received,
        );
        let raft = RaftTransportServer::new(raft_service)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        let admin = NodeAdminServer::new(AdminService::new(store_handle, directory));

        let (shutdown, shutdown_received) = oneshot::channel();
        let (stop_serving, serving_stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(kv)
            .add_service(raft)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming(listener), async {
                let _ = serving_stopped.await;
            });
        tracing::info!(%node, %cluster, address = %local_addr, "node serving");
        let stop = StopServing { stop_serving, closing };
        let task = tokio::spawn(serve(node, server, runner, shutdown_received, stop));
        Ok(Self { node, local_addr, shutdown: Some(shutdown), task })
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

/// How the server is told to stop: the listener closes, and long-lived streams end.
struct StopServing {
    stop_serving: oneshot::Sender<()>,
    closing: watch::Sender<bool>,
}

impl StopServing {
    fn stop(self) {
        let _ = self.closing.send(true);
        let _ = self.stop_serving.send(());
    }
}

/// Serves until asked to stop or until the store thread ends, then stops the store thread.
async fn serve(
    node: NodeId,
    server: impl std::future::Future<Output = std::result::Result<(), tonic::transport::Error>>,
    runner: StoreRunner,
    shutdown: oneshot::Receiver<()>,
    stop: StopServing,
) -> Result<()> {
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        result = &mut server => result.map_err(Error::from),
        () = store_ended(&runner) => {
            tracing::error!(%node, "the store thread stopped; shutting the node down");
            stop.stop();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await;
            Ok(())
        }
        _ = shutdown => {
            tracing::info!(%node, "shutting down");
            stop.stop();
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
    tracing::info!(%node, "node stopped");
    stored.map_err(Error::Store)?;
    served
}

/// Accepted connections with Nagle's algorithm off: small responses and Raft messages must not
/// wait for the peer's delayed ACK (40 ms). Tonic sets this only on listeners it binds itself.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn store_ended(runner: &StoreRunner) {
    while !runner.is_finished() {
        tokio::time::sleep(STORE_WATCH_INTERVAL).await;
    }
}
