//! The Mosaic storage node: the process that hosts this node's replicas of many Raft groups
//! over one RocksDB and serves them over gRPC.
//!
//! - [`Node`] wires it together: the data directory, the store thread ([`runner`]), and one
//!   gRPC server carrying the KV service ([`kv_service`]), the Raft transport
//!   ([`raft_service`] receiving, [`transport`] sending) and node administration
//!   ([`admin_service`]).
//! - A controller replica runs the controller group on the same runtime, serving
//!   [`controller_service`] (and, when configured, the automatic repair of storage nodes held
//!   down, [`repair_runner`]); a storage node given the controllers' addresses runs its agent
//!   ([`agent_runner`] executing [`mosaic_agent`]), which follows them and moves shards
//!   between groups (pulling; [`migration_service`] sends).
//! - [`incoming`] accepts its connections (mutual TLS when configured) and [`authorization`]
//!   checks each request against the peer's role.
//! - [`health`] serves the standard gRPC health and reflection services beside Mosaic's own.
//! - [`metrics`] counts what the node does; [`http`] serves it to Prometheus, with a health
//!   endpoint for probes and, on a controller replica, the [`status_page`], on a plain HTTP
//!   port.
//! - [`ServerConfig`] is its configuration (TOML plus flags).
//! - [`status`] is the one conversion of a refused request into a gRPC status.
#![deny(missing_docs)]

pub mod admin_service;
pub mod agent_runner;
pub mod authorization;
pub mod backend;
pub mod bootstrap;
pub mod config;
pub mod controller_admin;
pub mod controller_peers;
pub mod controller_service;
pub mod disk;
mod error;
pub mod health;
pub mod http;
pub mod incoming;
pub mod kv_service;
pub mod limits;
pub mod metrics;
pub mod migration_service;
pub mod node;
pub mod pacing;
pub mod raft_service;
pub mod repair_runner;
pub mod runner;
pub mod status;
pub mod status_page;
pub mod transport;
pub mod watch_stream;

pub use config::ServerConfig;
pub use error::{Error, Result};
pub use node::Node;
