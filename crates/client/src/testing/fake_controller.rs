//! A fake controller group: replicas serving the `Controller` gRPC service on loopback ports,
//! for the tests of [`crate::ControllerClient`] and [`crate::ControllerRouting`], and for
//! [`super::FakeCluster`].
//!
//! One replica leads. It applies commands with the controller's deduplication rule (one
//! session per client id: the latest seq again answers its first result, an older one is
//! refused as stale) to a tiny state machine: `RegisterNode` registers, `MoveShard` is
//! refused (the fake's commands know no groups), every other command changes nothing. Tests
//! change the configuration directly instead ([`FakeController::publish`]; the history starts
//! with configuration 0 of [`FAKE_SHARD_COUNT`] shards, or of the count
//! [`FakeController::start_with_shards`] names), and may register nodes directly
//! ([`FakeController::register`]). The leader answers a query for any configuration of the
//! history (the latest when none is named), and `NotFound` for any later number, as a
//! controller replica does. The other replicas answer `NotLeader`, naming the leader, another
//! replica, or no one. Faults queued with [`FakeController::inject`] make the leader fail its
//! next requests, before or after applying them, and [`FakeController::fail_queries`] makes it
//! fail every query until told otherwise. Every replica records every request it receives.

#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "a user's `FakeCluster` needs only part of what this crate's tests script"
    )
)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use mosaic_controller::{Command, ConfigNum, Configuration, Error, Outcome, Request};
use mosaic_engine::{ClientId, GroupId};
use mosaic_proto::controller::{QueryAnswer, execute_response_to_pb, request_from_pb};
use mosaic_proto::pb;
use mosaic_proto::pb::controller_server::{Controller, ControllerServer};
use mosaic_raft::NodeId;
use prost::Message as _;
use tonic::{Code, Status};

use super::{loopback_listener, serve};

/// The number of shards of the fake's configuration 0.
pub(crate) const FAKE_SHARD_COUNT: u32 = 4;

/// What a replica does with the requests it receives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Role {
    /// Applies commands and answers queries.
    Leader,
    /// Answers `NotLeader` naming no leader.
    Follower,
    /// Answers `NotLeader` naming replica `i` (by index) and its address.
    Redirect(usize),
    /// Is not running: its port refuses connections.
    Down,
}

/// A fault the leader answers one request with.
#[derive(Debug)]
pub(crate) enum Fault {
    /// Answers this status without applying the command.
    Before(Status),
    /// Applies the command, then answers this status instead of its result (the answer is
    /// lost).
    After(Status),
}

/// One request a replica received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Received {
    /// The replica, by index.
    pub(crate) replica: usize,
    /// What it asked.
    pub(crate) call: ReceivedCall,
}

/// The request itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReceivedCall {
    Execute { client: u64, seq: u64 },
    Query { num: Option<u64> },
}

/// The fake group's state, shared by its replicas.
#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    faults: VecDeque<Fault>,
    /// Every command applied, in order (a retried request is applied once).
    applied: Vec<Request>,
    /// Per client: the latest seq applied and its result.
    sessions: BTreeMap<ClientId, (u64, std::result::Result<Outcome, Error>)>,
    nodes: BTreeMap<NodeId, String>,
    /// Every configuration, by number. Invariant: `configs[n].num == n`, never empty.
    configs: Vec<Configuration>,
    /// Whether the leader answers every query `Unavailable`.
    queries_failing: bool,
}

/// A running fake controller group.
#[derive(Clone, Debug)]
pub(crate) struct FakeController {
    addresses: Vec<String>,
    state: Arc<Mutex<State>>,
}

impl FakeController {
    /// Starts one replica per role, each on its own loopback port.
    ///
    /// # Panics
    /// If a `Redirect` names a replica that does not exist.
    pub(crate) async fn start(roles: &[Role]) -> Self {
        Self::start_with_shards(roles, FAKE_SHARD_COUNT).await
    }

    /// [`FakeController::start`], with configuration 0 of `shard_count` shards.
    pub(crate) async fn start_with_shards(roles: &[Role], shard_count: u32) -> Self {
        let mut listeners = Vec::new();
        for _ in roles {
            listeners.push(loopback_listener().await);
        }
        let addresses: Vec<String> = listeners.iter().map(|(_, address)| address.clone()).collect();
        let state = Arc::new(Mutex::new(State {
            configs: vec![Configuration::initial(shard_count)],
            ..State::default()
        }));
        for (index, (role, (listener, _))) in roles.iter().zip(listeners).enumerate() {
            if let Role::Redirect(to) = role {
                assert!(*to < roles.len(), "replica {index} redirects to {to} of {}", roles.len());
            }
            let replica = Replica {
                index,
                role: *role,
                addresses: addresses.clone(),
                state: Arc::clone(&state),
            };
            if let Role::Down = role {
                drop(listener);
                continue;
            }
            let router =
                tonic::transport::Server::builder().add_service(ControllerServer::new(replica));
            serve(listener, router);
        }
        Self { addresses, state }
    }

    /// The replicas' addresses, by index.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.addresses.clone()
    }

    /// Queues `fault` for the leader's next request that no earlier fault answers.
    pub(crate) fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push_back(fault);
    }

    /// Every request received so far, in order.
    pub(crate) fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// The replicas that received the requests so far, in order.
    pub(crate) fn replicas_reached(&self) -> Vec<usize> {
        lock(&self.state).received.iter().map(|received| received.replica).collect()
    }

    /// Every command applied so far, in order.
    pub(crate) fn applied(&self) -> Vec<Request> {
        lock(&self.state).applied.clone()
    }

    /// Makes `config` the latest configuration.
    ///
    /// # Panics
    /// If `config` is not numbered one past the latest, or has a shard count other than
    /// configuration 0's.
    pub(crate) fn publish(&self, config: Configuration) {
        let mut state = lock(&self.state);
        let next = state.configs.len() as u64;
        assert_eq!(config.num, ConfigNum(next), "the next configuration is {next}");
        let shard_count = state.configs[0].shard_count();
        assert_eq!(config.shard_count(), shard_count, "configuration {}", config.num);
        state.configs.push(config);
    }

    /// Registers `node` at `address`, as an applied `RegisterNode` would.
    pub(crate) fn register(&self, node: NodeId, address: &str) {
        lock(&self.state).nodes.insert(node, address.to_string());
    }

    /// Makes the leader answer every query `Unavailable` (`true`), or answer them again.
    pub(crate) fn fail_queries(&self, failing: bool) {
        lock(&self.state).queries_failing = failing;
    }

    /// How many queries the replicas have received so far.
    pub(crate) fn queries_received(&self) -> usize {
        lock(&self.state)
            .received
            .iter()
            .filter(|received| matches!(received.call, ReceivedCall::Query { .. }))
            .count()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking handler leaves the state as consistent as any request does.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One replica's service.
struct Replica {
    index: usize,
    role: Role,
    addresses: Vec<String>,
    state: Arc<Mutex<State>>,
}

impl Replica {
    /// Records `call`; answers `NotLeader` unless this replica leads, and the leader's next
    /// fault, if one is queued.
    fn receive(&self, state: &mut State, call: ReceivedCall) -> Result<Option<Fault>, Status> {
        state.received.push(Received { replica: self.index, call });
        let (leader_node, leader_address) = match self.role {
            Role::Leader => return Ok(state.faults.pop_front()),
            Role::Down => unreachable!("a replica that is down receives nothing"),
            Role::Follower => (None, String::new()),
            Role::Redirect(to) => (Some(to as u64 + 1), self.addresses[to].clone()),
        };
        let detail = pb::ErrorDetail {
            kind: Some(pb::error_detail::Kind::NotLeader(pb::NotLeader {
                leader_node,
                leader_address,
            })),
        };
        Err(Status::with_details(
            Code::FailedPrecondition,
            "not the controller's leader",
            Bytes::from(detail.encode_to_vec()),
        ))
    }
}

/// Applies `request` by the controller's session rule; returns its result.
fn apply(state: &mut State, request: Request) -> std::result::Result<Outcome, Error> {
    if let Some((latest, result)) = state.sessions.get(&request.client) {
        if request.seq == *latest {
            return result.clone();
        }
        if request.seq < *latest {
            return Err(Error::StaleRequest {
                client: request.client,
                seq: request.seq,
                latest: *latest,
            });
        }
    }
    let result = match &request.command {
        Command::RegisterNode { node, address } => {
            match state.nodes.insert(*node, address.clone()) {
                None => Ok(Outcome::NodeRegistered { node: *node }),
                Some(previous) if previous == *address => Ok(Outcome::Unchanged {
                    num: ConfigNum(0),
                    reason: format!("node {node} is registered at {address} already"),
                }),
                Some(previous) => Ok(Outcome::NodeAddressChanged { node: *node, previous }),
            }
        }
        Command::MoveShard { group, .. } | Command::RetireGroup { group } => {
            Err(Error::UnknownGroup { group: *group })
        }
        Command::AddGroups { .. }
        | Command::RemoveGroups { .. }
        | Command::Rebalance { .. }
        | Command::ReplaceNode { .. }
        | Command::DecommissionNode { .. }
        | Command::RetireNode { .. }
        | Command::SetControllerAddress { .. } => {
            Ok(Outcome::Unchanged { num: ConfigNum(0), reason: "the fake changes nothing".into() })
        }
    };
    state.sessions.insert(request.client, (request.seq, result.clone()));
    state.applied.push(request);
    result
}

#[tonic::async_trait]
impl Controller for Replica {
    async fn execute(
        &self,
        request: tonic::Request<pb::ExecuteRequest>,
    ) -> Result<tonic::Response<pb::ExecuteResponse>, Status> {
        let request = request.into_inner();
        let mut state = lock(&self.state);
        let call = ReceivedCall::Execute { client: request.client_id, seq: request.seq };
        let fault = self.receive(&mut state, call)?;
        if let Some(Fault::Before(status)) = fault {
            return Err(status);
        }
        let request = request_from_pb(request)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let result = apply(&mut state, request);
        match fault {
            Some(Fault::After(status)) => Err(status),
            _ => Ok(tonic::Response::new(execute_response_to_pb(&result))),
        }
    }

    async fn query(
        &self,
        request: tonic::Request<pb::QueryRequest>,
    ) -> Result<tonic::Response<pb::QueryResponse>, Status> {
        let num = request.into_inner().num;
        let mut state = lock(&self.state);
        match self.receive(&mut state, ReceivedCall::Query { num })? {
            Some(Fault::Before(status) | Fault::After(status)) => return Err(status),
            None => {}
        }
        if state.queries_failing {
            return Err(Status::unavailable("the fake controller fails its queries"));
        }
        let latest = state.configs.last().expect("the history is never empty").num;
        let config = match num {
            None => &state.configs[state.configs.len() - 1],
            Some(num) => match usize::try_from(num).ok().and_then(|n| state.configs.get(n)) {
                Some(config) => config,
                None => {
                    let error = Error::UnknownConfig { num: ConfigNum(num), latest };
                    return Err(Status::not_found(error.to_string()));
                }
            },
        };
        let leader = NodeId(self.index as u64 + 1);
        let answer = QueryAnswer {
            config: config.clone(),
            latest,
            nodes: state.nodes.clone(),
            // The fake hears no node: every one is unknown.
            liveness: BTreeMap::new(),
            // Nor does it decommission one: every one is active.
            node_states: BTreeMap::new(),
            leader,
            lives: BTreeMap::new(),
            controllers: BTreeMap::new(),
        };
        Ok(tonic::Response::new(answer.to_pb()))
    }

    /// Every replica of the fake holds the group from the start: a bootstrap changes nothing.
    async fn bootstrap(
        &self,
        _request: tonic::Request<pb::BootstrapRequest>,
    ) -> Result<tonic::Response<pb::BootstrapResponse>, Status> {
        Ok(tonic::Response::new(pb::BootstrapResponse {
            node_id: self.index as u64 + 1,
            members: (1..=self.addresses.len() as u64).collect(),
            held: true,
            created: false,
            shard_count: lock(&self.state).configs[0].shard_count(),
            peers: (1..)
                .zip(&self.addresses)
                .map(|(id, address)| pb::ControllerReplica {
                    replica_id: id,
                    address: address.clone(),
                })
                .collect(),
        }))
    }
}

/// A command the fake refuses: moving a shard to a group it does not have.
pub(crate) fn refused_command() -> Command {
    Command::MoveShard { shard: mosaic_engine::ShardId(0), group: GroupId(7) }
}
