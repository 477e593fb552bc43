//! The cluster as the controller and the groups report it ([`ClusterStatus`]): the latest
//! configuration and node registry from the controller, and per group the leader its members
//! name, the configuration that leader has applied, the state of the shards it holds and the
//! membership it has applied (a replacement is carried out until it is the one listed).
//! `mosaic admin status` and `admin wait` print it; a controller replica's status page serves
//! it.

use std::collections::BTreeMap;
use std::time::Duration;

use mosaic_controller::{ConfigNum, may_hold, still_counted};
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
    /// The voters the leader has applied (empty: no leader answered).
    pub voters: Vec<NodeId>,
    /// The learners the leader has applied.
    pub learners: Vec<NodeId>,
    /// Every voter has applied that membership: a member it left out is out for good (false:
    /// no leader answered, or a voter has not applied its removal and may need its vote).
    pub voters_applied: bool,
}

/// What keeps the cluster from being settled ([`ClusterStatus::unsettled`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unsettled {
    /// Groups behind the latest configuration, or whose leader did not answer.
    pub behind: usize,
    /// Shards moving between groups.
    pub moving: usize,
    /// Groups whose leader's membership is not yet the members the configuration lists (a
    /// replacement being carried out).
    pub reshaping: usize,
}

impl Unsettled {
    /// True when nothing is left to do.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Display for Unsettled {
    /// `2 shard(s) moving, 1 group(s) behind`, and `, 1 group(s) changing members` when any.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} shard(s) moving, {} group(s) behind", self.moving, self.behind)?;
        if self.reshaping > 0 {
            write!(f, ", {} group(s) changing members", self.reshaping)?;
        }
        Ok(())
    }
}

impl GroupStatus {
    /// The configuration the group's leader has applied.
    #[must_use]
    pub fn applied(&self) -> Option<u64> {
        self.held.as_ref().map(|held| held.config_num)
    }

    /// True when the leader answered with a membership other than the members listed: voters
    /// that differ, or learners (a replacement being carried out).
    #[must_use]
    pub fn reshaping(&self) -> bool {
        let listed: std::collections::BTreeSet<&NodeId> = self.members.iter().collect();
        let voters: std::collections::BTreeSet<&NodeId> = self.voters.iter().collect();
        !self.voters.is_empty() && (voters != listed || !self.learners.is_empty())
    }

    /// The shards the leader holds that are not simply serving.
    pub fn moving(&self) -> impl Iterator<Item = &pb::ShardStatus> {
        self.held.iter().flat_map(|held| &held.shards).filter(|shard| shard.state != "serving")
    }

    /// The group as `mosaic admin status --output json` and the status page show it:
    /// `group`, `nodes` (its members), `leader`, `config_num` (applied by the leader),
    /// `shards`, `moving` (each with its `shard`, `state` and `peer_group`), and the leader's
    /// `voters` and `learners` with `reshaping` (they are not yet the members listed).
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
            "voters": self.voters.iter().map(|node| node.0).collect::<Vec<_>>(),
            "learners": self.learners.iter().map(|node| node.0).collect::<Vec<_>>(),
            "reshaping": self.reshaping(),
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
        Ok(Self::of_answer(answer, client.options().tls.as_ref(), member_timeout).await)
    }

    /// As [`ClusterStatus::read`], with the controller's `answer` already read: asks every
    /// group of its latest configuration (with `tls`).
    pub async fn of_answer(
        answer: QueryAnswer,
        tls: Option<&Tls>,
        member_timeout: Duration,
    ) -> Self {
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
            .map(|((group, members), view)| GroupStatus {
                group: *group,
                members: members.clone(),
                leader: view.leader,
                held: view.held,
                shards: answer.config.shards_of(*group),
                voters: view.voters,
                learners: view.learners,
                voters_applied: view.voters_applied,
            })
            .collect();
        Self { answer, groups }
    }

    /// How many groups are behind the latest configuration (or did not answer), how many
    /// shards are moving, and how many groups are changing members.
    #[must_use]
    pub fn unsettled(&self) -> Unsettled {
        let num = self.answer.config.num.0;
        let behind = self
            .groups
            .iter()
            .filter(|group| group.applied().is_none_or(|applied| applied < num))
            .count();
        let moving = self.groups.iter().map(|group| group.moving().count()).sum();
        let reshaping = self.groups.iter().filter(|group| group.reshaping()).count();
        Unsettled { behind, moving, reshaping }
    }

    /// True when every group has applied the latest configuration, no shard moves and every
    /// group's members are those listed.
    #[must_use]
    pub fn settled(&self) -> bool {
        self.unsettled().is_settled()
    }

    /// How many groups each node leads, for every node that is a member of a group (0 for a
    /// member that leads none): the leader balance (docs/raftstore.md "Leader balance"). A
    /// group with no leader known counts for no node.
    #[must_use]
    pub fn leaders_by_node(&self) -> BTreeMap<NodeId, usize> {
        let mut leaders: BTreeMap<NodeId, usize> = BTreeMap::new();
        for group in &self.groups {
            for member in &group.members {
                leaders.entry(*member).or_default();
            }
            if let Some(leader) = group.leader {
                *leaders.entry(leader).or_default() += 1;
            }
        }
        leaders
    }

    /// The groups of the latest configuration that may still have a replica on `node`: those
    /// whose leader shows it as a voter or a learner, or shows a voter that has not applied
    /// its removal yet (that voter may still need its vote), and those whose leader did not
    /// answer or has not applied the latest configuration yet (not known to be out).
    #[must_use]
    pub fn holding(&self, node: NodeId) -> Vec<GroupId> {
        let latest = self.answer.config.num;
        self.groups
            .iter()
            .filter(|group| {
                // No voters: no leader answered.
                let shown = group.applied().filter(|_| !group.voters.is_empty()).map(|applied| {
                    let member = group.voters.contains(&node) || group.learners.contains(&node);
                    (ConfigNum(applied), still_counted(member, group.voters_applied))
                });
                may_hold(latest, shown)
            })
            .map(|group| group.group)
            .collect()
    }
}

/// The registered nodes of `answer` as `mosaic admin node list --output json`, `admin status
/// --output json` and the status page show them: `id`, `address`, `liveness` (`up`, `down` or
/// `unknown`, as the controller's leader says), `up` (`liveness` is `up`, as earlier releases
/// showed it), `last_heard_ms` (null when it did not hear the node since it leads) and `state`
/// (`active`, `decommissioning` or `retired`).
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
                "state": answer.state_of(*node).name(),
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

/// What a group's members say of it: its leader, and what that leader holds and applied.
#[derive(Default)]
struct GroupView {
    leader: Option<NodeId>,
    held: Option<pb::GroupShards>,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    voters_applied: bool,
}

/// The leader of `group` as its members report it, with the shards it holds and the
/// membership it applied.
async fn group_view(
    answer: &QueryAnswer,
    group: GroupId,
    members: &[NodeId],
    tls: Option<&Tls>,
    timeout: Duration,
) -> GroupView {
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
                return GroupView {
                    leader: Some(*member),
                    held: status.shards,
                    voters: status.voters.into_iter().map(NodeId).collect(),
                    learners: status.learners.into_iter().map(NodeId).collect(),
                    voters_applied: status.voters_applied_membership,
                };
            }
            hint = hint.or(status.leader.map(NodeId));
        }
    }
    GroupView { leader: hint, ..GroupView::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(members: &[u64], voters: &[u64], learners: &[u64]) -> GroupStatus {
        let nodes = |ids: &[u64]| ids.iter().copied().map(NodeId).collect::<Vec<_>>();
        GroupStatus {
            group: GroupId(1),
            members: nodes(members),
            leader: voters.first().copied().map(NodeId),
            held: None,
            shards: Vec::new(),
            voters: nodes(voters),
            learners: nodes(learners),
            voters_applied: true,
        }
    }

    #[test]
    fn a_group_changes_members_until_its_leader_has_exactly_the_members_listed() {
        assert!(!group(&[1, 2, 4], &[4, 2, 1], &[]).reshaping(), "the order is no change");
        assert!(group(&[1, 2, 4], &[1, 2, 3], &[4]).reshaping(), "a learner being added");
        assert!(group(&[1, 2, 4], &[1, 2, 3, 4], &[]).reshaping(), "the old member not out yet");
        assert!(!group(&[1, 2, 4], &[], &[]).reshaping(), "no leader answered: not known");
        let unsettled = Unsettled { behind: 0, moving: 2, reshaping: 1 };
        assert_eq!(
            unsettled.to_string(),
            "2 shard(s) moving, 0 group(s) behind, 1 group(s) changing members"
        );
        assert!(!unsettled.is_settled() && Unsettled::default().is_settled());
    }

    fn status(groups: Vec<GroupStatus>) -> ClusterStatus {
        ClusterStatus {
            answer: QueryAnswer {
                config: mosaic_controller::Configuration::initial(1),
                latest: mosaic_controller::ConfigNum(0),
                nodes: BTreeMap::new(),
                liveness: BTreeMap::new(),
                node_states: BTreeMap::new(),
                leader: NodeId(1),
                lives: BTreeMap::new(),
                controllers: BTreeMap::new(),
            },
            groups,
        }
    }

    #[test]
    fn a_node_is_held_by_the_groups_whose_leader_shows_it_and_those_not_known() {
        let numbered = |id: u64, applied: u64, mut group: GroupStatus| {
            group.group = GroupId(id);
            group.held =
                Some(pb::GroupShards { config_num: applied, ..pb::GroupShards::default() });
            group
        };
        let status = status(vec![
            numbered(1, 0, group(&[1, 2, 4], &[1, 2, 4], &[])),
            numbered(2, 0, group(&[1, 2, 4], &[1, 2, 3], &[4])),
            numbered(3, 0, group(&[1, 2, 4], &[1, 2], &[3])),
            GroupStatus { group: GroupId(4), ..group(&[1, 2, 4], &[], &[]) },
        ]);
        assert_eq!(status.holding(NodeId(3)), vec![GroupId(2), GroupId(3), GroupId(4)]);
        assert_eq!(status.holding(NodeId(5)), vec![GroupId(4)]);
        // Out of group 1, but one of its voters has not applied the removal yet.
        let mut unapplied = status.clone();
        unapplied.groups[0].voters_applied = false;
        assert_eq!(unapplied.holding(NodeId(5)), vec![GroupId(1), GroupId(4)]);
        // A leader that has not applied the latest configuration is not known to be done.
        let mut behind = status;
        behind.answer.config.num = mosaic_controller::ConfigNum(1);
        behind.groups[0].held.as_mut().unwrap().config_num = 1;
        assert_eq!(behind.holding(NodeId(5)), vec![GroupId(2), GroupId(3), GroupId(4)]);
    }

    #[test]
    fn the_leader_balance_counts_every_member_and_the_groups_it_leads() {
        // `group` makes the first voter the leader.
        let numbered = |id: u64, group: GroupStatus| GroupStatus { group: GroupId(id), ..group };
        let status = status(vec![
            numbered(1, group(&[1, 2, 3], &[2, 1, 3], &[])),
            numbered(2, group(&[1, 2, 3], &[2, 1, 3], &[])),
            numbered(3, group(&[2, 3, 4], &[], &[])),
        ]);
        let counts =
            BTreeMap::from([(NodeId(1), 0), (NodeId(2), 2), (NodeId(3), 0), (NodeId(4), 0)]);
        assert_eq!(status.leaders_by_node(), counts, "group 3 has no leader known");
    }
}
