//! The `Controller` service of a controller replica: commands go through the controller
//! group's log, queries are linearizable reads at its leader. A replica that does not lead
//! answers `NotLeader` with the leader's address (from the controller peers it was started
//! with), so clients find the leader in one more round trip. Storage nodes may send only their
//! own commands, admins the rest ([`authorization::check_command`]). A replica that holds no
//! group yet answers `UNAVAILABLE` until `Bootstrap` creates it ([`crate::bootstrap`]).
//!
//! A query a storage node's agent sends names the node: the replica that answers it (the
//! leader) has heard the node, and says what it heard of every node to the queries of
//! everyone else ([`Liveness`], docs/controller.md "Node liveness").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mosaic_controller::{ControllerMachine, ControllerQuery, Liveness, NodeLiveness};
use mosaic_proto::controller as convert;
use mosaic_proto::pb::{self, controller_server::Controller};
use mosaic_raft::{NodeId, Term};
use mosaic_raftstore::{Consistency, StoreMsg};
use mosaic_types::CONTROLLER_GROUP;
use tonic::{Request, Response, Status};

use crate::authorization;
use crate::backend::NodeEngine;
use crate::bootstrap::{Bootstrapper, WAITING_FOR_INIT};
use crate::incoming::ConnectionInfo;
use crate::runner::StoreHandle;
use crate::status::{Directory, ask_store, to_status};

/// The `Controller` service of one controller replica.
pub struct ControllerService {
    node: NodeId,
    store: StoreHandle<NodeEngine, ControllerMachine>,
    directory: Directory,
    request_timeout: Duration,
    bootstrapper: Arc<Bootstrapper>,
    /// The nodes this replica heard while it led, at times since `origin`.
    liveness: Mutex<Liveness>,
    origin: Instant,
}

impl ControllerService {
    /// The service of replica `node`, feeding `store`; `bootstrapper` creates the group; a
    /// node unheard for `node_down_after` is held down.
    #[must_use]
    pub fn new(
        node: NodeId,
        store: StoreHandle<NodeEngine, ControllerMachine>,
        directory: Directory,
        request_timeout: Duration,
        bootstrapper: Arc<Bootstrapper>,
        node_down_after: Duration,
    ) -> Self {
        let liveness = Mutex::new(Liveness::new(node_down_after));
        let origin = Instant::now();
        Self { node, store, directory, request_timeout, bootstrapper, liveness, origin }
    }

    /// What this replica, leading in `term`, answers of liveness to a query that `arrived`
    /// then ([`Liveness::answer`]).
    fn liveness(
        &self,
        asked_by: Option<NodeId>,
        term: Term,
        arrived: Duration,
        nodes: impl Iterator<Item = NodeId>,
    ) -> BTreeMap<NodeId, NodeLiveness> {
        let now = self.origin.elapsed();
        let mut liveness = self.liveness.lock().unwrap_or_else(PoisonError::into_inner);
        liveness.answer(asked_by, term, arrived, now, nodes)
    }

    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(mosaic_raftstore::Callback<T>) -> StoreMsg<NodeEngine, ControllerMachine>,
    ) -> Result<T, Status> {
        if !self.bootstrapper.holds() {
            return Err(Status::unavailable(WAITING_FOR_INIT));
        }
        ask_store(&self.store, self.request_timeout, &self.directory, build).await
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let connection = request.extensions().get::<ConnectionInfo>().cloned();
        let request = convert::request_from_pb(request.into_inner())
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        authorization::check_command(connection.as_ref(), &request.command)?;
        let group = CONTROLLER_GROUP;
        let result =
            self.ask(|callback| StoreMsg::Propose { group, proposal: request, callback }).await?;
        Ok(Response::new(convert::execute_response_to_pb(&result)))
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        // A node is heard when its query arrives (the read may take a while).
        let arrived = self.origin.elapsed();
        let connection = request.extensions().get::<ConnectionInfo>().cloned();
        let (num, asked_by) = convert::query_request_from_pb(request.into_inner());
        if asked_by.is_some() {
            authorization::check_node_query(connection.as_ref())?;
        }
        let query = ControllerQuery { num };
        let group = CONTROLLER_GROUP;
        let consistency = Consistency::Linearizable;
        let read =
            self.ask(|callback| StoreMsg::Read { group, query, consistency, callback }).await?;
        // Only the leader answers, so that what it says of the nodes is what it heard (a
        // follower's ReadIndex read is linearizable too, but it hears no node).
        let (output, term) =
            read.at_leader(group).map_err(|error| to_status(&error, &self.directory))?;
        let view = output.map_err(|error| Status::not_found(error.to_string()))?;
        // Only registered nodes are heard: the view holds no more nodes than the registry.
        let asked_by = asked_by.filter(|node| view.nodes.contains_key(node));
        let liveness = self.liveness(asked_by, term, arrived, view.nodes.keys().copied());
        let answer = convert::QueryAnswer {
            config: view.config,
            latest: view.latest,
            nodes: view.nodes,
            liveness,
            node_states: view.node_states,
            leader: self.node,
            lives: view.lives,
            controllers: view.controllers,
        };
        Ok(Response::new(answer.to_pb()))
    }

    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::BootstrapResponse>, Status> {
        let request = request.into_inner();
        let answer =
            self.bootstrapper.bootstrap(request.shard_count, request.dry_run).await.map_err(
                |error| match error {
                    crate::Error::Config { reason } => Status::invalid_argument(reason),
                    other => Status::internal(other.to_string()),
                },
            )?;
        let held = answer.shard_count.filter(|_| !answer.created);
        if let Some(held) = held
            && !request.dry_run
            && held != request.shard_count
        {
            return Err(Status::failed_precondition(format!(
                "replica {} holds the controller group with {held} shards, not {}: the shard \
                 count is fixed when the cluster is created",
                answer.node, request.shard_count
            )));
        }
        Ok(Response::new(pb::BootstrapResponse {
            node_id: answer.node.0,
            members: answer.members.iter().map(|member| member.0).collect(),
            held: held.is_some(),
            created: answer.created,
            shard_count: answer.shard_count.unwrap_or(0),
            peers: self
                .directory
                .all()
                .into_iter()
                .map(|(replica, address)| pb::ControllerReplica { replica_id: replica.0, address })
                .collect(),
        }))
    }
}
