//! Watches through the client ([`crate::Client::watch`]): the changes to the keys of a range,
//! shard by shard, each shard's in revision order, following each shard wherever it moves.
//!
//! One task per shard of the range (one for a prefix that holds a whole hash tag) keeps a
//! `Kv.Watch` stream open at a replica of the group that owns it (the leader, unless stale),
//! and knows the next revision it needs ([`Watch::resume_from`]). [`crate::Client::watch`]
//! returns once every shard's first stream is registered, so a watch of the changes after
//! now sees every write made after it returns. A revision comes to the reader only once its
//! stream has sent all of it (a large one may span several messages). When a stream ends, or
//! says nothing for [`STREAM_SILENT_MAX`] (a node sends at least every 2 s), the task opens
//! another from the next revision: at the group's next owner after the shard moved (once the
//! placement shows it), at the leader a replica named, or at the next member, with the
//! client's backoff between failed attempts, for as long as it takes. So no change is
//! repeated or missed across leader changes, moves and lost connections. A replica that no
//! longer keeps the revision needed (the watcher fell behind further than the node keeps
//! changes, the shard's state was replaced by a snapshot, or the shard started over empty at
//! a new owner) ends the watch with [`ClientError::Compacted`] naming the shard: read afresh,
//! then watch from that read's revision. Revisions of different shards are not comparable:
//! the watch interleaves shards in the order their changes arrive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mosaic_engine::ShardId;
use mosaic_proto::pb;
use mosaic_proto::pb::kv_client::KvClient;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Streaming;

use crate::backoff::Backoff;
use crate::classify::{Failure, classify_detail, classify_status};
use crate::client::{Consistency, Inner, lock};
use crate::error::{ClientError, Progress, Result, WriteOutcome};
use crate::retry::{Next, Refresh, Retry, Target, next_member};
use crate::routing::RoutingSource;
use crate::scan::ScanRange;

/// Revisions a watch holds for its reader before its shards' streams wait.
const REVISIONS_AHEAD: usize = 256;

/// How long a stream may say nothing before it counts as lost: a node sends at least every
/// 2 s (`WATCH_CHECK_INTERVAL`).
pub const STREAM_SILENT_MAX: Duration = Duration::from_secs(10);

/// Where a watch starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// How the replicas serving the watch are checked: linearizable or lease, the leader;
    /// stale, any replica (which may be behind).
    pub consistency: Consistency,
    /// The revision each shard starts from (the one after the last seen, to resume); a shard
    /// not named starts with the changes after the watch begins.
    pub from: BTreeMap<ShardId, u64>,
}

/// One key's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedChange {
    /// The key.
    pub key: Bytes,
    /// Its new value; `None`: deleted.
    pub value: Option<Bytes>,
}

/// The changes one revision of a shard made to keys of the range (a batch's several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedRevision {
    /// The shard.
    pub shard: ShardId,
    /// Its revision: the changed keys' version, unless deleted.
    pub revision: u64,
    /// The changes, in the order they were made.
    pub changes: Vec<WatchedChange>,
}

/// A watch in progress: [`Watch::next`] gives its revisions. Dropping it stops its streams.
pub struct Watch {
    revisions: mpsc::Receiver<Result<WatchedRevision>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    resume: Arc<Mutex<BTreeMap<ShardId, u64>>>,
}

impl Watch {
    /// The revision each shard would resume from: the one after the last it has given or
    /// holds for [`Watch::next`], or after the last its node said it is up to date to. A new
    /// watch with these as [`WatchOptions::from`] goes on where this one is.
    #[must_use]
    pub fn resume_from(&self) -> BTreeMap<ShardId, u64> {
        lock(&self.resume).clone()
    }

    /// The next revision of a watched shard, or the error that ended the watch (after which it
    /// gives nothing more).
    pub async fn next(&mut self) -> Option<Result<WatchedRevision>> {
        let next = self.revisions.recv().await;
        if matches!(next, Some(Err(_))) {
            self.stop();
        }
        next
    }

    fn stop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.revisions.close();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts watching `range` at every shard it may hold keys of; returns once each shard's
/// first stream is registered.
///
/// # Errors
/// The first error a shard's task ends with before its stream is registered;
/// [`ClientError::Timeout`] when not every stream is registered within the options' timeout.
pub(crate) async fn start<S: RoutingSource>(
    inner: &Arc<Inner<S>>,
    range: &ScanRange,
    shard_count: u32,
    options: &WatchOptions,
) -> Result<Watch> {
    let (sender, revisions) = mpsc::channel(REVISIONS_AHEAD);
    let resume = Arc::new(Mutex::new(options.from.clone()));
    let mut registered = Vec::new();
    let tasks = range
        .shards(shard_count)
        .into_iter()
        .map(|shard| {
            let (told, registration) = oneshot::channel();
            registered.push(registration);
            let follow = ShardFollow {
                inner: Arc::clone(inner),
                shard,
                shard_count,
                start: range.start().clone(),
                end: range.end().cloned(),
                consistency: options.consistency,
                next: options.from.get(&shard).copied(),
                sender: sender.clone(),
                resume: Arc::clone(&resume),
                registered: Some(told),
            };
            tokio::spawn(follow.run())
        })
        .collect();
    let mut watch = Watch { revisions, tasks, resume };
    let timeout = inner.options.timeout;
    let all = futures_util::future::join_all(registered);
    let Ok(answers) = tokio::time::timeout(timeout, all).await else {
        return Err(ClientError::Timeout {
            outcome: WriteOutcome::NotApplied,
            timeout,
            attempts: 0,
            last_failure: "not every shard's watch stream was registered".to_string(),
        });
    };
    for answer in answers {
        match answer {
            Ok(()) => {}
            // The task ended with an error before it registered: it is the watch's.
            Err(_) => {
                // Revisions of other shards before it are dropped with the watch.
                while let Some(next) = watch.revisions.recv().await {
                    next?;
                }
            }
        }
    }
    Ok(watch)
}

/// One shard's part of a watch.
struct ShardFollow<S> {
    inner: Arc<Inner<S>>,
    shard: ShardId,
    shard_count: u32,
    start: Bytes,
    end: Option<Bytes>,
    consistency: Consistency,
    /// The next revision needed; `None` until the first stream says where "now" is.
    next: Option<u64>,
    sender: mpsc::Sender<Result<WatchedRevision>>,
    /// Where every shard of the watch resumes from ([`Watch::resume_from`]).
    resume: Arc<Mutex<BTreeMap<ShardId, u64>>>,
    /// Told once the first stream is registered (dropped unsent if the task fails first).
    registered: Option<oneshot::Sender<()>>,
}

/// How a stream ended.
enum Ended {
    /// The shard left the group: watch at its next owner.
    Moved,
    /// The replica's feed ended (reset, lagging): watch again at the same replica.
    Again,
    /// The attempt failed this way.
    Failed(Failure),
    /// The watch's reader is gone.
    Dropped,
}

impl<S: RoutingSource> ShardFollow<S> {
    async fn run(mut self) {
        let options = &self.inner.options;
        let mut backoff =
            self.inner.jitter_seeds.backoff(options.backoff_initial, options.backoff_max);
        let mut retry = Retry::default();
        let mut target: Option<Target> = None;
        loop {
            let timeout = self.inner.options.timeout;
            let deadline = move || Instant::now() + timeout;
            let mut routing = match self.inner.routing(deadline()).await {
                Ok(routing) => routing,
                Err(error) => return self.fail(error).await,
            };
            let Some(group) = routing.group_of(self.shard) else {
                tokio::time::sleep(backoff.next_pause()).await;
                self.inner.refresh(&routing, deadline()).await;
                continue;
            };
            let at = target.take().unwrap_or_else(|| {
                if self.consistency == Consistency::Stale {
                    // Any replica serves: spread the shards over them.
                    let members = routing.members(group);
                    Target::member(&routing, members[self.shard.0 as usize % members.len()])
                } else {
                    lock(&self.inner.leaders).preferred(&routing, group)
                }
            });
            let request = pb::WatchRequest {
                group_id: group.0,
                shard_id: self.shard.0,
                config_num: routing.config_num(),
                start: self.start.clone(),
                end: self.end.clone(),
                from_revision: self.next,
                consistency: pb::Consistency::from(self.consistency) as i32,
                shard_count: self.shard_count,
            };
            let failure = match self.open(&at, request).await {
                Ok(stream) => match self.follow(stream, &mut backoff).await {
                    Ended::Dropped => return,
                    Ended::Moved => {
                        let at_least = routing.config_num() + 1;
                        self.inner.refresh_to(&routing, at_least, deadline(), &mut backoff).await;
                        continue;
                    }
                    Ended::Again => {
                        target = Some(at);
                        continue;
                    }
                    Ended::Failed(failure) => failure,
                },
                Err(failure) => failure,
            };
            if let Failure::Compacted { oldest_revision } = failure {
                let shard = Some(self.shard);
                return self.fail(ClientError::Compacted { shard, oldest_revision }).await;
            }
            let next =
                retry.after(&failure, &routing, &mut lock(&self.inner.leaders), group, at, false);
            let Next::Retry { target: next_target, pause, refresh } = next else {
                return self.fail(Progress::new(false).failed(failure)).await;
            };
            target = next_target;
            if pause {
                tokio::time::sleep(backoff.next_pause()).await;
            }
            if let Some(Refresh { at_least, skip }) = refresh {
                routing = self.inner.refresh_to(&routing, at_least, deadline(), &mut backoff).await;
                if let Some(node) = skip {
                    target = routing.group_of(self.shard).map(|g| next_member(&routing, g, node));
                }
            }
        }
    }

    /// Opens a stream at `target`.
    async fn open(
        &self,
        target: &Target,
        request: pb::WatchRequest,
    ) -> std::result::Result<Streaming<pb::WatchResponse>, Failure> {
        let channel = self.inner.channels.get(&target.address).map_err(|message| {
            Failure::ConnectFailed { message: format!("unusable address: {message}") }
        })?;
        let limit = self.inner.options.message_bytes_max;
        let mut client = KvClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let opened =
            tokio::time::timeout(self.inner.options.attempt_timeout, client.watch(request));
        match opened.await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify_status(&status)),
            Err(_elapsed) => Err(Failure::AttemptTimedOut),
        }
    }

    /// Reads `stream` until it ends, handing each revision at or after the next one needed to
    /// the reader once the stream has sent all of it.
    async fn follow(
        &mut self,
        mut stream: Streaming<pb::WatchResponse>,
        backoff: &mut Backoff<SmallRng>,
    ) -> Ended {
        // The changes of a revision the stream has not sent all of yet.
        let mut partial: Option<WatchedRevision> = None;
        let mut first = true;
        loop {
            let message = match tokio::time::timeout(STREAM_SILENT_MAX, stream.message()).await {
                Ok(Ok(Some(message))) => {
                    // The replica serves: the next failure starts the backoff afresh.
                    let options = &self.inner.options;
                    *backoff = self
                        .inner
                        .jitter_seeds
                        .backoff(options.backoff_initial, options.backoff_max);
                    message
                }
                Ok(Ok(None)) => {
                    let message = "the watch stream closed without an end".to_string();
                    return Ended::Failed(Failure::Unreachable { message });
                }
                Ok(Err(status)) => return Ended::Failed(classify_status(&status)),
                Err(_silent) => return Ended::Failed(Failure::AttemptTimedOut),
            };
            let next = *self.next.get_or_insert(message.revision + 1);
            if std::mem::take(&mut first) {
                if let Some(registered) = self.registered.take() {
                    // Fails only if the watch was dropped meanwhile.
                    let _ = registered.send(());
                }
                // A replica that serves the shard at the leader's level but is not at the
                // revision before the one needed never had the revisions in between: the
                // shard started over (empty, at a new owner).
                if self.consistency != Consistency::Stale && message.revision + 1 < next {
                    return Ended::Failed(Failure::Compacted { oldest_revision: next });
                }
            }
            let mut complete = Vec::new();
            for change in message.changes.into_iter().filter(|change| change.revision >= next) {
                let watched = WatchedChange { key: change.key, value: change.value };
                match &mut partial {
                    Some(open) if open.revision == change.revision => open.changes.push(watched),
                    _ => {
                        complete.extend(partial.take());
                        partial = Some(WatchedRevision {
                            shard: self.shard,
                            revision: change.revision,
                            changes: vec![watched],
                        });
                    }
                }
            }
            if partial.as_ref().is_some_and(|open| open.revision <= message.revision) {
                complete.extend(partial.take());
            }
            for revision in complete {
                if self.sender.send(Ok(revision)).await.is_err() {
                    return Ended::Dropped;
                }
            }
            let mut resume_at = next.max(message.revision + 1);
            let end = message.end;
            if let Some(pb::WatchEnd { reason, revision, .. }) = &end
                && *reason == pb::watch_end::Reason::WatchEndMoved as i32
            {
                resume_at = resume_at.max(revision + 1);
            }
            self.next = Some(resume_at);
            lock(&self.resume).insert(self.shard, resume_at);
            let Some(end) = end else { continue };
            return match pb::watch_end::Reason::try_from(end.reason) {
                Ok(pb::watch_end::Reason::WatchEndMoved) => Ended::Moved,
                Ok(pb::watch_end::Reason::WatchEndNotServed) => {
                    let failure = end.detail.and_then(|detail| detail.kind).map_or_else(
                        || Failure::Unreachable { message: "the replica stopped serving".into() },
                        classify_detail,
                    );
                    Ended::Failed(failure)
                }
                _ => Ended::Again,
            };
        }
    }

    /// Ends the watch with `error`.
    async fn fail(&self, error: ClientError) {
        // Fails only if the reader is gone.
        let _ = self.sender.send(Err(error)).await;
    }
}
