//! The routing client: sends each operation to the node that leads its key's group, and retries
//! by the rules of [`crate::classify`] until a final answer or the operation's deadline.
//!
//! State shared by every clone of a [`Client`] (one `Arc`):
//! - the placement it routes by, replaced only by a newer or equal one from its
//!   [`RoutingSource`];
//! - one lazily connected gRPC channel per node address, reused by every operation. Channels
//!   of addresses the placement no longer names are dropped when the placement is replaced, so
//!   the map holds at most the placement's nodes plus the leaders named in hints since then;
//! - a leader hint per group, only ever a member of the group in the current placement;
//! - the session lanes of [`crate::session`].
//!
//! Routing by a changing placement:
//! - a `WrongGroup` from a node that has applied configuration `n` makes the client refresh
//!   its placement after a backoff; while the source answers a placement older than `n`, the
//!   client keeps asking it, pausing between asks, and sends nothing to the nodes (they would
//!   only refuse again). A node behind the client's placement (`n` not newer) is retried after
//!   the refresh;
//! - a key whose shard no group owns makes the client refresh once, at once; if the shard is
//!   still unassigned, the operation ends with [`ClientError::ShardUnassigned`];
//! - a source that fails leaves the client's placement in place; before any placement was
//!   loaded, the operation fails with the source's error.
//!
//! Bounds: every operation ends by its deadline ([`ClientOptions::timeout`]), every attempt by
//! [`ClientOptions::attempt_timeout`] (or the deadline, if sooner), and the pause before a retry
//! or a repeated refresh comes from [`crate::backoff`]. The only retries without a pause are
//! following a leader hint, never twice in a row, and the one refresh for an unassigned shard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use mosaic_proto::pb;
use mosaic_proto::pb::kv_client::KvClient;
use mosaic_raft::LogIndex;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::backoff::{Backoff, JitterSeeds};
use crate::batch::{Batch, BatchOutcome};
use crate::channel::{Channels, with_timeout};
use crate::classify::{Action, Failure, classify_status};
use crate::error::{ClientError, Progress, Result, WriteOutcome};
use crate::operation::{Operation, Prepared, Route, ShardScan, WireRequest};
use crate::retry::{self, Leaders, Next, Refresh, Retry, Target, next_member};
use crate::routing::{Routing, RoutingSource, StaticRouting};
use crate::scan::{self, ScanOptions, ScanPage, ScanRange};
use crate::session::{LaneLease, SessionPool};
use crate::tls::Tls;
use crate::watch::{self, Watch, WatchOptions};

/// A key's value and its version: the revision of the key's shard when the key was last
/// written (each shard counts its changes, and the count moves with the shard), so a key
/// never has the same non-zero version twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The version (never 0: 0 is the version of an absent key).
    pub version: u64,
}

/// How fresh a read must be (docs/api.md "Read levels").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// ReadIndex at the leader: the read sees every write acknowledged before it started.
    #[default]
    Linearizable,
    /// The leader reads under its lease, without a round trip (ReadIndex without a lease).
    Lease,
    /// Any replica reads what it has applied, and may be behind; the client sends each to the
    /// next replica of the group in turn.
    Stale,
}

impl From<Consistency> for pb::Consistency {
    fn from(consistency: Consistency) -> Self {
        match consistency {
            Consistency::Linearizable => Self::Linearizable,
            Consistency::Lease => Self::Lease,
            Consistency::Stale => Self::Stale,
        }
    }
}

/// What a conditional write ([`Client::compare_and_set`], [`Client::compare_and_delete`])
/// did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cas {
    /// It took effect; the key's version after it (for a delete, the shard's revision after
    /// it).
    Written {
        /// The version.
        version: u64,
    },
    /// The key's version was not the one expected: nothing changed.
    Failed {
        /// The key's version when the write was applied (0: absent).
        current: u64,
    },
}

impl Cas {
    fn of(response: &pb::WriteResponse) -> Self {
        if response.condition_failed {
            Self::Failed { current: response.version }
        } else {
            Self::Written { version: response.version }
        }
    }
}

/// How a client retries and how long it waits. Every field is a named bound; see
/// [`ClientOptions::validate`] for what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long one operation may take, all retries included. Default 10 s.
    pub timeout: Duration,
    /// How long one attempt (one RPC) may take before the client gives up on that node.
    /// Default 2 s.
    pub attempt_timeout: Duration,
    /// How long opening a connection may take. Keep it below `attempt_timeout`: a connection
    /// that was never made proves the request was not sent, a timed-out attempt does not.
    /// Default 1 s.
    pub connect_timeout: Duration,
    /// The ceiling of the first pause between retries. Default 10 ms.
    pub backoff_initial: Duration,
    /// The largest pause between retries. Default 500 ms.
    pub backoff_max: Duration,
    /// The largest message the client sends or accepts, in bytes. Default 64 MiB.
    pub message_bytes_max: usize,
    /// Seeds the backoff jitter; `None` seeds it from the operating system. Set it for
    /// reproducible schedules (simulation, tests).
    pub jitter_seed: Option<u64>,
    /// The certificate, key and CA to connect with (mutual TLS); `None`: plaintext.
    pub tls: Option<Tls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            message_bytes_max: 64 << 20,
            jitter_seed: None,
            tls: None,
        }
    }
}

impl ClientOptions {
    /// Checks that the options can be used.
    ///
    /// # Errors
    /// [`ClientError::InvalidOptions`] when a timeout, a pause or the message size is zero, or
    /// `backoff_initial` exceeds `backoff_max`.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(ClientError::InvalidOptions { reason });
        for (name, value) in [
            ("timeout", self.timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
        ] {
            if value.is_zero() {
                return invalid(format!("{name} is zero"));
            }
        }
        if self.backoff_initial > self.backoff_max {
            return invalid(format!(
                "backoff_initial {:?} exceeds backoff_max {:?}",
                self.backoff_initial, self.backoff_max
            ));
        }
        if self.message_bytes_max == 0 {
            return invalid("message_bytes_max is zero".to_string());
        }
        Ok(())
    }
}

/// A client of a Mosaic cluster. Cheap to clone (clones share connections, routing and
/// sessions) and safe to use from many tasks at once.
pub struct Client<S = StaticRouting> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Client<S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

pub(crate) struct Inner<S> {
    source: S,
    pub(crate) options: ClientOptions,
    /// The placement operations route by; `None` until first loaded.
    routing: Mutex<Option<Arc<Routing>>>,
    /// Held while asking the source, so that concurrent refreshes ask it once.
    refreshing: tokio::sync::Mutex<()>,
    /// One channel per node address.
    channels: Channels,
    /// The node believed to lead each group.
    pub(crate) leaders: Mutex<Leaders>,
    sessions: SessionPool,
    /// Seeds each operation's backoff jitter.
    pub(crate) jitter_seeds: JitterSeeds,
    /// Counts stale reads, so that each goes first to the next replica of its group: any
    /// replica serves them, and they spread the load over all of them.
    stale_reads: AtomicUsize,
}

/// A successful answer.
enum Reply {
    Get(pb::GetResponse),
    Write(pb::WriteResponse),
    Batch(pb::BatchResponse),
    Scan(pb::ScanResponse),
}

/// Locks `mutex`, whose data stays valid after a panic (each critical section of this
/// crate's std mutexes is one insert, remove or replace).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: RoutingSource> Client<S> {
    /// A client that routes by the placements `source` gives. Connects to nothing yet: the
    /// first operation loads the placement and opens connections as it needs them.
    ///
    /// # Errors
    /// [`ClientError::InvalidOptions`] when `options` do not [validate](ClientOptions::validate);
    /// [`ClientError::Randomness`] when no jitter seed is given and the operating system cannot
    /// provide one.
    pub fn new(source: S, options: ClientOptions) -> Result<Self> {
        options.validate()?;
        let jitter_seeds = JitterSeeds::new(options.jitter_seed)?;
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                channels: Channels::new(options.connect_timeout, options.tls.clone()),
                options,
                routing: Mutex::new(None),
                refreshing: tokio::sync::Mutex::new(()),
                leaders: Mutex::new(Leaders::default()),
                sessions: SessionPool::default(),
                jitter_seeds,
                stale_reads: AtomicUsize::new(0),
            }),
        })
    }

    /// The options the client was built with.
    #[must_use]
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Loads the placement now, within the options' timeout, rather than at the first
    /// operation: a source that cannot answer (controllers down, wrong addresses) is found
    /// at start, and the first operation does not wait for it. Returns the placement loaded
    /// (or the one already held).
    ///
    /// # Errors
    /// What loading the placement at an operation's start fails with: the source's error, or
    /// [`ClientError::Timeout`] when it gave none within the timeout.
    pub async fn warm_up(&self) -> Result<Arc<Routing>> {
        self.inner.routing(Instant::now() + self.inner.options.timeout).await
    }

    /// The placement the client routes by now (it follows newer ones as nodes report them),
    /// `None` before the first is loaded.
    #[must_use]
    pub fn routing(&self) -> Option<Arc<Routing>> {
        lock(&self.inner.routing).clone()
    }

    /// Returns the value of `key`, or `None` when it has none, read at `consistency`.
    ///
    /// # Errors
    /// See [`ClientError`]; a failed read's outcome is always [`WriteOutcome::NotApplied`].
    pub async fn get(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key, consistency).await?.map(|read| read.value))
    }

    /// Returns the value of `key` and its version (what [`Client::compare_and_set`] compares),
    /// or `None` when it has no value, read at `consistency`.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn get_versioned(
        &self,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<Versioned>> {
        match self.inner.execute(Operation::Get { key: key.into(), consistency }).await? {
            Reply::Get(response) => Ok(response
                .found
                .then_some(Versioned { value: response.value, version: response.version })),
            Reply::Write(_) | Reply::Batch(_) | Reply::Scan(_) => {
                unreachable!("a get is answered by a GetResponse")
            }
        }
    }

    /// Sets `key` to `value`; returns the log index at which the write was applied.
    ///
    /// # Errors
    /// See [`ClientError`]; [`ClientError::outcome`] says whether the write may have been
    /// applied.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<LogIndex> {
        let put = Operation::Put { key: key.into(), value: value.into(), condition: None };
        Ok(LogIndex(self.write(put).await?.index))
    }

    /// Appends `value` to the value of `key` (an absent key counts as empty); returns the log
    /// index at which the write was applied.
    ///
    /// # Errors
    /// As [`Client::put`].
    pub async fn append(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<LogIndex> {
        let append = Operation::Append { key: key.into(), value: value.into(), condition: None };
        Ok(LogIndex(self.write(append).await?.index))
    }

    /// Removes `key` (removing an absent key succeeds); returns the log index at which the
    /// write was applied.
    ///
    /// # Errors
    /// As [`Client::put`].
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<LogIndex> {
        let delete = Operation::Delete { key: key.into(), condition: None };
        Ok(LogIndex(self.write(delete).await?.index))
    }

    /// Sets `key` to `value` only if the key's version is `expected_version` (0: only if the
    /// key has no value, a create); says whether it did. Exactly once like every write: a
    /// retry after a lost answer hears what the first attempt did, or, when the group no
    /// longer keeps the session that would say so, fails with an unknown outcome
    /// ([`ClientError::SessionExpired`]) rather than answer from the version its own first
    /// attempt may have written.
    ///
    /// # Errors
    /// As [`Client::put`].
    pub async fn compare_and_set(
        &self,
        key: impl Into<Bytes>,
        expected_version: u64,
        value: impl Into<Bytes>,
    ) -> Result<Cas> {
        let condition = Some(expected_version);
        let put = Operation::Put { key: key.into(), value: value.into(), condition };
        let response = self.write(put).await?;
        if !response.condition_failed && response.version == 0 {
            // Every put that takes effect gives the key a version of at least 1: this node
            // ignored the condition (a release without versions) and wrote unconditionally.
            return Err(ClientError::MalformedResponse {
                reason: "a conditional put answered as written without a version: the node \
                         does not know conditional writes (an older release)"
                    .into(),
                outcome: WriteOutcome::Unknown,
            });
        }
        Ok(Cas::of(&response))
    }

    /// Removes `key` only if its version is `expected_version`; says whether it did. The
    /// version a taken delete answers is the shard's revision after it.
    ///
    /// # Errors
    /// As [`Client::put`].
    pub async fn compare_and_delete(
        &self,
        key: impl Into<Bytes>,
        expected_version: u64,
    ) -> Result<Cas> {
        let delete = Operation::Delete { key: key.into(), condition: Some(expected_version) };
        Ok(Cas::of(&self.write(delete).await?))
    }

    async fn write(&self, operation: Operation) -> Result<pb::WriteResponse> {
        match self.inner.execute(operation).await? {
            Reply::Write(response) => Ok(response),
            Reply::Get(_) | Reply::Batch(_) | Reply::Scan(_) => {
                unreachable!("a write is answered by a WriteResponse")
            }
        }
    }

    /// Runs an atomic batch: if every condition holds, every write takes effect, at one new
    /// revision of the keys' shard; otherwise nothing changes and the answer names the first
    /// condition that did not hold. Exactly once like every write (as
    /// [`Client::compare_and_set`] for a batch with conditions).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] (not applied, nothing sent) for a batch without a
    /// write, or whose keys are not all in one shard (give them one hash tag: docs/api.md);
    /// otherwise as [`Client::put`].
    pub async fn batch(&self, batch: Batch) -> Result<BatchOutcome> {
        let refuse = |reason: String| ClientError::InvalidArgument {
            reason,
            outcome: WriteOutcome::NotApplied,
        };
        if batch.writes.is_empty() {
            return Err(refuse("a batch needs a write".into()));
        }
        let shard_count = self.warm_up().await?.shard_count();
        batch.check_one_shard(shard_count).map_err(refuse)?;
        let Batch { conditions, writes } = batch;
        match self.inner.execute(Operation::Batch { conditions, writes }).await? {
            Reply::Batch(response) => Ok(BatchOutcome::of(&response)),
            Reply::Get(_) | Reply::Write(_) | Reply::Scan(_) => {
                unreachable!("a batch is answered by a BatchResponse")
            }
        }
    }

    /// Reads a page of the keys in `range`, in key order, from every shard that may hold
    /// some (in parallel, `options.parallel` at a time); [`ScanPage::next`] is the rest of
    /// the range. Each shard's part of a page is read at one point in time at
    /// `options.consistency`; the parts are not one snapshot of the whole store, and keys
    /// written between pages may or may not be seen (docs/api.md "Scans").
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] (nothing sent) for options that cannot scan (a limit
    /// of 0 or above 10,000 keys, no bytes, no parallelism); a shard that cannot be read
    /// fails the page as [`Client::get`] fails ([`ClientError::WrongShard`] when the client's
    /// shard count is not the cluster's). A range that ends before it starts holds no key:
    /// its page is empty and nothing is sent.
    pub async fn scan(&self, range: &ScanRange, options: ScanOptions) -> Result<ScanPage> {
        if let Some(reason) = options.refusal() {
            return Err(ClientError::InvalidArgument { reason, outcome: WriteOutcome::NotApplied });
        }
        if range.is_empty() {
            return Ok(ScanPage::default());
        }
        let shard_count = self.warm_up().await?.shard_count();
        let shards = range.shards(shard_count);
        let (limit, limit_bytes) = options.per_shard(shards.len());
        let reads = shards.into_iter().map(|shard| {
            let scan = ShardScan {
                shard,
                shard_count,
                start: range.start().clone(),
                end: range.end().cloned(),
                limit,
                limit_bytes,
                keys_only: options.keys_only,
                consistency: options.consistency,
            };
            async move {
                match self.inner.execute(Operation::Scan(scan)).await? {
                    Reply::Scan(response) => Ok(response),
                    Reply::Get(_) | Reply::Write(_) | Reply::Batch(_) => {
                        unreachable!("a scan is answered by a ScanResponse")
                    }
                }
            }
        });
        let answers: Vec<pb::ScanResponse> = futures_util::stream::iter(reads)
            .buffer_unordered(options.parallel)
            .try_collect()
            .await?;
        Ok(scan::merge(range, answers, options.limit, options.limit_bytes))
    }

    /// Watches the keys of `range`: every change from the revisions `options` names (for
    /// each shard not named, from the changes after the watch is registered: it returns
    /// once every shard's is), each shard's in revision order, across leader changes and
    /// shard moves (see [`Watch`]).
    ///
    /// # Errors
    /// What loading the placement fails with, or what a shard's first stream failed with
    /// (`Compacted`, say), or a timeout when not every shard's stream was registered within
    /// the options' timeout; a watch's later failures come from [`Watch::next`].
    pub async fn watch(&self, range: &ScanRange, options: WatchOptions) -> Result<Watch> {
        let shard_count = self.warm_up().await?.shard_count();
        watch::start(&self.inner, range, shard_count, &options).await
    }

    /// How many session lanes the client has created (at most its peak number of concurrent
    /// writes).
    #[cfg(test)]
    fn lanes_created(&self) -> usize {
        self.inner.sessions.lanes_created()
    }
}

impl<S: RoutingSource> Inner<S> {
    /// Runs one operation to its final answer or its deadline.
    async fn execute(&self, operation: Operation) -> Result<Reply> {
        let options = &self.options;
        let deadline = Instant::now() + options.timeout;
        // The lease is held to the end of the operation, whatever its outcome.
        let mut lease: Option<LaneLease<'_>> =
            if operation.is_write() { Some(self.sessions.checkout()?) } else { None };
        let prepared = Prepared::new(operation, lease.as_mut().map(LaneLease::next_session));
        let operation = prepared.operation();
        let mut progress = Progress::new(operation.is_write());
        let mut backoff = self.jitter_seeds.backoff(options.backoff_initial, options.backoff_max);
        let mut routing = self.routing(deadline).await?;
        let mut next_target: Option<Target> = None;
        let mut retry = Retry::default();
        // Whether the placement was refreshed because the key's shard had no owner.
        let mut refreshed_for_unassigned = false;

        loop {
            let shard = operation.shard(routing.shard_count());
            let Some(group) = routing.group_of(shard) else {
                // The placement may predate the shard's first owner: ask once more, at once
                // (no node refused anything), then give up with an answer that says why.
                if refreshed_for_unassigned {
                    return Err(ClientError::ShardUnassigned {
                        shard,
                        config_num: routing.config_num(),
                        outcome: progress.outcome(),
                    });
                }
                refreshed_for_unassigned = true;
                next_target = None;
                routing = self.refresh(&routing, deadline).await;
                continue;
            };
            let route = Route { group, shard, config_num: routing.config_num() };
            let target = next_target.take().unwrap_or_else(|| {
                if operation.any_replica_serves() {
                    let members = routing.members(group);
                    let turn = self.stale_reads.fetch_add(1, Ordering::Relaxed);
                    Target::member(&routing, members[turn % members.len()])
                } else {
                    lock(&self.leaders).preferred(&routing, group)
                }
            });
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(progress.timed_out(options.timeout));
            }

            progress.attempts += 1;
            let attempt_timeout = options.attempt_timeout.min(remaining);
            let expects_session = retry::expects_session(
                lease.as_ref().is_some_and(|lease| lease.knows_session(shard)),
                operation.is_conditional(),
                progress.may_have_applied(),
            );
            let request = prepared.request(route, expects_session);
            let sent = self.send(&target, request, attempt_timeout);
            let failure = match tokio::time::timeout(attempt_timeout, sent).await {
                Ok(Ok(reply)) => {
                    if let Some(lease) = lease.as_mut() {
                        lease.session_exists(shard);
                    }
                    if operation.success_proves_leader() {
                        lock(&self.leaders).remember(&routing, group, target.node);
                    }
                    return Ok(reply);
                }
                Ok(Err(failure)) => failure,
                Err(_elapsed) => Failure::AttemptTimedOut,
            };
            progress
                .record_failure(&failure, &format!("node {} at {}", target.node, target.address));
            tracing::debug!(
                operation = operation.name(),
                group_id = %group,
                peer = %target.node,
                attempt = progress.attempts,
                %failure,
                "attempt failed"
            );
            if failure.action() == Action::RenewSession
                && let Some(lease) = lease.as_mut()
            {
                // The session is gone: the lane's next write starts a new one (found in
                // review: a lane that kept expecting it was refused on every write).
                lease.session_expired(shard);
            }
            let next = retry.after(
                &failure,
                &routing,
                &mut lock(&self.leaders),
                group,
                target,
                progress.may_have_applied(),
            );
            let Next::Retry { target, pause, refresh } = next else {
                return Err(progress.failed(failure));
            };
            next_target = target;
            if pause {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(progress.timed_out(options.timeout));
                }
                tokio::time::sleep(backoff.next_pause().min(remaining)).await;
            }
            if let Some(Refresh { at_least, skip }) = refresh {
                routing = self.refresh_to(&routing, at_least, deadline, &mut backoff).await;
                if let Some(node) = skip {
                    let shard = operation.shard(routing.shard_count());
                    next_target =
                        routing.group_of(shard).map(|group| next_member(&routing, group, node));
                }
            }
        }
    }

    /// Sends one attempt and returns the node's answer.
    async fn send(
        &self,
        target: &Target,
        request: WireRequest,
        attempt_timeout: Duration,
    ) -> std::result::Result<Reply, Failure> {
        let mut client = self.kv_client(target)?;
        let result = match request {
            WireRequest::Get(request) => client
                .get(with_timeout(request, attempt_timeout))
                .await
                .map(|response| Reply::Get(response.into_inner())),
            WireRequest::Put(request) => client
                .put(with_timeout(request, attempt_timeout))
                .await
                .map(|response| Reply::Write(response.into_inner())),
            WireRequest::Append(request) => client
                .append(with_timeout(request, attempt_timeout))
                .await
                .map(|response| Reply::Write(response.into_inner())),
            WireRequest::Delete(request) => client
                .delete(with_timeout(request, attempt_timeout))
                .await
                .map(|response| Reply::Write(response.into_inner())),
            WireRequest::Batch(request) => client
                .batch(with_timeout(request, attempt_timeout))
                .await
                .map(|response| Reply::Batch(response.into_inner())),
            WireRequest::Scan(request) => client
                .scan(with_timeout(request, attempt_timeout))
                .await
                .map(|response| Reply::Scan(response.into_inner())),
        };
        result.map_err(|status| classify_status(&status))
    }

    /// A `Kv` client of `target` over the client's channel to it, within the client's message
    /// limit.
    pub(crate) fn kv_client(
        &self,
        target: &Target,
    ) -> std::result::Result<KvClient<tonic::transport::Channel>, Failure> {
        let channel = self.channels.get(&target.address).map_err(|message| {
            Failure::ConnectFailed { message: format!("unusable address: {message}") }
        })?;
        let limit = self.options.message_bytes_max;
        Ok(KvClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit))
    }

    /// The placement to route by, loaded from the source on first use.
    pub(crate) async fn routing(&self, deadline: Instant) -> Result<Arc<Routing>> {
        if let Some(routing) = lock(&self.routing).clone() {
            return Ok(routing);
        }
        let load = async {
            let _refreshing = self.refreshing.lock().await;
            if let Some(routing) = lock(&self.routing).clone() {
                return Ok(routing);
            }
            let routing = self.source.latest().await?;
            Ok(self.install(routing))
        };
        match tokio::time::timeout_at(deadline, load).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout {
                outcome: WriteOutcome::NotApplied,
                timeout: self.options.timeout,
                attempts: 0,
                last_failure: "the routing source gave no placement".to_string(),
            }),
        }
    }

    /// Asks the source for a newer placement than `stale`, and returns the one to route by
    /// now: the source's if it is not older, else the current one. Asks only if no other
    /// operation has replaced `stale` meanwhile.
    pub(crate) async fn refresh(&self, stale: &Arc<Routing>, deadline: Instant) -> Arc<Routing> {
        let refresh = async {
            let _refreshing = self.refreshing.lock().await;
            let current = lock(&self.routing).clone().unwrap_or_else(|| Arc::clone(stale));
            if !Arc::ptr_eq(&current, stale) {
                return current;
            }
            match self.source.latest().await {
                Ok(latest) if latest.config_num() >= current.config_num() => self.install(latest),
                Ok(older) => {
                    tracing::debug!(
                        config_num = older.config_num(),
                        current_config_num = current.config_num(),
                        "the routing source gave an older placement; keeping the current one"
                    );
                    current
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot refresh the routing; keeping the current one");
                    current
                }
            }
        };
        tokio::time::timeout_at(deadline, refresh).await.unwrap_or_else(|_| Arc::clone(stale))
    }

    /// Refreshes `stale` ([`Inner::refresh`]) until the placement is of configuration
    /// `at_least` or later, pausing by `backoff` between two asks, or until the deadline;
    /// returns the placement to route by now (older than `at_least` only at the deadline).
    ///
    /// Resending to a group of a placement older than a configuration some node has applied
    /// only earns another `WrongGroup`, so the client asks the source again rather than the
    /// nodes: a source that lags (or keeps failing) is asked again after each pause, and the
    /// operation ends by its deadline.
    pub(crate) async fn refresh_to(
        &self,
        stale: &Arc<Routing>,
        at_least: u64,
        deadline: Instant,
        backoff: &mut Backoff<SmallRng>,
    ) -> Arc<Routing> {
        let mut routing = self.refresh(stale, deadline).await;
        while routing.config_num() < at_least {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            tracing::debug!(
                config_num = routing.config_num(),
                at_least,
                "the routing source has no placement as new as a node's; asking again"
            );
            tokio::time::sleep(backoff.next_pause().min(remaining)).await;
            routing = self.refresh(&routing, deadline).await;
        }
        routing
    }

    /// Routes by `routing` from now on; drops the channels and leader hints it makes stale.
    fn install(&self, routing: Routing) -> Arc<Routing> {
        let routing = Arc::new(routing);
        self.channels.retain(|address| routing.nodes().values().any(|a| a == address));
        lock(&self.leaders).retain_members(&routing);
        *lock(&self.routing) = Some(Arc::clone(&routing));
        routing
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mosaic_engine::GroupId;
    use mosaic_raft::NodeId;
    use mosaic_types::shard_for_key;

    use super::*;
    use crate::testing::fake_node::{FakeNode, session_expired};
    use crate::testing::{closed_port_address, silent_listener};

    fn fast_options() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_millis(400),
            attempt_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(50),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            jitter_seed: Some(1),
            ..ClientOptions::default()
        }
    }

    fn client_of(addresses: &[String], options: ClientOptions) -> Client {
        let nodes: BTreeMap<NodeId, String> =
            (1u64..).zip(addresses).map(|(id, address)| (NodeId(id), address.clone())).collect();
        let routing = Routing::single_group(GroupId(1), nodes, 8).unwrap();
        Client::new(StaticRouting::new(routing), options).unwrap()
    }

    fn routing_of(members: &[u64]) -> Routing {
        let nodes = members.iter().map(|id| (NodeId(*id), format!("h{id}:1"))).collect();
        Routing::single_group(GroupId(1), nodes, 1).unwrap()
    }

    /// A lane says it expects its session in a shard once a write of it there was answered;
    /// told the session expired, it sends the write again without (a new session starts).
    #[tokio::test]
    async fn a_lane_expects_its_session_where_it_wrote_and_renews_an_expired_one() {
        let node = FakeNode::start().await;
        let client = client_of(&[node.address()], fast_options());
        client.put("k", "1").await.unwrap();
        client.put("k", "2").await.unwrap();
        node.refuse_next(session_expired());
        client.put("k", "3").await.unwrap();
        client.put("k", "4").await.unwrap();
        let expected: Vec<bool> = node.received().iter().map(|r| r.expects_session).collect();
        assert_eq!(expected, [false, true, true, false, true]);
        let value = client.get("k", Consistency::Linearizable).await.unwrap();
        assert_eq!(value.as_deref(), Some(&b"4"[..]));
    }

    /// An earlier attempt may have been applied before the session was evicted: the write
    /// is not sent again (it could apply twice) and ends with an unknown outcome.
    #[tokio::test]
    async fn an_expired_session_after_an_attempt_that_may_have_applied_leaves_the_outcome_unknown()
    {
        let node = FakeNode::start().await;
        let client = client_of(&[node.address()], fast_options());
        client.put("k", "1").await.unwrap();
        let unknown = pb::OutcomeUnknown { leader_node: None, leader_address: String::new() };
        node.refuse_next(pb::error_detail::Kind::OutcomeUnknown(unknown));
        node.refuse_next(session_expired());
        let error = client.put("k", "2").await.unwrap_err();
        assert_eq!(error, ClientError::SessionExpired { outcome: WriteOutcome::Unknown });
        assert_eq!(node.received().len(), 3, "{:?}", node.received());
        // The lane starts a new session with its next write.
        client.put("k", "3").await.unwrap();
        let expected: Vec<bool> = node.received().iter().map(|r| r.expects_session).collect();
        assert_eq!(expected, [false, true, true, false]);
    }

    /// A conditional write retried after an attempt that may have applied expects its
    /// session, even on a lane that never wrote the shard: a group that no longer has it
    /// answers `SessionExpired`, and the write ends unknown instead of answering "failed"
    /// from the version its own first attempt may have written.
    #[tokio::test]
    async fn a_retried_conditional_write_expects_its_session_and_ends_unknown_without_it() {
        let node = FakeNode::start().await;
        let client = client_of(&[node.address()], fast_options());
        let unknown = pb::OutcomeUnknown { leader_node: None, leader_address: String::new() };
        node.refuse_next(pb::error_detail::Kind::OutcomeUnknown(unknown.clone()));
        node.refuse_next(session_expired());
        let error = client.compare_and_set("k", 0, "mine").await.unwrap_err();
        assert_eq!(error, ClientError::SessionExpired { outcome: WriteOutcome::Unknown });
        let expected: Vec<bool> = node.received().iter().map(|r| r.expects_session).collect();
        assert_eq!(expected, [false, true]);
        // Where the session is kept, the retry is answered.
        node.refuse_next(pb::error_detail::Kind::OutcomeUnknown(unknown.clone()));
        assert_eq!(client.compare_and_set("k", 0, "mine").await, Ok(Cas::Written { version: 1 }));
        assert_eq!(client.compare_and_set("k", 0, "again").await, Ok(Cas::Failed { current: 1 }));
        let expected: Vec<bool> = node.received().iter().map(|r| r.expects_session).collect();
        assert_eq!(expected, [false, true, false, true, true]);
        // A plain write's retry does not expect a session its lane never had.
        let fresh = client_of(&[node.address()], fast_options());
        node.refuse_next(pb::error_detail::Kind::OutcomeUnknown(unknown));
        fresh.put("k", "v").await.unwrap();
        let expected: Vec<bool> = node.received().iter().map(|r| r.expects_session).collect();
        assert_eq!(expected[5..], [false, false]);
    }

    /// A batch goes to its keys' shard as one request and answers what the group did; one
    /// without a write, or whose keys are in two shards, is refused before anything is sent.
    #[tokio::test]
    async fn a_batch_is_one_request_to_its_shard_and_a_batch_across_shards_is_refused() {
        let node = FakeNode::start().await;
        let client = client_of(&[node.address()], fast_options());
        let created = Batch::new().expect_version("{u}:a", 0).put("{u}:a", "1").put("{u}:b", "2");
        assert_eq!(client.batch(created.clone()).await, Ok(BatchOutcome::Written { revision: 1 }));
        assert_eq!(
            client.batch(created).await,
            Ok(BatchOutcome::Failed { condition: 0, current: 1 })
        );
        let next = Batch::new().expect_version("{u}:a", 1).append("{u}:a", "x").delete("{u}:b");
        assert_eq!(client.batch(next).await, Ok(BatchOutcome::Written { revision: 3 }));
        let read = client.get("{u}:a", Consistency::Linearizable).await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"1x"[..]));
        assert_eq!(client.get("{u}:b", Consistency::Linearizable).await.unwrap(), None);
        let methods: Vec<&str> = node.received().iter().map(|r| r.method).collect();
        assert_eq!(methods, ["batch", "batch", "batch", "get", "get"]);
        let shard = shard_for_key(b"u", 8);
        assert!(node.received()[..3].iter().all(|r| r.shard == shard), "{:?}", node.received());

        let sent = node.received().len();
        let no_write = client.batch(Batch::new().expect_version("k", 0)).await.unwrap_err();
        assert!(matches!(no_write, ClientError::InvalidArgument { .. }), "{no_write:?}");
        // Some key of those two is in another shard of the eight.
        let (a, b) = (0..)
            .map(|n| (Bytes::from("a"), Bytes::from(format!("b{n}"))))
            .find(|(a, b)| shard_for_key(a, 8) != shard_for_key(b, 8))
            .unwrap();
        let across = client.batch(Batch::new().put(a, "1").put(b, "2")).await.unwrap_err();
        let ClientError::InvalidArgument { reason, outcome } = across else { panic!("{across:?}") };
        assert!(reason.contains("must be in one shard"), "{reason}");
        assert_eq!(outcome, WriteOutcome::NotApplied);
        assert_eq!(node.received().len(), sent, "nothing sent");
    }

    /// A scan asks every shard of the range for a share of the page and merges the answers
    /// in key order; following `next` reads every key once; a prefix holding a whole hash tag
    /// asks one shard; a stale scan may go to any replica.
    #[tokio::test]
    async fn a_scan_pages_through_every_shard_in_key_order() {
        let node = FakeNode::start().await;
        node.scan_shards_of(8);
        let client = client_of(&[node.address()], fast_options());
        let mut written = Vec::new();
        for n in 0..50 {
            let key = format!("key-{n:02}");
            client.put(key.clone(), format!("value {n:02}")).await.unwrap();
            written.push(key);
        }
        client.put("other", "x").await.unwrap();
        let sent = node.received().len();
        let options = ScanOptions { limit: 20, ..ScanOptions::default() };
        let (mut read, mut pages) = (Vec::new(), 0);
        let mut range = Some(ScanRange::prefix("key-"));
        while let Some(current) = range {
            let page = client.scan(&current, options).await.unwrap();
            assert!(!page.entries.is_empty() && page.entries.len() <= 20, "{page:?}");
            read.extend(page.entries.iter().map(|entry| {
                let key = String::from_utf8(entry.key.to_vec()).unwrap();
                assert_eq!(entry.value, Bytes::from(format!("value {}", &key[4..])));
                key
            }));
            range = page.next;
            pages += 1;
        }
        assert_eq!(read, written, "every key once, in order");
        let scans = &node.received()[sent..];
        assert_eq!(scans.len(), pages * 8, "each page asks the eight shards");
        let shards: std::collections::BTreeSet<u32> = scans.iter().map(|r| r.shard.0).collect();
        assert_eq!(shards.len(), 8);

        let sent = node.received().len();
        client.put("{t}a", "1").await.unwrap();
        let options = ScanOptions { keys_only: true, ..ScanOptions::default() };
        let page = client.scan(&ScanRange::prefix("{t}"), options).await.unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!((page.entries[0].value.is_empty(), page.next), (true, None));
        let scans: Vec<_> = node.received()[sent + 1..].to_vec();
        assert_eq!(scans.len(), 1, "one shard holds the tag: {scans:?}");
        assert_eq!(scans[0].shard, shard_for_key(b"t", 8));

        let refused = client.scan(&ScanRange::all(), ScanOptions { limit: 0, ..options }).await;
        assert!(matches!(refused, Err(ClientError::InvalidArgument { .. })), "{refused:?}");
        let empty = ScanRange::between("b", Some(Bytes::from("a")));
        assert_eq!(client.scan(&empty, options).await, Ok(ScanPage::default()));
    }

    /// A node of a release without versions ignores the condition and writes: the client
    /// says the outcome is unknown instead of reporting a compare-and-set that took effect.
    #[tokio::test]
    async fn a_conditional_put_answered_without_a_version_is_not_taken_as_written() {
        let node = FakeNode::start().await;
        node.forget_versions();
        let client = client_of(&[node.address()], fast_options());
        let error = client.compare_and_set("k", 7, "v").await.unwrap_err();
        assert!(
            matches!(error, ClientError::MalformedResponse { outcome: WriteOutcome::Unknown, .. }),
            "{error:?}"
        );
    }

    /// Stale reads go to every replica in turn (any replica serves them); linearizable ones
    /// to the leader the client knows, which a success proves.
    #[tokio::test]
    async fn stale_reads_spread_over_the_replicas_and_linearizable_ones_go_to_the_leader() {
        let nodes = [FakeNode::start().await, FakeNode::start().await, FakeNode::start().await];
        let addresses: Vec<String> = nodes.iter().map(FakeNode::address).collect();
        let client = client_of(&addresses, fast_options());
        for _ in 0..6 {
            client.get("k", Consistency::Stale).await.unwrap();
        }
        let gets: Vec<usize> = nodes.iter().map(|node| node.received().len()).collect();
        assert_eq!(gets, [2, 2, 2]);
        for _ in 0..3 {
            client.get("k", Consistency::Linearizable).await.unwrap();
        }
        let gets: Vec<usize> = nodes.iter().map(|node| node.received().len()).collect();
        assert_eq!(gets.iter().sum::<usize>(), 9);
        assert_eq!(gets.iter().filter(|count| **count == 2).count(), 2, "one node took them all");
    }

    /// `warm_up` loads the placement before any operation and shows it; `routing` is empty
    /// until then.
    #[tokio::test]
    async fn warm_up_loads_the_placement_that_routing_then_shows() {
        let node = FakeNode::start().await;
        let client = client_of(&[node.address()], fast_options());
        assert!(client.routing().is_none());
        let loaded = client.warm_up().await.unwrap();
        assert_eq!(loaded.members(GroupId(1)), [NodeId(1)]);
        assert_eq!(client.routing().as_deref(), Some(&*loaded));
        assert!(node.received().is_empty(), "no request was sent");
    }

    #[test]
    fn default_options_are_the_documented_ones() {
        let options = ClientOptions::default();
        assert_eq!(options.timeout, Duration::from_secs(10));
        assert_eq!(options.attempt_timeout, Duration::from_secs(2));
        assert_eq!(options.backoff_initial, Duration::from_millis(10));
        assert_eq!(options.backoff_max, Duration::from_millis(500));
        options.validate().unwrap();
    }

    #[test]
    fn inconsistent_options_are_refused() {
        let zero_timeout = ClientOptions { timeout: Duration::ZERO, ..ClientOptions::default() };
        let inverted = ClientOptions {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_millis(1),
            ..ClientOptions::default()
        };
        let no_messages = ClientOptions { message_bytes_max: 0, ..ClientOptions::default() };
        for options in [zero_timeout, inverted, no_messages] {
            let error = options.validate().unwrap_err();
            assert!(matches!(error, ClientError::InvalidOptions { .. }), "{options:?}: {error}");
            let routing = StaticRouting::new(routing_of(&[1]));
            assert!(Client::new(routing, options).is_err());
        }
    }

    #[tokio::test]
    async fn a_write_no_node_accepts_a_connection_for_was_not_applied() {
        let addresses = [closed_port_address().await, closed_port_address().await];
        let client = client_of(&addresses, fast_options());
        let error = client.put("k", "v").await.unwrap_err();
        let ClientError::Timeout { outcome, attempts, ref last_failure, .. } = error else {
            panic!("expected a timeout, got {error:?}");
        };
        assert_eq!(outcome, WriteOutcome::NotApplied, "{error}");
        assert!(attempts >= 2, "{error}");
        assert!(last_failure.contains("cannot connect"), "{error}");
        assert_eq!(error.outcome(), WriteOutcome::NotApplied);
    }

    #[tokio::test]
    async fn a_write_sent_to_a_node_that_never_answers_has_an_unknown_outcome() {
        let (address, _listener) = silent_listener().await;
        let client = client_of(&[address], fast_options());
        let error = client.append("k", "v").await.unwrap_err();
        assert!(
            matches!(error, ClientError::Timeout { outcome: WriteOutcome::Unknown, .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_never_an_unknown_outcome() {
        let (address, _listener) = silent_listener().await;
        let client = client_of(&[address], fast_options());
        let error = client.get("k", Consistency::Linearizable).await.unwrap_err();
        assert!(
            matches!(error, ClientError::Timeout { outcome: WriteOutcome::NotApplied, .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn every_operation_ends_by_its_deadline() {
        let (address, _listener) = silent_listener().await;
        let options = fast_options();
        let client = client_of(&[address], options.clone());
        let started = std::time::Instant::now();
        let _ = client.delete("k").await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= options.timeout && elapsed < options.timeout + Duration::from_millis(300),
            "took {elapsed:?} with a deadline of {:?}",
            options.timeout
        );
    }

    #[tokio::test]
    async fn concurrent_writes_use_no_more_lanes_than_their_peak() {
        let address = closed_port_address().await;
        let client = client_of(&[address], fast_options());
        let writes: Vec<_> = (0..3)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.put(format!("k{i}"), "v").await })
            })
            .collect();
        for write in writes {
            assert!(write.await.unwrap().is_err());
        }
        assert_eq!(client.lanes_created(), 3);
        // Sequential writes afterwards reuse the returned lanes.
        let _ = client.delete("k").await;
        let _ = client.delete("k").await;
        assert_eq!(client.lanes_created(), 3);
    }

    #[test]
    fn clients_and_their_operations_can_cross_tasks() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        fn assert_send<T: Send>(_: &T) {}
        assert_send_sync::<Client>();
        let client = Client::new(StaticRouting::new(routing_of(&[1])), fast_options()).unwrap();
        assert_send(&client.put("k", "v"));
        assert_send(&client.get("k", Consistency::Stale));
    }
}
