//! The `ShardMigration` service: the previous owner's side of a shard move. `PullShard`
//! streams a shard that a group is sending, from a point-in-time view of the store, in
//! chunks of bounded size, within the node's bandwidth budget, at most `shard-streams-max` at
//! once (one more is refused `ResourceExhausted`; the puller tries another replica, then
//! again later); `DeleteShard` deletes the sent copy through the group's
//! log once the new owner has it. The new owner's side is its agent ([`crate::agent_runner`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mosaic_controller::ConfigNum;
use mosaic_engine::{EngineSnapshot, GroupId, ShardCursor, ShardId, ShardRecord};
use mosaic_proto::migration::{position_from_pb, record_to_pb};
use mosaic_proto::pb::{self, shard_migration_server::ShardMigration};
use mosaic_raftstore::Error;
use mosaic_shardkv::request::{propose_migration, read_handoff};
use mosaic_shardkv::{KvStateMachine, MigrationCommand, MigrationOutcome};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::backend::{NodeEngine, NodeSnapshot};
use crate::limits::{Slot, Slots};
use crate::metrics::TransferMetrics;
use crate::pacing::Budget;
use crate::runner::StoreHandle;
use crate::status::{Directory, ask_store, to_status};

/// How long a shard stream waits for its puller to take a chunk before it gives up (the
/// puller drops a stream it has not used for 30 s; one that keeps its connection but stops
/// reading must not hold the stream's slot forever).
const STALL_MAX: Duration = Duration::from_secs(60);
/// How often a stalled stream looks again.
const STALL_STEP: Duration = Duration::from_millis(20);

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
    /// Where the shards sent are counted.
    pub transfers: TransferMetrics,
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
            group_id = %group,
            %shard,
            to_group_id = r.to_group,
            config_num = r.config_num,
            resumed = !matches!(resume, ShardCursor::Start),
            "streaming a shard"
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
                tracing::error!(group_id = %group, %shard, %error, "cannot read a shard being sent");
                let _ = sender.blocking_send(Err(Status::internal(error.to_string())));
                return;
            }
        };
        let bytes = chunk.records.iter().map(ShardRecord::size_bytes).sum();
        if !limits.budget.take(bytes, || sender.is_closed()) {
            return;
        }
        let last = chunk.next.is_none();
        let records = chunk.records.into_iter().map(record_to_pb).collect();
        if !send_within(sender, Ok(pb::ShardChunk { records, last }), STALL_MAX) {
            tracing::debug!(
                group_id = %group,
                %shard,
                "a shard stream ended: its puller went away or stalled"
            );
            return;
        }
        limits.transfers.shard_bytes_sent.inc_by(bytes);
        if last {
            limits.transfers.shards_sent.inc();
        }
        match chunk.next {
            Some(next) => cursor = next,
            None => return,
        }
    }
}

/// Sends `message` on this blocking thread, waiting at most `stall_max` for room; false if
/// the receiver went away or took nothing for that long.
fn send_within<T>(sender: &mpsc::Sender<T>, mut message: T, stall_max: Duration) -> bool {
    let deadline = Instant::now() + stall_max;
    loop {
        match sender.try_send(message) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                message = back;
                std::thread::sleep(STALL_STEP);
            }
            Err(TrySendError::Full(_)) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_whose_reader_stalls_gives_up_and_one_that_reads_goes_on() {
        let (sender, mut receiver) = mpsc::channel(1);
        assert!(send_within(&sender, 1, Duration::ZERO));
        let start = Instant::now();
        assert!(!send_within(&sender, 2, Duration::from_millis(100)), "no room for 100 ms");
        assert!(start.elapsed() >= Duration::from_millis(100));
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            [receiver.blocking_recv(), receiver.blocking_recv()]
        });
        assert!(send_within(&sender, 3, Duration::from_secs(10)), "room once read");
        assert_eq!(reader.join().unwrap(), [Some(1), Some(3)]);
    }
}
