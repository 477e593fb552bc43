//! A storage node's agent in the simulation: the shipped [`mosaic_agent::NodeAgent`] (what
//! the production server runs too), executed over the simulated network and the node's
//! store. This module decides nothing: it turns the agent's requests into the simulator's
//! (`Controller.Query` and `Execute` to the controller replica [`ControllerLink`] picks,
//! store requests to its own node, pulls and deletes to the source replica named) and their
//! answers back.
//!
//! The executor checks what no correct run does: a controller refusing a read or a
//! registration.

use std::collections::BTreeMap;

use mosaic_agent::{
    Action, AgentConfig, Answer, Birth, DEFAULT_PULLS_MAX, DEFAULT_TASK_RETRY_MAX_MS, LocalState,
    NodeAgent,
};
use mosaic_controller::ControllerQuery;
use mosaic_engine::{ClientId, WriteBatch, WriteOptions};
use mosaic_raft::NodeId;
use mosaic_raftstore::Error;
use mosaic_raftstore::membership::LeaderView;
use mosaic_shardkv::{KvStateMachine, MigrationCommand};

use crate::cluster::Time;
use crate::cluster::client::address_of;
use crate::cluster::controller_link::ControllerLink;
use crate::cluster::node::SimStore;
use crate::cluster::rpc::{Io, Request, RequestId, Response};

pub(crate) use mosaic_agent::POLL_INTERVAL_MS;

/// A request unanswered for this long has failed.
const REQUEST_TIMEOUT_MS: Time = 1_000;
/// How long one attempt at a membership change may take (the server's is minutes: here data
/// is small, and shorter attempts see more restarts of the planner).
const MEMBERSHIP_ATTEMPT_MS: Time = 8_000;

/// A simulated request made for the agent.
#[derive(Debug)]
struct Sent {
    /// The agent's id of the request.
    id: mosaic_agent::RequestId,
    /// The node asked.
    target: NodeId,
    /// True for a `DeleteShard`, whose `NotLeader` refusal names the group's leader.
    deletes_shard: bool,
}

/// The agent of one storage node and its executor. See the module documentation.
pub(crate) struct SimAgent {
    agent: NodeAgent,
    controller: ControllerLink,
    /// The simulated requests in flight, by their id.
    sent: BTreeMap<RequestId, Sent>,
}

impl SimAgent {
    /// The agent of `node`'s incarnation `incarnation` over `store`, following the
    /// controller replicas `controllers`.
    pub(crate) fn new(
        node: NodeId,
        incarnation: u64,
        controllers: Vec<NodeId>,
        store: &SimStore<KvStateMachine>,
    ) -> Self {
        let engine = store.engine();
        let record = KvStateMachine::placed_since(engine).expect("in memory");
        let birth = Birth::of_store(record, store.groups().next().is_some());
        let config = AgentConfig {
            node,
            address: address_of(node),
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            membership_attempt_ms: MEMBERSHIP_ATTEMPT_MS,
            membership_retry_ms: REQUEST_TIMEOUT_MS,
            task_retry_max_ms: DEFAULT_TASK_RETRY_MAX_MS,
            pulls_max: DEFAULT_PULLS_MAX,
        };
        let client = ClientId((1 << 40) | (node.0 << 20) | incarnation);
        Self {
            agent: NodeAgent::new(config, birth),
            controller: ControllerLink::new(controllers, client),
            sent: BTreeMap::new(),
        }
    }

    /// True once the node is back with all its data ([`NodeAgent::is_settled`]).
    pub(crate) fn is_settled(&self) -> bool {
        self.agent.is_settled()
    }

    /// The periodic step.
    pub(crate) fn poll(&mut self, io: &mut Io<'_>, store: &SimStore<KvStateMachine>) {
        let actions = self.agent.poll(io.now);
        self.execute(io, store, actions);
    }

    /// Hands the answer to request `id` to the agent.
    pub(crate) fn on_response(
        &mut self,
        io: &mut Io<'_>,
        id: RequestId,
        response: Response,
        store: &SimStore<KvStateMachine>,
    ) {
        let Some(Sent { id, target, deletes_shard }) = self.sent.remove(&id) else {
            return; // Cancelled.
        };
        let node = self.agent.node();
        if self.controller.is_replica(target) {
            match &response {
                Response::ControllerView(Err(error)) | Response::ControllerOutcome(Err(error)) => {
                    self.controller.failed(target, Some(error));
                }
                _ => self.controller.answered(target),
            }
        }
        let failed = |error: Error| Answer::Failed(error.to_string());
        let answer = match response {
            // A shard deleted at a replica of its group (`ShardMigration.DeleteShard`) that
            // named the group's leader, as the server's executor reads the refusal.
            Response::Migrated(Err(Error::NotLeader { leader: Some(leader), .. }))
                if deletes_shard =>
            {
                Answer::Redirect(leader)
            }
            Response::ControllerView(Ok(Ok(answer))) => Answer::View(answer.view),
            Response::ControllerView(Ok(Err(error))) => {
                panic!("node {node}: the controller refused a read: {error}")
            }
            Response::ControllerOutcome(Ok(Ok(outcome))) => Answer::Executed(outcome),
            Response::ControllerOutcome(Ok(Err(refusal))) => Answer::Refused(refusal.to_string()),
            Response::Migrated(Ok(outcome)) => Answer::Applied(outcome),
            Response::Chunk(Ok(chunk)) => Answer::Chunk(chunk),
            Response::Leaders(Ok(led)) => Answer::Local(LocalState {
                hosted: store.groups().collect(),
                memberships: led
                    .iter()
                    .map(|(group, read)| (*group, read.conf_state.clone()))
                    .collect(),
                led: led
                    .into_iter()
                    .filter_map(|(group, read)| Some((group, read.output.ok()??)))
                    .collect(),
            }),
            Response::Done(Ok(())) | Response::Membership(Ok(_)) => Answer::Done,
            Response::Status(Ok(status)) => Answer::Leader(LeaderView::of_leader(&status)),
            Response::Membership(Err(error @ Error::InvalidArgument { .. }))
            | Response::Done(Err(error @ Error::InvalidArgument { .. })) => {
                Answer::Refused(error.to_string())
            }
            Response::ControllerView(Err(error))
            | Response::ControllerOutcome(Err(error))
            | Response::Migrated(Err(error))
            | Response::Chunk(Err(error))
            | Response::Leaders(Err(error))
            | Response::Done(Err(error))
            | Response::Status(Err(error))
            | Response::Membership(Err(error)) => failed(error),
            response => panic!("node {node}: request {id} answered with {response:?}"),
        };
        let actions = self.agent.on_answer(io.now, id, answer);
        self.execute(io, store, actions);
    }

    fn execute(&mut self, io: &mut Io<'_>, store: &SimStore<KvStateMachine>, actions: Vec<Action>) {
        let node = self.agent.node();
        let mut actions = std::collections::VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            let (id, request) = match action {
                Action::Send { id, request } => (id, request),
                Action::Cancel { id } => {
                    let cancelled: Vec<RequestId> = self
                        .sent
                        .iter()
                        .filter(|(_, sent)| sent.id == id)
                        .map(|(sim_id, _)| *sim_id)
                        .collect();
                    for sim_id in cancelled {
                        let sent = self.sent.remove(&sim_id).expect("listed");
                        if self.controller.is_replica(sent.target) {
                            self.controller.failed(sent.target, None);
                        }
                    }
                    continue;
                }
            };
            let deletes_shard = matches!(request, mosaic_agent::Request::DeleteShard { .. });
            let (target, request) = match request {
                mosaic_agent::Request::Query { num } => {
                    let query = ControllerQuery { num };
                    (
                        self.controller.target(),
                        Request::ControllerRead { query, asked_by: Some(node) },
                    )
                }
                mosaic_agent::Request::Execute(command) => {
                    let request = self.controller.new_request(command);
                    (self.controller.target(), Request::ControllerPropose(request))
                }
                mosaic_agent::Request::RecordBirth(since) => {
                    // The server writes the record beside the store too, synced.
                    let mut batch = WriteBatch::new();
                    KvStateMachine::mark_placed_since(&mut batch, since);
                    store.engine().write(&batch, WriteOptions { sync: true }).expect("in memory");
                    actions.extend(self.agent.on_answer(io.now, id, Answer::Done));
                    continue;
                }
                mosaic_agent::Request::ReadLocal => (node, Request::ReadLeaders),
                mosaic_agent::Request::CreateGroup { group, members } => {
                    (node, Request::CreateGroup { group, members })
                }
                mosaic_agent::Request::DestroyGroup { group, shown_out } => {
                    (node, Request::DestroyGroup { group, shown_out })
                }
                mosaic_agent::Request::GroupStatus { node: at, group } => {
                    (at, Request::GroupStatus { group })
                }
                mosaic_agent::Request::JoinGroup { node: at, group, leader } => {
                    (at, Request::JoinGroup { group, leader })
                }
                mosaic_agent::Request::ChangeMembership {
                    leader,
                    group,
                    change,
                    unchanged_since,
                } => (leader, Request::ChangeMembership { group, change, unchanged_since }),
                mosaic_agent::Request::Propose { group, command } => {
                    (node, Request::Migrate { group, command })
                }
                mosaic_agent::Request::PullChunk { source, from, to, shard, num, cursor } => {
                    (source, Request::PullChunk { group: from, to, shard, num, cursor })
                }
                mosaic_agent::Request::DeleteShard { source, group, shard, num } => {
                    let command = MigrationCommand::DeleteShard { num, shard };
                    (source, Request::Migrate { group, command })
                }
            };
            let sim_id = io.request(target, request);
            self.sent.insert(sim_id, Sent { id, target, deletes_shard });
        }
        assert!(!self.agent.is_refused(), "node {node}: the controller refused its registration");
    }
}
