//! Test doubles for code that uses a [`crate::Client`] (feature `testing`): a fake cluster on
//! loopback ports that answers as a real one does, without a Raft group, a disk or RocksDB
//! (docs/api.md "Testing without a cluster").
//!
//! [`FakeCluster`] is a controller and one storage node, in the process, that serve every
//! operation of the client: gets with versions, puts, appends, deletes, compare-and-sets,
//! batches, scans and loads. The node keeps its keys in memory for as long as the tokio runtime
//! that started it runs, and answers with the refusals a test scripts ([`FakeNode::refuse_next`],
//! [`Refusal`]), so that a test can check how its code behaves when a node is busy, a leader
//! moves or a shard is moving: the client handles each as it handles a real node's.
//!
//! ```
//! use mosaic_client::testing::{FakeCluster, Refusal};
//! use mosaic_client::{Client, ClientOptions, Consistency};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let cluster = FakeCluster::start(16).await;
//!     let client = Client::connect(cluster.controllers(), ClientOptions::default())?;
//!     client.put("greeting", "hello").await?;
//!     // The next request is refused as an overloaded node refuses it; the client retries.
//!     cluster.node().refuse_next(Refusal::ServerBusy);
//!     let value = client.get("greeting", Consistency::Linearizable).await?;
//!     assert_eq!(value.as_deref(), Some(&b"hello"[..]));
//!     assert_eq!(cluster.node().received().len(), 3);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
//!
//! This crate's own tests use the same servers, and more of them: a port nothing listens on, a
//! listener that never answers (a hung node), controller replicas that fail or redirect.

pub(crate) mod fake_controller;
pub(crate) mod fake_node;

use std::collections::BTreeMap;

use mosaic_controller::{ConfigNum, Configuration};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

pub use fake_node::{FakeNode, NodeRequest, Refusal};

use fake_controller::{FakeController, Role};

/// A fake cluster: a controller whose latest configuration gives every shard to group 1, and
/// group 1's one member, node 1, a [`FakeNode`]. See the module documentation.
#[derive(Clone, Debug)]
pub struct FakeCluster {
    controller: FakeController,
    node: FakeNode,
}

impl FakeCluster {
    /// Starts the controller and the node, each on a loopback port, with `shard_count`
    /// shards; they serve until the tokio runtime that started them stops.
    ///
    /// # Panics
    /// If `shard_count` is 0, or no loopback port can be bound.
    pub async fn start(shard_count: u32) -> Self {
        assert!(shard_count > 0, "a cluster has at least one shard");
        let controller = FakeController::start_with_shards(&[Role::Leader], shard_count).await;
        let node = FakeNode::start().await;
        node.scan_shards_of(shard_count);
        let (group, member) = (GroupId(1), NodeId(1));
        controller.register(member, &node.address());
        controller.publish(Configuration {
            num: ConfigNum(1),
            shards: vec![Some(group); shard_count as usize],
            groups: BTreeMap::from([(group, vec![member])]),
        });
        Self { controller, node }
    }

    /// The controller's addresses, for [`crate::Client::connect`].
    #[must_use]
    pub fn controllers(&self) -> Vec<String> {
        self.controller.addresses()
    }

    /// The storage node: what it received, and the refusals to script.
    #[must_use]
    pub fn node(&self) -> &FakeNode {
        &self.node
    }
}

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::{Router, TcpIncoming};

/// Returns a listener on a free loopback port, and its address (`127.0.0.1:PORT`).
pub(crate) async fn loopback_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("a bound listener has an address").to_string();
    (listener, address)
}

/// Returns `127.0.0.1:PORT` for a port that was just free: connecting to it is refused.
#[cfg(test)]
pub(crate) async fn closed_port_address() -> String {
    let (listener, address) = loopback_listener().await;
    drop(listener);
    address
}

/// Returns the address of a listener that accepts connections and never reads or writes,
/// and the task holding it (dropping the handle does not stop it; the test's runtime does).
#[cfg(test)]
pub(crate) async fn silent_listener() -> (String, JoinHandle<()>) {
    let (listener, address) = loopback_listener().await;
    let task = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    (address, task)
}

/// Serves the gRPC services of `router` on `listener` (from [`loopback_listener`]) until the
/// runtime stops; returns the serving task.
pub(crate) fn serve(listener: TcpListener, router: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(error) = router.serve_with_incoming(incoming).await {
            panic!("the test server failed: {error}");
        }
    })
}
