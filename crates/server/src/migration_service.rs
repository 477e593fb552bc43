//! The `ShardMigration` service: the previous owner's side of a shard move. `PullShard`
//! streams a shard that a group is sending, from a point-in-time view of the store, in
//! chunks of bounded size, within the node's bandwidth budget, at most `shard-streams-max` at
//! once (one more is refused `ResourceExhausted`; the puller tries another replica, then
//! again later); `DeleteShard` deletes the sent copy through the group's
//! log once the new owner has it. The new owner's side is its agent ([`crate::agent_runner`]).

use std::sync::Arc;
use std::time::Duration;

use mosaic_controller::ConfigNum;
use mosaic_engine::{EngineSnapshot, GroupId, ShardCursor, ShardId, ShardRecord};
use mosaic_proto::migration::{position_from_pb, record_to_pb};
use mosaic_proto::pb::{self, shard_migration_server::ShardMigration};
use mosaic_raftstore::Error;
use mosaic_shardkv::request::{propose_migration, read_handoff};
use mosaic_shardkv::{KvStateMachine, MigrationCommand, MigrationOutcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::backend::{NodeEngine, NodeSnapshot};
use crate::limits::{Slot, Slots};
use crate::pacing::Budget;
use crate::runner::StoreHandle;
use crate::status::{Directory, ask_store, to_status};

/// How a node streams the shards it sends.
#[derive(Clone, Debug)]
pub struct MigrationLimits {
    /// Largest chunk of records, in bytes (at least one record per chunk).
    pub chunk_bytes_max: u64,
    /// The node's bandwidth budget, which shard streams share with snapshot streams.
    pub budget: Arc<Budget>,
    /// Shard streams served at once.
    pub streams: Slots,
    /// How long a request may wait for the store.
    pub request_timeout: Duration,
}

/// The `ShardMigration` service of one storage node.
pub struct MigrationService {
    store: StoreHandle<NodeEngine, KvStateMachine>,
    directory: Directory,
    limits: MigrationLimits,
}

impl MigrationService {
    /// The service feeding `store`.
    #[must_use]
    pub fn new(
        store: StoreHandle<NodeEngine, KvStateMachine>,
        directory: Directory,
        limits: MigrationLimits,
    ) -> Self {
        Self { store, directory, limits }
    }
}

#[tonic::async_trait]
impl ShardMigration for MigrationService {
    type PullShardStream = ReceiverStream<Result<pb::ShardChunk, Status>>;

    async fn pull_shard(
        &self,
        request: Request<pb::PullShardRequest>,
    ) -> Result<Response<Self::PullShardStream>, Status> {
        let slot = self.limits.streams.try_take()?;
        let r = request.into_inner();
        let (group, shard) = (GroupId(r.from_group), ShardId(r.shard_id));
        let resume = position_from_pb(r.resume);
        let (num, to) = (ConfigNum(r.config_num), GroupId(r.to_group));
        let timeout = self.limits.request_timeout;
        let snapshot = ask_store(&self.store, timeout, &self.directory, |callback| {
            read_handoff(group, num, shard, to, callback)
        })
        .await?;
        tracing::info!(
            %group, %shard, to = r.to_group, num = r.config_num, ?resume, "streaming a shard"
        );
        let (sender, receiver) = mpsc::channel(2);
        let limits = self.limits.clone();
        tokio::task::spawn_blocking(move || {
            stream_shard(&Arc::new(snapshot), group, shard, resume, &sender, &limits, slot);
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn delete_shard(
        &self,
        request: Request<pb::DeleteShardRequest>,
    ) -> Result<Response<pb::DeleteShardResponse>, Status> {
        let r = request.into_inner();
        let group = GroupId(r.group_id);
        let command = MigrationCommand::DeleteShard {
            num: ConfigNum(r.config_num),
            shard: ShardId(r.shard_id),
        };
        let timeout = self.limits.request_timeout;
        let outcome = ask_store(&self.store, timeout, &self.directory, |callback| {
            propose_migration(group, command, callback)
        })
        .await?;
        match outcome {
            MigrationOutcome::Done => Ok(Response::new(pb::DeleteShardResponse { deleted: true })),
            MigrationOutcome::Stale(_) => {
                Ok(Response::new(pb::DeleteShardResponse { deleted: false }))
            }
            MigrationOutcome::NotYet(_) => Err(to_status(&Error::ShardNotReady, &self.directory)),
        }
    }
}

/// Reads `shard` of `group` chunk by chunk from `snapshot` into `sender`, starting at
/// `cursor`, within the node's budget, on a blocking thread; stops early when the receiver
/// goes away. Holds `_slot` until then.
fn stream_shard(
    snapshot: &Arc<EngineSnapshot<NodeSnapshot>>,
    group: GroupId,
    shard: ShardId,
    mut cursor: ShardCursor,
    sender: &mpsc::Sender<Result<pb::ShardChunk, Status>>,
    limits: &MigrationLimits,
    _slot: Slot,
) {
    loop {
        let chunk = match snapshot.scan_shard_chunk(group, shard, &cursor, limits.chunk_bytes_max) {
            Ok(chunk) => chunk,
            Err(error) => {
                tracing::error!(%group, %shard, %error, "cannot read a shard being sent");
                let _ = sender.blocking_send(Err(Status::internal(error.to_string())));
                return;
            }
        };
        let bytes = chunk.records.iter().map(ShardRecord::size_bytes).sum();
        if let Some(wait) = limits.budget.take(bytes) {
            std::thread::sleep(wait);
        }
        let last = chunk.next.is_none();
        let records = chunk.records.into_iter().map(record_to_pb).collect();
        if sender.blocking_send(Ok(pb::ShardChunk { records, last })).is_err() {
            return;
        }
        match chunk.next {
            Some(next) => cursor = next,
            None => return,
        }
    }
}
