//! Initializing a new cluster (`mosaic admin init`): every controller replica is asked what
//! it holds (a dry run of `Controller.Bootstrap`), and the controller group is created on
//! each only when none holds it. [`plan`] decides from the answers; it never creates the
//! group beside a replica that holds it, since the replica that holds nothing may be one
//! that lost its data, which must not come back as a voter with an empty log
//! (docs/controller.md "Starting a new cluster").

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mosaic_proto::pb::{self, controller_client::ControllerClient as ControllerGrpc};
use mosaic_raft::NodeId;

use crate::Tls;

/// What one replica answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaHolding {
    /// The address it was reached at.
    pub address: String,
    /// Its node id.
    pub node: NodeId,
    /// The group's initial voters as it was started with them.
    pub members: BTreeSet<NodeId>,
    /// The shard count of the controller group it holds, if it holds it.
    pub held: Option<u32>,
    /// Where it reaches each controller replica, itself included (empty from an older
    /// replica).
    pub peers: BTreeMap<NodeId, String>,
}

impl ReplicaHolding {
    /// The answer of the replica at `address`.
    #[must_use]
    pub fn from_pb(address: &str, answer: &pb::BootstrapResponse) -> Self {
        Self {
            address: address.to_string(),
            node: NodeId(answer.node_id),
            members: answer.members.iter().copied().map(NodeId).collect(),
            held: answer.held.then_some(answer.shard_count),
            peers: answer
                .peers
                .iter()
                .map(|peer| (NodeId(peer.replica_id), peer.address.clone()))
                .collect(),
        }
    }
}

/// What `init` does, given every replica's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitPlan {
    /// No replica holds the group: create it on each.
    Create,
    /// Every replica holds it, with this shard count: nothing to do.
    Initialized {
        /// The cluster's shard count.
        shard_count: u32,
    },
    /// Creating it would be wrong (or the replicas disagree): the reason, and what to do.
    Refuse(String),
}

/// Decides from `replicas`, the answers of every address the operator listed.
#[must_use]
pub fn plan(replicas: &[ReplicaHolding]) -> InitPlan {
    let Some(first) = replicas.first() else {
        return InitPlan::Refuse("no controller replica was given".to_string());
    };
    let mut nodes = BTreeSet::new();
    for replica in replicas {
        if !nodes.insert(replica.node) {
            return InitPlan::Refuse(format!(
                "two of the addresses given reach replica {}: list each replica once",
                replica.node
            ));
        }
        if replica.members != first.members {
            return InitPlan::Refuse(format!(
                "replica {} ({}) was started with the members {} and replica {} ({}) with {}: \
                 start every replica with the same --peers",
                first.node,
                first.address,
                ids(&first.members),
                replica.node,
                replica.address,
                ids(&replica.members)
            ));
        }
    }
    if nodes != first.members {
        return InitPlan::Refuse(format!(
            "the controller group's members are {}, and the addresses given reach {}: list \
             every initial replica (each must be running)",
            ids(&first.members),
            ids(&nodes)
        ));
    }
    let holding: BTreeSet<NodeId> = replicas
        .iter()
        .filter(|replica| replica.held.is_some())
        .map(|replica| replica.node)
        .collect();
    let counts: BTreeSet<u32> = replicas.iter().filter_map(|replica| replica.held).collect();
    if holding.is_empty() {
        InitPlan::Create
    } else if counts.len() > 1 {
        InitPlan::Refuse(format!(
            "the replicas hold the controller group with different shard counts {counts:?}: \
             they were initialized by inits that ran at the same time; a new cluster's \
             replicas must be wiped and initialized once"
        ))
    } else if holding == nodes {
        InitPlan::Initialized { shard_count: counts.into_iter().next().unwrap_or_default() }
    } else {
        let empty: BTreeSet<NodeId> = nodes.difference(&holding).copied().collect();
        InitPlan::Refuse(format!(
            "replicas {} hold the controller group and {} hold nothing: the cluster was \
             initialized, and {} lost its data (or an earlier init stopped half-way). A replica \
             with an empty log must not rejoin as a voter, so init changes nothing; the group \
             runs on the replicas that hold it (docs/controller.md \"Starting a new cluster\")",
            ids(&holding),
            ids(&empty),
            ids(&empty)
        ))
    }
}

/// Asks the replica at `address` what it holds (`dry_run`), or to create the group for a
/// cluster of `shard_count` shards.
///
/// # Errors
/// Why the replica did not answer: `INVALID_ARGUMENT` for an unusable address, otherwise the
/// call's status ([`may_answer_later`] tells those worth asking again).
pub async fn bootstrap(
    address: &str,
    tls: Option<&Tls>,
    timeout: Duration,
    shard_count: u32,
    dry_run: bool,
) -> Result<pb::BootstrapResponse, tonic::Status> {
    let channel = crate::channel::lazy_channel(address, tls, timeout)
        .map_err(tonic::Status::invalid_argument)?;
    let request = pb::BootstrapRequest { shard_count, dry_run };
    ControllerGrpc::new(channel).bootstrap(request).await.map(tonic::Response::into_inner)
}

/// Whether a replica that failed with `status` may answer if asked again: it is starting,
/// unreachable for now, or was slow. A refusal (permission denied, a malformed request, a
/// server that does not know the call) stays a refusal.
#[must_use]
pub fn may_answer_later(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::ResourceExhausted
    )
}

fn ids(nodes: &BTreeSet<NodeId>) -> String {
    let ids: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    format!("{{{}}}", ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node: u64, held: bool) -> ReplicaHolding {
        ReplicaHolding {
            address: format!("controller-{node}:7000"),
            node: NodeId(node),
            members: [1, 2, 3].into_iter().map(NodeId).collect(),
            peers: BTreeMap::new(),
            held: held.then_some(64),
        }
    }

    #[test]
    fn a_new_cluster_is_created_and_an_initialized_one_left_alone() {
        let fresh = [replica(1, false), replica(2, false), replica(3, false)];
        assert_eq!(plan(&fresh), InitPlan::Create);
        let running = [replica(1, true), replica(2, true), replica(3, true)];
        assert_eq!(plan(&running), InitPlan::Initialized { shard_count: 64 });
    }

    #[test]
    fn replicas_that_hold_different_shard_counts_are_reported() {
        let mut other = replica(3, true);
        other.held = Some(9);
        let InitPlan::Refuse(reason) = plan(&[replica(1, true), replica(2, true), other]) else {
            panic!("differing shard counts were taken for an initialized cluster");
        };
        assert!(reason.contains("different shard counts {9, 64}"), "{reason}");
    }

    #[test]
    fn a_replica_that_lost_its_data_beside_ones_that_hold_the_group_is_never_created() {
        let answers = [replica(1, true), replica(2, false), replica(3, true)];
        let InitPlan::Refuse(reason) = plan(&answers) else {
            panic!("a wiped replica beside the group was planned for creation");
        };
        assert!(reason.contains("replicas {1,3} hold the controller group and {2}"), "{reason}");
        // One replica that holds it is enough to refuse.
        let answers = [replica(1, false), replica(2, false), replica(3, true)];
        assert!(matches!(plan(&answers), InitPlan::Refuse(_)));
    }

    #[test]
    fn every_member_must_answer_once_with_the_same_members() {
        let missing = [replica(1, false), replica(2, false)];
        let InitPlan::Refuse(reason) = plan(&missing) else { panic!("planned without replica 3") };
        assert!(reason.contains("the addresses given reach {1,2}"), "{reason}");

        let twice = [replica(1, false), replica(1, false), replica(2, false)];
        assert!(matches!(plan(&twice), InitPlan::Refuse(reason) if reason.contains("once")));

        let mut other = replica(3, false);
        other.members.insert(NodeId(4));
        let disagree = [replica(1, false), replica(2, false), other];
        let InitPlan::Refuse(reason) = plan(&disagree) else { panic!("members disagreed") };
        assert!(reason.contains("same --peers"), "{reason}");

        assert!(matches!(plan(&[]), InitPlan::Refuse(_)));
    }
}
