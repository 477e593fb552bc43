//! [`Migrator`]: carries out the migration tasks of every group this node leads
//! (docs/migration.md): what to do is [`mosaic_shardkv::plan`]'s to decide, how is this
//! module's.
//!
//! Each step (every time the follower has read the latest configuration) reads the ownership
//! of every group led here ([`StoreMsg::ReadLeaders`]), plans each group's tasks and starts
//! those not already running:
//! - `Reconfigure`: reads configurations `next - 1` and `next` from the controller (cached)
//!   and proposes the switch;
//! - `Pull`: pulls the shard from a replica of the previous owner
//!   (`ShardMigration.PullShard`), proposing each chunk through the group's log and waiting
//!   for it to apply before reading the next, so at most a few chunks are in memory;
//! - `Confirm`: asks the previous owner's leader to delete its copy
//!   (`ShardMigration.DeleteShard`; not when the controller has retired that group: its copy
//!   is gone), then proposes `ConfirmHandoff`;
//! - `Retire`: tells the controller the removed group holds nothing any more; every node
//!   then destroys its replica (the follower does).
//!
//! Every proposal names its configuration, so a task that runs twice (two steps, or a leader
//! that was deposed mid-pull) changes nothing the second time. At most one task per
//! [`TaskKey`] runs at once; a task that fails is started again by a later step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mosaic_client::ControllerClient;
use mosaic_controller::{Command, ConfigNum, Configuration, GroupLife};
use mosaic_engine::{GroupId, ShardCursor, ShardId};
use mosaic_proto::pb::{self, shard_migration_client::ShardMigrationClient};
use mosaic_raft::NodeId;
use mosaic_raftstore::StoreMsg;
use mosaic_shardkv::{
    Applied, KvCommand, KvQuery, KvReadOutput, KvStateMachine, MigrationCommand, MigrationOutcome,
    MigrationTask, TaskKey, plan,
};

use crate::migration_service::{position_to_pb, records_from_pb};
use crate::node::NodeEngine;
use crate::runner::StoreHandle;
use crate::status::Directory;
use crate::transport::{RAFT_MESSAGE_BYTES_MAX, connect};

/// Configurations kept in memory (the ones groups here are switching between).
const CONFIGS_CACHED_MAX: usize = 64;

/// Moves the shards of the groups this node leads. See the module documentation.
pub struct Migrator {
    store: StoreHandle<NodeEngine, KvStateMachine>,
    directory: Directory,
    controller: ControllerClient,
    request_timeout: Duration,
    configs: Mutex<BTreeMap<ConfigNum, Configuration>>,
    running: Mutex<BTreeSet<TaskKey>>,
}

/// A client of another node's `ShardMigration` service.
type MigrationClient = ShardMigrationClient<tonic::transport::Channel>;

/// Why a task stopped before finishing; it is tried again at a later step.
type TaskResult = Result<(), String>;

impl Migrator {
    /// A migrator for the groups of `store`.
    #[must_use]
    pub fn new(
        store: StoreHandle<NodeEngine, KvStateMachine>,
        directory: Directory,
        controller: ControllerClient,
        request_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            directory,
            controller,
            request_timeout,
            configs: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeSet::new()),
        })
    }

    /// Starts the work the led groups need, given that `latest` is the latest configuration
    /// and `lives` every group's life.
    pub async fn step(self: &Arc<Self>, latest: ConfigNum, lives: &BTreeMap<GroupId, GroupLife>) {
        let query = KvQuery::Ownership;
        let led = match self.store.ask(|callback| StoreMsg::ReadLeaders { query, callback }).await {
            Ok(led) => led,
            Err(error) => {
                tracing::debug!(%error, "cannot read the groups led here");
                return;
            }
        };
        for (group, answer) in led {
            match answer {
                Ok(KvReadOutput::Ownership(Some(ownership))) => {
                    for task in plan(group, &ownership, latest, lives) {
                        self.start(task);
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%group, %error, "cannot read the group's ownership"),
            }
        }
    }

    /// Starts `task` unless a task with its key is running.
    fn start(self: &Arc<Self>, task: MigrationTask) {
        let key = task.key();
        if !self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(key) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(reason) = this.run(task).await {
                tracing::info!(?key, %reason, "migration task stopped; will retry");
            }
            this.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        });
    }

    async fn run(&self, task: MigrationTask) -> TaskResult {
        match task {
            MigrationTask::Reconfigure { group, next } => self.reconfigure(group, next).await,
            MigrationTask::Pull { group, shard, num, from, nodes, resume } => {
                self.pull(group, shard, num, from, &nodes, &resume).await
            }
            MigrationTask::Confirm { group, shard, num, from, nodes, from_retired } => {
                if !from_retired {
                    self.delete_at_source(shard, num, from, &nodes).await?;
                }
                self.propose(group, MigrationCommand::ConfirmHandoff { num, shard }).await?;
                tracing::info!(%group, %shard, %from, %num, "handoff confirmed");
                Ok(())
            }
            MigrationTask::Retire { group } => self.retire(group).await,
        }
    }

    /// Proposes the group's switch to configuration `next`.
    async fn reconfigure(&self, group: GroupId, next: ConfigNum) -> TaskResult {
        let previous = self.config(ConfigNum(next.0 - 1)).await?;
        let next = self.config(next).await?;
        let to = next.num;
        let outcome = self.propose(group, MigrationCommand::Reconfigure { previous, next }).await?;
        tracing::info!(%group, %to, ?outcome, "switched configuration");
        Ok(())
    }

    /// Tells the controller that the removed `group` holds nothing any more.
    async fn retire(&self, group: GroupId) -> TaskResult {
        let outcome = self
            .controller
            .execute(Command::RetireGroup { group })
            .await
            .map_err(|error| error.to_string())?
            .map_err(|refusal| refusal.to_string())?;
        tracing::info!(%group, ?outcome, "retired the removed group; its replicas go next");
        Ok(())
    }

    /// Configuration `num`, from the cache or the controller.
    async fn config(&self, num: ConfigNum) -> Result<Configuration, String> {
        if let Some(config) = self.configs.lock().unwrap_or_else(PoisonError::into_inner).get(&num)
        {
            return Ok(config.clone());
        }
        let answer = self.controller.query(Some(num)).await.map_err(|error| error.to_string())?;
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        configs.insert(num, answer.config.clone());
        while configs.len() > CONFIGS_CACHED_MAX {
            configs.pop_first();
        }
        Ok(answer.config)
    }

    /// Proposes a migration step to `group` here and waits for it to apply.
    async fn propose(
        &self,
        group: GroupId,
        command: MigrationCommand,
    ) -> Result<MigrationOutcome, String> {
        let proposal = KvCommand::Migration(command);
        let answer = self
            .store
            .ask_within(self.request_timeout, |callback| StoreMsg::Propose {
                group,
                proposal,
                callback,
            })
            .await
            .map_err(|error| error.to_string())?;
        match answer.map_err(|error| error.to_string())? {
            Applied::Migration(outcome) => Ok(outcome),
            Applied::Write(_) => Err("a migration step was answered as a write".into()),
        }
    }

    /// Runs `call` against the members of a source group in turn, connecting to each only
    /// when the one before failed; returns the node that succeeded, or every failure.
    async fn on_first_source<F: Future<Output = TaskResult>>(
        &self,
        nodes: &[NodeId],
        mut call: impl FnMut(MigrationClient) -> F,
    ) -> Result<NodeId, String> {
        let mut failures = Vec::new();
        for node in nodes {
            let Some(address) = self.directory.address(*node) else {
                failures.push(format!("node {node}: address unknown"));
                continue;
            };
            let result = match connect(&address).await {
                Ok(channel) => {
                    let client = ShardMigrationClient::new(channel)
                        .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
                    call(client).await
                }
                Err(error) => Err(format!("cannot connect to {address}: {error}")),
            };
            match result {
                Ok(()) => return Ok(*node),
                Err(reason) => failures.push(format!("node {node}: {reason}")),
            }
        }
        Err(failures.join("; "))
    }

    /// Pulls `shard` (moved to `group` in configuration `num`) from a replica of `from`,
    /// starting at `resume`, where the chunks installed so far end.
    async fn pull(
        &self,
        group: GroupId,
        shard: ShardId,
        num: ConfigNum,
        from: GroupId,
        nodes: &[NodeId],
        resume: &ShardCursor,
    ) -> TaskResult {
        let request = pb::PullShardRequest {
            from_group: from.0,
            to_group: group.0,
            shard_id: shard.0,
            config_num: num.0,
            resume: position_to_pb(resume),
        };
        let node = self
            .on_first_source(nodes, |mut client| {
                let request = request.clone();
                async move { self.pull_from(&mut client, group, request, resume).await }
            })
            .await
            .map_err(|failures| format!("pulling shard {shard} from group {from}: {failures}"))?;
        tracing::info!(%group, %shard, %from, %node, %num, "pull finished");
        Ok(())
    }

    /// Streams the pull `request` (which starts at `resume`) from `client` into `group`'s log,
    /// chunk by chunk, each proposed with where it starts; ends when the last chunk is
    /// installed or another pull has got further (the group's state then says where the next
    /// pull starts).
    async fn pull_from(
        &self,
        client: &mut MigrationClient,
        group: GroupId,
        request: pb::PullShardRequest,
        resume: &ShardCursor,
    ) -> TaskResult {
        let (num, shard) = (ConfigNum(request.config_num), ShardId(request.shard_id));
        let mut from = resume.clone();
        let mut stream = client
            .pull_shard(request)
            .await
            .map_err(|status| status.message().to_string())?
            .into_inner();
        while let Some(chunk) =
            stream.message().await.map_err(|status| status.message().to_string())?
        {
            let last = chunk.last;
            let records = records_from_pb(chunk.records)?;
            let start = from.clone();
            if let Some(record) = records.last() {
                from = ShardCursor::after(record);
            }
            let install =
                MigrationCommand::InstallChunk { num, shard, from: Some(start), records, last };
            match self.propose(group, install).await? {
                MigrationOutcome::Done if last => return Ok(()),
                MigrationOutcome::Done => {}
                // Installed already, or another pull (an earlier leader's) got further.
                MigrationOutcome::Stale(reason) => {
                    tracing::debug!(%group, %shard, %reason, "pull overtaken");
                    return Ok(());
                }
                MigrationOutcome::NotYet(reason) => return Err(reason),
            }
        }
        Err("the stream ended before its last chunk".into())
    }

    /// Has `from` delete its copy of `shard` (sent in configuration `num`).
    async fn delete_at_source(
        &self,
        shard: ShardId,
        num: ConfigNum,
        from: GroupId,
        nodes: &[NodeId],
    ) -> TaskResult {
        let request =
            pb::DeleteShardRequest { group_id: from.0, shard_id: shard.0, config_num: num.0 };
        self.on_first_source(nodes, |mut client| async move {
            client
                .delete_shard(request)
                .await
                .map(drop)
                .map_err(|status| status.message().to_string())
        })
        .await
        .map(drop)
        .map_err(|failures| format!("deleting shard {shard} at group {from}: {failures}"))
    }
}
