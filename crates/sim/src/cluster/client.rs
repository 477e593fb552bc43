//! A simulated client: one sequential process doing gets, puts, appends, deletes and
//! compare-and-sets on a few shared keys, and, if configured (`SimConfig::batch_tags`), atomic
//! batches and scans on the keys of a few hash tags (`tagged.rs`) and watches of the tags it
//! scans (`watcher.rs`), routed the way `mosaic_client` routes them.
//!
//! A compare-and-set names the version the client last heard for the key with its value (from
//! a get, or a put or compare-and-set of its own), or version 0 (absent) if it heard none, and
//! is recorded in the history as a compare-and-set on that value. The two are the same
//! condition because every value the clients write is a fresh token, so a key holds each value
//! at one version only; the versions clients hear are checked to keep it so
//! ([`VersionLedger`]).
//!
//! Routing: `shard_for_key(key, shard_count)`, the owner of that shard in the client's
//! placement (`mosaic_client::Routing`, from the latest configuration it read), then the
//! group's leader as far as the client knows, else its first member. What a refusal means
//! and where the next attempt goes are decided as a client of a real node decides them: the
//! store's error becomes the status the node answers (`mosaic_client::refusal::to_status`),
//! which `mosaic_client::classify` reads back (the failure, and whether the write may have
//! been applied), and `mosaic_client::retry` picks the next target, the pause and whether to
//! read a newer placement first; a request unanswered in time is the table's
//! `AttemptTimedOut`. Reads are `Consistency::Linearizable` (or `Lease`) at the leader,
//! unless the deliberately broken `ReadMode::StaleAtAnyReplica` reads any replica.
//!
//! Invariants:
//! - every write carries `(client, seq)`, and every retry of it the same pair, so the group
//!   applies it at most once however often it is sent (6.824 Lab 3), unless the deliberately
//!   broken `fresh_seq_per_attempt` mode is on; a compare-and-set names the version heard
//!   with the value it expects, unless the deliberately broken `cas_names_the_wrong_version`
//!   mode is on;
//! - a write to a shard where an earlier write of the client was answered says it expects its
//!   session there (`KvWrite::expects_session`, as `mosaic_client`'s lanes do), and so does a
//!   compare-and-set retried after an attempt that may have applied
//!   (`mosaic_client::retry::expects_session`); no group evicts a session in a run (a few
//!   clients, thousands of sessions per shard), so a `SessionExpired` refusal of a write whose
//!   session was known means a session was lost (a migration that dropped it) and fails the
//!   run; for a compare-and-set whose session was not known, it ends the operation unknown;
//! - every call and completion is recorded in the [`History`]: a write given up on is
//!   recorded as not applied when every attempt was refused in a way the decision table
//!   says applied nothing and none is in flight, otherwise as unknown (it may still apply
//!   later). A client gives up after `GIVE_UP_AFTER_MS`, and, in the safety phase, after a
//!   refusal that applied nothing with probability `SimConfig::abandon_after_refusal_per_mille`,
//!   so that the table's "not applied" is checked all the time.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use mosaic_client::classify::{Action, Failure, classify_status};
use mosaic_client::refusal::to_status;
use mosaic_client::retry::{Leaders, Next, Refresh, Retry, Target, expects_session, next_member};
use mosaic_client::{Routing, shard_for_key};
use mosaic_controller::{Configuration, ControllerQuery};
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::{NodeId, SplitMix64};
use mosaic_raftstore::{Consistency, Error};
use mosaic_shardkv::{
    KvBatch, KvGet, KvWrite, ScanEntry, ScanPage, ShardScan, Version, WriteEffect, WriteKind,
};

use crate::cluster::Time;
use crate::cluster::config::{ReadMode, SimConfig};
use crate::cluster::controller_link::ControllerLink;
use crate::cluster::net::chance;
use crate::cluster::rpc::{Io, Request, RequestId, Response};
use crate::cluster::tagged::{self, BatchEffect, PlannedBatch, TagState};
use crate::cluster::versions::VersionLedger;
use crate::cluster::watcher::{Lent, SimWatch, WatchedSpan};
use crate::linearizability::{History, OpId, Operation, Output};

/// A request unanswered for this long is sent again.
const REQUEST_TIMEOUT_MS: Time = 500;
/// The pause before retrying after a refusal, at most (random below it).
const RETRY_PAUSE_MS_MAX: Time = 40;
/// The pause between two operations, at most (random below it).
const THINK_MS_MAX: Time = 30;
/// A scan of a tag's keys reads them all in one page: at most this many keys...
const TAG_SCAN_KEYS_MAX: u32 = 16;
/// ... and this many bytes.
const TAG_SCAN_BYTES_MAX: u64 = 1 << 20;

/// One operation in progress.
#[derive(Debug)]
struct Op {
    id: OpId,
    /// The key in the history: a key, or a tag's register (`tagged.rs`).
    key: Bytes,
    shard: ShardId,
    kind: OpKind,
    called: Time,
    /// True once an attempt failed in a way that may have applied the write
    /// (`mosaic_client::classify::Failure::may_have_applied`).
    may_have_applied: bool,
}

/// What an operation asks for.
#[derive(Debug)]
enum OpKind {
    /// A get of the operation's key.
    Get,
    /// A write of one key (with its session seq).
    Write(KvWrite),
    /// An atomic batch on the keys of tag `tag` (with its session seq).
    Batch { tag: u32, batch: KvBatch, effect: BatchEffect },
    /// A scan of the keys of tag `tag`, the page it asks for next, and what the pages before
    /// read (only pages of one key, the deliberate bug, need more than one).
    Scan { tag: u32, scan: ShardScan, read: Vec<ScanEntry> },
}

impl OpKind {
    /// Whether it may change what a key holds.
    fn is_write(&self) -> bool {
        matches!(self, Self::Write(_) | Self::Batch { .. })
    }

    /// Its session seq, for a write.
    fn seq_mut(&mut self) -> Option<&mut u64> {
        match self {
            Self::Write(write) => Some(&mut write.seq),
            Self::Batch { batch, .. } => Some(&mut batch.seq),
            Self::Get | Self::Scan { .. } => None,
        }
    }
}

/// What the client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Nothing: it acts at its next poll.
    Nothing,
    /// A pause until then.
    Until(Time),
    /// The answer to request `id`, sent to `target` for `group`.
    Group { id: RequestId, target: NodeId, group: GroupId, deadline: Time },
    /// The latest configuration, asked of `target`.
    Config { id: RequestId, target: NodeId, deadline: Time },
}

/// What the client may do now (the world sets it per phase).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientPolicy {
    /// An operation older than this is given up on (`None`: never).
    pub(crate) give_up_after_ms: Option<Time>,
    /// After a refusal that says the operation was not applied, it is given up on with this
    /// probability (`SimConfig::abandon_after_refusal_per_mille`).
    pub(crate) abandon_after_refusal_per_mille: u64,
}

/// A client. See the module documentation.
pub(crate) struct SimClient {
    index: u32,
    id: ClientId,
    keys: u32,
    batch_tags: u32,
    shard_count: u32,
    reads: ReadMode,
    fresh_seq_per_attempt: bool,
    cas_names_the_wrong_version: bool,
    scans_in_pages_of_one_key: bool,
    watches: bool,
    watches_lose_revisions: bool,
    seq: u64,
    controller: ControllerLink,
    /// The placement it routes by (`None` until the first configuration is read).
    routing: Option<Routing>,
    /// A newer placement to read before the next attempt (also before the first).
    refresh: Option<Refresh>,
    leaders: Leaders,
    /// Where the next attempt goes, when the last failure said (`mosaic_client::retry`).
    next_target: Option<Target>,
    /// The retries of the operation in progress.
    retry: Retry,
    op: Option<Op>,
    waiting: Waiting,
    /// Operations it may still start (`None`: any number).
    budget: Option<u32>,
    completed: u64,
    /// The last refusal, for a failure report.
    last_refusal: Option<String>,
    /// The shards where a write of this client was answered (its session exists there).
    sessions: BTreeSet<ShardId>,
    /// For each key, the value (`None`: absent) and version the client last heard it hold: what
    /// its next compare-and-set on the key expects.
    heard: BTreeMap<Bytes, (Option<Bytes>, Version)>,
    /// For each tag, what the client last heard its keys hold: what its next batch with
    /// conditions expects (nothing heard: every key absent).
    heard_tags: BTreeMap<u32, TagState>,
    /// The watch in progress (`watcher.rs`).
    watch: Option<SimWatch>,
    /// The watches over.
    watched: Vec<WatchedSpan>,
    /// The first broken promise of a watch.
    watch_violation: Option<String>,
}

impl SimClient {
    /// Client `index` of the run `config` describes.
    pub(crate) fn new(index: u32, config: &SimConfig, controllers: Vec<NodeId>) -> Self {
        let id = ClientId(u64::from(index) + 1);
        Self {
            index,
            id,
            keys: config.keys,
            batch_tags: config.batch_tags,
            shard_count: config.shard_count,
            reads: config.reads,
            fresh_seq_per_attempt: config.fresh_seq_per_attempt,
            cas_names_the_wrong_version: config.cas_names_the_wrong_version,
            scans_in_pages_of_one_key: config.scans_in_pages_of_one_key,
            watches: config.watches,
            watches_lose_revisions: config.watches_lose_revisions,
            seq: 0,
            controller: ControllerLink::new(controllers, ClientId(u64::MAX - u64::from(index))),
            routing: None,
            refresh: Some(Refresh { at_least: 0, skip: None }),
            leaders: Leaders::default(),
            next_target: None,
            retry: Retry::default(),
            op: None,
            waiting: Waiting::Nothing,
            budget: None,
            completed: 0,
            last_refusal: None,
            sessions: BTreeSet::new(),
            heard: BTreeMap::new(),
            heard_tags: BTreeMap::new(),
            watch: None,
            watched: Vec::new(),
            watch_violation: None,
        }
    }

    /// From now on, start at most `ops` more operations.
    pub(crate) fn limit(&mut self, ops: u32) {
        self.budget = Some(ops);
    }

    /// True when the client has no operation in progress and may start none.
    pub(crate) fn is_finished(&self) -> bool {
        self.op.is_none() && self.budget == Some(0)
    }

    /// Operations completed (returned or given up on).
    pub(crate) fn completed(&self) -> u64 {
        self.completed
    }

    /// What the client is doing, for a failure report.
    pub(crate) fn describe(&self) -> String {
        match &self.op {
            Some(op) => format!(
                "client {}: {} on {:?} (shard {}) called at {} ms, waiting for {:?}, last refused \
                 with {:?}, configuration {:?}, asking for {:?}",
                self.index,
                op.id,
                op.key,
                op.shard,
                op.called,
                self.waiting,
                self.last_refusal,
                self.routing.as_ref().map(Routing::config_num),
                self.refresh,
            ),
            None => format!("client {}: idle, {:?} operations left", self.index, self.budget),
        }
    }

    /// What its watches received, those over and the one in progress, and the first broken
    /// promise of a watch.
    pub(crate) fn watched(&self) -> (Vec<WatchedSpan>, Option<String>) {
        let (open, violation) = self.watch.as_ref().map(SimWatch::span).unzip();
        let violation = self.watch_violation.clone().or(violation.flatten());
        (self.watched.iter().cloned().chain(open).collect(), violation)
    }

    /// The periodic step: takes what its watch received, retries what timed out, gives up
    /// what is too old, starts the next operation.
    pub(crate) fn poll(
        &mut self,
        io: &mut Io<'_>,
        history: &mut History,
        versions: &mut VersionLedger,
        policy: ClientPolicy,
    ) {
        self.poll_watch(io, versions);
        match self.waiting {
            Waiting::Group { target, group, deadline, .. } if deadline <= io.now => {
                tracing::trace!(client = self.index, peer = %target, group_id = %group,
                    "request timed out");
                self.waiting = Waiting::Nothing;
                self.failed(io, target, group, &Failure::AttemptTimedOut);
            }
            Waiting::Config { target, deadline, .. } if deadline <= io.now => {
                self.controller.failed(target, None);
                self.waiting = Waiting::Nothing;
            }
            Waiting::Until(until) if until <= io.now => self.waiting = Waiting::Nothing,
            _ => {}
        }
        if let (Some(op), Some(limit)) = (&self.op, policy.give_up_after_ms)
            && io.now >= op.called + limit
        {
            self.give_up(io, history);
        }
        if self.op.is_none() && self.waiting == Waiting::Nothing && self.budget != Some(0) {
            self.start(io, history);
        }
        if self.op.is_some() && self.waiting == Waiting::Nothing {
            self.attempt(io);
        }
    }

    /// Handles the answer to request `id`; the versions it hears go into `versions`.
    pub(crate) fn on_response(
        &mut self,
        io: &mut Io<'_>,
        history: &mut History,
        versions: &mut VersionLedger,
        policy: ClientPolicy,
        id: RequestId,
        response: Response,
    ) {
        let Some(response) = self.watch_response(io, versions, id, response) else { return };
        match self.waiting {
            Waiting::Config { id: waited, target, .. } if waited == id => {
                self.waiting = Waiting::Nothing;
                match response {
                    Response::ControllerView(Ok(Ok(answer))) => {
                        self.controller.answered(target);
                        self.install(io, &answer.view.config);
                    }
                    Response::ControllerView(Ok(Err(error))) => {
                        panic!("client {}: reading the latest configuration: {error}", self.index)
                    }
                    Response::ControllerView(Err(error)) => {
                        self.controller.failed(target, Some(&error));
                        self.pause(io);
                    }
                    other => {
                        panic!("client {}: a configuration read answered {other:?}", self.index)
                    }
                }
            }
            Waiting::Group { id: waited, target, group, .. } if waited == id => {
                self.waiting = Waiting::Nothing;
                let op = self.op.as_ref().expect("waiting for an operation");
                let output = match response {
                    Response::KvWritten(Ok(outcome)) if op.kind.is_write() => {
                        let effect = outcome.effect.unwrap_or_else(|| {
                            panic!("client {}: {op:?} answered without its effect", self.index)
                        });
                        Ok(self.written(versions, effect))
                    }
                    Response::KvScanned(Ok(page)) if matches!(op.kind, OpKind::Scan { .. }) => {
                        let Some(output) = self.scanned(versions, page) else {
                            // The next page.
                            self.attempt(io);
                            return;
                        };
                        Ok(output)
                    }
                    Response::KvValue(Ok(value)) if matches!(op.kind, OpKind::Get) => {
                        let (value, version) = value.map_or((None, Version::ABSENT), |stored| {
                            (Some(stored.value), stored.version)
                        });
                        if let Some(value) = &value {
                            let heard_by = format!("client {}: {}", self.index, op.id);
                            versions.heard(&op.key, value, version, &heard_by);
                        }
                        self.heard.insert(op.key.clone(), (value.clone(), version));
                        Ok(Output::Value(value))
                    }
                    Response::KvWritten(Err(error))
                    | Response::KvValue(Err(error))
                    | Response::KvScanned(Err(error)) => Err(error),
                    other => panic!("client {}: {op:?} answered {other:?}", self.index),
                };
                let op = self.op.as_ref().expect("waiting for an operation");
                match output {
                    Ok(output) => {
                        if op.kind.is_write() {
                            self.sessions.insert(op.shard);
                        }
                        if self.reads != ReadMode::StaleAtAnyReplica || op.kind.is_write() {
                            let routing = self.routing.as_ref().expect("routed");
                            self.leaders.remember(routing, group, target);
                        }
                        let scanned = match &op.kind {
                            OpKind::Scan { tag, scan, .. } => Some((*tag, scan.shard)),
                            _ => None,
                        };
                        history.record_return(op.id, output, io.now);
                        if let Some((tag, shard)) = scanned {
                            self.maybe_watch(io, tag, shard, target);
                        }
                        self.finish(io);
                    }
                    Err(error) => {
                        self.last_refusal = Some(format!("node {target} group {group}: {error}"));
                        let failure = failure_of(&error);
                        if failure.action() == Action::RenewSession
                            && !self.sessions.contains(&op.shard)
                        {
                            // Only a conditional write retried after an attempt that may have
                            // applied expects a session the client never heard of
                            // (`expects_session`); without it, its outcome stays unknown, as
                            // for a client of a real node.
                            self.give_up(io, history);
                            return;
                        }
                        self.failed(io, target, group, &failure);
                        if !failure.may_have_applied()
                            && chance(io.rng, policy.abandon_after_refusal_per_mille)
                        {
                            self.give_up(io, history);
                        }
                    }
                }
            }
            // An answer to a request given up on: a write it acknowledges stays unknown.
            _ => {}
        }
        if self.op.is_some() && self.waiting == Waiting::Nothing {
            self.attempt(io);
        }
    }

    /// What a write the node answered did: the history's output, and what the client now
    /// knows of the key's value and version.
    fn written(&mut self, versions: &mut VersionLedger, effect: WriteEffect) -> Output {
        let op = self.op.as_ref().expect("waiting for an operation");
        let heard_by = format!("client {}: {}", self.index, op.id);
        let (write, version) = match (&op.kind, effect) {
            (OpKind::Write(write), WriteEffect::Written(version)) => (write, version),
            (OpKind::Write(write), WriteEffect::ConditionFailed(_))
                if write.condition.is_some() =>
            {
                self.heard.remove(&op.key);
                return Output::ConditionFailed;
            }
            (OpKind::Batch { tag, effect, .. }, WriteEffect::Written(version)) => {
                let state = effect.state_after(version);
                hear_tag(versions, &mut self.heard_tags, *tag, state, &heard_by);
                return Output::Written;
            }
            (OpKind::Batch { tag, batch, .. }, WriteEffect::BatchConditionFailed { .. })
                if !batch.conditions.is_empty() =>
            {
                self.heard_tags.remove(tag);
                return Output::ConditionFailed;
            }
            (_, effect) => panic!("client {}: {op:?} answered {effect:?}", self.index),
        };
        match write.kind {
            WriteKind::Put => {
                versions.heard(&op.key, &write.value, version, &heard_by);
                self.heard.insert(op.key.clone(), (Some(write.value.clone()), version));
            }
            WriteKind::Delete => {
                self.heard.insert(op.key.clone(), (None, Version::ABSENT));
            }
            WriteKind::Append => {
                self.heard.remove(&op.key);
            }
        }
        Output::Written
    }

    /// After a scan of tag `tag` (in `shard`) answered by `target`: with no watch in
    /// progress, watches the tag's keys one time in two, from the revision after what the
    /// scan read, its first stream at the same replica (`watcher.rs`).
    fn maybe_watch(&mut self, io: &mut Io<'_>, tag: u32, shard: ShardId, target: NodeId) {
        if !self.watches || self.watch.is_some() || io.rng.below(2) != 0 {
            return;
        }
        let read = self.heard_tags.get(&tag).into_iter().flat_map(|state| state.values());
        let from = read.map(|(_, version)| version.0 + 1).max();
        let routing = self.routing.as_ref().expect("a scan was routed");
        let watch = SimWatch::new(
            format!("client {}", self.index),
            (shard, self.shard_count),
            tagged::range(tag),
            from,
            // The scan's replica may be a leader hinted outside the placement.
            target_of(routing, target),
            io.now,
            self.watches_lose_revisions,
        );
        self.watch = Some(watch);
    }

    /// What the client lends its watch for a step.
    fn lent<'a, 'b>(
        &'a mut self,
        io: &'a mut Io<'b>,
        versions: &'a mut VersionLedger,
    ) -> (Option<&'a mut SimWatch>, Lent<'a, 'b>) {
        let lent = Lent {
            io,
            routing: self.routing.as_ref(),
            leaders: &mut self.leaders,
            refresh: &mut self.refresh,
            versions,
        };
        (self.watch.as_mut(), lent)
    }

    /// The watch's periodic step; keeps what it received once it is over.
    fn poll_watch(&mut self, io: &mut Io<'_>, versions: &mut VersionLedger) {
        let now = io.now;
        let (Some(watch), mut lent) = self.lent(io, versions) else { return };
        watch.poll(&mut lent);
        self.end_watch_if_over(now);
    }

    /// Hands the watch the answer to request `id`; the answer back if it is not the watch's.
    fn watch_response(
        &mut self,
        io: &mut Io<'_>,
        versions: &mut VersionLedger,
        id: RequestId,
        response: Response,
    ) -> Option<Response> {
        let now = io.now;
        let (Some(watch), mut lent) = self.lent(io, versions) else { return Some(response) };
        let response = watch.on_response(&mut lent, id, response);
        self.end_watch_if_over(now);
        response
    }

    fn end_watch_if_over(&mut self, now: Time) {
        if let Some(watch) = self.watch.take_if(|watch| watch.is_over(now)) {
            let (span, violation) = watch.span();
            self.watch_violation = self.watch_violation.take().or(violation);
            self.watched.push(span);
        }
    }

    /// What the client makes of a page of the scan in progress: the get's output, or `None`
    /// when it reads the next page first.
    fn scanned(&mut self, versions: &mut VersionLedger, page: ScanPage) -> Option<Output> {
        let op = self.op.as_mut().expect("waiting for an operation");
        let heard_by = format!("client {}: {}", self.index, op.id);
        let OpKind::Scan { tag, scan, read } = &mut op.kind else { unreachable!("a scan") };
        read.extend(page.entries);
        if page.more {
            assert!(
                self.scans_in_pages_of_one_key,
                "client {}: a page of tag {tag}'s keys left some out: {read:?}",
                self.index
            );
            let mut next = read.last().expect("a page that leaves keys holds one").key.to_vec();
            next.push(0);
            scan.start = Bytes::from(next);
            return None;
        }
        let (state, value) = tagged::read(read);
        hear_tag(versions, &mut self.heard_tags, *tag, state, &heard_by);
        Some(Output::Value(value))
    }

    fn start(&mut self, io: &mut Io<'_>, history: &mut History) {
        // No draw without tags, so that a run without them replays the seeds it always did.
        if self.batch_tags > 0 && io.rng.below(3) == 0 {
            self.start_on_tag(io, history);
            return;
        }
        let key = Bytes::from(format!("key-{}", io.rng.below(u64::from(self.keys))));
        let shard = shard_for_key(&key, self.shard_count);
        let (operation, kind) = match io.rng.below(12) {
            0..=3 => (Operation::Get, OpKind::Get),
            roll => {
                self.seq += 1;
                let token = format!("c{}.{}", self.index, self.seq);
                let mut condition = None;
                let (kind, value, operation) = match roll {
                    4..=5 => {
                        let value = Bytes::from(token);
                        (WriteKind::Put, value.clone(), Operation::Put(value))
                    }
                    6..=8 => {
                        let value = Bytes::from(format!("[{token}]"));
                        (WriteKind::Append, value.clone(), Operation::Append(value))
                    }
                    9 => (WriteKind::Delete, Bytes::new(), Operation::Delete),
                    _ => {
                        let (expected, version) =
                            self.heard.get(&key).cloned().unwrap_or((None, Version::ABSENT));
                        let skew = u64::from(self.cas_names_the_wrong_version);
                        condition = Some(Version(version.0 + skew));
                        // One in four deletes.
                        let new = (io.rng.below(4) != 0).then(|| Bytes::from(token));
                        let kind = if new.is_some() { WriteKind::Put } else { WriteKind::Delete };
                        let value = new.clone().unwrap_or_default();
                        (kind, value, Operation::CompareAndSet { expected, new })
                    }
                };
                let write = KvWrite {
                    kind,
                    client: self.id,
                    seq: self.seq,
                    shard,
                    key: key.clone(),
                    value,
                    // Set for each attempt (`attempt`).
                    expects_session: false,
                    condition,
                };
                (operation, OpKind::Write(write))
            }
        };
        self.begin(io, history, key, shard, operation, kind);
    }

    /// Starts a scan or a batch of a tag's keys (`tagged.rs`).
    fn start_on_tag(&mut self, io: &mut Io<'_>, history: &mut History) {
        let tag = u32::try_from(io.rng.below(u64::from(self.batch_tags))).expect("below a u32");
        let (start, end) = tagged::range(tag);
        let shard = shard_for_key(&start, self.shard_count);
        let (operation, kind) = if io.rng.below(2) == 0 {
            let limit = if self.scans_in_pages_of_one_key { 1 } else { TAG_SCAN_KEYS_MAX };
            let scan = ShardScan {
                shard,
                shard_count: self.shard_count,
                start,
                end: Some(end),
                limit,
                limit_bytes: TAG_SCAN_BYTES_MAX,
                keys_only: false,
            };
            (Operation::Get, OpKind::Scan { tag, scan, read: Vec::new() })
        } else {
            self.seq += 1;
            let token = format!("c{}.{}", self.index, self.seq);
            let heard = self.heard_tags.get(&tag);
            let PlannedBatch { conditions, writes, operation, effect } =
                tagged::plan_batch(tag, heard, &token, io.rng);
            let batch = KvBatch {
                client: self.id,
                seq: self.seq,
                shard,
                // Set for each attempt (`attempt`).
                expects_session: false,
                conditions,
                writes,
            };
            (operation, OpKind::Batch { tag, batch, effect })
        };
        self.begin(io, history, tagged::object_key(tag), shard, operation, kind);
    }

    /// Records the call of an operation on `key` (in `shard`) and makes it the one in
    /// progress.
    fn begin(
        &mut self,
        io: &mut Io<'_>,
        history: &mut History,
        key: Bytes,
        shard: ShardId,
        operation: Operation,
        kind: OpKind,
    ) {
        let id = history.record_call(self.id, key.clone(), operation, io.now);
        if let Some(budget) = &mut self.budget {
            *budget -= 1;
        }
        self.op = Some(Op { id, key, shard, kind, called: io.now, may_have_applied: false });
        self.retry = Retry::default();
        self.next_target = None;
    }

    fn finish(&mut self, io: &mut Io<'_>) {
        self.op = None;
        self.completed += 1;
        self.waiting = Waiting::Until(io.now + io.rng.below(THINK_MS_MAX));
    }

    fn pause(&mut self, io: &mut Io<'_>) {
        self.waiting = Waiting::Until(io.now + 1 + io.rng.below(RETRY_PAUSE_MS_MAX));
    }

    /// Sends the operation in progress where the client believes it belongs.
    fn attempt(&mut self, io: &mut Io<'_>) {
        if self.fresh_seq_per_attempt
            && let Some(seq) = self.op.as_mut().and_then(|op| op.kind.seq_mut())
        {
            self.seq += 1;
            *seq = self.seq;
        }
        let op = self.op.as_ref().expect("an operation in progress");
        let routed = self.routing.as_ref().filter(|_| self.refresh.is_none()).and_then(|routing| {
            let group = routing.group_of(op.shard)?;
            Some((routing, group))
        });
        let Some((routing, group)) = routed else {
            let target = self.controller.target();
            let query = ControllerQuery { num: None };
            let id = io.request(target, Request::ControllerRead { query, asked_by: None });
            self.waiting = Waiting::Config { id, target, deadline: io.now + REQUEST_TIMEOUT_MS };
            return;
        };
        let stale = self.reads == ReadMode::StaleAtAnyReplica && !op.kind.is_write();
        let target = match self.next_target.take() {
            _ if stale => {
                let members = routing.members(group);
                members[io.rng.below(members.len() as u64) as usize]
            }
            Some(target) => target.node,
            None => self.leaders.preferred(routing, group).node,
        };
        let known = self.sessions.contains(&op.shard);
        let request = match &op.kind {
            OpKind::Write(write) => {
                let expects_session =
                    expects_session(known, write.condition.is_some(), op.may_have_applied);
                Request::KvWrite { group, write: KvWrite { expects_session, ..write.clone() } }
            }
            OpKind::Batch { batch, .. } => {
                let conditional = !batch.conditions.is_empty();
                let expects_session = expects_session(known, conditional, op.may_have_applied);
                Request::KvBatch { group, batch: KvBatch { expects_session, ..batch.clone() } }
            }
            OpKind::Get => Request::KvRead {
                group,
                get: KvGet { shard: op.shard, key: op.key.clone() },
                consistency: read_consistency(self.reads, io.rng),
            },
            OpKind::Scan { scan, .. } => Request::KvScan {
                group,
                scan: scan.clone(),
                consistency: read_consistency(self.reads, io.rng),
            },
        };
        let id = io.request(target, request);
        let deadline = io.now + REQUEST_TIMEOUT_MS;
        self.waiting = Waiting::Group { id, target, group, deadline };
    }

    /// Gives up on the operation in progress, which is not waiting for an answer unless the
    /// request was sent: a write none of whose attempts may have applied is recorded as not
    /// applied, any other operation as of unknown outcome.
    fn give_up(&mut self, io: &mut Io<'_>, history: &mut History) {
        let op = self.op.as_ref().expect("an operation in progress");
        let in_flight = matches!(self.waiting, Waiting::Group { .. });
        if op.kind.is_write() && !op.may_have_applied && !in_flight {
            history.record_not_applied(op.id);
        } else {
            history.record_unknown(op.id);
        }
        self.finish(io);
    }

    /// Routes by `config` from now on if it is not older than the placement it has; reads
    /// again after a pause while it is older than the refresh asked for.
    fn install(&mut self, io: &mut Io<'_>, config: &Configuration) {
        let current = self.routing.as_ref().map_or(0, Routing::config_num);
        if config.num.0 >= current {
            // Every node of a group has an address in production; here any will do (the
            // simulated network routes by node id).
            let registry =
                config.groups.values().flatten().map(|node| (*node, address_of(*node))).collect();
            let routing = Routing::from_configuration(config, &registry)
                .unwrap_or_else(|error| panic!("configuration {}: {error}", config.num));
            self.leaders.retain_members(&routing);
            self.routing = Some(routing);
        }
        let routing = self.routing.as_ref().expect("installed");
        match self.refresh.take() {
            Some(refresh) if routing.config_num() < refresh.at_least => {
                self.refresh = Some(refresh);
                self.pause(io);
            }
            Some(Refresh { skip: Some(node), .. }) => {
                let shard = self.op.as_ref().map(|op| op.shard);
                self.next_target = shard
                    .and_then(|shard| routing.group_of(shard))
                    .map(|group| next_member(routing, group, node));
            }
            Some(_) | None => {}
        }
    }

    /// The attempt at `target` for `group` failed as `failure`: where and when to try again,
    /// as `mosaic_client` decides ([`Retry::after`]).
    fn failed(&mut self, io: &mut Io<'_>, target: NodeId, group: GroupId, failure: &Failure) {
        let Some(op) = self.op.as_mut() else { return };
        op.may_have_applied |= failure.may_have_applied();
        if failure.action() == Action::RenewSession {
            // No run evicts a session: a refusal means one was lost.
            panic!("client {}: node {target} refused group {group}: {failure}", self.index);
        }
        let routing = self.routing.as_ref().expect("an attempt was routed");
        let target = target_of(routing, target);
        let next = self.retry.after(
            failure,
            routing,
            &mut self.leaders,
            group,
            target,
            op.may_have_applied,
        );
        let Next::Retry { target, pause, refresh } = next else {
            // Every request is valid.
            panic!("client {}: group {group} refused for good: {failure}", self.index);
        };
        self.next_target = target;
        if refresh.is_some() {
            self.refresh = refresh;
        }
        if pause {
            self.pause(io);
        }
    }
}

/// Records that `heard_by` heard tag `tag` hold `state`: each key's version in `versions`,
/// and the whole as what the client's next batch on the tag expects.
fn hear_tag(
    versions: &mut VersionLedger,
    heard_tags: &mut BTreeMap<u32, TagState>,
    tag: u32,
    state: TagState,
    heard_by: &str,
) {
    for (key, (value, version)) in &state {
        versions.heard(key, value, *version, heard_by);
    }
    heard_tags.insert(tag, state);
}

/// The consistency of a read by a client that reads as `reads` says.
fn read_consistency(reads: ReadMode, rng: &mut SplitMix64) -> Consistency {
    match reads {
        ReadMode::Linearizable => Consistency::Linearizable,
        ReadMode::LinearizableOrLease if rng.below(2) == 0 => Consistency::Lease,
        ReadMode::LinearizableOrLease => Consistency::Linearizable,
        ReadMode::StaleAtAnyReplica => Consistency::Stale,
    }
}

/// `node` as a target: a member of `routing`'s groups, or a leader a hint named from
/// outside them.
fn target_of(routing: &Routing, node: NodeId) -> Target {
    match routing.address(node) {
        Some(_) => Target::member(routing, node),
        None => Target { node, address: address_of(node) },
    }
}

/// A simulated node's address, as its agent registers it and a leader hint names it.
pub(crate) fn address_of(node: NodeId) -> String {
    format!("sim-{node}:1")
}

/// What a client of a real node makes of a store's refusal: the node's status for it
/// (`mosaic_client::refusal::to_status`), read back by the client's decision table.
pub(crate) fn failure_of(error: &Error) -> Failure {
    classify_status(&to_status(error, hint_address))
}

/// The address a node's refusal gives for the leader it names (empty for none).
pub(crate) fn hint_address(leader: Option<NodeId>) -> String {
    leader.map(address_of).unwrap_or_default()
}
