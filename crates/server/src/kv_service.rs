//! The `Kv` service: client reads and writes, checked ([`mosaic_proto::node`]: the node's
//! size limits) and refused on a full disk ([`DiskGuard`]), handed to the store thread,
//! answered when the store calls back (or when the request times out). Each request's
//! latency and refusal is recorded ([`RequestMetrics`]).

use std::time::Duration;

use mosaic_proto::node::{self, SizeLimits};
use mosaic_proto::pb::{self, kv_server::Kv};
use mosaic_raftstore::{Error, StoreMsg};
use mosaic_shardkv::request::{propose_write, read_shard, read_value, watch as watch_request};
use mosaic_shardkv::{KvStateMachine, WriteEffect, WriteKind};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::backend::NodeEngine;
use crate::disk::DiskGuard;
use crate::metrics::RequestMetrics;
use crate::runner::StoreHandle;
use crate::status::{Directory, ask_store, to_status};
use crate::watch_stream;

/// What a node accepts from clients.
#[derive(Clone, Copy, Debug)]
pub struct KvLimits {
    /// The largest key and value.
    pub sizes: SizeLimits,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
}

/// What a `Kv` message may carry beyond a largest key and value.
pub const KV_MESSAGE_OVERHEAD_BYTES: usize = 1024;

impl KvLimits {
    /// The largest message the service takes or sends: a largest key and value and
    /// [`KV_MESSAGE_OVERHEAD_BYTES`].
    #[must_use]
    pub fn message_bytes_max(&self) -> usize {
        self.sizes.key_bytes_max + self.sizes.value_bytes_max + KV_MESSAGE_OVERHEAD_BYTES
    }
}

/// The `Kv` service of one node.
pub struct KvService {
    store: StoreHandle<NodeEngine, KvStateMachine>,
    directory: Directory,
    limits: KvLimits,
    disk: DiskGuard,
    metrics: RequestMetrics,
    /// The places of the watch streams served at once.
    watch_streams: std::sync::Arc<tokio::sync::Semaphore>,
}

impl KvService {
    /// The service feeding `store`, taking no puts or appends while `disk` is full, recording
    /// its requests in `metrics`.
    #[must_use]
    pub fn new(
        store: StoreHandle<NodeEngine, KvStateMachine>,
        directory: Directory,
        limits: KvLimits,
        disk: DiskGuard,
        metrics: RequestMetrics,
    ) -> Self {
        let watch_streams =
            std::sync::Arc::new(tokio::sync::Semaphore::new(watch_stream::WATCH_STREAMS_MAX));
        Self { store, directory, limits, disk, metrics, watch_streams }
    }

    fn refuse(&self, error: &Error) -> Status {
        to_status(error, &self.directory)
    }

    /// Asks the store (see [`StoreHandle::ask`]), giving up after the request timeout.
    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(mosaic_raftstore::Callback<T>) -> StoreMsg<NodeEngine, KvStateMachine>,
    ) -> Result<T, Status> {
        ask_store(&self.store, self.limits.request_timeout, &self.directory, build).await
    }

    /// Checks a write, proposes it to its group and answers once it is applied.
    async fn write(
        &self,
        kind: WriteKind,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let record = self.metrics.start(match kind {
            WriteKind::Put => "put",
            WriteKind::Append => "append",
            WriteKind::Delete => "delete",
        });
        let result = self.write_unrecorded(kind, request).await;
        record.finish(&result);
        result
    }

    async fn write_unrecorded(
        &self,
        kind: WriteKind,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let (group, write) = node::write_from_pb(kind, request.into_inner(), self.limits.sizes)
            .map_err(|error| self.refuse(&error))?;
        // A delete is taken on a full disk: it is how space is freed.
        if kind != WriteKind::Delete {
            self.disk.check_write().map_err(|error| self.refuse(&error))?;
        }
        let seq = write.seq;
        let outcome = self.ask(|callback| propose_write(group, write, callback)).await?;
        let (version, condition_failed) = match outcome.effect {
            Some(WriteEffect::Written(version)) => (version, false),
            Some(WriteEffect::ConditionFailed(version)) => (version, true),
            Some(WriteEffect::BatchConditionFailed { .. }) => {
                return Err(self.refuse(&not_its_effect(seq, "a batch's", "this write's")));
            }
            None => return Err(self.refuse(&older_than_session(seq))),
        };
        Ok(Response::new(pb::WriteResponse {
            index: outcome.index.0,
            version: version.0,
            condition_failed,
        }))
    }

    /// Checks a batch, proposes it to its group and answers once it is applied.
    async fn batch_unrecorded(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let (group, batch) = node::batch_from_pb(request.into_inner(), self.limits.sizes)
            .map_err(|error| self.refuse(&error))?;
        // A batch of deletes only is taken on a full disk, as a delete is.
        if batch.writes.iter().any(|write| write.kind != WriteKind::Delete) {
            self.disk.check_write().map_err(|error| self.refuse(&error))?;
        }
        let seq = batch.seq;
        let outcome = self.ask(|callback| propose_write(group, batch, callback)).await?;
        let (version, failed_condition) = match outcome.effect {
            Some(WriteEffect::Written(version)) => (version, None),
            Some(WriteEffect::BatchConditionFailed { condition, version }) => {
                (version, Some(condition))
            }
            Some(WriteEffect::ConditionFailed(_)) => {
                return Err(self.refuse(&not_its_effect(seq, "a single write's", "this batch's")));
            }
            None => return Err(self.refuse(&older_than_session(seq))),
        };
        Ok(Response::new(pb::BatchResponse {
            index: outcome.index.0,
            version: version.0,
            failed_condition,
        }))
    }

    /// Checks a scan, reads a view of its shard at its consistency level, and reads the page
    /// from the view on a blocking thread (the store thread only takes the view).
    async fn scan_unrecorded(
        &self,
        request: Request<pb::ScanRequest>,
        record: &mut crate::metrics::RequestRecord<'_>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let (group, scan, consistency) =
            node::scan_from_pb(request.into_inner(), self.limits.sizes)
                .map_err(|error| self.refuse(&error))?;
        record.read_level(consistency);
        let (shard, shard_count) = (scan.shard, scan.shard_count);
        let read = self
            .ask(|callback| read_shard(group, shard, shard_count, consistency, callback))
            .await?;
        let applied_index = read.applied_index.0;
        // Within the request's timeout too (a read over many deleted keys may take long); the
        // thread finishes the page and drops it.
        let reading = tokio::task::spawn_blocking(move || scan.read(group, &read.output));
        let page = tokio::time::timeout(self.limits.request_timeout, reading)
            .await
            .map_err(|_elapsed| self.refuse(&Error::Timeout))?
            .map_err(|error| Status::internal(format!("the scan stopped: {error}")))?
            .map_err(|error| self.refuse(&error))?;
        let entries = page
            .entries
            .into_iter()
            .map(|entry| pb::ScanEntry {
                key: entry.key,
                value: entry.value,
                version: entry.version.0,
            })
            .collect();
        Ok(Response::new(pb::ScanResponse { entries, more: page.more, applied_index }))
    }
}

impl KvService {
    async fn watch_unrecorded(
        &self,
        request: Request<pb::WatchRequest>,
        record: &mut crate::metrics::RequestRecord<'_>,
    ) -> Result<Response<ReceiverStream<Result<pb::WatchResponse, Status>>>, Status> {
        let (group, watch, consistency) =
            node::watch_from_pb(request.into_inner(), self.limits.sizes)
                .map_err(|error| self.refuse(&error))?;
        record.read_level(consistency);
        let permit =
            std::sync::Arc::clone(&self.watch_streams).try_acquire_owned().map_err(|_| {
                let reason = format!(
                    "the node serves {} watch streams already",
                    watch_stream::WATCH_STREAMS_MAX
                );
                self.refuse(&Error::ServerBusy { reason })
            })?;
        let (shard, shard_count) = (watch.shard, watch.shard_count);
        let watcher =
            self.ask(|callback| watch_request(group, watch, consistency, callback)).await?.output;
        let (store, timeout) = (self.store.clone(), self.limits.request_timeout);
        let check: watch_stream::Check = Box::new(move || {
            let store = store.clone();
            Box::pin(async move {
                let read = |callback| read_shard(group, shard, shard_count, consistency, callback);
                store.ask_within(timeout, read).await.map(drop)
            })
        });
        let parts = watch_stream::StreamParts {
            check,
            directory: self.directory.clone(),
            message_bytes_max: self.limits.message_bytes_max(),
            permit,
        };
        Ok(Response::new(watch_stream::forward(watcher, parts)))
    }
}

/// The refusal of a write or batch whose seq is older than its session's last: only a late copy
/// of a request its client has stopped waiting for gets there.
fn older_than_session(seq: u64) -> Error {
    Error::InvalidArgument {
        reason: format!(
            "seq {seq} is older than the client's last write to the shard: what it did is not kept"
        ),
    }
}

/// The refusal of a request whose seq its session recorded for another kind of request.
fn not_its_effect(seq: u64, recorded: &str, asked: &str) -> Error {
    Error::InvalidArgument {
        reason: format!("seq {seq} of this client was {recorded}, not {asked}"),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let mut record = self.metrics.start("get");
        let result = match node::get_from_pb(request.into_inner(), self.limits.sizes) {
            Ok((group, get, consistency)) => {
                record.read_level(consistency);
                self.ask(|callback| read_value(group, get, consistency, callback)).await.map(
                    |read| {
                        let found = read.output.is_some();
                        let (value, version) = read
                            .output
                            .map_or_else(Default::default, |stored| (stored.value, stored.version));
                        Response::new(pb::GetResponse {
                            found,
                            value,
                            applied_index: read.applied_index.0,
                            version: version.0,
                        })
                    },
                )
            }
            Err(error) => Err(self.refuse(&error)),
        };
        record.finish(&result);
        result
    }

    async fn put(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.write(WriteKind::Put, request).await
    }

    async fn append(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.write(WriteKind::Append, request).await
    }

    async fn delete(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.write(WriteKind::Delete, request).await
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let record = self.metrics.start("batch");
        let result = self.batch_unrecorded(request).await;
        record.finish(&result);
        result
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let mut record = self.metrics.start("scan");
        let result = self.scan_unrecorded(request, &mut record).await;
        record.finish(&result);
        result
    }

    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    /// Registers the watcher (recorded as a request: its latency is the registration's), then
    /// streams what it receives ([`watch_stream`]).
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut record = self.metrics.start("watch");
        let result = self.watch_unrecorded(request, &mut record).await;
        record.finish(&result);
        result
    }
}
