//! A simulated client: one sequential process doing gets, puts, appends and deletes on a
//! few shared keys, routed the way `mosaic_client` routes them.
//!
//! Routing: `shard_for_key(key, shard_count)`, the owner of that shard in the client's
//! cached configuration, then the group's leader as far as the client knows, else its
//! members in turn. What a refusal means is decided as a client of a real node decides it: the
//! store's error becomes the status the node answers (`mosaic_client::refusal::to_status`),
//! which `mosaic_client`'s decision table reads back (`mosaic_client::classify`: the next
//! step, and whether the write may have been applied); a request unanswered in time is the
//! table's `AttemptTimedOut`. A leader hint is followed: a hint to a listed member is
//! remembered, a hint to a node the configuration does not list (the group's membership was
//! changed behind the controller's back) is tried once, not twice in a row. Reads are
//! `Consistency::Linearizable` (or `Lease`) at the leader, unless the deliberately broken
//! `ReadMode::StaleAtAnyReplica` reads any replica.
//!
//! Invariants:
//! - every write carries `(client, seq)`, and every retry of it the same pair, so the group
//!   applies it at most once however often it is sent (6.824 Lab 3), unless the deliberately
//!   broken `fresh_seq_per_attempt` mode is on;
//! - a write to a shard where an earlier write of the client was answered says it expects its
//!   session there (`KvWrite::expects_session`, as `mosaic_client`'s lanes do); no group
//!   evicts a session in a run (a few clients, thousands of sessions per shard), so a
//!   `SessionExpired` refusal means a session was lost (a migration that dropped it) and
//!   fails the run;
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
use mosaic_client::shard_for_key;
use mosaic_controller::{Configuration, ControllerQuery};
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::NodeId;
use mosaic_raftstore::Consistency;
use mosaic_shardkv::{Applied, KvGet, KvWrite, WriteKind};

use crate::cluster::Time;
use crate::cluster::config::ReadMode;
use crate::cluster::controller_link::ControllerLink;
use crate::cluster::net::chance;
use crate::cluster::rpc::{Io, Request, RequestId, Response};
use crate::linearizability::{History, OpId, Operation, Output};

/// A request unanswered for this long is sent again.
const REQUEST_TIMEOUT_MS: Time = 500;
/// The pause before retrying after a refusal, at most (random below it).
const RETRY_PAUSE_MS_MAX: Time = 40;
/// The pause between two operations, at most (random below it).
const THINK_MS_MAX: Time = 30;

/// One operation in progress.
#[derive(Debug)]
struct Op {
    id: OpId,
    key: Bytes,
    shard: ShardId,
    /// `None` for a get; the write (with its session seq) otherwise.
    write: Option<KvWrite>,
    called: Time,
    /// True once an attempt failed in a way that may have applied the write
    /// (`mosaic_client::classify::Failure::may_have_applied`).
    may_have_applied: bool,
}

/// What the client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Nothing: it acts at its next poll.
    Nothing,
    /// A pause until then.
    Until(Time),
    /// The answer to request `id`, sent to `target` for `group` (`hinted`: a node outside
    /// the group's listed members, named by a `NotLeader` hint).
    Group { id: RequestId, target: NodeId, group: GroupId, hinted: bool, deadline: Time },
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
    shard_count: u32,
    reads: ReadMode,
    fresh_seq_per_attempt: bool,
    seq: u64,
    controller: ControllerLink,
    config: Option<Configuration>,
    refresh: bool,
    leaders: BTreeMap<GroupId, NodeId>,
    /// A leader outside the group's listed members that a refusal named: the next attempt
    /// for that group goes there, once (`mosaic_client`'s `hinted`).
    hinted: Option<(GroupId, NodeId)>,
    rotation: usize,
    op: Option<Op>,
    waiting: Waiting,
    /// Operations it may still start (`None`: any number).
    budget: Option<u32>,
    completed: u64,
    /// The last refusal, for a failure report.
    last_refusal: Option<String>,
    /// The shards where a write of this client was answered (its session exists there).
    sessions: BTreeSet<ShardId>,
}

impl SimClient {
    /// Client `index` of `keys` keys over `shard_count` shards.
    pub(crate) fn new(
        index: u32,
        keys: u32,
        shard_count: u32,
        reads: ReadMode,
        fresh_seq_per_attempt: bool,
        controllers: Vec<NodeId>,
    ) -> Self {
        let id = ClientId(u64::from(index) + 1);
        Self {
            index,
            id,
            keys,
            shard_count,
            reads,
            fresh_seq_per_attempt,
            seq: 0,
            controller: ControllerLink::new(controllers, ClientId(u64::MAX - u64::from(index))),
            config: None,
            refresh: true,
            leaders: BTreeMap::new(),
            hinted: None,
            rotation: index as usize,
            op: None,
            waiting: Waiting::Nothing,
            budget: None,
            completed: 0,
            last_refusal: None,
            sessions: BTreeSet::new(),
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
                 with {:?}, configuration {:?}",
                self.index,
                op.id,
                op.key,
                op.shard,
                op.called,
                self.waiting,
                self.last_refusal,
                self.config.as_ref().map(|config| config.num),
            ),
            None => format!("client {}: idle, {:?} operations left", self.index, self.budget),
        }
    }

    /// The periodic step: retries what timed out, gives up what is too old, starts the next
    /// operation.
    pub(crate) fn poll(&mut self, io: &mut Io<'_>, history: &mut History, policy: ClientPolicy) {
        match self.waiting {
            Waiting::Group { target, group, hinted, deadline, .. } if deadline <= io.now => {
                tracing::trace!(client = self.index, %target, %group, "request timed out");
                self.waiting = Waiting::Nothing;
                self.failed(io, target, group, hinted, &Failure::AttemptTimedOut);
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

    /// Handles the answer to request `id`.
    pub(crate) fn on_response(
        &mut self,
        io: &mut Io<'_>,
        history: &mut History,
        policy: ClientPolicy,
        id: RequestId,
        response: Response,
    ) {
        match self.waiting {
            Waiting::Config { id: waited, target, .. } if waited == id => {
                self.waiting = Waiting::Nothing;
                match response {
                    Response::ControllerView(Ok(Ok(view))) => {
                        self.controller.answered(target);
                        if self.config.as_ref().is_none_or(|config| config.num <= view.config.num) {
                            self.config = Some(view.config);
                        }
                        self.refresh = false;
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
            Waiting::Group { id: waited, target, group, hinted, .. } if waited == id => {
                self.waiting = Waiting::Nothing;
                let op = self.op.as_ref().expect("waiting for an operation");
                let output = match response {
                    Response::KvApplied(Ok(Applied::Write(_))) if op.write.is_some() => {
                        Ok(Output::Written)
                    }
                    Response::KvValue(Ok(value)) if op.write.is_none() => Ok(Output::Value(value)),
                    Response::KvApplied(Err(error)) | Response::KvValue(Err(error)) => Err(error),
                    other => panic!("client {}: {op:?} answered {other:?}", self.index),
                };
                match output {
                    Ok(output) => {
                        if op.write.is_some() {
                            self.sessions.insert(op.shard);
                        }
                        history.record_return(op.id, output, io.now);
                        self.finish(io);
                    }
                    Err(error) => {
                        self.last_refusal = Some(format!("node {target} group {group}: {error}"));
                        // What a client of a real node makes of it: the node's status for the
                        // refusal, read back by the client's decision table.
                        let failure = classify_status(&to_status(&error, |_| String::new()));
                        self.failed(io, target, group, hinted, &failure);
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

    fn start(&mut self, io: &mut Io<'_>, history: &mut History) {
        let key = Bytes::from(format!("key-{}", io.rng.below(u64::from(self.keys))));
        let shard = shard_for_key(&key, self.shard_count);
        let (operation, write) = match io.rng.below(10) {
            0..=3 => (Operation::Get, None),
            roll => {
                self.seq += 1;
                let token = format!("c{}.{}", self.index, self.seq);
                let (kind, value, operation) = match roll {
                    4..=5 => {
                        let value = Bytes::from(token);
                        (WriteKind::Put, value.clone(), Operation::Put(value))
                    }
                    6..=8 => {
                        let value = Bytes::from(format!("[{token}]"));
                        (WriteKind::Append, value.clone(), Operation::Append(value))
                    }
                    _ => (WriteKind::Delete, Bytes::new(), Operation::Delete),
                };
                let write = KvWrite {
                    kind,
                    client: self.id,
                    seq: self.seq,
                    shard,
                    key: key.clone(),
                    value,
                    expects_session: self.sessions.contains(&shard),
                };
                (operation, Some(write))
            }
        };
        let id = history.record_call(self.id, key.clone(), operation, io.now);
        if let Some(budget) = &mut self.budget {
            *budget -= 1;
        }
        self.op = Some(Op { id, key, shard, write, called: io.now, may_have_applied: false });
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
            && let Some(write) = self.op.as_mut().and_then(|op| op.write.as_mut())
        {
            self.seq += 1;
            write.seq = self.seq;
        }
        let op = self.op.as_ref().expect("an operation in progress");
        let routed = self.config.as_ref().filter(|_| !self.refresh).and_then(|config| {
            let group = config.owner(op.shard)?;
            Some((group, config.groups.get(&group)?))
        });
        let Some((group, members)) = routed else {
            let target = self.controller.target();
            let id = io.request(target, Request::ControllerRead(ControllerQuery { num: None }));
            self.waiting = Waiting::Config { id, target, deadline: io.now + REQUEST_TIMEOUT_MS };
            return;
        };
        let stale = self.reads == ReadMode::StaleAtAnyReplica && op.write.is_none();
        let hinted = self.hinted.take().filter(|(hinted, _)| *hinted == group && !stale);
        let target = match (hinted, self.leaders.get(&group)) {
            (Some((_, node)), _) => node,
            (None, Some(leader)) if !stale && members.contains(leader) => *leader,
            _ if stale => members[io.rng.below(members.len() as u64) as usize],
            _ => members[self.rotation % members.len()],
        };
        let hinted = hinted.is_some();
        let request = match &op.write {
            Some(write) => Request::KvPropose { group, command: write.clone().into() },
            None => Request::KvRead {
                group,
                get: KvGet { shard: op.shard, key: op.key.clone() },
                consistency: match self.reads {
                    ReadMode::Linearizable => Consistency::Linearizable,
                    ReadMode::LinearizableOrLease if io.rng.below(2) == 0 => Consistency::Lease,
                    ReadMode::LinearizableOrLease => Consistency::Linearizable,
                    ReadMode::StaleAtAnyReplica => Consistency::Stale,
                },
            },
        };
        let id = io.request(target, request);
        let deadline = io.now + REQUEST_TIMEOUT_MS;
        self.waiting = Waiting::Group { id, target, group, hinted, deadline };
    }

    /// Gives up on the operation in progress, which is not waiting for an answer unless the
    /// request was sent: a write none of whose attempts may have applied is recorded as not
    /// applied, any other operation as of unknown outcome.
    fn give_up(&mut self, io: &mut Io<'_>, history: &mut History) {
        let op = self.op.as_ref().expect("an operation in progress");
        let in_flight = matches!(self.waiting, Waiting::Group { .. });
        if op.write.is_some() && !op.may_have_applied && !in_flight {
            history.record_not_applied(op.id);
        } else {
            history.record_unknown(op.id);
        }
        self.finish(io);
    }

    /// The attempt at `target` (reached by a hint to a node outside the group's listed members
    /// if `hinted`) for `group` failed as `failure`: where and when to try again, as
    /// `mosaic_client` decides ([`Failure::action`]).
    fn failed(
        &mut self,
        io: &mut Io<'_>,
        target: NodeId,
        group: GroupId,
        hinted: bool,
        failure: &Failure,
    ) {
        if let Some(op) = self.op.as_mut() {
            op.may_have_applied |= failure.may_have_applied();
        }
        let listed = |node: NodeId| {
            self.config
                .as_ref()
                .and_then(|config| config.groups.get(&group))
                .is_some_and(|members| members.contains(&node))
        };
        match failure.action() {
            Action::FollowLeader(hint) if hint.node != target && listed(hint.node) => {
                self.leaders.insert(group, hint.node);
            }
            Action::FollowLeader(hint) if hint.node != target && !hinted => {
                self.hinted = Some((group, hint.node));
            }
            Action::FollowLeader(_) | Action::NextMember => {
                self.leaders.remove(&group);
                self.rotation += 1;
                self.pause(io);
            }
            // The group moved on, or is gone (retired and destroyed): ask the controller.
            Action::RefreshRouting => {
                self.refresh = true;
                self.pause(io);
            }
            Action::RefreshRoutingNextMember => {
                self.refresh = true;
                self.rotation += 1;
                self.pause(io);
            }
            Action::SameNode => self.pause(io),
            // No run evicts a session, and every request is valid.
            Action::RenewSession | Action::Fail => {
                panic!("client {}: node {target} refused group {group}: {failure}", self.index)
            }
        }
    }
}
