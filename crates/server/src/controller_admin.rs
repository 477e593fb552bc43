//! `NodeAdmin` on a controller replica: the calls that change the controller group's own
//! replicas one at a time, or hand its leadership to another replica (`mosaic admin controller add/remove`, docs/controller.md "Changing
//! the controller's replicas"), for that group alone and for admins alone.
//!
//! A storage node's certificate may call `NodeAdmin` (a node rejoining its group asks the
//! group's leader), but no storage node may change who replicates the controller: every call
//! here checks the admin role itself. The group is created by `mosaic admin init` (the
//! `Controller.Bootstrap` call), never by `CreateGroup`; a replica started empty joins it
//! through `JoinGroup`, as a learner of the group's leader, after which it serves
//! ([`Bootstrapper::join`]).

use std::sync::Arc;

use mosaic_controller::ControllerMachine;
use mosaic_proto::node;
use mosaic_proto::pb::{self, node_admin_server::NodeAdmin};
use mosaic_types::CONTROLLER_GROUP;
use tonic::{Request, Response, Status};

use crate::admin_service::AdminService;
use crate::authorization;
use crate::bootstrap::Bootstrapper;
use crate::incoming::ConnectionInfo;

/// The `NodeAdmin` service of a controller replica.
pub struct ControllerAdmin {
    inner: AdminService<ControllerMachine>,
    bootstrapper: Arc<Bootstrapper>,
}

impl ControllerAdmin {
    /// The service of the replica that `inner` reaches; joins go through `bootstrapper`, so
    /// that the replica serves once it holds the group.
    #[must_use]
    pub fn new(inner: AdminService<ControllerMachine>, bootstrapper: Arc<Bootstrapper>) -> Self {
        Self { inner, bootstrapper }
    }
}

/// Checks that `request` comes from an admin and names the controller group.
fn check<T>(request: &Request<T>, group: u64) -> Result<(), Status> {
    authorization::check_admin(request.extensions().get::<ConnectionInfo>())?;
    if group == CONTROLLER_GROUP.0 {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "group {group}: a controller replica hosts only the controller group \
             ({CONTROLLER_GROUP})"
        )))
    }
}

#[tonic::async_trait]
impl NodeAdmin for ControllerAdmin {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        check(&request, request.get_ref().group_id)?;
        Err(Status::failed_precondition(
            "the controller group is created by `mosaic admin init` (or `--bootstrap`); a \
             replica added later joins it with `mosaic admin controller add`",
        ))
    }

    async fn group_status(
        &self,
        request: Request<pb::GroupStatusRequest>,
    ) -> Result<Response<pb::GroupStatusResponse>, Status> {
        check(&request, request.get_ref().group_id)?;
        self.inner.group_status(request).await
    }

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        check(&request, request.get_ref().group_id)?;
        let (group, leader) = node::join_group_from_pb(request.into_inner())
            .map_err(|error| self.inner.refuse(&error))?;
        debug_assert_eq!(group, CONTROLLER_GROUP);
        self.bootstrapper.join(leader).await.map_err(|error| self.inner.refuse(&error))?;
        Ok(Response::new(pb::JoinGroupResponse {}))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        check(&request, request.get_ref().group_id)?;
        self.inner.change_membership(request).await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        check(&request, request.get_ref().group_id)?;
        self.inner.transfer_leader(request).await
    }
}
