//! Mosaic's routing client: reads and writes keys of a sharded, replicated Mosaic cluster.
//!
//! A [`Client`] routes each operation itself (DESIGN.md "A write, end to end"): the key's shard
//! is [`shard_for_key`], the [`Routing`] names the group that owns the shard and its member
//! nodes, and a cached leader hint picks the node. A refused attempt is retried by the rules of
//! the node's error detail (follow the leader hint, back off, refresh the routing, ...) until a
//! final answer or the operation's deadline; see [`ClientOptions`] for every bound.
//!
//! Writes are applied at most once: each carries a `(client_id, seq)` session, the same on
//! every retry, and concurrent writes use different client ids. A write that fails says whether
//! it may have been applied ([`ClientError::outcome`]).
//!
//! The placement comes from a [`RoutingSource`]: a fixed one ([`StaticRouting`]), or the
//! controller's latest configuration ([`ControllerRouting`]), asked again whenever a node says
//! the placement is stale. A key whose shard no group owns yet fails with
//! [`ClientError::ShardUnassigned`].
//!
//! A [`ControllerClient`] speaks to the controller group instead: it runs [`Command`]s through
//! the controller's log (each applied once, by the same `(client_id, seq)` rule) and reads
//! numbered [`Configuration`]s and the node registry, finding the controller's leader by its
//! replicas' hints. The admin CLI uses it, storage nodes that register and follow the
//! configurations use it, and so does [`ControllerRouting`].
//!
//! Many keys load in batches of one shard's puts with [`Client::put_all`]. Code that uses a
//! client can be tested without a cluster: the `testing` feature gives `testing::FakeCluster`,
//! a controller and a storage node served in the test's process.
//!
//! Building this crate needs neither `protoc` nor a C++ toolchain: the gRPC code it uses is
//! committed in `mosaic-proto`, and nothing it depends on links RocksDB.
//!
//! A client of a cluster with a controller is one line ([`Client::connect`]); keys carry
//! versions that conditional writes compare (docs/api.md):
//!
//! ```no_run
//! # async fn example() -> mosaic_client::Result<()> {
//! use mosaic_client::{Cas, Client, ClientOptions, Consistency};
//!
//! let controllers = ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"].map(String::from);
//! let client = Client::connect(controllers.to_vec(), ClientOptions::default())?;
//! if let Cas::Written { version } = client.compare_and_set("leader", 0, "node-1").await? {
//!     // Created; hand it over only if nobody changed it since.
//!     client.compare_and_set("leader", version, "node-2").await?;
//! }
//! let read = client.get_versioned("leader", Consistency::Linearizable).await?;
//! assert!(read.is_some_and(|read| read.version > 0));
//! # Ok(())
//! # }
//! ```
//!
//! Without a controller, a fixed placement routes every shard to one group:
//!
//! ```no_run
//! # async fn example() -> mosaic_client::Result<()> {
//! use std::collections::BTreeMap;
//!
//! use mosaic_client::{Client, ClientOptions, Consistency, GroupId, NodeId, Routing, StaticRouting};
//!
//! let nodes = BTreeMap::from([
//!     (NodeId(1), "10.0.0.1:7100".to_string()),
//!     (NodeId(2), "10.0.0.2:7100".to_string()),
//!     (NodeId(3), "10.0.0.3:7100".to_string()),
//! ]);
//! let routing = Routing::single_group(GroupId(1), nodes, 64)?;
//! let client = Client::new(StaticRouting::new(routing), ClientOptions::default())?;
//! client.put("greeting", "hello").await?;
//! let value = client.get("greeting", Consistency::Linearizable).await?;
//! assert_eq!(value.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod backoff;
mod batch;
mod channel;
pub mod classify;
mod client;
pub mod cluster_status;
mod controller;
pub mod controller_retry;
mod controller_routing;
mod error;
pub mod init;
mod load;
pub mod membership;
mod operation;
pub mod refusal;
pub mod retry;
mod routing;
mod scan;
mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
mod watch;
pub mod watch_follow;
pub mod watch_frames;

pub use batch::{Batch, BatchOutcome};
pub use bytes::Bytes;
pub use channel::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, endpoint};
pub use client::{Cas, Client, ClientOptions, Consistency, Versioned};
pub use controller::{CommandAnswer, ControllerClient, ControllerClientOptions};
pub use controller_routing::ControllerRouting;
pub use error::{ClientError, Result, RoutingError, WriteOutcome};
pub use load::{LoadOptions, LoadSummary};
pub use mosaic_controller::{Command, ConfigNum, Configuration, NodeLiveness, Outcome, ShardMove};
pub use mosaic_engine::{ClientId, GroupId, ShardId};
pub use mosaic_proto::controller::{QueryAnswer, RefusalInfo};
pub use mosaic_raft::{LogIndex, NodeId};
pub use mosaic_raftstore::Handover;
pub use mosaic_types::{CONTROLLER_GROUP, fnv1a_64, hash_tag, shard_for_key};
pub use routing::{Routing, RoutingSource, STATIC_CONFIG_NUM, StaticRouting};
pub use scan::{ScanEntry, ScanOptions, ScanPage, ScanRange};
pub use tls::{Role, Tls, TlsError, TlsFiles};
pub use watch::{Watch, WatchOptions};
pub use watch_follow::{WatchedChange, WatchedRevision};
