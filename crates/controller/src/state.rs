//! The controller's replicated state: the node registry, the numbered history of
//! configurations and the client sessions that make retried commands apply once.
//!
//! Every replica applies the same requests in the same log order and reaches the same state:
//! nothing here reads a clock, iterates a hash map or draws a random number.
//!
//! Invariants: `configs[i].num == i`; every configuration passes
//! [`Configuration::assert_valid`]; at most `max_sessions` sessions are kept; a group is listed
//! by one unbroken run of configurations (ids are never reused), and `lives` describes exactly
//! those runs and the retired groups.

use std::collections::{BTreeMap, BTreeSet};

use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::{LogIndex, NodeId};

use crate::command::{Command, Outcome, Request};
use crate::configuration::{ConfigNum, Configuration, ShardMove, shard_moves};
use crate::decommission::{NodeState, replacements};
use crate::error::{Error, Result};
use crate::rebalance::rebalance;

/// Default shard count of a new cluster.
pub const DEFAULT_SHARD_COUNT: u32 = 64;
/// Default number of client sessions kept for deduplication.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// The last request applied for one client, and its result (returned again on a retry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The client's latest sequence number applied.
    pub(crate) seq: u64,
    /// What that request answered.
    pub(crate) result: Result<Outcome>,
    /// The log index that last touched this session: the least recent is evicted first.
    pub(crate) last_index: LogIndex,
}

/// What one [`ControllerState::apply_with_changes`] changed, so that a caller that stores the
/// state record by record writes only those records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AppliedChanges {
    /// The configuration created, if one was.
    pub(crate) config_created: Option<ConfigNum>,
    /// The node registered or given a new address, if one was.
    pub(crate) node_changed: Option<NodeId>,
    /// The controller replica whose address was recorded, if one was.
    pub(crate) controller_changed: Option<NodeId>,
    /// The node decommissioned or retired, if one was.
    pub(crate) node_state_changed: Option<NodeId>,
    /// The group retired, if one was.
    pub(crate) group_retired: Option<GroupId>,
    /// True when the client's session was written (every request but a stale one).
    pub(crate) session_written: bool,
    /// The sessions evicted to stay within `max_sessions`, in eviction order.
    pub(crate) sessions_evicted: Vec<ClientId>,
}

impl AppliedChanges {
    /// Returns true when nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.config_created.is_none()
            && self.node_changed.is_none()
            && self.controller_changed.is_none()
            && self.node_state_changed.is_none()
            && self.group_retired.is_none()
            && !self.session_written
            && self.sessions_evicted.is_empty()
    }
}

/// The life of one group through the configurations. Group ids are never reused, so each
/// group has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLife {
    /// The first configuration that lists the group.
    pub added: ConfigNum,
    /// The members that configuration lists: the group's first membership, which a founding
    /// member on a store older than the group creates its replica with, listed or not (a
    /// founder no longer listed then releases it; docs/controller.md "Replacing a node" says
    /// why that is safe). Empty from a controller older than `ReplaceNode`.
    pub founders: Vec<NodeId>,
    /// The first configuration after that which does not list it, once the group is removed.
    pub removed: Option<ConfigNum>,
    /// True once the removed group has handed off every shard it held: its replicas may be
    /// destroyed.
    pub retired: bool,
}

/// The controller state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerState {
    nodes: BTreeMap<NodeId, String>,
    /// The state of every registered node that is not [`NodeState::Active`].
    node_states: BTreeMap<NodeId, NodeState>,
    configs: Vec<Configuration>,
    /// Every group any configuration listed (derived from `configs`, plus `retired`).
    lives: BTreeMap<GroupId, GroupLife>,
    sessions: BTreeMap<ClientId, Session>,
    max_sessions: usize,
    /// The addresses recorded for controller replicas (`SetControllerAddress`).
    controllers: BTreeMap<NodeId, String>,
}

impl ControllerState {
    /// A new cluster with `shard_count` shards (fixed forever) and configuration 0.
    ///
    /// # Panics
    /// If `shard_count` is 0 or `max_sessions` is 0.
    #[must_use]
    pub fn new(shard_count: u32, max_sessions: usize) -> Self {
        assert!(shard_count > 0, "a cluster needs at least one shard");
        assert!(max_sessions > 0, "max_sessions must be at least 1");
        Self {
            nodes: BTreeMap::new(),
            node_states: BTreeMap::new(),
            configs: vec![Configuration::initial(shard_count)],
            lives: BTreeMap::new(),
            sessions: BTreeMap::new(),
            max_sessions,
            controllers: BTreeMap::new(),
        }
    }

    /// The number of shards.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.latest().shard_count()
    }

    /// The latest configuration.
    #[must_use]
    pub fn latest(&self) -> &Configuration {
        self.configs.last().expect("configuration 0 always exists")
    }

    /// Configuration `num`, or the latest for `None`.
    ///
    /// # Errors
    /// [`Error::UnknownConfig`] for a number past the latest.
    pub fn config(&self, num: Option<ConfigNum>) -> Result<&Configuration> {
        match num {
            None => Ok(self.latest()),
            Some(num) => self
                .configs
                .get(num.0 as usize)
                .ok_or(Error::UnknownConfig { num, latest: self.latest().num }),
        }
    }

    /// Every group any configuration listed, in id order.
    #[must_use]
    pub fn lives(&self) -> &BTreeMap<GroupId, GroupLife> {
        &self.lives
    }

    /// Every registered node and its address, in id order.
    #[must_use]
    pub fn nodes(&self) -> &BTreeMap<NodeId, String> {
        &self.nodes
    }

    /// The address recorded for each controller replica (`SetControllerAddress`), in id
    /// order. Replicas started together know each other from their `--peers`; a replica
    /// added later is known by this record.
    #[must_use]
    pub fn controllers(&self) -> &BTreeMap<NodeId, String> {
        &self.controllers
    }

    /// The state of every registered node that is not [`NodeState::Active`], in id order.
    #[must_use]
    pub fn node_states(&self) -> &BTreeMap<NodeId, NodeState> {
        &self.node_states
    }

    /// The state of `node` ([`NodeState::Active`] for a node never decommissioned, registered
    /// or not).
    #[must_use]
    pub fn node_state(&self, node: NodeId) -> NodeState {
        self.node_states.get(&node).copied().unwrap_or_default()
    }

    /// The number of client sessions kept for deduplication, at most.
    #[must_use]
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Every client session, in client order.
    pub(crate) fn sessions(&self) -> &BTreeMap<ClientId, Session> {
        &self.sessions
    }

    /// Rebuilds a state from its parts (read back from storage), checking every invariant of
    /// the type, and that configuration 0 is the initial one, every configuration has the
    /// same number of shards, every node with a state is registered, not active and listed
    /// by no group of the latest configuration, and no node or controller replica is 0.
    ///
    /// # Errors
    /// What is wrong, in words, when an invariant does not hold.
    pub(crate) fn from_parts(
        nodes: BTreeMap<NodeId, String>,
        node_states: BTreeMap<NodeId, NodeState>,
        configs: Vec<Configuration>,
        retired: &BTreeSet<GroupId>,
        sessions: BTreeMap<ClientId, Session>,
        max_sessions: usize,
        controllers: BTreeMap<NodeId, String>,
    ) -> std::result::Result<Self, String> {
        if max_sessions == 0 {
            return Err("max_sessions is 0".into());
        }
        let Some(first) = configs.first() else {
            return Err("no configuration 0".into());
        };
        let shard_count = first.shard_count();
        if shard_count == 0 {
            return Err("configuration 0 has no shard".into());
        }
        if *first != Configuration::initial(shard_count) {
            return Err(format!("configuration 0 is not the initial one: {first:?}"));
        }
        for (position, config) in configs.iter().enumerate() {
            if config.num.0 != position as u64 {
                return Err(format!("configuration {} stored at position {position}", config.num));
            }
            if config.shard_count() != shard_count {
                return Err(format!(
                    "configuration {} has {} shards, configuration 0 has {shard_count}",
                    config.num,
                    config.shard_count()
                ));
            }
            config.check_valid()?;
        }
        if let Some(node) = nodes.keys().find(|node| node.0 == 0) {
            return Err(format!("node {node} is registered"));
        }
        if let Some(replica) = controllers.keys().find(|replica| replica.0 == 0) {
            return Err(format!("controller replica {replica} has an address"));
        }
        for (node, state) in &node_states {
            if !nodes.contains_key(node) || *state == NodeState::Active {
                return Err(format!("node {node} is {state} but not registered or not leaving"));
            }
            let latest = configs.last().expect("configuration 0 exists");
            if let Some(group) = latest.groups.iter().find(|(_, m)| m.contains(node)).map(|g| g.0) {
                return Err(format!(
                    "node {node} is {state} but configuration {} lists it in group {group}",
                    latest.num
                ));
            }
        }
        if sessions.len() > max_sessions {
            return Err(format!(
                "{} sessions, more than max_sessions {max_sessions}",
                sessions.len()
            ));
        }
        let mut lives = BTreeMap::new();
        for pair in configs.windows(2) {
            record_lives(&mut lives, &pair[0], &pair[1])?;
        }
        for group in retired {
            match lives.get_mut(group) {
                Some(life @ GroupLife { removed: Some(_), .. }) => life.retired = true,
                _ => return Err(format!("group {group} is retired but was never removed")),
            }
        }
        Ok(Self { nodes, node_states, configs, lives, sessions, max_sessions, controllers })
    }

    /// The moves a rebalance would make now (a dry run; nothing changes).
    #[must_use]
    pub fn plan_rebalance(&self, max_moves: Option<u32>) -> Vec<ShardMove> {
        let latest = self.latest();
        let groups: BTreeSet<GroupId> = latest.groups.keys().copied().collect();
        shard_moves(&latest.shards, &rebalance(&latest.shards, &groups, max_moves))
    }

    /// Applies a request committed at log `index`. A request already applied for its client
    /// returns the first result again; an older one is refused.
    ///
    /// # Errors
    /// The command's own errors (nothing changes), or [`Error::StaleRequest`].
    pub fn apply(&mut self, index: LogIndex, request: Request) -> Result<Outcome> {
        self.apply_with_changes(index, request).0
    }

    /// As [`ControllerState::apply`], and reports what changed.
    pub(crate) fn apply_with_changes(
        &mut self,
        index: LogIndex,
        request: Request,
    ) -> (Result<Outcome>, AppliedChanges) {
        let mut changes = AppliedChanges::default();
        if let Some(session) = self.sessions.get_mut(&request.client) {
            if request.seq == session.seq {
                session.last_index = index;
                changes.session_written = true;
                return (session.result.clone(), changes);
            }
            if request.seq < session.seq {
                let stale = Error::StaleRequest {
                    client: request.client,
                    seq: request.seq,
                    latest: session.seq,
                };
                return (Err(stale), changes);
            }
        }
        let configs_before = self.configs.len();
        let registering = match &request.command {
            Command::RegisterNode { node, .. } => Some(*node),
            _ => None,
        };
        let result = self.execute(request.command);
        if self.configs.len() > configs_before {
            changes.config_created = Some(self.latest().num);
        }
        match result {
            Ok(Outcome::NodeRegistered { .. } | Outcome::NodeAddressChanged { .. }) => {
                changes.node_changed = registering;
            }
            Ok(Outcome::GroupRetired { group }) => changes.group_retired = Some(group),
            Ok(Outcome::ControllerAddressRecorded { replica, .. }) => {
                changes.controller_changed = Some(replica);
            }
            Ok(Outcome::NodeDecommissioning { node, .. } | Outcome::NodeRetired { node }) => {
                changes.node_state_changed = Some(node);
            }
            _ => {}
        }
        changes.session_written = true;
        changes.sessions_evicted =
            self.remember(request.client, request.seq, result.clone(), index);
        (result, changes)
    }

    /// Records the client's session; returns the sessions evicted to stay within
    /// `max_sessions`.
    fn remember(
        &mut self,
        client: ClientId,
        seq: u64,
        result: Result<Outcome>,
        index: LogIndex,
    ) -> Vec<ClientId> {
        self.sessions.insert(client, Session { seq, result, last_index: index });
        let mut evicted = Vec::new();
        while self.sessions.len() > self.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(id, s)| (s.last_index, **id))
                .map(|(id, _)| *id)
                .expect("not empty");
            self.sessions.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    fn execute(&mut self, command: Command) -> Result<Outcome> {
        match command {
            Command::RegisterNode { node, address } => self.register_node(node, address),
            Command::AddGroups { groups, max_moves } => self.add_groups(groups, max_moves),
            Command::RemoveGroups { groups, max_moves } => self.remove_groups(&groups, max_moves),
            Command::MoveShard { shard, group } => self.move_shard(shard, group),
            Command::Rebalance { max_moves } => {
                let latest = self.latest();
                let groups: BTreeSet<GroupId> = latest.groups.keys().copied().collect();
                let shards = rebalance(&latest.shards, &groups, max_moves);
                let groups = latest.groups.clone();
                Ok(self.push_config(shards, groups, "the shards are already balanced"))
            }
            Command::RetireGroup { group } => self.retire_group(group),
            Command::ReplaceNode { node, with, group } => self.replace_node(node, with, group),
            Command::DecommissionNode { node, avoid } => self.decommission_node(node, &avoid),
            Command::RetireNode { node } => self.retire_node(node),
            Command::SetControllerAddress { replica, address } => {
                self.set_controller_address(replica, address)
            }
        }
    }

    /// Refuses a node that may not take a replica: one being decommissioned or retired.
    fn check_active(&self, node: NodeId) -> Result<()> {
        match self.node_state(node) {
            NodeState::Active => Ok(()),
            state => Err(Error::NodeNotActive { node, state }),
        }
    }

    /// Starts decommissioning `node` (see [`Command::DecommissionNode`]). Checks, in this
    /// order: the node id, that it is registered, that it is active (a node already leaving
    /// answers [`Outcome::Unchanged`]), and that every group listing it has a replacement
    /// outside `avoid`.
    fn decommission_node(&mut self, node: NodeId, avoid: &BTreeSet<NodeId>) -> Result<Outcome> {
        if node.0 == 0 {
            return Err(Error::InvalidNodeId);
        }
        if !self.nodes.contains_key(&node) {
            return Err(Error::NodeNotRegistered { node });
        }
        let state = self.node_state(node);
        if state != NodeState::Active {
            let reason = format!("node {node} is {state} already");
            return Ok(Outcome::Unchanged { num: self.latest().num, reason });
        }
        let latest = self.latest();
        let candidates: BTreeSet<NodeId> = self
            .nodes
            .keys()
            .filter(|candidate| {
                **candidate != node
                    && !self.node_states.contains_key(candidate)
                    && !avoid.contains(candidate)
            })
            .copied()
            .collect();
        let replacements = replacements(&latest.groups, node, &candidates)?;
        let mut next_groups = latest.groups.clone();
        for (group, with) in &replacements {
            let members = next_groups.get_mut(group).expect("a group of the latest configuration");
            for member in members.iter_mut().filter(|member| **member == node) {
                *member = *with;
            }
            members.sort_unstable();
        }
        let shards = latest.shards.clone();
        let num = match self.push_config(shards, next_groups, "") {
            Outcome::ConfigCreated { num, moves } if moves.is_empty() => num,
            Outcome::Unchanged { num, .. } if replacements.is_empty() => num,
            outcome => {
                panic!("decommissioning node {node} moved a shard or changed no group: {outcome:?}")
            }
        };
        self.node_states.insert(node, NodeState::Decommissioning);
        Ok(Outcome::NodeDecommissioning { node, num, replacements })
    }

    /// Marks a node being decommissioned retired (see [`Command::RetireNode`]). Checks, in
    /// this order: the node id, that it is registered, that it is being decommissioned (a
    /// retired node answers [`Outcome::Unchanged`]), and that every removed group that any
    /// configuration listed it in has retired: such a group may still be moving its members
    /// towards its last listing (a decommission the removal overtook), with the node among
    /// its voters, and no one polls a removed group's members.
    fn retire_node(&mut self, node: NodeId) -> Result<Outcome> {
        if node.0 == 0 {
            return Err(Error::InvalidNodeId);
        }
        if !self.nodes.contains_key(&node) {
            return Err(Error::NodeNotRegistered { node });
        }
        match self.node_state(node) {
            NodeState::Active => return Err(Error::NotDecommissioning { node }),
            NodeState::Retired => {
                let reason = format!("node {node} is retired already");
                return Ok(Outcome::Unchanged { num: self.latest().num, reason });
            }
            NodeState::Decommissioning => {}
        }
        let listing = self.lives.iter().find(|(group, life)| {
            let Some(removed) = life.removed.filter(|_| !life.retired) else { return false };
            self.configs[life.added.0 as usize..removed.0 as usize]
                .iter()
                .any(|config| config.groups[*group].contains(&node))
        });
        if let Some((group, _)) = listing {
            return Err(Error::NodeStillListed { node, group: *group });
        }
        self.node_states.insert(node, NodeState::Retired);
        Ok(Outcome::NodeRetired { node })
    }

    /// Replaces `node` by `with` in every group of the latest configuration that lists
    /// `node`, or only in `group`. Checks, in this order: node ids (0 is reserved), `with`
    /// differs from `node`, `with` is registered and active, `group` is in the latest
    /// configuration,
    /// some group to change lists `node`, and no group to change lists `with` already.
    fn replace_node(
        &mut self,
        node: NodeId,
        with: NodeId,
        group: Option<GroupId>,
    ) -> Result<Outcome> {
        if node.0 == 0 || with.0 == 0 {
            return Err(Error::InvalidNodeId);
        }
        if with == node {
            return Err(Error::SameNode { node });
        }
        if !self.nodes.contains_key(&with) {
            return Err(Error::NodeNotRegistered { node: with });
        }
        self.check_active(with)?;
        let latest = self.latest();
        if let Some(group) = group
            && !latest.groups.contains_key(&group)
        {
            return Err(Error::UnknownGroup { group });
        }
        let mut next_groups = latest.groups.clone();
        let mut changed = 0;
        for (id, members) in &mut next_groups {
            if group.is_some_and(|group| group != *id) || !members.contains(&node) {
                continue;
            }
            if members.contains(&with) {
                return Err(Error::AlreadyAMember { group: *id, node: with });
            }
            for member in members.iter_mut().filter(|member| **member == node) {
                *member = with;
            }
            members.sort_unstable();
            changed += 1;
        }
        if changed == 0 {
            return Err(Error::NotAMember { node, group });
        }
        let shards = latest.shards.clone();
        let outcome = self.push_config(shards, next_groups, "");
        assert!(
            matches!(outcome, Outcome::ConfigCreated { ref moves, .. } if moves.is_empty()),
            "replacing node {node} by {with} in {changed} group(s) changed no member or moved a \
             shard: {outcome:?}"
        );
        Ok(outcome)
    }

    fn retire_group(&mut self, group: GroupId) -> Result<Outcome> {
        let num = self.latest().num;
        match self.lives.get_mut(&group) {
            None => Err(Error::UnknownGroup { group }),
            Some(GroupLife { removed: None, .. }) => Err(Error::GroupNotRemoved { group }),
            Some(GroupLife { retired: true, .. }) => {
                Ok(Outcome::Unchanged { num, reason: format!("group {group} is already retired") })
            }
            Some(life) => {
                life.retired = true;
                Ok(Outcome::GroupRetired { group })
            }
        }
    }

    fn register_node(&mut self, node: NodeId, address: String) -> Result<Outcome> {
        if node.0 == 0 {
            return Err(Error::InvalidNodeId);
        }
        validate_address(&address)?;
        match self.nodes.insert(node, address.clone()) {
            None => Ok(Outcome::NodeRegistered { node }),
            Some(previous) if previous == address => Ok(Outcome::Unchanged {
                num: self.latest().num,
                reason: format!("node {node} is already registered at {address}"),
            }),
            Some(previous) => Ok(Outcome::NodeAddressChanged { node, previous }),
        }
    }

    fn set_controller_address(&mut self, replica: NodeId, address: String) -> Result<Outcome> {
        if replica.0 == 0 {
            return Err(Error::InvalidNodeId);
        }
        validate_address(&address)?;
        match self.controllers.get(&replica) {
            Some(recorded) if *recorded == address => Ok(Outcome::Unchanged {
                num: self.latest().num,
                reason: format!("controller replica {replica} is recorded at {address} already"),
            }),
            Some(recorded) => Err(Error::InvalidAddress {
                address,
                reason: format!(
                    "controller replica {replica} is recorded at {recorded}, and a replica's \
                     address never changes (two processes must never answer as one replica): \
                     give the replica on another host a new id"
                ),
            }),
            None => {
                self.controllers.insert(replica, address);
                Ok(Outcome::ControllerAddressRecorded { replica })
            }
        }
    }

    fn add_groups(
        &mut self,
        groups: BTreeMap<GroupId, Vec<NodeId>>,
        max_moves: Option<u32>,
    ) -> Result<Outcome> {
        if groups.is_empty() {
            return Err(Error::NoGroups);
        }
        let latest = self.latest();
        let mut next_groups = latest.groups.clone();
        for (group, members) in groups {
            if group.0 == 0 || group == GroupId::RESERVED {
                return Err(Error::InvalidGroupId { group });
            }
            if members.is_empty() {
                return Err(Error::EmptyGroup { group });
            }
            let mut sorted = members.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(Error::DuplicateMember { group, node: pair[0] });
            }
            if let Some(node) = sorted.iter().find(|n| !self.nodes.contains_key(n)) {
                return Err(Error::UnregisteredMember { group, node: *node });
            }
            for node in &sorted {
                self.check_active(*node)?;
            }
            if let Some(GroupLife { removed: Some(removed), .. }) = self.lives.get(&group) {
                return Err(Error::GroupRemoved { group, removed: *removed });
            }
            match latest.groups.get(&group) {
                Some(existing) if *existing == sorted => {}
                Some(existing) => {
                    return Err(Error::GroupExists { group, members: existing.clone() });
                }
                None => {
                    next_groups.insert(group, sorted);
                }
            }
        }
        if next_groups.len() == latest.groups.len() {
            return Ok(Outcome::Unchanged {
                num: latest.num,
                reason: "every group already exists with these members".into(),
            });
        }
        let ids: BTreeSet<GroupId> = next_groups.keys().copied().collect();
        let shards = rebalance(&latest.shards, &ids, max_moves);
        Ok(self.push_config(shards, next_groups, ""))
    }

    fn remove_groups(&mut self, groups: &[GroupId], max_moves: Option<u32>) -> Result<Outcome> {
        if groups.is_empty() {
            return Err(Error::NoGroups);
        }
        let latest = self.latest();
        let mut next_groups = latest.groups.clone();
        let mut already_removed = Vec::new();
        for group in groups {
            if next_groups.remove(group).is_none() {
                let existed = self.configs.iter().any(|c| c.groups.contains_key(group));
                if !existed {
                    return Err(Error::UnknownGroup { group: *group });
                }
                already_removed.push(*group);
            }
        }
        if next_groups.len() == latest.groups.len() {
            return Ok(Outcome::Unchanged {
                num: latest.num,
                reason: format!("groups {already_removed:?} were already removed"),
            });
        }
        if next_groups.is_empty() && latest.shards.iter().any(Option::is_some) {
            return Err(Error::RemovingEveryGroup);
        }
        let ids: BTreeSet<GroupId> = next_groups.keys().copied().collect();
        let shards = rebalance(&latest.shards, &ids, max_moves);
        Ok(self.push_config(shards, next_groups, ""))
    }

    fn move_shard(&mut self, shard: ShardId, group: GroupId) -> Result<Outcome> {
        let latest = self.latest();
        if shard.0 >= latest.shard_count() {
            return Err(Error::ShardOutOfRange { shard, shard_count: latest.shard_count() });
        }
        if !latest.groups.contains_key(&group) {
            return Err(Error::UnknownGroup { group });
        }
        let mut shards = latest.shards.clone();
        shards[shard.0 as usize] = Some(group);
        let groups = latest.groups.clone();
        Ok(self.push_config(shards, groups, "the shard is already there"))
    }

    /// Appends a configuration unless it changes nothing.
    fn push_config(
        &mut self,
        shards: Vec<Option<GroupId>>,
        groups: BTreeMap<GroupId, Vec<NodeId>>,
        unchanged_reason: &str,
    ) -> Outcome {
        let latest = self.latest();
        if shards == latest.shards && groups == latest.groups {
            return Outcome::Unchanged { num: latest.num, reason: unchanged_reason.to_string() };
        }
        let moves = shard_moves(&latest.shards, &shards);
        let num = ConfigNum(latest.num.0 + 1);
        let config = Configuration { num, shards, groups };
        config.assert_valid();
        let previous = self.configs.last().expect("configuration 0 always exists");
        record_lives(&mut self.lives, previous, &config).unwrap_or_else(|reason| {
            panic!("configuration {num} breaks the groups' lives: {reason}")
        });
        self.configs.push(config);
        Outcome::ConfigCreated { num, moves }
    }
}

/// Records in `lives` the groups `next` adds to and removes from `previous`.
///
/// # Errors
/// A group `next` lists again after it was removed.
fn record_lives(
    lives: &mut BTreeMap<GroupId, GroupLife>,
    previous: &Configuration,
    next: &Configuration,
) -> std::result::Result<(), String> {
    for group in next.groups.keys().filter(|group| !previous.groups.contains_key(group)) {
        if let Some(life) = lives.get(group) {
            return Err(format!(
                "group {group} is listed again in configuration {} after it was removed in {}",
                next.num,
                life.removed.map_or_else(|| "?".to_string(), |num| num.to_string())
            ));
        }
        let founders = next.groups[group].clone();
        lives
            .insert(*group, GroupLife { added: next.num, founders, removed: None, retired: false });
    }
    for group in previous.groups.keys().filter(|group| !next.groups.contains_key(group)) {
        if let Some(life) = lives.get_mut(group) {
            life.removed = Some(next.num);
        }
    }
    Ok(())
}

/// Checks that `address` is `host:port` with a non-empty host and a port from 1 to 65535.
///
/// # Errors
/// [`Error::InvalidAddress`] saying what is wrong.
pub fn validate_address(address: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidAddress {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
    let port: u16 =
        port.parse().map_err(|_| invalid("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(invalid("port 0 is not a listening port"));
    }
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err(invalid("unbalanced brackets around an IPv6 host"));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let valid_chars = bare.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    if bare.is_empty() || !valid_chars {
        return Err(invalid("the host has characters a host name or IP address cannot have"));
    }
    if bare.contains(':') && !host.starts_with('[') {
        return Err(invalid("an IPv6 host must be in brackets, as [::1]:7000"));
    }
    Ok(())
}
