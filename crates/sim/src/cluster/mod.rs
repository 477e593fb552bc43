//! The whole-cluster simulator (test layer L3, DESIGN.md "Test layers"): one process, one
//! seed, virtual time, and the real runtime code of every node.
//!
//! What runs is what ships: every node is a `mosaic_raftstore::Store` over an in-memory
//! engine (`MemKv`), the controller group replicates `ControllerMachine`, storage groups
//! replicate `KvStateMachine`, and each storage node runs the shipped node agent
//! (`mosaic_agent`: registration, placement, replicas, migration tasks), which the production
//! server executes too. What the simulator supplies is everything production gets from
//! tokio and tonic: a clock and an event queue (`world.rs`), a network that loses, delays,
//! reorders and duplicates messages and can be partitioned (`net.rs`), the requests that
//! gRPC carries in production (`rpc.rs`), the execution of the node agent's requests over
//! them (`agent.rs`), clients (`client.rs`), an administrator
//! changing the groups and, if configured, replacing their members through the controller
//! (`admin.rs`), the controller replicas' automatic repair runners, if configured
//! (`repair.rs`, executing the shipped `mosaic_controller::Repairer`), and crashes that lose
//! unsynced writes (`node.rs`).
//!
//! A run ([`run`]) has two phases (TigerBeetle/FoundationDB style):
//! 1. *safety*: clients read and write while groups are added and removed, shards move and
//!    faults strike (partitions, loss, delay, duplication, crash-restart of any node, the
//!    controller's leader crashing during a migration, and, if configured, stalled nodes and
//!    nodes ticking at different rates: `world/timing.rs`); if configured
//!    ([`SimConfig::membership`]), group members are replaced by other storage nodes, which
//!    the groups carry out themselves (the shipped agent, as in production); if configured
//!    ([`SimConfig::repair`]), a storage node dies for good and the controller repairs it;
//! 2. *liveness*: faults stop, crashed nodes restart and the administrator stops; within a
//!    bounded virtual time every group must settle at the latest configuration with the
//!    voters it lists and no replica elsewhere (a node dead for good retired, removed groups
//!    retired and destroyed, every
//!    replica caught up and holding exactly what its leader holds) and every client
//!    operation must complete.
//!
//! Throughout, Raft's safety properties are checked on every replica (`raft_safety.rs`: one
//! leader per group and term, replicas agreeing on committed entries); a run stops at the
//! first that breaks.
//!
//! Every client call and return goes into a [`crate::History`], checked for
//! linearizability key by key at the end (the keys of a hash tag, which batches change
//! together, as one object: `tagged.rs`), every key version a client hears must name one
//! value (`versions.rs`), and the watches clients run must give every change they cover, in
//! order (`watcher.rs`). Everything random is drawn from one
//! `mosaic_raft::SplitMix64` seeded by the run's seed, time is virtual, and every collection
//! that is iterated is ordered, so a seed replays exactly.
//!
//! # Where the simulation departs from production
//!
//! - A shard is pulled one chunk per request, each request checking the handoff again and
//!   reading a fresh point-in-time view (production streams every chunk from one view). The
//!   shard is frozen while it is sent, so both yield the same records; the simulation checks
//!   that freeze more often.
//! - A snapshot travels as one message holding all its chunks; Raft messages between two
//!   nodes travel as one batch per store step, as the gRPC transport sends them.

mod admin;
mod agent;
mod client;
mod config;
mod controller_link;
mod net;
mod node;
mod raft_safety;
mod repair;
mod report;
mod rpc;
mod tagged;
mod versions;
mod watcher;
mod world;

pub use config::{FaultConfig, MembershipConfig, ReadMode, RepairConfig, SimConfig, StallConfig};
pub use net::NetStats;
pub use report::{FaultStats, RunReport, Watched};
pub use world::run;

/// Virtual time, in milliseconds since the start of a run.
pub type Time = u64;
