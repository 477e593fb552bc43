//! The controller group's state machine (6.824 Lab 4A, the shardctrler): registered nodes,
//! groups and the numbered history of shard configurations.
//!
//! Pure: no IO, no clock, no randomness; the controller process replicates it through a Raft
//! group and every replica applies the same [`Request`]s in the same order.
#![deny(missing_docs)]

mod command;
mod configuration;
mod error;
pub mod rebalance;
mod state;

pub use command::{Command, Outcome, Request};
pub use configuration::{ConfigNum, Configuration, ShardMove, shard_moves};
pub use error::{Error, Result};
pub use state::{ControllerState, DEFAULT_MAX_SESSIONS, DEFAULT_SHARD_COUNT, validate_address};
