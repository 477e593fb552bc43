//! Mosaic's deterministic simulation layer (test layer L3 in `DESIGN.md`): a whole cluster run
//! from a seed under faults, every client history checked for linearizability, and a seed that
//! fails printed so that it replays exactly.
//!
//! Two parts:
//!
//! - [`cluster`]: the simulator. One process, one seed, virtual time: controller replicas and
//!   storage nodes running the real `mosaic_raftstore::Store` over the in-memory engine, the
//!   node agents that follow the controller and move shards, clients, an administrator
//!   changing the groups, an operator changing group memberships, and a network and fault
//!   schedule that partition, lose, delay, reorder and duplicate messages and crash nodes
//!   ([`cluster::run`]).
//! - [`linearizability`]: records what clients called and what came back ([`History`]) and
//!   decides, key by key, whether some sequential order of the operations explains every result
//!   and respects real time ([`check`]). A failing key comes with a report a person can read.
//!
//! ```no_run
//! use mosaic_sim::cluster::{SimConfig, run};
//!
//! let report = run(42, &SimConfig::default());
//! if let Some(reason) = report.failure() {
//!     panic!("seed 42: {reason}");
//! }
//! ```
//!
//! ```
//! use bytes::Bytes;
//! use mosaic_engine::ClientId;
//! use mosaic_sim::linearizability::{History, Operation, Output, check};
//!
//! let mut history = History::new();
//! let key = Bytes::from_static(b"k");
//! // Client 1 writes "x" during [0, 10]; client 2 reads during [5, 20] and sees it.
//! let put = history.record_call(ClientId(1), key.clone(), Operation::Put(Bytes::from("x")), 0);
//! let get = history.record_call(ClientId(2), key.clone(), Operation::Get, 5);
//! history.record_return(put, Output::Written, 10);
//! history.record_return(get, Output::Value(Some(Bytes::from("x"))), 20);
//! assert!(check(&history).is_linearizable());
//!
//! // A read that starts after the write finished must not miss it.
//! let stale = history.record_call(ClientId(2), key, Operation::Get, 30);
//! history.record_return(stale, Output::Value(None), 40);
//! let verdict = check(&history);
//! assert!(verdict.has_violation(), "{verdict}");
//! ```
//!
//! The crate links no on-disk storage engine: it depends only on the pure crates, the
//! in-memory engine, the node runtime (`mosaic-raftstore`) and the client's shard function.
#![deny(missing_docs)]

pub mod cluster;
pub mod linearizability;

pub use linearizability::{History, Verdict, check};
