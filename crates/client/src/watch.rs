//! Watches through the client ([`crate::Client::watch`]): the changes to the keys of a range,
//! shard by shard, each shard's in revision order, following each shard wherever it moves.
//!
//! One task per shard of the range (one for a prefix that holds a whole hash tag) keeps a
//! `Kv.Watch` stream open at a replica of the group that owns it (the leader, unless stale),
//! and knows the next revision it needs ([`Watch::resume_from`]). [`crate::Client::watch`]
//! returns once every shard's first stream is registered, so a watch of the changes after
//! now sees every write made after it returns. A revision comes to the reader only once its
//! stream has sent all of it (a large one may span several messages). When a stream ends, or
//! says nothing for [`STREAM_SILENT_MAX`] (a node sends after every check of the replica), the
//! task opens another from the next revision: at the group's next owner after the shard moved (once the
//! placement shows it), at the leader a replica named, or at the next member, with the
//! client's backoff between failed attempts, for as long as it takes. So no change is
//! repeated or missed across leader changes, moves and lost connections. A replica that no
//! longer keeps the revision needed (the watcher fell behind further than the node keeps
//! changes, the shard's state was replaced by a snapshot, or the shard started over empty at
//! a new owner) ends the watch with [`ClientError::Compacted`] naming the shard: read afresh,
//! then watch from that read's revision. Revisions of different shards are not comparable:
//! the watch interleaves shards in the order their changes arrive.
//!
//! What each message means and what follows a stream's end are [`crate::watch_follow`]'s
//! decisions; this module runs them over gRPC, with the client's retries and backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mosaic_engine::ShardId;
use mosaic_proto::pb;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Streaming;

use crate::backoff::Backoff;
use crate::classify::{Failure, classify_status};
use crate::client::{Consistency, Inner, lock};
use crate::error::{ClientError, Progress, Result, WriteOutcome};
use crate::retry::{Next, Refresh, Retry, Target, next_member};
use crate::routing::RoutingSource;
use crate::scan::ScanRange;
use crate::watch_follow::{Follow, Then, WatchedRevision};

/// Revisions a watch holds for its reader before its shards' streams wait.
const REVISIONS_AHEAD: usize = 256;

/// How long a stream may say nothing before it counts as lost: a node sends a message after
/// each check of the replica, every 2 s, and a check takes at most the node's request timeout
/// (5 s by default).
pub const STREAM_SILENT_MAX: Duration = Duration::from_secs(30);

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

/// What a shard's task hands the watch, in order.
enum Item {
    /// A revision, complete.
    Revision(WatchedRevision),
    /// The shard resumes from `next` once the items before this one are given.
    Progress {
        /// The shard.
        shard: ShardId,
        /// The revision it resumes from.
        next: u64,
    },
    /// The error that ends the watch.
    Failed(ClientError),
}

/// A watch in progress: [`Watch::next`] gives its revisions. Dropping it stops its streams.
pub struct Watch {
    items: mpsc::Receiver<Item>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where each shard resumes from, as of the revisions given so far.
    resume: BTreeMap<ShardId, u64>,
    /// True once the watch gave its error.
    over: bool,
}

impl Watch {
    /// The revision each shard would resume from: the one after the last revision
    /// [`Watch::next`] gave of it, or after the last its node said the watch was up to date
    /// to before that. A new watch with these as [`WatchOptions::from`] goes on exactly where
    /// this one's reader is: nothing given is repeated, nothing not given is skipped.
    #[must_use]
    pub fn resume_from(&self) -> BTreeMap<ShardId, u64> {
        self.resume.clone()
    }

    /// The next revision of a watched shard, or the error that ended the watch (after which it
    /// gives nothing more).
    pub async fn next(&mut self) -> Option<Result<WatchedRevision>> {
        if self.over {
            return None;
        }
        loop {
            match self.items.recv().await? {
                Item::Progress { shard, next } => {
                    self.resume.insert(shard, next);
                }
                Item::Revision(revision) => {
                    self.resume.insert(revision.shard, revision.revision + 1);
                    return Some(Ok(revision));
                }
                Item::Failed(error) => {
                    self.over = true;
                    self.stop();
                    return Some(Err(error));
                }
            }
        }
    }

    fn stop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.items.close();
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
/// The first error a shard's task ends with before its stream is registered (a `Compacted`
/// refusal, say); [`ClientError::Timeout`] when not every stream is registered within the
/// options' timeout.
pub(crate) async fn start<S: RoutingSource>(
    inner: &Arc<Inner<S>>,
    range: &ScanRange,
    shard_count: u32,
    options: &WatchOptions,
) -> Result<Watch> {
    let (sender, items) = mpsc::channel(REVISIONS_AHEAD);
    let mut registered = Vec::new();
    let tasks = range
        .shards(shard_count)
        .into_iter()
        .map(|shard| {
            let (told, registration) = oneshot::channel();
            registered.push(registration);
            let range = (range.start().clone(), range.end().cloned());
            let from = options.from.get(&shard).copied();
            let follow = ShardFollow {
                inner: Arc::clone(inner),
                follow: Follow::new(shard, shard_count, range, options.consistency, from),
                sender: sender.clone(),
                registered: Some(told),
            };
            tokio::spawn(follow.run())
        })
        .collect();
    let watch = Watch { items, tasks, resume: options.from.clone(), over: false };
    let timeout = inner.options.timeout;
    let timed_out = |last_failure: &str| ClientError::Timeout {
        outcome: WriteOutcome::NotApplied,
        timeout,
        attempts: 0,
        last_failure: last_failure.to_string(),
    };
    let all = futures_util::future::join_all(registered);
    let answers = tokio::time::timeout(timeout, all)
        .await
        .map_err(|_| timed_out("not every shard's watch stream was registered"))?;
    for answer in answers {
        answer.map_err(|_| timed_out("a shard's watch task ended before it registered"))??;
    }
    Ok(watch)
}

/// One shard's part of a watch: the [`Follow`]'s decisions over gRPC streams.
struct ShardFollow<S> {
    inner: Arc<Inner<S>>,
    follow: Follow,
    sender: mpsc::Sender<Item>,
    /// Told once the first stream is registered, or the error the task ends with before.
    registered: Option<oneshot::Sender<Result<()>>>,
}

impl<S: RoutingSource> ShardFollow<S> {
    async fn run(mut self) {
        let options = &self.inner.options;
        let mut backoff =
            self.inner.jitter_seeds.backoff(options.backoff_initial, options.backoff_max);
        let mut retry = Retry::default();
        let mut target: Option<Target> = None;
        let shard = self.follow.shard();
        loop {
            let timeout = self.inner.options.timeout;
            let deadline = move || Instant::now() + timeout;
            let mut routing = match self.inner.routing(deadline()).await {
                Ok(routing) => routing,
                Err(error) => return self.fail(error).await,
            };
            let Some(group) = routing.group_of(shard) else {
                tokio::time::sleep(backoff.next_pause()).await;
                self.inner.refresh(&routing, deadline()).await;
                continue;
            };
            let at = target.take().unwrap_or_else(|| {
                if self.follow.consistency() == Consistency::Stale {
                    // Any replica serves: spread the shards over them.
                    let members = routing.members(group);
                    Target::member(&routing, members[shard.0 as usize % members.len()])
                } else {
                    lock(&self.inner.leaders).preferred(&routing, group)
                }
            });
            let request = self.follow.request(group, routing.config_num());
            let then = match self.open(&at, request).await {
                Ok(stream) => match self.stream(stream, &mut backoff).await {
                    Some(then) => then,
                    None => return,
                },
                Err(failure) => self.follow.on_failure(failure),
            };
            let failure = match then {
                Then::Refresh => {
                    self.inner.refresh(&routing, deadline()).await;
                    continue;
                }
                Then::Again => {
                    target = Some(at);
                    continue;
                }
                Then::Fail(error) => return self.fail(error).await,
                Then::Retry(failure) => failure,
            };
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
                    target = routing.group_of(shard).map(|g| next_member(&routing, g, node));
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
        let mut client = self.inner.kv_client(target)?;
        let opened =
            tokio::time::timeout(self.inner.options.attempt_timeout, client.watch(request));
        match opened.await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify_status(&status)),
            Err(_elapsed) => Err(Failure::AttemptTimedOut),
        }
    }

    /// Reads `stream` until it ends, handing the reader what each message gives; what comes
    /// next, or `None` once the watch's reader is gone.
    async fn stream(
        &mut self,
        mut stream: Streaming<pb::WatchResponse>,
        backoff: &mut Backoff<SmallRng>,
    ) -> Option<Then> {
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
                    return Some(self.follow.on_failure(Failure::Unreachable { message }));
                }
                Ok(Err(status)) => return Some(self.follow.on_failure(classify_status(&status))),
                Err(_silent) => return Some(self.follow.on_failure(Failure::AttemptTimedOut)),
            };
            let heard = self.follow.on_message(message);
            if heard.registered
                && let Some(registered) = self.registered.take()
            {
                // Fails only if the watch was dropped meanwhile.
                let _ = registered.send(Ok(()));
            }
            for revision in heard.revisions {
                self.sender.send(Item::Revision(revision)).await.ok()?;
            }
            if let Some(next) = heard.resume_at {
                let progress = Item::Progress { shard: self.follow.shard(), next };
                self.sender.send(progress).await.ok()?;
            }
            if heard.then.is_some() {
                return heard.then;
            }
        }
    }

    /// Ends the watch with `error`: `Client::watch` returns it if the first stream is not
    /// registered yet, [`Watch::next`] otherwise.
    async fn fail(&mut self, error: ClientError) {
        // Either fails only if the watch is gone.
        match self.registered.take() {
            Some(registered) => {
                let _ = registered.send(Err(error));
            }
            None => {
                let _ = self.sender.send(Item::Failed(error)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use mosaic_engine::GroupId;
    use mosaic_proto::pb;
    use mosaic_proto::pb::error_detail::Kind;
    use mosaic_raft::NodeId;

    use super::*;
    use crate::testing::fake_node::{FakeNode, WatchScript};
    use crate::{Client, ClientOptions, Routing, ScanRange, StaticRouting};

    const SHARDS: u32 = 8;

    fn client_of(node: &FakeNode) -> Client {
        let options = ClientOptions {
            timeout: Duration::from_millis(600),
            attempt_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(100),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            jitter_seed: Some(1),
            ..ClientOptions::default()
        };
        let nodes = BTreeMap::from([(NodeId(1), node.address())]);
        let routing = Routing::single_group(GroupId(1), nodes, SHARDS).unwrap();
        Client::new(StaticRouting::new(routing), options).unwrap()
    }

    /// A message completing `revision` with one change, after `pause_ms`.
    fn revision(pause_ms: u64, revision: u64) -> (Duration, pb::WatchResponse) {
        let change = pb::WatchChange {
            revision,
            key: format!("k{revision}").into(),
            value: Some("v".into()),
        };
        let message = pb::WatchResponse { changes: vec![change], revision, end: None };
        (Duration::from_millis(pause_ms), message)
    }

    /// The first message of a stream: where it starts.
    fn first(revision: u64) -> (Duration, pb::WatchResponse) {
        (Duration::ZERO, pb::WatchResponse { changes: Vec::new(), revision, end: None })
    }

    fn open(messages: Vec<(Duration, pb::WatchResponse)>) -> WatchScript {
        WatchScript::Stream { messages, close: false }
    }

    fn compacted(oldest_revision: u64) -> WatchScript {
        WatchScript::Refuse(Kind::Compacted(pb::Compacted { oldest_revision }))
    }

    /// Found in review: `Client::watch` waited for every shard's registration while nothing
    /// read the watch's channel, so a shard refused `Compacted` while another filled the
    /// channel could not hand its error over, and the call ended with a timeout that hid it.
    #[tokio::test]
    async fn a_shard_refused_compacted_while_another_fills_the_channel_ends_the_call_compacted() {
        let node = FakeNode::start().await;
        for _ in 0..15 {
            node.script_watch(0, WatchScript::Refuse(Kind::ShardNotReady(pb::ShardNotReady {})));
        }
        node.script_watch(0, compacted(50));
        // Shard 1 has 390 revisions kept after its resume point, in one message.
        let kept = pb::WatchResponse {
            changes: (11..=400).flat_map(|n| revision(0, n).1.changes).collect(),
            revision: 400,
            end: None,
        };
        node.script_watch(1, open(vec![first(10), (Duration::ZERO, kept)]));
        for shard in 2..SHARDS {
            node.script_watch(shard, open(vec![first(0)]));
        }
        let options = WatchOptions {
            from: BTreeMap::from([(ShardId(0), 3), (ShardId(1), 11)]),
            ..WatchOptions::default()
        };
        let started = client_of(&node).watch(&ScanRange::all(), options).await;
        assert!(
            matches!(started, Err(ClientError::Compacted { shard: Some(ShardId(0)), .. })),
            "{:?}",
            started.as_ref().err()
        );
    }

    /// Found in review: a watch resumed at a replica behind the revision before the one
    /// asked (the shard started over) was registered, then ended by the first message's
    /// check: `Client::watch` itself now fails with `Compacted`.
    #[tokio::test]
    async fn a_first_stream_whose_replica_is_behind_fails_the_watch_call_itself() {
        let node = FakeNode::start().await;
        let shard = mosaic_types::shard_for_key(b"t", SHARDS);
        node.script_watch(shard.0, open(vec![first(2)]));
        let options =
            WatchOptions { from: BTreeMap::from([(shard, 5)]), ..WatchOptions::default() };
        let started = client_of(&node).watch(&ScanRange::prefix("{t}"), options).await;
        assert!(
            matches!(started, Err(ClientError::Compacted { .. })),
            "{:?}",
            started.as_ref().err()
        );
    }

    /// Found in review: `resume_from` counted revisions still in the watch's channel, and after
    /// an error `Watch::next` stops: a watch resumed from it skipped revisions never given. It
    /// now moves only with what `next` gives, and after the error `next` gives nothing more.
    #[tokio::test]
    async fn after_an_error_resume_from_skips_no_revision_never_given() {
        let node = FakeNode::start().await;
        // Shard 0: registered at 4, its stream lost, then refused: compacted.
        let lost = WatchScript::Stream {
            messages: vec![first(4), (Duration::from_millis(300), first(4).1)],
            close: true,
        };
        node.script_watch(0, lost);
        node.script_watch(0, compacted(50));
        let later: Vec<_> =
            std::iter::once(first(0)).chain((1..=5).map(|n| revision(100, n))).collect();
        node.script_watch(1, open(later));
        for shard in 2..SHARDS {
            node.script_watch(shard, open(vec![first(0)]));
        }
        let options = WatchOptions {
            from: BTreeMap::from([(ShardId(0), 5), (ShardId(1), 1)]),
            ..WatchOptions::default()
        };
        let mut watch = client_of(&node).watch(&ScanRange::all(), options).await.expect("on");
        // A reader busy elsewhere for a moment.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut given = Vec::new();
        let error = loop {
            match watch.next().await.expect("an error ends it") {
                Ok(revision) => given.push((revision.shard, revision.revision)),
                Err(error) => break error,
            }
        };
        assert!(matches!(error, ClientError::Compacted { shard: Some(ShardId(0)), .. }));
        assert!(watch.next().await.is_none(), "nothing after the error");
        let given_of_1 = given.iter().filter(|(shard, _)| *shard == ShardId(1)).count() as u64;
        let resume = watch.resume_from();
        assert_eq!(resume[&ShardId(1)], 1 + given_of_1, "shard 1 gave {given:?}: {resume:?}");
        assert_eq!(resume[&ShardId(0)], 5);
    }

    /// A revision split over messages (too large for one) is given once, whole, when its last
    /// part arrives; one cut by a lost stream is not given until a new stream sends it again.
    #[tokio::test]
    async fn a_revision_is_given_whole_once_all_its_parts_arrived() {
        let node = FakeNode::start().await;
        let shard = mosaic_types::shard_for_key(b"t", SHARDS);
        let part = |key: &str, complete: u64| {
            let change = pb::WatchChange { revision: 1, key: key.to_string().into(), value: None };
            (
                Duration::ZERO,
                pb::WatchResponse { changes: vec![change], revision: complete, end: None },
            )
        };
        // The first stream sends half of revision 1, then is lost; the second sends it all.
        let cut = WatchScript::Stream { messages: vec![first(0), part("{t}a", 0)], close: true };
        node.script_watch(shard.0, cut);
        node.script_watch(shard.0, open(vec![first(0), part("{t}a", 0), part("{t}b", 1)]));
        let options =
            WatchOptions { from: BTreeMap::from([(shard, 1)]), ..WatchOptions::default() };
        let mut watch = client_of(&node).watch(&ScanRange::prefix("{t}"), options).await.unwrap();
        let given = watch.next().await.expect("a revision").expect("no error");
        let keys: Vec<&[u8]> = given.changes.iter().map(|change| change.key.as_ref()).collect();
        assert_eq!((given.revision, keys), (1, vec![&b"{t}a"[..], b"{t}b"]));
        assert_eq!(watch.resume_from()[&shard], 2);
    }
}
