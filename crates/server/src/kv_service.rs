//! The `Kv` service: client reads and writes, checked against the node's limits (and its free
//! space, [`DiskGuard`]), handed to the store thread, answered when the store calls back (or
//! when the request times out).

use std::time::Duration;

use bytes::Bytes;
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_proto::pb::{self, kv_server::Kv};
use mosaic_raftstore::{Consistency, Error, StoreMsg};
use mosaic_shardkv::request::{propose_write, read_value};
use mosaic_shardkv::{KvGet, KvStateMachine, KvWrite, WriteKind};
use tonic::{Request, Response, Status};

use crate::backend::NodeEngine;
use crate::disk::DiskGuard;
use crate::runner::StoreHandle;
use crate::status::{Directory, ask_store, to_status};

/// Size limits on what clients send.
#[derive(Clone, Copy, Debug)]
pub struct KvLimits {
    /// Largest key, in bytes.
    pub key_bytes_max: usize,
    /// Largest value, in bytes.
    pub value_bytes_max: usize,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
}

/// The `Kv` service of one node.
pub struct KvService {
    store: StoreHandle<NodeEngine, KvStateMachine>,
    directory: Directory,
    limits: KvLimits,
    disk: DiskGuard,
}

impl KvService {
    /// The service feeding `store`, taking no puts or appends while `disk` is full.
    #[must_use]
    pub fn new(
        store: StoreHandle<NodeEngine, KvStateMachine>,
        directory: Directory,
        limits: KvLimits,
        disk: DiskGuard,
    ) -> Self {
        Self { store, directory, limits, disk }
    }

    fn refuse(&self, error: &Error) -> Status {
        to_status(error, &self.directory)
    }

    fn check_key(&self, key: &Bytes) -> Result<(), Status> {
        if key.is_empty() {
            return Err(self.refuse(&Error::InvalidArgument { reason: "the key is empty".into() }));
        }
        if key.len() > self.limits.key_bytes_max {
            return Err(self.refuse(&Error::InvalidArgument {
                reason: format!(
                    "the key is {} bytes; at most {} are accepted (key-bytes-max)",
                    key.len(),
                    self.limits.key_bytes_max
                ),
            }));
        }
        Ok(())
    }

    fn check_value(&self, value: &Bytes) -> Result<(), Status> {
        if value.len() > self.limits.value_bytes_max {
            return Err(self.refuse(&Error::InvalidArgument {
                reason: format!(
                    "the value is {} bytes; at most {} are accepted (value-bytes-max)",
                    value.len(),
                    self.limits.value_bytes_max
                ),
            }));
        }
        Ok(())
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
        let r = request.into_inner();
        self.check_key(&r.key)?;
        self.check_value(&r.value)?;
        if kind == WriteKind::Delete && !r.value.is_empty() {
            return Err(
                self.refuse(&Error::InvalidArgument { reason: "a delete carries no value".into() })
            );
        }
        // A delete is taken on a full disk: it is how space is freed.
        if kind != WriteKind::Delete {
            self.disk.check_write().map_err(|error| self.refuse(&error))?;
        }
        let write = KvWrite {
            kind,
            client: ClientId(r.client_id),
            seq: r.seq,
            shard: ShardId(r.shard_id),
            key: r.key,
            value: r.value,
            expects_session: r.expects_session,
        };
        let group = GroupId(r.group_id);
        let outcome = self.ask(|callback| propose_write(group, write, callback)).await?;
        Ok(Response::new(pb::WriteResponse { index: outcome.index.0 }))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        self.check_key(&request.key)?;
        let consistency = match pb::Consistency::try_from(request.consistency) {
            Ok(pb::Consistency::Linearizable) => Consistency::Linearizable,
            Ok(pb::Consistency::Lease) => Consistency::Lease,
            Ok(pb::Consistency::Stale) => Consistency::Stale,
            Err(_) => {
                return Err(self.refuse(&Error::InvalidArgument {
                    reason: format!("unknown consistency level {}", request.consistency),
                }));
            }
        };
        let group = GroupId(request.group_id);
        let get = KvGet { shard: ShardId(request.shard_id), key: request.key };
        let read = self.ask(|callback| read_value(group, get, consistency, callback)).await?;
        let value = read.output;
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            applied_index: read.applied_index.0,
        }))
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
}
