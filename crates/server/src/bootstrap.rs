//! Creating the controller group on a replica, once: at start with `--bootstrap`, or later
//! when `mosaic admin init` asks (the `Controller.Bootstrap` call).
//!
//! A replica whose data directory holds no controller group and that was started without
//! `--bootstrap` waits: it serves the Raft transport (messages for the group it does not hold
//! are dropped) and answers every controller call `UNAVAILABLE`, with health `NOT_SERVING`,
//! until it is asked to create the group. Only `mosaic admin init` asks, and only after every
//! initial replica has answered that it holds nothing (docs/controller.md "Starting a new
//! cluster"): a replica that lost its data while the others hold the group must never create
//! it again (it would come back as a voter with an empty log and no memory of its votes).

use std::sync::Arc;

use mosaic_controller::ControllerMachine;
use mosaic_engine::{Engine, WriteBatch, WriteOptions};
use mosaic_raft::NodeId;
use mosaic_raftstore::{LeaderTerm, StateMachine, StoreMsg};
use mosaic_types::CONTROLLER_GROUP;
use tokio::sync::{Mutex, watch};

use crate::backend::NodeEngine;
use crate::error::{Error, Result};
use crate::runner::StoreHandle;

/// What a waiting replica answers to every controller call.
pub const WAITING_FOR_INIT: &str = "this controller replica holds no controller group yet: it \
     waits for `mosaic admin init` (the first start of a new cluster). If this replica lost its \
     data while the other replicas hold the group, do not run init: keep it out of the group \
     (docs/controller.md \"Starting a new cluster\")";

/// The controller group's creation on one replica.
pub struct Bootstrapper {
    node: NodeId,
    /// The group's initial voters: this replica and its peers.
    members: Vec<NodeId>,
    engine: Arc<Engine<NodeEngine>>,
    store: StoreHandle<NodeEngine, ControllerMachine>,
    /// Whether the replica holds the group.
    held: watch::Sender<bool>,
    /// One creation at a time.
    creating: Mutex<()>,
}

/// What a replica holds, as [`Bootstrapper::bootstrap`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapAnswer {
    /// The replica.
    pub node: NodeId,
    /// The group's initial voters.
    pub members: Vec<NodeId>,
    /// The shard count the replica holds the group with after the call, if it holds it.
    pub shard_count: Option<u32>,
    /// The call created the group (else the replica held it before, or holds nothing).
    pub created: bool,
}

impl Bootstrapper {
    /// The group's creation on replica `node` of `members`; `held` says whether its data
    /// directory holds the group already.
    #[must_use]
    pub fn new(
        node: NodeId,
        members: Vec<NodeId>,
        engine: Arc<Engine<NodeEngine>>,
        store: StoreHandle<NodeEngine, ControllerMachine>,
        held: bool,
    ) -> Self {
        let (held, _) = watch::channel(held);
        Self { node, members, engine, store, held, creating: Mutex::new(()) }
    }

    /// Whether the replica holds the group.
    #[must_use]
    pub fn holds(&self) -> bool {
        *self.held.borrow()
    }

    /// Turns true once the replica holds the group.
    #[must_use]
    pub fn held(&self) -> watch::Receiver<bool> {
        self.held.subscribe()
    }

    /// Reports what the replica holds, and (unless `dry_run`) creates the group for a cluster
    /// of `shard_count` shards if it holds none. Runs in a task of its own, so that a caller
    /// that goes away (a client's timeout) cannot cut a creation between the store creating
    /// the group and the replica knowing that it holds it.
    ///
    /// # Errors
    /// [`Error::Config`] for a shard count of 0; [`Error::Storage`] when the data directory
    /// cannot be read or the initial state written; [`Error::Store`] when the store thread
    /// cannot create the group.
    pub async fn bootstrap(
        self: &Arc<Self>,
        shard_count: u32,
        dry_run: bool,
    ) -> Result<BootstrapAnswer> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.bootstrap_once(shard_count, dry_run).await })
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
    }

    async fn bootstrap_once(&self, shard_count: u32, dry_run: bool) -> Result<BootstrapAnswer> {
        let _creating = self.creating.lock().await;
        // What the data directory holds is the truth, whatever an earlier call saw.
        let held = self.held_shard_count()?;
        let mut answer = BootstrapAnswer {
            node: self.node,
            members: self.members.clone(),
            shard_count: held,
            created: false,
        };
        if held.is_some() {
            self.held.send_replace(true);
        }
        if held.is_some() || dry_run {
            return Ok(answer);
        }
        if shard_count == 0 {
            return Err(Error::Config { reason: "the shard count must be at least 1".into() });
        }
        // The machine's initial state first, durably; the group's creation then loads it. A
        // crash in between leaves no group, and the next creation writes the state again.
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || {
            let mut batch = WriteBatch::new();
            mosaic_controller::bootstrap_batch(
                &mut batch,
                CONTROLLER_GROUP,
                shard_count,
                mosaic_controller::DEFAULT_MAX_SESSIONS,
            );
            engine
                .write(&batch, WriteOptions { sync: true })
                .map_err(|source| Error::Storage { path: engine.path().to_path_buf(), source })
        })
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))?;
        let (group, members) = (CONTROLLER_GROUP, self.members.clone());
        self.store
            .ask(|callback| StoreMsg::CreateGroup { group, members, callback })
            .await
            .map_err(Error::Store)?;
        self.held.send_replace(true);
        tracing::info!(node_id = %self.node, member_count = self.members.len(), shard_count,
            "created the controller group");
        answer.shard_count = Some(shard_count);
        answer.created = true;
        Ok(answer)
    }

    /// Creates this replica of the group empty, to join it through its leader (`NodeAdmin.
    /// JoinGroup`, sent by `mosaic admin controller add`): a replica with no membership that
    /// never campaigns and waits for the leader's snapshot. Once it exists the replica serves
    /// (as a follower until it leads). Never while a creation runs; a replica that joined
    /// already (still without a membership, or a learner since) changes nothing. Runs in a task of its own, as
    /// [`Bootstrapper::bootstrap`] does, so that a caller that goes away cannot leave the
    /// replica holding the group without serving it.
    ///
    /// # Errors
    /// [`mosaic_raftstore::Error::InvalidArgument`] when the replica holds the group with
    /// voters and is no learner (created by init or `--bootstrap`, or promoted): its log is
    /// its own, not a fresh joiner's; otherwise the store's refusal.
    pub async fn join(
        self: &Arc<Self>,
        leader: Option<LeaderTerm>,
    ) -> mosaic_raftstore::Result<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.join_once(leader).await })
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
    }

    async fn join_once(&self, leader: Option<LeaderTerm>) -> mosaic_raftstore::Result<()> {
        let _creating = self.creating.lock().await;
        let group = CONTROLLER_GROUP;
        match self.store.ask(|callback| StoreMsg::Status { group, confirm: false, callback }).await
        {
            // Joined before: still waiting for the leader's snapshot, or added as a learner
            // since (the join retried by a second `controller add` running at once).
            Ok(status)
                if status.conf_state.voters.is_empty()
                    || status.conf_state.learners.contains(&self.node) => {}
            Ok(status) => {
                return Err(mosaic_raftstore::Error::InvalidArgument {
                    reason: format!(
                        "controller replica {} holds the controller group with voters {:?} \
                         (created by init or --bootstrap, or promoted): a join changes nothing \
                         here. If it was started with --bootstrap after losing its data, stop \
                         it, clear its data directory and start it without --bootstrap",
                        self.node, status.conf_state.voters
                    ),
                });
            }
            Err(mosaic_raftstore::Error::GroupNotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        self.store.ask(|callback| StoreMsg::JoinGroup { group, leader, callback }).await?;
        if !self.held.send_replace(true) {
            tracing::info!(node_id = %self.node, leader = ?leader,
                "joined the controller group; waiting for its leader's snapshot");
        }
        Ok(())
    }

    /// The shard count of the group the data directory holds, if it holds one.
    fn held_shard_count(&self) -> Result<Option<u32>> {
        let storage = |source| Error::Storage { path: self.engine.path().to_path_buf(), source };
        if !self.engine.group_ids().map_err(storage)?.contains(&CONTROLLER_GROUP) {
            return Ok(None);
        }
        let machine =
            <ControllerMachine as StateMachine<NodeEngine>>::load(CONTROLLER_GROUP, &self.engine)
                .map_err(Error::Store)?;
        Ok(Some(machine.state().shard_count()))
    }
}
