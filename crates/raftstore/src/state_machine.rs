//! The interface between the store and the replicated state machine of a group (the KV
//! state machine of a storage group, the controller's state), so that one runtime hosts both.
//!
//! Rules the store relies on:
//! - `apply` is deterministic: every replica applies the same entries in the same order and
//!   writes the same effects. It reads only the engine and its own in-memory state, never a
//!   clock or a random source.
//! - `apply` puts every effect into the given batch; the store adds the applied index to the
//!   same batch and writes it atomically, so a crash never half-applies an entry or applies one
//!   twice (docs/storage.md, "Durability"). Several entries (of several groups) may share one
//!   batch: a state machine whose later entry reads what an earlier one wrote must read its
//!   own pending writes, which it may forget when `batch_written` is called.

use bytes::Bytes;
use mosaic_engine::{Engine, GroupId, KvEngine, WriteBatch};
use mosaic_raft::LogIndex;

use crate::error::Result;

/// The state machine a group replicates.
pub trait StateMachine<K: KvEngine>: Sized + Send + 'static {
    /// A command to replicate, before it is encoded into a log entry.
    type Proposal: Send + 'static;
    /// A read of the applied state.
    type Query: Clone + Send + 'static;
    /// What an applied proposal answers.
    type ApplyOutput: Send + 'static;
    /// What a read answers.
    type ReadOutput: Send + 'static;

    /// Loads the group's state from the engine: at start, and after a snapshot replaced it.
    ///
    /// # Errors
    /// Engine errors.
    fn load(group: GroupId, engine: &Engine<K>) -> Result<Self>;

    /// Refuses at once a proposal that cannot succeed now (a shard this group does not serve,
    /// a value over a limit). The same checks run again when the entry is applied.
    ///
    /// # Errors
    /// The refusal to send back.
    fn check_proposal(&self, proposal: &Self::Proposal) -> Result<()>;

    /// Encodes a proposal as the data of a log entry.
    fn encode(proposal: &Self::Proposal) -> Bytes;

    /// Applies the committed entry at `index` (never a no-op or membership entry), writing its
    /// effects into `batch`; returns the answer for the client that proposed it. Data that
    /// does not decode is answered with an error (and changes nothing): it came through the
    /// log of every replica alike.
    ///
    /// # Errors
    /// Only engine errors, which stop the store.
    fn apply(
        &mut self,
        engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        data: &Bytes,
    ) -> Result<Self::ApplyOutput>;

    /// Tells the state machine that every batch handed to `apply` so far is written.
    fn batch_written(&mut self);

    /// Serves a read from the applied state.
    ///
    /// # Errors
    /// The refusal to send back (a shard this group does not serve), or engine errors.
    fn read(&self, engine: &Engine<K>, query: &Self::Query) -> Result<Self::ReadOutput>;
}
