//! Fake storage nodes: each serves the `Kv` gRPC service on a loopback port, for tests of code
//! that uses a [`crate::Client`] (this crate's own, and users' through the `testing` feature).
//!
//! A node keeps its keys in a map and answers each request with success (a read gets the
//! stored value and version, a write applies and answers the next log index, which is also the
//! key's new version; conditions, batches and scans as a real node answers them), unless a
//! refusal is scripted: [`FakeNode::refuse_next`] queues refusals for its next requests, and
//! [`FakeNode::refuse_all`] refuses every request with one kind until cleared; queued
//! refusals come first. A node does not check the group, shard or configuration a request
//! names: the test decides which node refuses, and checks what each one received.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use mosaic_engine::{GroupId, ShardId};
use mosaic_proto::pb;
use mosaic_proto::pb::error_detail::Kind;
use mosaic_proto::pb::kv_server::{Kv, KvServer};
use mosaic_types::shard_for_key;
use prost::Message as _;
use tonic::{Code, Status};

use super::{loopback_listener, serve};

/// One request a node received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRequest {
    /// `get`, `put`, `append`, `delete`, `batch`, `scan` or `watch`.
    pub method: &'static str,
    /// The group the client routed to.
    pub group: GroupId,
    /// The shard the client computed.
    pub shard: ShardId,
    /// The configuration the client routed by.
    pub config_num: u64,
    /// The key (a batch's first write's, a scan's start).
    pub key: Bytes,
    /// Whether a write said it expects its session (false for a read).
    pub expects_session: bool,
}

/// A refusal a fake node answers with ([`FakeNode::refuse_next`], [`FakeNode::refuse_all`]):
/// what a real node answers in that case, which the client acts on as it would there
/// (docs/api.md "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The node does not lead the group and knows no leader: the client tries another member.
    NotLeader,
    /// The node's group does not serve the key's shard in configuration `config_num`: the
    /// client reads a newer placement.
    WrongGroup {
        /// The configuration the node has applied.
        config_num: u64,
    },
    /// The shard is moving to the node's group and its data has not arrived: the client
    /// retries soon.
    ShardNotReady,
    /// The node is overloaded: the client backs off and retries.
    ServerBusy,
    /// The node lost track of the write, which may or may not have been applied: the client
    /// retries it (once applied, it is applied once).
    OutcomeUnknown,
    /// The node's disk is nearly full: a write fails with [`crate::ClientError::StorageFull`].
    StorageFull,
}

impl From<Refusal> for Kind {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotLeader => {
                Kind::NotLeader(pb::NotLeader { leader_node: None, leader_address: String::new() })
            }
            Refusal::WrongGroup { config_num } => Kind::WrongGroup(pb::WrongGroup { config_num }),
            Refusal::ShardNotReady => Kind::ShardNotReady(pb::ShardNotReady {}),
            Refusal::ServerBusy => Kind::ServerBusy(pb::ServerBusy {}),
            Refusal::OutcomeUnknown => Kind::OutcomeUnknown(pb::OutcomeUnknown {
                leader_node: None,
                leader_address: String::new(),
            }),
            Refusal::StorageFull => {
                Kind::StorageFull(pb::StorageFull { available_bytes: 0, reserve_bytes: 1 << 30 })
            }
        }
    }
}

#[derive(Debug, Default)]
struct NodeState {
    received: Vec<NodeRequest>,
    /// Refusals for the next requests, in order.
    refusals: VecDeque<Kind>,
    /// The refusal of every request once `refusals` is empty, if any.
    refuse_all: Option<Kind>,
    /// Each key's value and version (the index of its last write: like a shard's revision,
    /// it grows with every change).
    values: BTreeMap<Bytes, (Bytes, u64)>,
    last_index: u64,
    /// Acts as a release without versions ([`FakeNode::forget_versions`]).
    without_versions: bool,
    /// The shard count a scan's shard is of ([`FakeNode::scan_shards_of`]).
    shard_count: Option<u32>,
    /// What each shard's next watch calls get, in order ([`FakeNode::script_watch`]); a shard
    /// with nothing left is refused `ShardNotReady`.
    watch_scripts: BTreeMap<u32, VecDeque<WatchScript>>,
}

/// What one watch call gets.
#[derive(Clone, Debug)]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only this crate's tests script watches (`script_watch`)")
)]
pub(crate) enum WatchScript {
    /// Refused with this kind.
    Refuse(Kind),
    /// A stream sending each message after its pause, then staying open (`close`: ending).
    Stream { messages: Vec<(std::time::Duration, pb::WatchResponse)>, close: bool },
}

/// A running fake storage node, serving until the tokio runtime that started it stops.
#[derive(Clone, Debug)]
pub struct FakeNode {
    address: String,
    state: Arc<Mutex<NodeState>>,
}

impl FakeNode {
    /// Starts a node on a loopback port.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        let (listener, address) = loopback_listener().await;
        let state = Arc::new(Mutex::new(NodeState::default()));
        let service = Service { state: Arc::clone(&state) };
        serve(listener, tonic::transport::Server::builder().add_service(KvServer::new(service)));
        Self { address, state }
    }

    /// The node's address, `127.0.0.1:PORT`.
    #[must_use]
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Answers from now on as a release without key versions does: conditions ignored, every
    /// write applied, versions left out of the answers.
    #[cfg(test)]
    pub(crate) fn forget_versions(&self) {
        lock(&self.state).without_versions = true;
    }

    /// Scans read the keys of the shard they name among `shard_count` (until this is called,
    /// a scan is refused).
    pub fn scan_shards_of(&self, shard_count: u32) {
        lock(&self.state).shard_count = Some(shard_count);
    }

    /// Queues `refusal` (a [`Refusal`]) as the answer to the next request no earlier queued
    /// refusal answers.
    pub fn refuse_next(&self, refusal: impl Into<Kind>) {
        lock(&self.state).refusals.push_back(refusal.into());
    }

    /// Refuses every request with `refusal` (after the queued refusals), or with `None`,
    /// answers them again.
    pub fn refuse_all<R: Into<Kind>>(&self, refusal: Option<R>) {
        lock(&self.state).refuse_all = refusal.map(Into::into);
    }

    /// Queues `script` for the next watch call of `shard`.
    #[cfg(test)]
    pub(crate) fn script_watch(&self, shard: u32, script: WatchScript) {
        lock(&self.state).watch_scripts.entry(shard).or_default().push_back(script);
    }

    /// Every request received so far, in order.
    #[must_use]
    pub fn received(&self) -> Vec<NodeRequest> {
        lock(&self.state).received.clone()
    }
}

/// A `WrongGroup` refusal from a node that has applied configuration `config_num`.
#[cfg(test)]
pub(crate) fn wrong_group(config_num: u64) -> Kind {
    Refusal::WrongGroup { config_num }.into()
}

/// A `ShardNotReady` refusal.
#[cfg(test)]
pub(crate) fn shard_not_ready() -> Kind {
    Refusal::ShardNotReady.into()
}

/// A `SessionExpired` refusal (users meet it only after a session eviction, which a test of
/// theirs has no reason to script).
#[cfg(test)]
pub(crate) fn session_expired() -> Kind {
    Kind::SessionExpired(pb::SessionExpired {})
}

fn lock(state: &Mutex<NodeState>) -> MutexGuard<'_, NodeState> {
    // Each critical section leaves the state consistent.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Service {
    state: Arc<Mutex<NodeState>>,
}

impl Service {
    /// Records `request`; answers the scripted refusal, if any.
    fn receive(&self, request: NodeRequest) -> Result<MutexGuard<'_, NodeState>, Status> {
        let mut state = lock(&self.state);
        state.received.push(request);
        let refusal = state.refusals.pop_front().or_else(|| state.refuse_all.clone());
        match refusal {
            None => Ok(state),
            Some(kind) => {
                let detail = pb::ErrorDetail { kind: Some(kind) };
                Err(Status::with_details(
                    Code::FailedPrecondition,
                    "refused by the fake node",
                    Bytes::from(detail.encode_to_vec()),
                ))
            }
        }
    }

    /// Applies the write `request` with `apply` (given the key's current value); answers the
    /// next log index.
    fn write(
        &self,
        method: &'static str,
        request: pb::WriteRequest,
        apply: impl FnOnce(Option<&Bytes>, Bytes) -> Option<Bytes>,
    ) -> Result<tonic::Response<pb::WriteResponse>, Status> {
        let mut state = self.receive(NodeRequest {
            method,
            group: GroupId(request.group_id),
            shard: ShardId(request.shard_id),
            config_num: request.config_num,
            key: request.key.clone(),
            expects_session: request.expects_session,
        })?;
        state.last_index += 1;
        let index = state.last_index;
        let current = state.values.get(&request.key).map_or(0, |(_, version)| *version);
        let condition = request.expected_version.filter(|_| !state.without_versions);
        if condition.is_some_and(|expected| expected != current) {
            let response = pb::WriteResponse { index, version: current, condition_failed: true };
            return Ok(tonic::Response::new(response));
        }
        match apply(state.values.get(&request.key).map(|(value, _)| value), request.value) {
            Some(value) => state.values.insert(request.key, (value, index)),
            None => state.values.remove(&request.key),
        };
        let version = if state.without_versions { 0 } else { index };
        let response = pb::WriteResponse { index, version, condition_failed: false };
        Ok(tonic::Response::new(response))
    }
}

#[tonic::async_trait]
impl Kv for Service {
    async fn get(
        &self,
        request: tonic::Request<pb::GetRequest>,
    ) -> Result<tonic::Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        let state = self.receive(NodeRequest {
            method: "get",
            group: GroupId(request.group_id),
            shard: ShardId(request.shard_id),
            config_num: request.config_num,
            key: request.key.clone(),
            expects_session: false,
        })?;
        let found = state.values.get(&request.key);
        let (value, version) = found.cloned().unwrap_or_default();
        Ok(tonic::Response::new(pb::GetResponse {
            found: found.is_some(),
            value,
            applied_index: state.last_index,
            version,
        }))
    }

    async fn put(
        &self,
        request: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteResponse>, Status> {
        self.write("put", request.into_inner(), |_, value| Some(value))
    }

    async fn append(
        &self,
        request: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteResponse>, Status> {
        self.write("append", request.into_inner(), |old, value| {
            Some([old.map_or(&[][..], |old| &old[..]), &value[..]].concat().into())
        })
    }

    async fn delete(
        &self,
        request: tonic::Request<pb::WriteRequest>,
    ) -> Result<tonic::Response<pb::WriteResponse>, Status> {
        self.write("delete", request.into_inner(), |_, _| None)
    }

    async fn scan(
        &self,
        request: tonic::Request<pb::ScanRequest>,
    ) -> Result<tonic::Response<pb::ScanResponse>, Status> {
        let request = request.into_inner();
        let state = self.receive(NodeRequest {
            method: "scan",
            group: GroupId(request.group_id),
            shard: ShardId(request.shard_id),
            config_num: request.config_num,
            key: request.start.clone(),
            expects_session: false,
        })?;
        let shard_count = state
            .shard_count
            .ok_or_else(|| Status::unimplemented("the test set no shard count for scans"))?;
        let end = request.end.clone().map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut response =
            pb::ScanResponse { applied_index: state.last_index, ..Default::default() };
        let mut bytes = 0;
        for (key, (value, version)) in state
            .values
            .range::<Bytes, _>((std::ops::Bound::Included(request.start), end))
            .filter(|(key, _)| shard_for_key(key, shard_count) == ShardId(request.shard_id))
        {
            let value = if request.keys_only { Bytes::new() } else { value.clone() };
            let cost = (key.len() + value.len()) as u64;
            let entries = response.entries.len();
            if entries == request.limit as usize
                || (entries > 0 && bytes + cost > request.limit_bytes)
            {
                response.more = true;
                break;
            }
            bytes += cost;
            response.entries.push(pb::ScanEntry { key: key.clone(), value, version: *version });
        }
        Ok(tonic::Response::new(response))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::WatchResponse, Status>> + Send>,
    >;

    /// Answers what the test scripted for the shard ([`FakeNode::script_watch`]).
    async fn watch(
        &self,
        request: tonic::Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        use futures_util::StreamExt as _;
        let request = request.into_inner();
        let script = {
            let mut state = lock(&self.state);
            state.watch_scripts.get_mut(&request.shard_id).and_then(VecDeque::pop_front)
        };
        let refuse = |kind: Kind| {
            let detail = pb::ErrorDetail { kind: Some(kind) };
            Status::with_details(
                Code::FailedPrecondition,
                "refused by the fake node",
                Bytes::from(detail.encode_to_vec()),
            )
        };
        match script {
            None => Err(refuse(Refusal::ShardNotReady.into())),
            Some(WatchScript::Refuse(kind)) => Err(refuse(kind)),
            Some(WatchScript::Stream { messages, close }) => {
                let sent =
                    futures_util::stream::iter(messages).then(|(pause, message)| async move {
                        tokio::time::sleep(pause).await;
                        Ok(message)
                    });
                let stream: Self::WatchStream = if close {
                    Box::pin(sent)
                } else {
                    Box::pin(sent.chain(futures_util::stream::pending()))
                };
                Ok(tonic::Response::new(stream))
            }
        }
    }

    /// Every condition checked, then every write applied in order at one version (the entry's
    /// index), as a storage group applies a batch.
    async fn batch(
        &self,
        request: tonic::Request<pb::BatchRequest>,
    ) -> Result<tonic::Response<pb::BatchResponse>, Status> {
        let request = request.into_inner();
        let first = request.writes.first().map(|write| write.key.clone()).unwrap_or_default();
        let mut state = self.receive(NodeRequest {
            method: "batch",
            group: GroupId(request.group_id),
            shard: ShardId(request.shard_id),
            config_num: request.config_num,
            key: first,
            expects_session: request.expects_session,
        })?;
        state.last_index += 1;
        let index = state.last_index;
        let version_of = |state: &NodeState, key: &Bytes| state.values.get(key).map_or(0, |v| v.1);
        for (place, condition) in (0_u32..).zip(&request.conditions) {
            let current = version_of(&state, &condition.key);
            if current != condition.version {
                let response =
                    pb::BatchResponse { index, version: current, failed_condition: Some(place) };
                return Ok(tonic::Response::new(response));
            }
        }
        for write in request.writes {
            let old = state.values.get(&write.key).map(|(value, _)| value.clone());
            match pb::BatchOp::try_from(write.op) {
                Ok(pb::BatchOp::Put) => state.values.insert(write.key, (write.value, index)),
                Ok(pb::BatchOp::Append) => {
                    let joined = [old.unwrap_or_default(), write.value].concat();
                    state.values.insert(write.key, (joined.into(), index))
                }
                Ok(pb::BatchOp::Delete) => state.values.remove(&write.key),
                other => return Err(Status::invalid_argument(format!("batch op {other:?}"))),
            };
        }
        let response = pb::BatchResponse { index, version: index, failed_condition: None };
        Ok(tonic::Response::new(response))
    }
}
