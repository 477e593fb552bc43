//! The placement a client routes by ([`Routing`], whose invariants every instance holds), and
//! where it comes from ([`RoutingSource`]).
//!
//! Two sources exist: a static placement ([`StaticRouting`], usually built with
//! [`Routing::single_group`]), and the controller's latest configuration
//! ([`crate::ControllerRouting`], converted by [`Routing::from_configuration`]). The client asks
//! its source again whenever a node says the placement it used is stale (`WrongGroup`,
//! `GroupNotHosted`), and when a key's shard has no owner in the placement it has.
//!
//! A placement may leave shards unassigned: configuration 0 assigns none, and a cluster whose
//! groups were all removed has none to assign. [`Routing::group_of`] answers `None` for such a
//! shard, and the client refuses an operation on it ([`crate::ClientError::ShardUnassigned`])
//! once a refreshed placement still leaves it unassigned.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use mosaic_controller::Configuration;
use mosaic_engine::{GroupId, ShardId};
use mosaic_raft::NodeId;

use crate::channel::endpoint_for;
use crate::error::{ClientError, Result, RoutingError};

/// The configuration number a static routing claims: 1, the first configuration in which a
/// group owns shards (configuration 0 assigns none).
pub const STATIC_CONFIG_NUM: u64 = 1;

/// The placement a client routes by: which group owns each shard, which nodes host each group,
/// and where each node listens.
///
/// Invariants, checked by [`Routing::with_unassigned_shards`] (and so by every constructor, so
/// every `Routing` holds them):
/// - there is at least one shard, and the shard count is the length of the shard table;
/// - every assigned shard is owned by a group that is listed (a shard may be unassigned), and
///   no listed group is 0 or [`GroupId::RESERVED`];
/// - every group has at least one member, listed once;
/// - every node has an address a gRPC channel can be built for (`HOST:PORT` with a numeric
///   port), every member is such a node, and no node is 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// The configuration this placement is taken from; sent with every request.
    config_num: u64,
    /// `shards[s]` is the group that owns shard `s`, `None` when no group does. Never empty.
    shards: Vec<Option<GroupId>>,
    /// Each group's member nodes, each listed once, never empty.
    groups: BTreeMap<GroupId, Vec<NodeId>>,
    /// Each node's address, `HOST:PORT` (or a URI with a scheme, such as `http://HOST:PORT`).
    nodes: BTreeMap<NodeId, String>,
}

impl Routing {
    /// Returns the placement of configuration `config_num`, with `shard_count` shards,
    /// `shards[s]` owning shard `s` (every shard assigned), the members of each group, and each
    /// node's address.
    ///
    /// # Errors
    /// As [`Routing::with_unassigned_shards`].
    pub fn new(
        config_num: u64,
        shard_count: u32,
        shards: Vec<GroupId>,
        groups: BTreeMap<GroupId, Vec<NodeId>>,
        nodes: BTreeMap<NodeId, String>,
    ) -> Result<Self> {
        let shards = shards.into_iter().map(Some).collect();
        Self::with_unassigned_shards(config_num, shard_count, shards, groups, nodes)
    }

    /// Returns the placement of configuration `config_num`, with `shard_count` shards,
    /// `shards[s]` the group that owns shard `s` or `None` when no group does, the members of
    /// each group, and each node's address.
    ///
    /// # Errors
    /// [`ClientError::Routing`] with the first [`RoutingError`] found when the placement breaks
    /// one of the [invariants](Routing).
    pub fn with_unassigned_shards(
        config_num: u64,
        shard_count: u32,
        shards: Vec<Option<GroupId>>,
        groups: BTreeMap<GroupId, Vec<NodeId>>,
        nodes: BTreeMap<NodeId, String>,
    ) -> Result<Self> {
        let routing = Self { config_num, shards, groups, nodes };
        routing.validate(shard_count).map_err(|reason| ClientError::Routing { reason })?;
        Ok(routing)
    }

    /// Returns the placement of the controller's configuration `config`, given the node
    /// registry `registry` (every registered node and its address): the configuration's
    /// number, shard table (unassigned shards included) and groups, and the addresses of the
    /// groups' members. Registered nodes that are no group's member are left out: they serve no
    /// shard, and an address of theirs cannot make the placement unusable.
    ///
    /// # Errors
    /// As [`Routing::with_unassigned_shards`]: for example
    /// [`RoutingError::MemberWithoutAddress`] when a member is not registered, or
    /// [`RoutingError::InvalidAddress`] when a member's address is not `HOST:PORT`.
    pub fn from_configuration(
        config: &Configuration,
        registry: &BTreeMap<NodeId, String>,
    ) -> Result<Self> {
        let nodes = registry
            .iter()
            .filter(|(node, _)| config.groups.values().any(|members| members.contains(node)))
            .map(|(node, address)| (*node, address.clone()))
            .collect();
        Self::with_unassigned_shards(
            config.num.0,
            config.shard_count(),
            config.shards.clone(),
            config.groups.clone(),
            nodes,
        )
    }

    /// Returns a static placement of configuration [`STATIC_CONFIG_NUM`] in which group `group`
    /// owns all `shard_count` shards and every node of `nodes` is a member of it.
    ///
    /// # Errors
    /// As [`Routing::new`]: for example when `nodes` is empty or `shard_count` is 0.
    pub fn single_group(
        group: GroupId,
        nodes: BTreeMap<NodeId, String>,
        shard_count: u32,
    ) -> Result<Self> {
        let members = nodes.keys().copied().collect();
        let shards = vec![group; shard_count as usize];
        Self::new(STATIC_CONFIG_NUM, shard_count, shards, BTreeMap::from([(group, members)]), nodes)
    }

    fn validate(&self, shard_count: u32) -> std::result::Result<(), RoutingError> {
        if shard_count == 0 || self.shards.is_empty() {
            return Err(RoutingError::NoShards);
        }
        if shard_count as usize != self.shards.len() {
            return Err(RoutingError::ShardCountMismatch {
                shard_count,
                shard_table_len: self.shards.len(),
            });
        }
        if self.nodes.contains_key(&NodeId(0)) {
            return Err(RoutingError::ZeroNodeId);
        }
        for (node, address) in &self.nodes {
            endpoint_for(address).map_err(|reason| RoutingError::InvalidAddress {
                node: *node,
                address: address.clone(),
                reason,
            })?;
        }
        for (group, members) in &self.groups {
            if group.0 == 0 || *group == GroupId::RESERVED {
                return Err(RoutingError::InvalidGroupId { group: *group });
            }
            if members.is_empty() {
                return Err(RoutingError::GroupWithoutMembers { group: *group });
            }
            let mut seen = BTreeSet::new();
            for node in members {
                if node.0 == 0 {
                    return Err(RoutingError::ZeroNodeId);
                }
                if !seen.insert(*node) {
                    return Err(RoutingError::DuplicateMember { group: *group, node: *node });
                }
                if !self.nodes.contains_key(node) {
                    return Err(RoutingError::MemberWithoutAddress { group: *group, node: *node });
                }
            }
        }
        for (shard, group) in (0u32..).zip(&self.shards) {
            if let Some(group) = group
                && !self.groups.contains_key(group)
            {
                return Err(RoutingError::UnknownGroup { shard: ShardId(shard), group: *group });
            }
        }
        Ok(())
    }

    /// The configuration this placement is taken from.
    #[must_use]
    pub fn config_num(&self) -> u64 {
        self.config_num
    }

    /// The number of shards (at least 1).
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        // Checked in `validate`: the table's length equals a u32 shard count.
        self.shards.len() as u32
    }

    /// The group that owns `shard`; `None` when no group does (the shard is unassigned), or
    /// when `shard` is not below the shard count.
    #[must_use]
    pub fn group_of(&self, shard: ShardId) -> Option<GroupId> {
        self.shards.get(shard.0 as usize).copied().flatten()
    }

    /// The shards no group owns, in order (none in a static placement).
    #[must_use]
    pub fn unassigned_shards(&self) -> Vec<ShardId> {
        (0u32..)
            .zip(&self.shards)
            .filter(|(_, group)| group.is_none())
            .map(|(shard, _)| ShardId(shard))
            .collect()
    }

    /// The member nodes of `group`, in the order given (empty when `group` is not listed).
    #[must_use]
    pub fn members(&self, group: GroupId) -> &[NodeId] {
        self.groups.get(&group).map_or(&[], Vec::as_slice)
    }

    /// The address of `node`, if the placement lists it.
    #[must_use]
    pub fn address(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(String::as_str)
    }

    /// Every listed group and its members.
    #[must_use]
    pub fn groups(&self) -> &BTreeMap<GroupId, Vec<NodeId>> {
        &self.groups
    }

    /// Every listed node and its address.
    #[must_use]
    pub fn nodes(&self) -> &BTreeMap<NodeId, String> {
        &self.nodes
    }
}

/// Where a client gets its placement from.
pub trait RoutingSource: Send + Sync + 'static {
    /// Returns the newest placement this source knows. The client calls it once before its
    /// first request, and again whenever a node says the placement it routed by is stale.
    ///
    /// # Errors
    /// [`ClientError::Routing`] when no placement can be had (for example, no controller
    /// answers: [`RoutingError::Source`]); the client keeps routing by the placement it has, if
    /// any.
    fn latest(&self) -> impl Future<Output = Result<Routing>> + Send;
}

/// A placement that never changes: routing without a controller (every shard on the groups
/// the caller names, usually one: [`Routing::single_group`]).
#[derive(Clone, Debug)]
pub struct StaticRouting {
    routing: Routing,
}

impl StaticRouting {
    /// A source that always answers `routing`.
    #[must_use]
    pub fn new(routing: Routing) -> Self {
        Self { routing }
    }
}

impl RoutingSource for StaticRouting {
    async fn latest(&self) -> Result<Routing> {
        Ok(self.routing.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> BTreeMap<NodeId, String> {
        ids.iter().map(|id| (NodeId(*id), format!("127.0.0.1:{}", 7000 + id))).collect()
    }

    fn routing_error(result: Result<Routing>) -> RoutingError {
        match result {
            Err(ClientError::Routing { reason }) => reason,
            other => panic!("expected a routing error, got {other:?}"),
        }
    }

    #[test]
    fn single_group_places_every_shard_on_the_group() {
        let routing = Routing::single_group(GroupId(7), nodes(&[1, 2, 3]), 4).unwrap();
        assert_eq!(routing.shard_count(), 4);
        assert_eq!(routing.config_num(), STATIC_CONFIG_NUM);
        for shard in 0..4 {
            assert_eq!(routing.group_of(ShardId(shard)), Some(GroupId(7)));
        }
        assert_eq!(routing.group_of(ShardId(4)), None);
        assert_eq!(routing.members(GroupId(7)), &[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(routing.members(GroupId(8)), &[] as &[NodeId]);
        assert_eq!(routing.address(NodeId(2)), Some("127.0.0.1:7002"));
    }

    #[test]
    fn a_placement_over_several_groups_is_accepted() {
        let groups = BTreeMap::from([
            (GroupId(1), vec![NodeId(1), NodeId(2)]),
            (GroupId(2), vec![NodeId(3)]),
            (GroupId(3), vec![NodeId(2)]), // Owns no shard: allowed.
        ]);
        let shards = vec![GroupId(1), GroupId(2), GroupId(1)];
        let routing = Routing::new(9, 3, shards, groups, nodes(&[1, 2, 3])).unwrap();
        assert_eq!(routing.group_of(ShardId(1)), Some(GroupId(2)));
        assert_eq!(routing.config_num(), 9);
    }

    #[test]
    fn unassigned_shards_have_no_group() {
        let groups = BTreeMap::from([(GroupId(1), vec![NodeId(1)])]);
        let shards = vec![None, Some(GroupId(1)), None];
        let routing = Routing::with_unassigned_shards(4, 3, shards, groups, nodes(&[1])).unwrap();
        assert_eq!(routing.group_of(ShardId(0)), None);
        assert_eq!(routing.group_of(ShardId(1)), Some(GroupId(1)));
        assert_eq!(routing.unassigned_shards(), vec![ShardId(0), ShardId(2)]);
        let full = Routing::single_group(GroupId(1), nodes(&[1]), 3).unwrap();
        assert!(full.unassigned_shards().is_empty());
    }

    #[test]
    fn a_placement_without_groups_leaves_every_shard_unassigned() {
        let routing =
            Routing::with_unassigned_shards(0, 2, vec![None; 2], BTreeMap::new(), BTreeMap::new())
                .unwrap();
        assert_eq!(routing.shard_count(), 2);
        assert_eq!(routing.unassigned_shards(), vec![ShardId(0), ShardId(1)]);
        // Unassigned shards relax only ownership: the other invariants still hold.
        let error = routing_error(Routing::with_unassigned_shards(
            0,
            0,
            Vec::new(),
            BTreeMap::new(),
            BTreeMap::new(),
        ));
        assert_eq!(error, RoutingError::NoShards);
        let shards = vec![None, Some(GroupId(2))];
        let groups = BTreeMap::from([(GroupId(1), vec![NodeId(1)])]);
        let error =
            routing_error(Routing::with_unassigned_shards(1, 2, shards, groups, nodes(&[1])));
        assert_eq!(error, RoutingError::UnknownGroup { shard: ShardId(1), group: GroupId(2) });
    }

    #[test]
    fn a_configuration_becomes_the_placement_of_its_groups_members() {
        let config = Configuration {
            num: mosaic_controller::ConfigNum(5),
            shards: vec![Some(GroupId(2)), None, Some(GroupId(1))],
            groups: BTreeMap::from([
                (GroupId(1), vec![NodeId(1), NodeId(2)]),
                (GroupId(2), vec![NodeId(3)]),
            ]),
        };
        // Node 4 is registered but no member: left out, even with an unusable address.
        let mut registry = nodes(&[1, 2, 3]);
        registry.insert(NodeId(4), "not an address".to_string());
        let routing = Routing::from_configuration(&config, &registry).unwrap();
        assert_eq!(routing.config_num(), 5);
        assert_eq!(routing.shard_count(), 3);
        assert_eq!(routing.group_of(ShardId(0)), Some(GroupId(2)));
        assert_eq!(routing.group_of(ShardId(1)), None);
        assert_eq!(routing.members(GroupId(1)), &[NodeId(1), NodeId(2)]);
        assert_eq!(routing.nodes(), &nodes(&[1, 2, 3]));

        registry.remove(&NodeId(3));
        let error = routing_error(Routing::from_configuration(&config, &registry));
        assert_eq!(
            error,
            RoutingError::MemberWithoutAddress { group: GroupId(2), node: NodeId(3) }
        );
    }

    #[test]
    fn configuration_zero_is_a_placement_of_unassigned_shards() {
        let config = Configuration::initial(4);
        let routing = Routing::from_configuration(&config, &nodes(&[1])).unwrap();
        assert_eq!(routing.config_num(), 0);
        assert_eq!(routing.unassigned_shards().len(), 4);
        assert!(routing.nodes().is_empty());
    }

    #[test]
    fn zero_shards_are_refused() {
        let error = routing_error(Routing::single_group(GroupId(1), nodes(&[1]), 0));
        assert_eq!(error, RoutingError::NoShards);
    }

    #[test]
    fn a_shard_count_that_differs_from_the_table_is_refused() {
        let groups = BTreeMap::from([(GroupId(1), vec![NodeId(1)])]);
        let error = routing_error(Routing::new(1, 3, vec![GroupId(1); 2], groups, nodes(&[1])));
        assert_eq!(error, RoutingError::ShardCountMismatch { shard_count: 3, shard_table_len: 2 });
    }

    #[test]
    fn a_shard_of_an_unlisted_group_is_refused() {
        let groups = BTreeMap::from([(GroupId(1), vec![NodeId(1)])]);
        let shards = vec![GroupId(1), GroupId(2)];
        let error = routing_error(Routing::new(1, 2, shards, groups, nodes(&[1])));
        assert_eq!(error, RoutingError::UnknownGroup { shard: ShardId(1), group: GroupId(2) });
    }

    #[test]
    fn a_shard_of_group_zero_is_refused() {
        let groups = BTreeMap::from([(GroupId(1), vec![NodeId(1)])]);
        let shards = vec![GroupId(0)];
        let error = routing_error(Routing::new(1, 1, shards, groups, nodes(&[1])));
        assert_eq!(error, RoutingError::UnknownGroup { shard: ShardId(0), group: GroupId(0) });
    }

    #[test]
    fn reserved_group_ids_are_refused() {
        for group in [GroupId(0), GroupId::RESERVED] {
            let error = routing_error(Routing::single_group(group, nodes(&[1]), 1));
            assert_eq!(error, RoutingError::InvalidGroupId { group });
        }
    }

    #[test]
    fn a_group_without_members_is_refused() {
        let error = routing_error(Routing::single_group(GroupId(1), BTreeMap::new(), 4));
        assert_eq!(error, RoutingError::GroupWithoutMembers { group: GroupId(1) });
    }

    #[test]
    fn a_member_listed_twice_is_refused() {
        let groups = BTreeMap::from([(GroupId(1), vec![NodeId(1), NodeId(1)])]);
        let error = routing_error(Routing::new(1, 1, vec![GroupId(1)], groups, nodes(&[1])));
        assert_eq!(error, RoutingError::DuplicateMember { group: GroupId(1), node: NodeId(1) });
    }

    #[test]
    fn node_zero_is_refused() {
        let error = routing_error(Routing::single_group(GroupId(1), nodes(&[0, 1]), 1));
        assert_eq!(error, RoutingError::ZeroNodeId);
    }

    #[test]
    fn a_member_without_an_address_is_refused() {
        let groups = BTreeMap::from([(GroupId(1), vec![NodeId(1), NodeId(2)])]);
        let error = routing_error(Routing::new(1, 1, vec![GroupId(1)], groups, nodes(&[1])));
        assert_eq!(
            error,
            RoutingError::MemberWithoutAddress { group: GroupId(1), node: NodeId(2) }
        );
    }

    #[test]
    fn an_unusable_address_is_refused() {
        for address in ["", "not an address", "127.0.0.1:port", "127.0.0.1", ":7001", "h:99999"] {
            let nodes = BTreeMap::from([(NodeId(1), address.to_string())]);
            let error = routing_error(Routing::single_group(GroupId(1), nodes, 1));
            assert!(
                matches!(&error, RoutingError::InvalidAddress { node: NodeId(1), address: a, .. }
                    if a == address),
                "address {address:?}: {error:?}"
            );
        }
    }

    #[test]
    fn addresses_with_and_without_a_scheme_are_accepted() {
        let nodes = BTreeMap::from([
            (NodeId(1), "localhost:7001".to_string()),
            (NodeId(2), "http://10.0.0.2:7001".to_string()),
            (NodeId(3), "[::1]:7001".to_string()),
        ]);
        Routing::single_group(GroupId(1), nodes, 1).unwrap();
    }
}
