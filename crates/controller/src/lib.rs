//! The controller group's state machine (6.824 Lab 4A, the shardctrler): registered nodes,
//! groups and the numbered history of shard configurations.
//!
//! [`ControllerState`] is pure: no IO, no clock, no randomness. [`ControllerMachine`] makes it
//! the state machine of a raftstore group (every replica applies the same [`Request`]s in the
//! same order) and stores it in the engine record by record; [`codec`] holds its encodings.
//! [`NodeState`] is where a registered node is in its life (active, decommissioning,
//! retired). [`Liveness`] is the leader's view of which storage nodes it hears from (not replicated).
//! [`Repairer`] decides the automatic repair of nodes held down (not replicated either: the
//! leader's runner sends the commands it decides), and [`RetireWatch`] when a decommissioning
//! node may be retired.
//! With the `arbitrary` feature (tests only), `arbitrary` holds proptest strategies for these
//! types.
#![deny(missing_docs)]

#[cfg(feature = "arbitrary")]
pub mod arbitrary;
pub mod codec;
mod command;
mod configuration;
mod decommission;
mod error;
mod liveness;
mod machine;
pub mod rebalance;
mod repair;
mod state;

pub use command::{Command, Outcome, Request};
pub use configuration::{ConfigNum, Configuration, ShardMove, shard_moves};
pub use decommission::NodeState;
pub use error::{Error, Result};
pub use liveness::{DEFAULT_NODE_DOWN_AFTER, Liveness, NodeLiveness, controller_store_config};
pub use machine::{
    CONTROLLER_SHARD, ControllerMachine, ControllerQuery, ControllerView, bootstrap_batch,
};
pub use repair::{
    NodeReport, REPAIR_GRACE, REPAIR_TICK, RETIRE_RETRY, RepairStep, Repairer, RetireWatch,
    may_hold, still_counted,
};
pub use state::{
    ControllerState, DEFAULT_MAX_SESSIONS, DEFAULT_SHARD_COUNT, GroupLife, validate_address,
};
