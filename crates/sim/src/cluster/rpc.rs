//! The requests simulated processes send each other (what gRPC carries in production), and
//! how a node turns one into a message for its store.
//!
//! A request names the caller's [`Endpoint`] and a [`RequestId`] unique in the run; the node
//! that serves it hands its store a `StoreMsg` whose callback files the answer in the shared
//! [`CompletionSink`], tagged with the serving node's incarnation. The world drains the sink
//! after every store step and sends each answer back over the network, or drops it if the
//! node crashed since (a dead process answers nothing). Requests a node of that kind cannot
//! serve are dropped, as a gRPC service that is not there would refuse them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosaic_controller::{
    ConfigNum, ControllerMachine, ControllerQuery, ControllerView, Liveness, NodeLiveness, Outcome,
};
use mosaic_engine::{GroupId, MemKv, ShardChunk, ShardCursor, ShardId};
use mosaic_raft::{ConfChange, ConfState, LogIndex, NodeId, Status};
use mosaic_raftstore::{
    Clock, Consistency, Error, LeaderRead, LeaderTerm, ManualClock, ShownOut, StoreMsg,
};
use mosaic_shardkv::request::{
    propose_migration, propose_write, read_handoff, read_led_ownerships, read_shard, read_value,
    watch,
};
use mosaic_shardkv::watch::{ShardWatch, WatchReceiver};
use mosaic_shardkv::{
    KvBatch, KvGet, KvStateMachine, KvWrite, MigrationCommand, MigrationOutcome, Ownership,
    ScanPage, ShardScan, Versioned, WriteOutcome,
};

use crate::cluster::world::CONTROLLER_GROUP;

/// Records per migration chunk are read up to this many bytes (small, so that a shard of a
/// few keys moves in several chunks).
const MIGRATION_CHUNK_BYTES_MAX: u64 = 64;

/// Who sends and receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Endpoint {
    /// A node: its store, and for a storage node the agent beside it.
    Node(NodeId),
    /// A client, by index.
    Client(u32),
    /// The administrator.
    Admin,
}

/// A request's id, unique in a run.
pub(crate) type RequestId = u64;

/// What one process asks of a node.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    /// A linearizable read of the controller's state (`Controller.Query`).
    ControllerRead {
        /// What is read.
        query: ControllerQuery,
        /// The storage node whose agent asks, which the leader hears (`QueryRequest.node_id`).
        asked_by: Option<NodeId>,
    },
    /// A controller command (`Controller.Execute`).
    ControllerPropose(mosaic_controller::Request),
    /// A client write through a storage group's log (`Kv.Write`).
    KvWrite {
        /// The group.
        group: GroupId,
        /// The write.
        write: KvWrite,
    },
    /// A client's atomic batch through a storage group's log (`Kv.Batch`).
    KvBatch {
        /// The group.
        group: GroupId,
        /// The batch.
        batch: KvBatch,
    },
    /// A migration step through a storage group's log: the agent's own, or `DeleteShard` from
    /// the group that pulled the shard (`ShardMigration.DeleteShard`).
    Migrate {
        /// The group.
        group: GroupId,
        /// The step.
        command: MigrationCommand,
    },
    /// A client read (`Kv.Get`).
    KvRead {
        /// The group.
        group: GroupId,
        /// The key.
        get: KvGet,
        /// How fresh.
        consistency: Consistency,
    },
    /// A client's scan of one page of a shard (`Kv.Scan`, one shard).
    KvScan {
        /// The group.
        group: GroupId,
        /// The page.
        scan: ShardScan,
        /// How fresh.
        consistency: Consistency,
    },
    /// A client's watch of keys of one shard (`Kv.Watch`): the answer is the replica's feed
    /// itself, which the client frames as a node's stream would (production streams it).
    KvWatch {
        /// The group.
        group: GroupId,
        /// What is watched.
        watch: ShardWatch,
        /// The level the replica must serve at.
        consistency: Consistency,
    },
    /// The check of a watch's replica a node's stream makes every few seconds: a read of the
    /// shard at the watch's level.
    WatchCheck {
        /// The group.
        group: GroupId,
        /// The shard.
        shard: ShardId,
        /// Of how many.
        shard_count: u32,
        /// The level.
        consistency: Consistency,
    },
    /// One chunk of a shard the group `group` sends to `to` in configuration `num`
    /// (`ShardMigration.PullShard`, one chunk per request: the shard is frozen while it is
    /// sent, so every point-in-time view of it holds the same records).
    PullChunk {
        /// The group sending the shard.
        group: GroupId,
        /// The group pulling it.
        to: GroupId,
        /// The shard.
        shard: ShardId,
        /// The configuration that moved it.
        num: ConfigNum,
        /// Where the chunk starts.
        cursor: ShardCursor,
    },
    /// The agent's in-process read of the ownership of every group its node leads.
    ReadLeaders,
    /// The agent's in-process creation of a replica.
    CreateGroup {
        /// The group.
        group: GroupId,
        /// Its members.
        members: Vec<NodeId>,
    },
    /// The agent's in-process destruction of a replica.
    DestroyGroup {
        /// The group.
        group: GroupId,
        /// The leader's view that showed the node out, if that is why.
        shown_out: Option<ShownOut>,
    },
    /// A replica's Raft status once it confirmed its leadership (`NodeAdmin.GroupStatus`
    /// with `confirm_leadership`, as the CLI asks it); a replica that does not lead answers
    /// an error.
    GroupStatus {
        /// The group.
        group: GroupId,
    },
    /// An empty replica of an existing group, with no membership (`NodeAdmin.JoinGroup`).
    JoinGroup {
        /// The group.
        group: GroupId,
        /// The leader and term the replica starts in.
        leader: LeaderTerm,
    },
    /// A membership change proposed at the group's leader (`NodeAdmin.ChangeMembership`).
    ChangeMembership {
        /// The group.
        group: GroupId,
        /// The change.
        change: ConfChange,
        /// Refused if the membership changed after this index.
        unchanged_since: LogIndex,
    },
}

/// What comes back.
#[derive(Debug)]
pub(crate) enum Response {
    /// Answers [`Request::ControllerRead`].
    ControllerView(Result<mosaic_controller::Result<ControllerAnswer>, Error>),
    /// Answers [`Request::ControllerPropose`].
    ControllerOutcome(Result<mosaic_controller::Result<Outcome>, Error>),
    /// Answers [`Request::KvWrite`] and [`Request::KvBatch`] (the store's and the state machine's refusals as one).
    KvWritten(Result<WriteOutcome, Error>),
    /// Answers [`Request::Migrate`].
    Migrated(Result<MigrationOutcome, Error>),
    /// Answers [`Request::KvRead`].
    KvValue(Result<Option<Versioned>, Error>),
    /// Answers [`Request::KvScan`].
    KvScanned(Result<ScanPage, Error>),
    /// Answers [`Request::KvWatch`].
    KvWatching(Result<WatchReceiver, Error>),
    /// Answers [`Request::PullChunk`].
    Chunk(Result<ShardChunk, Error>),
    /// Answers [`Request::ReadLeaders`]: each led group's ownership and membership.
    Leaders(Result<BTreeMap<GroupId, LedOwnership>, Error>),
    /// Answers [`Request::CreateGroup`], [`Request::DestroyGroup`], [`Request::JoinGroup`]
    /// and [`Request::WatchCheck`].
    Done(Result<(), Error>),
    /// Answers [`Request::GroupStatus`].
    Status(Result<Box<Status>, Error>),
    /// Answers [`Request::ChangeMembership`]: the membership once the change applied.
    Membership(Result<ConfState, Error>),
}

/// What the controller's leader answers to [`Request::ControllerRead`] (`QueryResponse`).
#[derive(Debug)]
pub(crate) struct ControllerAnswer {
    /// The configuration and the node registry.
    pub(crate) view: ControllerView,
    /// What the leader says of each registered node's liveness (nothing to a storage node).
    pub(crate) liveness: BTreeMap<NodeId, NodeLiveness>,
}

/// The ownership (`None` for a group not placed by a controller) and the applied membership
/// of a group led by the node that answered [`Request::ReadLeaders`].
pub(crate) type LedOwnership = LeaderRead<Option<Ownership>>;

/// Who waits for an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Where the answer goes.
    pub(crate) endpoint: Endpoint,
    /// The request it answers.
    pub(crate) id: RequestId,
}

/// An answer a store produced, waiting to be sent back.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The node that answered.
    pub(crate) node: NodeId,
    /// Its incarnation when it took the request.
    pub(crate) incarnation: u64,
    /// Who asked.
    pub(crate) caller: Caller,
    /// The answer.
    pub(crate) response: Response,
}

/// Where store callbacks file their answers (callbacks must be `Send`; the run has one
/// thread, so the lock is never contended).
pub(crate) type CompletionSink = Arc<Mutex<Vec<Completion>>>;

/// The return address of one request, moved into its store callback.
pub(crate) struct Reply {
    pub(crate) sink: CompletionSink,
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) caller: Caller,
    /// When the request reached the node (before its store took it, if the store stalled).
    pub(crate) arrived: super::Time,
}

impl Reply {
    fn send(self, response: Response) {
        let completion = Completion {
            node: self.node,
            incarnation: self.incarnation,
            caller: self.caller,
            response,
        };
        self.sink.lock().expect("one thread: never poisoned").push(completion);
    }
}

/// What a controller replica's process keeps beside its store to answer reads: its view of
/// the storage nodes' liveness (a new one each incarnation, as the controller service's) and
/// the clock it reads.
#[derive(Clone)]
pub(crate) struct ControllerProcess {
    pub(crate) liveness: Arc<Mutex<Liveness>>,
    pub(crate) clock: ManualClock,
}

/// The store message serving `request` at a controller replica whose process is `process`;
/// `None` for a request that only storage nodes serve.
pub(crate) fn controller_msg(
    request: Request,
    reply: Reply,
    process: &ControllerProcess,
) -> Option<StoreMsg<MemKv, ControllerMachine>> {
    let group = CONTROLLER_GROUP;
    Some(match request {
        Request::ControllerRead { query, asked_by } => {
            let ControllerProcess { liveness, clock } = process.clone();
            StoreMsg::Read {
                group,
                query,
                consistency: Consistency::Linearizable,
                callback: Box::new(move |result| {
                    // Answered at the leader only, as the controller service answers, with
                    // what it says of liveness.
                    let result =
                        result.and_then(|read| read.at_leader(group)).map(|(output, term)| {
                            output.map(|view| {
                                let arrived = Duration::from_millis(reply.arrived);
                                let asked_by =
                                    asked_by.filter(|node| view.nodes.contains_key(node));
                                let nodes = view.nodes.keys().copied();
                                let liveness = liveness
                                    .lock()
                                    .expect("one thread: never poisoned")
                                    .answer(asked_by, term, arrived, clock.now(), nodes);
                                ControllerAnswer { view, liveness }
                            })
                        });
                    reply.send(Response::ControllerView(result));
                }),
            }
        }
        Request::ControllerPropose(proposal) => StoreMsg::Propose {
            group,
            proposal,
            callback: Box::new(move |result| reply.send(Response::ControllerOutcome(result))),
        },
        _ => return None,
    })
}

/// The store message serving `request` at a storage node; `None` for a request that only
/// controller replicas serve.
pub(crate) fn storage_msg(
    request: Request,
    reply: Reply,
) -> Option<StoreMsg<MemKv, KvStateMachine>> {
    Some(match request {
        Request::KvWrite { group, write } => propose_write(
            group,
            write,
            Box::new(move |result| reply.send(Response::KvWritten(result))),
        ),
        Request::KvBatch { group, batch } => propose_write(
            group,
            batch,
            Box::new(move |result| reply.send(Response::KvWritten(result))),
        ),
        Request::Migrate { group, command } => propose_migration(
            group,
            command,
            Box::new(move |result| reply.send(Response::Migrated(result))),
        ),
        Request::KvRead { group, get, consistency } => read_value(
            group,
            get,
            consistency,
            Box::new(move |result| reply.send(Response::KvValue(result.map(|read| read.output)))),
        ),
        Request::KvScan { group, scan, consistency } => read_shard(
            group,
            scan.shard,
            scan.shard_count,
            consistency,
            Box::new(move |result| {
                // Read from the view as the KV service reads it.
                let page = result.and_then(|read| scan.read(group, &read.output));
                reply.send(Response::KvScanned(page));
            }),
        ),
        Request::KvWatch { group, watch: shard_watch, consistency } => watch(
            group,
            shard_watch,
            consistency,
            Box::new(move |result| {
                reply.send(Response::KvWatching(result.map(|read| read.output)));
            }),
        ),
        Request::WatchCheck { group, shard, shard_count, consistency } => read_shard(
            group,
            shard,
            shard_count,
            consistency,
            Box::new(move |result| reply.send(Response::Done(result.map(drop)))),
        ),
        Request::PullChunk { group, to, shard, num, cursor } => read_handoff(
            group,
            num,
            shard,
            to,
            Box::new(move |result| {
                let chunk = result.and_then(|snapshot| {
                    Ok(snapshot.scan_shard_chunk(
                        group,
                        shard,
                        &cursor,
                        MIGRATION_CHUNK_BYTES_MAX,
                    )?)
                });
                reply.send(Response::Chunk(chunk));
            }),
        ),
        Request::ReadLeaders => {
            read_led_ownerships(Box::new(move |result| reply.send(Response::Leaders(result))))
        }
        Request::CreateGroup { group, members } => StoreMsg::CreateGroup {
            group,
            members,
            callback: Box::new(move |result| reply.send(Response::Done(result))),
        },
        Request::DestroyGroup { group, shown_out } => StoreMsg::DestroyGroup {
            group,
            shown_out,
            callback: Box::new(move |result| reply.send(Response::Done(result))),
        },
        Request::GroupStatus { group } => StoreMsg::Status {
            group,
            confirm: true,
            callback: Box::new(move |result| reply.send(Response::Status(result.map(Box::new)))),
        },
        Request::JoinGroup { group, leader } => StoreMsg::JoinGroup {
            group,
            leader: Some(leader),
            callback: Box::new(move |result| reply.send(Response::Done(result))),
        },
        Request::ChangeMembership { group, change, unchanged_since } => {
            StoreMsg::ChangeMembership {
                group,
                change,
                unchanged_since: Some(unchanged_since),
                callback: Box::new(move |result| reply.send(Response::Membership(result))),
            }
        }
        Request::ControllerRead { .. } | Request::ControllerPropose(_) => return None,
    })
}

/// What an actor (agent, client, administrator) does in one step: it may draw randomness
/// and send requests, which the world routes once the step is over.
pub(crate) struct Io<'a> {
    /// The virtual time of the step.
    pub(crate) now: super::Time,
    /// The run's one generator.
    pub(crate) rng: &'a mut mosaic_raft::SplitMix64,
    next_id: &'a mut RequestId,
    /// The requests sent in this step, with the node each goes to.
    pub(crate) sent: Vec<(NodeId, RequestId, Request)>,
}

impl<'a> Io<'a> {
    /// A step at `now`; request ids continue from `next_id`.
    pub(crate) fn new(
        now: super::Time,
        rng: &'a mut mosaic_raft::SplitMix64,
        next_id: &'a mut RequestId,
    ) -> Self {
        Self { now, rng, next_id, sent: Vec::new() }
    }

    /// Sends `request` to `node`; returns its id.
    pub(crate) fn request(&mut self, node: NodeId, request: Request) -> RequestId {
        *self.next_id += 1;
        let id = *self.next_id;
        self.sent.push((node, id, request));
        id
    }
}
