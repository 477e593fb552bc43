//! The `Controller` service of a controller replica: commands go through the controller
//! group's log, queries are linearizable reads at its leader. A replica that does not lead
//! answers `NotLeader` with the leader's address (from the controller peers it was started
//! with), so clients find the leader in one more round trip. Storage nodes may send only their
//! own commands, admins the rest ([`authorization::check_command`]). A replica that holds no
//! group yet answers `UNAVAILABLE` until `Bootstrap` creates it ([`crate::bootstrap`]).

use std::sync::Arc;
use std::time::Duration;

use mosaic_controller::{ControllerMachine, ControllerQuery};
use mosaic_proto::controller as convert;
use mosaic_proto::pb::{self, controller_server::Controller};
use mosaic_raft::NodeId;
use mosaic_raftstore::{Consistency, StoreMsg};
use mosaic_types::CONTROLLER_GROUP;
use tonic::{Request, Response, Status};

use crate::authorization;
use crate::backend::NodeEngine;
use crate::bootstrap::{Bootstrapper, WAITING_FOR_INIT};
use crate::incoming::ConnectionInfo;
use crate::runner::StoreHandle;
use crate::status::{Directory, ask_store};

/// The `Controller` service of one controller replica.
pub struct ControllerService {
    node: NodeId,
    store: StoreHandle<NodeEngine, ControllerMachine>,
    directory: Directory,
    request_timeout: Duration,
    bootstrapper: Arc<Bootstrapper>,
}

impl ControllerService {
    /// The service of replica `node`, feeding `store`; `bootstrapper` creates the group.
    #[must_use]
    pub fn new(
        node: NodeId,
        store: StoreHandle<NodeEngine, ControllerMachine>,
        directory: Directory,
        request_timeout: Duration,
        bootstrapper: Arc<Bootstrapper>,
    ) -> Self {
        Self { node, store, directory, request_timeout, bootstrapper }
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
        let query = ControllerQuery { num: convert::query_request_from_pb(request.into_inner()) };
        let group = CONTROLLER_GROUP;
        let consistency = Consistency::Linearizable;
        let read =
            self.ask(|callback| StoreMsg::Read { group, query, consistency, callback }).await?;
        let view = read.output.map_err(|error| Status::not_found(error.to_string()))?;
        Ok(Response::new(convert::query_response_to_pb(
            &view.config,
            view.latest,
            &view.nodes,
            self.node,
            &view.lives,
        )))
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
        if let Some(held) = answer.held
            && !request.dry_run
            && held != request.shard_count
        {
            return Err(Status::failed_precondition(format!(
                "replica {} holds the controller group with {held} shards, not {}: the shard \
                 count is fixed when the cluster is created",
                answer.node, request.shard_count
            )));
        }
        let shard_count = match answer.held {
            Some(held) => held,
            None if answer.created => request.shard_count,
            None => 0,
        };
        Ok(Response::new(pb::BootstrapResponse {
            node_id: answer.node.0,
            members: answer.members.iter().map(|member| member.0).collect(),
            held: answer.held.is_some(),
            created: answer.created,
            shard_count,
        }))
    }
}
