//! A storage node following the controller: on a new store it first records the latest
//! configuration number (the store's birth, [`KvStateMachine::placed_since`]); it registers
//! itself (id and advertised address), then polls the latest configuration every
//! [`POLL_INTERVAL`], learns every registered node's address (so its transport can reach
//! replicas on nodes it was not told about), and creates its replica of every group placed on
//! it that is newer than the store. A group placed on it that is not newer existed before this
//! store: the node lost its replica with its data directory, and brings it back through the
//! group's leader instead ([`crate::rejoin`]).
//!
//! Creating a replica is idempotent, so a configuration is handled again until every replica
//! it places here exists. After each poll, the [`Migrator`] moves the groups led here towards
//! the latest configuration, and the replicas of groups the controller has retired (removed
//! groups that handed off every shard) are destroyed (docs/migration.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mosaic_client::{ControllerClient, ControllerClientOptions};
use mosaic_controller::{Command, ConfigNum, GroupLife};
use mosaic_engine::{Engine, GroupId, WriteBatch, WriteOptions};
use mosaic_proto::controller::QueryAnswer;
use mosaic_raft::NodeId;
use mosaic_raftstore::StoreMsg;
use mosaic_shardkv::{KvStateMachine, PlacedSince};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::migrator::Migrator;
use crate::node::NodeEngine;
use crate::rejoin::{RejoinContext, Rejoins};
use crate::runner::StoreHandle;
use crate::status::Directory;

/// How often the latest configuration is asked for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Pause before registering again after a failure.
const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// Follows the controller for one storage node.
pub struct Follower {
    node: NodeId,
    address: String,
    client: ControllerClient,
    store: StoreHandle<NodeEngine, KvStateMachine>,
    engine: Arc<Engine<NodeEngine>>,
    directory: Directory,
    migrator: Arc<Migrator>,
    /// What the rejoins of lost replicas work with.
    rejoin: RejoinContext,
}

impl Follower {
    /// The follower of the node `config` describes, feeding `store` over `engine`.
    ///
    /// # Errors
    /// [`Error::Config`] when the controller addresses are not valid.
    pub fn new(
        config: &ServerConfig,
        store: StoreHandle<NodeEngine, KvStateMachine>,
        engine: Arc<Engine<NodeEngine>>,
        directory: Directory,
    ) -> Result<Self> {
        let client =
            ControllerClient::new(config.controllers.clone(), ControllerClientOptions::default())
                .map_err(|error| Error::Config { reason: format!("controllers: {error}") })?;
        let migrator = Migrator::new(
            store.clone(),
            directory.clone(),
            client.clone(),
            config.request_timeout(),
        );
        let node = NodeId(config.node_id);
        let rejoin = RejoinContext {
            node,
            store: store.clone(),
            directory: directory.clone(),
            call_timeout: config.request_timeout(),
        };
        Ok(Self {
            node,
            address: config.advertised().to_string(),
            client,
            store,
            engine,
            directory,
            migrator,
            rejoin,
        })
    }

    /// Registers, then follows the configurations until `closing` turns true.
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => {}
            () = self.follow() => {}
        }
    }

    async fn follow(&self) {
        let Some(since) = self.placed_since().await else { return };
        if !self.register().await {
            return;
        }
        let mut placed = ConfigNum(0);
        let mut rejoins = Rejoins::new(self.rejoin.clone());
        // Retired groups whose replica here is gone (or never was).
        let mut destroyed = BTreeSet::new();
        loop {
            match self.client.query(None).await {
                Ok(answer) => {
                    for (node, address) in &answer.nodes {
                        if self.directory.set(*node, address) {
                            tracing::info!(%node, %address, "learned a node's address");
                        }
                    }
                    if answer.config.num > placed && self.place(&answer, since, &mut rejoins).await
                    {
                        placed = answer.config.num;
                    }
                    rejoins.stop_retired(&answer.lives);
                    self.destroy_retired(&answer.lives, &mut destroyed).await;
                    self.migrator.step(answer.config.num, &answer.lives).await;
                }
                Err(error) => {
                    tracing::debug!(node = %self.node, %error, "cannot read the configuration");
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The configuration number this store was born under: recorded (synced) on a new store
    /// from the latest configuration, before any replica is created here. `None` when the
    /// store cannot be read or written (the node then creates nothing).
    async fn placed_since(&self) -> Option<ConfigNum> {
        let storage = |error| {
            tracing::error!(node = %self.node, %error,
            "cannot read or write the placement record; following no configuration")
        };
        let recorded = match KvStateMachine::placed_since(&self.engine) {
            Ok(PlacedSince::Config(since)) => return Some(since),
            Ok(recorded) => recorded,
            Err(error) => {
                storage(error);
                return None;
            }
        };
        let since = match self.engine.group_ids() {
            // A store from before the record: its groups were created here. (A new store is
            // `Pending` from its first open, whatever an operator created on it since.)
            Ok(groups) if recorded == PlacedSince::Unrecorded && !groups.is_empty() => ConfigNum(0),
            Ok(_) => loop {
                match self.client.query(None).await {
                    Ok(answer) => break answer.config.num,
                    Err(error) => {
                        tracing::warn!(node = %self.node, %error,
                            "cannot read the latest configuration yet; retrying");
                        tokio::time::sleep(REGISTER_RETRY).await;
                    }
                }
            },
            Err(error) => {
                storage(error.into());
                return None;
            }
        };
        let mut batch = WriteBatch::new();
        KvStateMachine::mark_placed_since(&mut batch, since);
        if let Err(error) = self.engine.write(&batch, WriteOptions { sync: true }) {
            storage(error.into());
            return None;
        }
        tracing::info!(node = %self.node, %since, "new store: groups of configurations up to \
            this one existed before it, and are rejoined rather than created");
        Some(since)
    }

    /// Registers this node until the controller answers; false when it refused (the node
    /// then serves only the groups it already hosts).
    async fn register(&self) -> bool {
        let command = Command::RegisterNode { node: self.node, address: self.address.clone() };
        loop {
            match self.client.execute(command.clone()).await {
                Ok(Ok(outcome)) => {
                    tracing::info!(node = %self.node, address = %self.address, ?outcome,
                        "registered with the controller");
                    return true;
                }
                Ok(Err(refusal)) => {
                    tracing::error!(node = %self.node, address = %self.address, %refusal,
                        "the controller refused to register this node; fix --advertise");
                    return false;
                }
                Err(error) => {
                    tracing::warn!(node = %self.node, %error, "cannot register yet; retrying");
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
        }
    }

    /// Destroys this node's replica of every retired group not in `destroyed` yet.
    async fn destroy_retired(
        &self,
        lives: &BTreeMap<GroupId, GroupLife>,
        destroyed: &mut BTreeSet<GroupId>,
    ) {
        for (group, life) in lives {
            if !life.retired || destroyed.contains(group) {
                continue;
            }
            let group = *group;
            match self.store.ask(|callback| StoreMsg::DestroyGroup { group, callback }).await {
                Ok(()) => {
                    destroyed.insert(group);
                }
                Err(error) => {
                    tracing::warn!(node = %self.node, %group, %error,
                        "cannot destroy the retired group's replica; will retry");
                }
            }
        }
    }

    /// Creates this node's replica of every group the latest configuration places here that
    /// is newer than the store (born under `since`), and starts bringing back the others
    /// (once each, with `rejoins`); true when every replica exists or is on its way.
    async fn place(&self, answer: &QueryAnswer, since: ConfigNum, rejoins: &mut Rejoins) -> bool {
        let config = &answer.config;
        let mut all = true;
        for (group, members) in &config.groups {
            if !members.contains(&self.node) {
                continue;
            }
            let (group, members) = (*group, members.clone());
            let added = answer.lives.get(&group).map_or(config.num, |life| life.added);
            if added <= since {
                rejoins.start(group, members);
                continue;
            }
            let created =
                self.store.ask(|callback| StoreMsg::CreateGroup { group, members, callback }).await;
            match created {
                Ok(()) => {}
                // The replica exists with another membership (changed with `group
                // add-replica`/`remove-replica`): it is there, and retrying cannot help.
                Err(error @ mosaic_raftstore::Error::InvalidArgument { .. }) => {
                    tracing::warn!(node = %self.node, %group, num = %config.num, %error,
                        "the replica placed here exists with another membership; keeping it");
                }
                Err(error) => {
                    tracing::warn!(node = %self.node, %group, num = %config.num, %error,
                        "cannot create the replica placed here; will retry");
                    all = false;
                }
            }
        }
        all
    }
}
