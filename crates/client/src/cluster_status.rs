//! The cluster as the controller and the groups report it ([`ClusterStatus`]): the latest
//! configuration and node registry from the controller, and per group the leader its members
//! name, the configuration that leader has applied and the state of the shards it holds.
//! `mosaic admin status` and `admin wait` print it; a controller replica's status page serves
//! it.

use std::time::Duration;

use mosaic_engine::{GroupId, ShardId};
use mosaic_proto::controller::QueryAnswer;
use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};
use mosaic_raft::NodeId;

use crate::{ControllerClient, Result, Tls};

/// The latest configuration, and what each of its groups reports.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    /// The controller's answer: the latest configuration, the node registry, its leader.
    pub answer: QueryAnswer,
    /// Every group of the latest configuration, in id order.
    pub groups: Vec<GroupStatus>,
}

/// One group of the latest configuration: the configuration's view and its leader's.
#[derive(Clone, Debug)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// Its members in the configuration.
    pub members: Vec<NodeId>,
    /// The member that answered as leader, or the leader another member named; `None` when
    /// no member answered or named one.
    pub leader: Option<NodeId>,
    /// The shards the leader holds and their state (`None`: no leader answered).
    pub held: Option<pb::GroupShards>,
    /// The shards the latest configuration gives the group.
    pub shards: Vec<ShardId>,
}

impl GroupStatus {
    /// The configuration the group's leader has applied.
    #[must_use]
    pub fn applied(&self) -> Option<u64> {
        self.held.as_ref().map(|held| held.config_num)
    }

    /// The shards the leader holds that are not simply serving.
    pub fn moving(&self) -> impl Iterator<Item = &pb::ShardStatus> {
        self.held.iter().flat_map(|held| &held.shards).filter(|shard| shard.state != "serving")
    }

    /// The group as `mosaic admin status --output json` and the status page show it:
    /// `group`, `nodes` (its members), `leader`, `config_num` (applied by the leader),
    /// `shards`, and `moving` (each with its `shard`, `state` and `peer_group`).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "group": self.group.0,
            "nodes": self.members.iter().map(|node| node.0).collect::<Vec<_>>(),
            "leader": self.leader.map(|node| node.0),
            "config_num": self.applied(),
            "shards": self.shards.iter().map(|shard| shard.0).collect::<Vec<_>>(),
            "moving": self.moving().map(|shard| serde_json::json!({
                "shard": shard.shard_id,
                "state": shard.state,
                "peer_group": shard.peer_group,
            })).collect::<Vec<_>>(),
        })
    }
}

impl ClusterStatus {
    /// Asks the controller (through `client`) for the latest configuration, then every group
    /// at once for its view: each group's members (with the client's TLS identity), one at a
    /// time until one answers as leader, each call bounded by `member_timeout`.
    ///
    /// # Errors
    /// The controller's query failed. A member that does not answer is skipped.
    pub async fn read(client: &ControllerClient, member_timeout: Duration) -> Result<Self> {
        let answer = client.query(None).await?;
        let tls = client.options().tls.as_ref();
        let views = answer
            .config
            .groups
            .iter()
            .map(|(group, members)| group_view(&answer, *group, members, tls, member_timeout));
        let views = futures_util::future::join_all(views).await;
        let groups = answer
            .config
            .groups
            .iter()
            .zip(views)
            .map(|((group, members), (leader, held))| GroupStatus {
                group: *group,
                members: members.clone(),
                leader,
                held,
                shards: answer.config.shards_of(*group),
            })
            .collect();
        Ok(Self { answer, groups })
    }

    /// How many groups are behind the latest configuration (or did not answer), and how many
    /// shards are moving.
    #[must_use]
    pub fn unsettled(&self) -> (usize, usize) {
        let num = self.answer.config.num.0;
        let behind = self
            .groups
            .iter()
            .filter(|group| group.applied().is_none_or(|applied| applied < num))
            .count();
        let moving = self.groups.iter().map(|group| group.moving().count()).sum();
        (behind, moving)
    }

    /// True when every group has applied the latest configuration and no shard moves.
    #[must_use]
    pub fn settled(&self) -> bool {
        self.unsettled() == (0, 0)
    }
}

/// The registered nodes of `answer` as `mosaic admin node list --output json`, `admin status
/// --output json` and the status page show them: `id`, `address`, `liveness` (`up`, `down` or
/// `unknown`, as the controller's leader says), `up` (`liveness` is `up`, as earlier releases
/// showed it) and `last_heard_ms` (null when it did not hear the node since it leads).
#[must_use]
pub fn nodes_json(answer: &QueryAnswer) -> Vec<serde_json::Value> {
    answer
        .nodes
        .iter()
        .map(|(node, address)| {
            let liveness = answer.liveness_of(*node);
            serde_json::json!({
                "id": node.0,
                "address": address,
                "liveness": liveness.name(),
                "up": liveness.is_up(),
                "last_heard_ms": liveness.last_heard().map(|heard| heard.as_millis() as u64),
            })
        })
        .collect()
}

/// A `NodeAdmin` client of the node at `address`, connecting when first used, each call
/// (and the connection) bounded by `timeout`.
///
/// # Errors
/// `address` is not a valid address.
pub fn node_admin(
    address: &str,
    tls: Option<&Tls>,
    timeout: Duration,
) -> std::result::Result<NodeAdminClient<tonic::transport::Channel>, String> {
    Ok(NodeAdminClient::new(crate::channel::lazy_channel(address, tls, timeout)?))
}

/// The leader of `group` as its members report it, with the shards it holds.
async fn group_view(
    answer: &QueryAnswer,
    group: GroupId,
    members: &[NodeId],
    tls: Option<&Tls>,
    timeout: Duration,
) -> (Option<NodeId>, Option<pb::GroupShards>) {
    let mut hint = None;
    for member in members {
        let Some(address) = answer.nodes.get(member) else {
            continue;
        };
        let Ok(mut client) = node_admin(address, tls, timeout) else {
            continue;
        };
        let request = pb::GroupStatusRequest { group_id: group.0, confirm_leadership: false };
        if let Ok(status) = client.group_status(request).await {
            let status = status.into_inner();
            if status.role == "leader" {
                return (Some(*member), status.shards);
            }
            hint = hint.or(status.leader.map(NodeId));
        }
    }
    (hint, None)
}
