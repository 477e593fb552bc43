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
//!   Every group is placed by the last configuration that lists it (the latest, or for a
//!   removed group that still holds shards, the one before its removal). A group created
//!   after the store, of which this node is a founder (`GroupLife::founders`), gets its
//!   replica created with its founding members ([`Request::CreateGroup`]: the one case where
//!   a new voter with an empty log is right), whether or not it is still placed here (that
//!   empty replica is the one the node would have had from the group's birth had every
//!   message to it been lost; once created it is released like any replica not placed
//!   here), unless the store destroyed a replica of the group before (it refuses the
//!   creation: that replica may have voted and acknowledged entries). For any other group
//!   placed here with no replica here, the node may have lost its replica with a data
//!   directory (or never had one), and a replica must never come back as a voter of a group
//!   that exists, so the agent makes sure the node is out of the group (a membership run that
//!   removes it if it is a member, once per agent) and leaves the rest to the group's leader.
//! - **Membership**: for every group led here whose applied membership is not the members
//!   its configuration lists, the agent runs the planner of `mosaic_raftstore::membership`
//!   ("exactly these voters"; nodes decommissioning, which only a removed group's last
//!   listing may still name, join after the others) at this node: a missing node joins
//!   ([`Request::JoinGroup`] at
//!   that node: an empty replica in the leader's term), is added as a learner, catches up by
//!   snapshot and is promoted, one at a time; then the members not listed are removed (the
//!   leader last, handing its leadership over). Every step is planned from the leader's
//!   status confirmed just before ([`Request::GroupStatus`]) and conditioned on the
//!   membership it saw ([`Request::ChangeMembership`]), so attempts by two leaders in turn,
//!   or by a leader and a node leaving, cannot undo each other's work.
//! - **Release**: a replica here of a group that no longer places this node is destroyed
//!   once the group's leader shows the node out of the group and every voter has applied
//!   that membership (checked again after a pause until then: a voter that has not applied
//!   the removal may still need this replica's vote); the replicas of retired groups are
//!   destroyed.
//! - **Migration**: for every group led here, [`mosaic_shardkv::plan`] names the tasks
//!   (switch configuration, pull a shard chunk by chunk, confirm a handoff, retire a removed
//!   group), at most one per [`mosaic_shardkv::TaskKey`]; each waits for one answer at a
//!   time, and a task whose request fails stops until a later poll starts it again from the
//!   state in the group's log: one poll after its first failure, then after a pause that
//!   doubles with each failure in a row, up to [`AgentConfig::task_retry_max_ms`]. At most
//!   [`AgentConfig::pulls_max`] pulls run at once.
//!
//! The configuration is the source of truth for where replicas are; the groups carry it out
//! themselves. Every request has a deadline; a request unanswered by then has failed, and the
//! executor is told to cancel it. A crash loses the agent's memory: the node starts a new
//! agent, which registers again.
//!
//! Every line the agent logs is in its `agent` span (`node_id`); a line about a migration task
//! carries the task's kind (`task`), `group_id`, and `shard`, `from_group_id` (the previous
//! owner) and `config_num` where the task has them.

mod agent;
mod io;
mod membership;
mod task;

pub use agent::{
    AgentConfig, Birth, DEFAULT_PULLS_MAX, DEFAULT_TASK_RETRY_MAX_MS, NodeAgent, POLL_INTERVAL_MS,
};
pub use io::{Action, Answer, LocalState, Request, RequestId, Time};
