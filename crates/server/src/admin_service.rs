//! The `NodeAdmin` service: creating or joining this node's replica of a group, changing a
//! group's membership, handing a leadership over, and reporting on a replica (its Raft state and, for a group placed by
//! a controller, the migration state of its shards). Without a controller, an operator
//! creates a group by asking each member. A controller replica serves it for the controller
//! group alone ([`crate::controller_admin`]).

use std::future::Future;

use mosaic_controller::ControllerMachine;
use mosaic_engine::GroupId;
use mosaic_proto::node;
use mosaic_proto::pb::{self, node_admin_server::NodeAdmin};
use mosaic_raft::Role;
use mosaic_raftstore::{Consistency, StateMachine, StoreMsg};
use mosaic_shardkv::request::read_ownership;
use mosaic_shardkv::{KvStateMachine, Ownership, ShardState};
use tonic::{Request, Response, Status};

use crate::backend::NodeEngine;
use crate::runner::StoreHandle;
use crate::status::{Directory, to_status};

/// What `NodeAdmin` reports of a replica beyond its Raft state.
pub trait AdminMachine: StateMachine<NodeEngine> {
    /// The group's shards and their migration state as the replica applied them (`None` for
    /// a group that reports none).
    fn shards(
        store: &StoreHandle<NodeEngine, Self>,
        group: GroupId,
    ) -> impl Future<Output = Result<Option<pb::GroupShards>, mosaic_raftstore::Error>> + Send;
}

impl AdminMachine for KvStateMachine {
    async fn shards(
        store: &StoreHandle<NodeEngine, Self>,
        group: GroupId,
    ) -> Result<Option<pb::GroupShards>, mosaic_raftstore::Error> {
        let read =
            store.ask(|callback| read_ownership(group, Consistency::Stale, callback)).await?;
        Ok(read.output.map(|ownership| shards_to_pb(&ownership)))
    }
}

impl AdminMachine for ControllerMachine {
    /// The controller group's one shard holds the controller's records: nothing to report.
    async fn shards(
        _store: &StoreHandle<NodeEngine, Self>,
        _group: GroupId,
    ) -> Result<Option<pb::GroupShards>, mosaic_raftstore::Error> {
        Ok(None)
    }
}

/// The `NodeAdmin` service of one node.
pub struct AdminService<SM: AdminMachine> {
    store: StoreHandle<NodeEngine, SM>,
    directory: Directory,
}

impl<SM: AdminMachine> AdminService<SM> {
    /// The service feeding `store`.
    #[must_use]
    pub fn new(store: StoreHandle<NodeEngine, SM>, directory: Directory) -> Self {
        Self { store, directory }
    }

    /// The refusal a store error is answered with.
    pub(crate) fn refuse(&self, error: &mosaic_raftstore::Error) -> Status {
        to_status(error, &self.directory)
    }

    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(mosaic_raftstore::Callback<T>) -> StoreMsg<NodeEngine, SM>,
    ) -> Result<T, Status> {
        self.store.ask(build).await.map_err(|error| self.refuse(&error))
    }
}

#[tonic::async_trait]
impl<SM: AdminMachine> NodeAdmin for AdminService<SM> {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let (group, members) = node::create_group_from_pb(request.into_inner())
            .map_err(|error| self.refuse(&error))?;
        self.ask(|callback| StoreMsg::CreateGroup { group, members, callback }).await?;
        Ok(Response::new(pb::CreateGroupResponse {}))
    }

    async fn group_status(
        &self,
        request: Request<pb::GroupStatusRequest>,
    ) -> Result<Response<pb::GroupStatusResponse>, Status> {
        let request = request.into_inner();
        let group = GroupId(request.group_id);
        let status =
            self.ask(|callback| StoreMsg::Status { group, confirm: false, callback }).await?;
        let confirm = request.confirm_leadership && status.soft_state.role == Role::Leader;
        let status = if confirm {
            self.ask(|callback| StoreMsg::Status { group, confirm: true, callback }).await?
        } else {
            status
        };
        let shards = SM::shards(&self.store, group).await.map_err(|error| self.refuse(&error))?;
        let role = match status.soft_state.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        };
        Ok(Response::new(pb::GroupStatusResponse {
            group_id: group.0,
            role: role.into(),
            leader: status.soft_state.leader.map(|node| node.0),
            term: status.hard_state.term.0,
            commit_index: status.hard_state.commit.0,
            applied_index: status.applied.0,
            first_index: status.first_index.0,
            last_index: status.last_index.0,
            voters: status.conf_state.voters.iter().map(|node| node.0).collect(),
            learners: status.conf_state.learners.iter().map(|node| node.0).collect(),
            progress: status
                .progress
                .iter()
                .map(|(node, progress)| pb::ReplicaProgress {
                    node_id: node.0,
                    match_index: progress.match_index.0,
                    recent_active: progress.recent_active,
                })
                .collect(),
            shards,
            leadership_confirmed: confirm,
            membership_change_pending: status.membership_change_pending,
            voters_applied_membership: status.voters_applied_membership,
        }))
    }

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        let (group, leader) =
            node::join_group_from_pb(request.into_inner()).map_err(|error| self.refuse(&error))?;
        self.ask(|callback| StoreMsg::JoinGroup { group, leader, callback }).await?;
        Ok(Response::new(pb::JoinGroupResponse {}))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        let (group, change, unchanged_since) =
            node::change_membership_from_pb(request.into_inner())
                .map_err(|error| self.refuse(&error))?;
        let conf_state = self
            .ask(|callback| StoreMsg::ChangeMembership { group, change, unchanged_since, callback })
            .await?;
        Ok(Response::new(pb::ChangeMembershipResponse {
            voters: conf_state.voters.iter().map(|node| node.0).collect(),
            learners: conf_state.learners.iter().map(|node| node.0).collect(),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let (group, to) = node::transfer_leader_from_pb(request.get_ref())
            .map_err(|error| self.refuse(&error))?;
        let handover =
            self.ask(|callback| StoreMsg::TransferLeader { group, to, callback }).await?;
        Ok(Response::new(node::handover_to_pb(handover)))
    }
}

/// A group's shards and their migration state, for `GroupStatus`.
fn shards_to_pb(ownership: &Ownership) -> pb::GroupShards {
    let shards = ownership
        .shards
        .iter()
        .map(|(shard, state)| {
            let (name, peer) = match *state {
                ShardState::Serving => ("serving", None),
                ShardState::Pulling { from } => ("pulling", Some(from.0)),
                ShardState::Confirming { from } => ("confirming", Some(from.0)),
                ShardState::Sending { to } => ("sending", to.map(|group| group.0)),
            };
            pb::ShardStatus { shard_id: shard.0, state: name.into(), peer_group: peer }
        })
        .collect();
    pb::GroupShards { config_num: ownership.num.0, shards }
}
