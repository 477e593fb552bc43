//! The storage node's agent: every decision a node makes about configurations, replicas and
//! shard moves, as one state machine with no I/O (docs/migration.md). The server
//! (`crates/server/src/agent_runner.rs`) executes its actions over tonic and the store; the
//! whole-cluster simulator (`crates/sim`) executes the same actions over its simulated
//! network, so every simulated seed runs the code that ships.
//!
//! An executor calls [`NodeAgent::poll`] every [`POLL_INTERVAL_MS`] and
//! [`NodeAgent::on_answer`] with the answer to every [`Request`] it was given; both return
//! [`Action`]s: requests to carry out (each answered exactly once, or never after a
//! [`Action::Cancel`]), and requests the agent gave up on.
//!
//! What the agent does:
//! - **Birth**: on a new store it first records the latest configuration number
//!   ([`Request::RecordBirth`]); groups of configurations up to it existed before the store.
//! - **Registration**: `Command::RegisterNode` with its address, until the controller
//!   answers; a refusal stops it (the node then serves only the groups it hosts).
//! - **Polls**: the latest configuration, then what the store holds ([`Request::ReadLocal`]).
//!   For every group placed on this node (by the latest configuration, or for a removed group
//!   that still holds shards, the first one that listed it): a group newer than the store
//!   gets a replica created with its listed members if it has none; a group older than the
//!   store is brought back through its leader (once per agent, by the membership run of
//!   `mosaic_raftstore::membership_run`: [`Request::GroupStatus`], [`Request::JoinGroup`],
//!   [`Request::ChangeMembership`]; the node may have lost its replica with a data directory,
//!   and a replica must never be recreated as a voter of a group that exists). The replicas
//!   of retired groups are destroyed.
//! - **Migration**: for every group led here, [`mosaic_shardkv::plan`] names the tasks
//!   (switch configuration, pull a shard chunk by chunk, confirm a handoff, retire a removed
//!   group), at most one per [`mosaic_shardkv::TaskKey`]; each waits for one answer at a
//!   time, and a task whose request fails stops until a later poll starts it again from the
//!   state in the group's log: one poll after its first failure, then after a pause that
//!   doubles with each failure in a row, up to [`AgentConfig::task_retry_max_ms`]. At most
//!   [`AgentConfig::pulls_max`] pulls run at once.
//!
//! Replicas follow the configuration alone, never a group's Raft membership (which the
//! controller does not track): a replica the operator removed stays, inactive, until its
//! group is retired; a replica on a node the configuration does not list is destroyed only
//! when its group is retired. Every request has a deadline; a request unanswered by then has
//! failed, and the executor is told to cancel it. A crash loses the agent's memory: the node
//! starts a new agent, which registers again.
//!
//! Every line the agent logs is in its `agent` span (`node_id`); a line about a migration task
//! carries the task's kind (`task`), `group_id`, and `shard`, `from_group_id` (the previous
//! owner) and `config_num` where the task has them.

mod agent;
mod io;
mod rejoin;
mod task;

pub use agent::{
    AgentConfig, Birth, DEFAULT_PULLS_MAX, DEFAULT_TASK_RETRY_MAX_MS, NodeAgent, POLL_INTERVAL_MS,
};
pub use io::{Action, Answer, LocalState, Request, RequestId, Time};
