//! The simulated administrator: creates the initial groups once every storage node has
//! registered, then, while asked to, changes the cluster every so often: adds a group on
//! random active nodes, removes one, moves a shard, rebalances, and when the run asks for it
//! ([`MembershipConfig`]) replaces a member of a group by an active storage node the group
//! does not list, or decommissions a node, or marks a node being decommissioned retired
//! (what `mosaic admin` sends; the groups carry the changes out themselves, through their
//! leaders' agents). After a change that moves shards, the next change is often a
//! replacement within 200 ms (a membership change during a migration).
//!
//! Each change is chosen from the latest configuration read just before, sent as a
//! controller command of the administrator's session, and retried with the same seq until
//! the controller answers (so it applies once). A refusal (the group was removed meanwhile,
//! say) ends the change; only the initial groups are insisted on.

use std::collections::BTreeMap;

use mosaic_controller::{Command, ControllerQuery, ControllerView, NodeState, Outcome};
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::NodeId;

use crate::cluster::Time;
use crate::cluster::config::MembershipConfig;
use crate::cluster::controller_link::ControllerLink;
use crate::cluster::net::chance;
use crate::cluster::rpc::{Io, Request, RequestId, Response};

/// A request unanswered for this long is sent again.
const REQUEST_TIMEOUT_MS: Time = 1_000;
/// The pause before retrying a refused initial command (nodes not registered yet).
const SETUP_RETRY_MS: Time = 100;
/// The id of the first storage group.
pub(crate) const FIRST_GROUP: u64 = 100;

/// What the administrator waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Nothing,
    /// The latest configuration, to choose a change from.
    View {
        id: RequestId,
        target: NodeId,
        deadline: Time,
    },
    /// The answer to the command in flight.
    Command {
        id: RequestId,
        target: NodeId,
        deadline: Time,
    },
}

/// What an answered command did that the world cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdminEvent {
    /// A new configuration moves shards between groups: a migration starts.
    ShardsMoving,
}

/// The administrator. See the module documentation.
pub(crate) struct Admin {
    controller: ControllerLink,
    storage_nodes: Vec<NodeId>,
    group_size: usize,
    initial: BTreeMap<GroupId, Vec<NodeId>>,
    next_group: u64,
    added_left: u64,
    setup_done: bool,
    command: Option<mosaic_controller::Request>,
    waiting: Waiting,
    next_change_at: Time,
    interval_ms: Time,
    /// Whether and how often it replaces group members.
    membership: Option<MembershipConfig>,
    /// True when the next change is a replacement (one during a migration).
    replace_next: bool,
    /// A node being decommissioned that is not yet retired: the administrator asks to retire
    /// it at a later change, and keeps asking after the safety phase until it is (as `mosaic
    /// admin node decommission` waits and asks).
    retiring: Option<NodeId>,
    /// Replacements of a group member applied.
    pub(crate) replacements: u64,
    /// Nodes whose decommissioning started.
    pub(crate) decommissions: u64,
    /// Decommissioned nodes marked retired.
    pub(crate) retirements: u64,
    /// Commands that created a configuration.
    pub(crate) configs_created: u64,
    /// Shards those configurations moved from one group to another.
    pub(crate) shards_moved: u64,
}

impl Admin {
    /// An administrator of a cluster of `storage_nodes`, starting with `initial_groups`
    /// groups of `group_size` nodes (consecutive nodes, so that nodes share groups), adding at
    /// most `added_max` more, changing something every `interval_ms` on average.
    pub(crate) fn new(
        controllers: Vec<NodeId>,
        storage_nodes: Vec<NodeId>,
        group_size: usize,
        initial_groups: u64,
        added_max: u64,
        interval_ms: Time,
        membership: Option<MembershipConfig>,
    ) -> Self {
        let initial = (0..initial_groups)
            .map(|index| {
                let members = (0..group_size)
                    .map(|offset| storage_nodes[(index as usize + offset) % storage_nodes.len()])
                    .collect();
                (GroupId(FIRST_GROUP + index), members)
            })
            .collect();
        Self {
            controller: ControllerLink::new(controllers, ClientId(1 << 41)),
            storage_nodes,
            group_size,
            initial,
            next_group: FIRST_GROUP + initial_groups,
            added_left: added_max,
            setup_done: false,
            command: None,
            waiting: Waiting::Nothing,
            next_change_at: 0,
            interval_ms,
            membership,
            replace_next: false,
            retiring: None,
            replacements: 0,
            decommissions: 0,
            retirements: 0,
            configs_created: 0,
            shards_moved: 0,
        }
    }

    /// True once the initial groups exist.
    pub(crate) fn is_set_up(&self) -> bool {
        self.setup_done
    }

    /// The periodic step. `changing`: whether to make changes after the setup.
    pub(crate) fn poll(&mut self, io: &mut Io<'_>, changing: bool) {
        match self.waiting {
            Waiting::View { target, deadline, .. } | Waiting::Command { target, deadline, .. }
                if deadline <= io.now =>
            {
                self.controller.failed(target, None);
                self.waiting = Waiting::Nothing;
            }
            _ => {}
        }
        if self.waiting != Waiting::Nothing || io.now < self.next_change_at {
            return;
        }
        if self.command.is_none() && !self.setup_done {
            let groups = self.initial.clone();
            self.command =
                Some(self.controller.new_request(Command::AddGroups { groups, max_moves: None }));
        }
        if self.command.is_none()
            && !changing
            && let Some(node) = self.retiring
        {
            self.command = Some(self.controller.new_request(Command::RetireNode { node }));
        }
        if self.command.is_some() {
            self.send_command(io);
        } else if changing {
            let target = self.controller.target();
            let query = ControllerQuery { num: None };
            let id = io.request(target, Request::ControllerRead { query, asked_by: None });
            self.waiting = Waiting::View { id, target, deadline: io.now + REQUEST_TIMEOUT_MS };
        }
    }

    /// Handles the answer to request `id`.
    pub(crate) fn on_response(
        &mut self,
        io: &mut Io<'_>,
        id: RequestId,
        response: Response,
    ) -> Option<AdminEvent> {
        match (self.waiting, response) {
            (Waiting::View { id: waited, target, .. }, Response::ControllerView(answer))
                if waited == id =>
            {
                self.waiting = Waiting::Nothing;
                match answer {
                    Ok(Ok(answer)) => {
                        self.controller.answered(target);
                        let command = self.choose(io, &answer.view);
                        self.command = Some(self.controller.new_request(command));
                        self.send_command(io);
                    }
                    Ok(Err(error)) => panic!("admin: reading the latest configuration: {error}"),
                    Err(error) => self.controller.failed(target, Some(&error)),
                }
                None
            }
            (Waiting::Command { id: waited, target, .. }, Response::ControllerOutcome(answer))
                if waited == id =>
            {
                self.waiting = Waiting::Nothing;
                let command = self.command.as_ref().expect("a command in flight");
                let replacement = matches!(command.command, Command::ReplaceNode { .. });
                match answer {
                    Ok(Ok(outcome)) => {
                        tracing::debug!(?command, ?outcome, "admin command applied");
                        self.controller.answered(target);
                        self.command = None;
                        self.setup_done = true;
                        self.next_change_at = io.now + 1 + io.rng.below(2 * self.interval_ms);
                        match outcome {
                            Outcome::NodeDecommissioning { node, .. } => {
                                self.decommissions += 1;
                                self.retiring = Some(node);
                            }
                            Outcome::NodeRetired { .. } => {
                                self.retirements += 1;
                                self.retiring = None;
                            }
                            _ => {}
                        }
                        if let Outcome::ConfigCreated { moves, .. } = outcome {
                            self.configs_created += 1;
                            if replacement {
                                self.replacements += 1;
                            }
                            let moved = moves.iter().filter(|m| m.from.is_some() && m.to.is_some());
                            let moved = moved.count() as u64;
                            self.shards_moved += moved;
                            if moved > 0
                                && let Some(membership) = &self.membership
                                && chance(io.rng, membership.during_migration_per_mille)
                            {
                                self.replace_next = true;
                                self.next_change_at = io.now + 1 + io.rng.below(200);
                            }
                            return (moved > 0).then_some(AdminEvent::ShardsMoving);
                        }
                    }
                    Ok(Err(refusal)) if self.setup_done => {
                        tracing::debug!(?command, %refusal, "admin command refused");
                        if matches!(command.command, Command::RetireNode { .. }) {
                            // Not yet (a removed group that listed the node still hands its
                            // shards off): asked again later, without drawing from the rng.
                            self.next_change_at = io.now + self.interval_ms;
                        }
                        self.command = None;
                    }
                    Ok(Err(refusal)) => {
                        // Some node has not registered yet: ask again, as a new command.
                        tracing::debug!(%refusal, "initial groups refused; retrying");
                        self.command = None;
                        self.next_change_at = io.now + SETUP_RETRY_MS;
                    }
                    Err(error) => self.controller.failed(target, Some(&error)),
                }
                None
            }
            // The answer to a request already given up on.
            _ => None,
        }
    }

    fn send_command(&mut self, io: &mut Io<'_>) {
        let request = self.command.clone().expect("a command to send");
        let target = self.controller.target();
        let id = io.request(target, Request::ControllerPropose(request));
        self.waiting = Waiting::Command { id, target, deadline: io.now + REQUEST_TIMEOUT_MS };
    }

    /// A random change to the latest configuration of `view`.
    fn choose(&mut self, io: &mut Io<'_>, view: &ControllerView) -> Command {
        let config = &view.config;
        let active: Vec<NodeId> = self
            .storage_nodes
            .iter()
            .filter(|node| !view.node_states.contains_key(node))
            .copied()
            .collect();
        let replacing = std::mem::take(&mut self.replace_next)
            || self
                .membership
                .as_ref()
                .is_some_and(|membership| chance(io.rng, membership.replace_per_mille));
        if replacing && let Some(command) = self.choose_replacement(io, config, &active) {
            return command;
        }
        let decommissioning = self
            .membership
            .as_ref()
            .is_some_and(|membership| chance(io.rng, membership.decommission_per_mille));
        if decommissioning && let Some(command) = self.choose_decommission(io, view, &active) {
            return command;
        }
        let groups: Vec<GroupId> = config.groups.keys().copied().collect();
        let pick = |io: &mut Io<'_>, groups: &[GroupId]| {
            groups[io.rng.below(groups.len() as u64) as usize]
        };
        match io.rng.below(4) {
            0 if self.added_left > 0 => {
                self.added_left -= 1;
                let group = GroupId(self.next_group);
                self.next_group += 1;
                let mut nodes = active;
                for i in (1..nodes.len()).rev() {
                    nodes.swap(i, io.rng.below(i as u64 + 1) as usize);
                }
                nodes.truncate(self.group_size);
                nodes.sort_unstable();
                Command::AddGroups { groups: BTreeMap::from([(group, nodes)]), max_moves: None }
            }
            1 if groups.len() >= 2 => {
                Command::RemoveGroups { groups: vec![pick(io, &groups)], max_moves: None }
            }
            2 if !groups.is_empty() => {
                let shard = ShardId(io.rng.below(u64::from(config.shard_count())) as u32);
                Command::MoveShard { shard, group: pick(io, &groups) }
            }
            _ => Command::Rebalance { max_moves: None },
        }
    }

    /// A node being decommissioned marked retired, if there is one; else a random active
    /// node decommissioned, if more than `group_size + 1` are active (so that every group
    /// keeps a node to move a replica to).
    fn choose_decommission(
        &mut self,
        io: &mut Io<'_>,
        view: &ControllerView,
        active: &[NodeId],
    ) -> Option<Command> {
        let leaving =
            view.node_states.iter().find(|(_, state)| **state == NodeState::Decommissioning);
        if let Some((node, _)) = leaving {
            tracing::debug!(node_id = %node, "retiring a decommissioned node");
            return Some(Command::RetireNode { node: *node });
        }
        if active.len() <= self.group_size + 1 {
            return None;
        }
        let node = active[io.rng.below(active.len() as u64) as usize];
        tracing::debug!(node_id = %node, "decommissioning a node");
        Some(Command::DecommissionNode { node, avoid: std::collections::BTreeSet::new() })
    }

    /// One listed member of a random group of `config` replaced by an active storage node
    /// the group does not list, if there is one.
    fn choose_replacement(
        &mut self,
        io: &mut Io<'_>,
        config: &mosaic_controller::Configuration,
        active: &[NodeId],
    ) -> Option<Command> {
        let groups: Vec<(&GroupId, &Vec<NodeId>)> = config.groups.iter().collect();
        if groups.is_empty() {
            return None;
        }
        let (group, members) = groups[io.rng.below(groups.len() as u64) as usize];
        let outside: Vec<NodeId> =
            active.iter().filter(|node| !members.contains(node)).copied().collect();
        if outside.is_empty() {
            return None;
        }
        let node = members[io.rng.below(members.len() as u64) as usize];
        let with = outside[io.rng.below(outside.len() as u64) as usize];
        tracing::debug!(group_id = %group, from_node = %node, to_node = %with, "replacing a member");
        Some(Command::ReplaceNode { node, with, group: Some(*group) })
    }
}
