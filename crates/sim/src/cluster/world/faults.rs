//! The fault schedule of the safety phase: every so often, partition the endpoints, heal,
//! crash a node (within the limits on nodes down at once; a storage node sometimes losing its
//! data directory), or crash every node at once (the full restarts of 6.824's shardkv tests),
//! restarting each later from what its engine kept.

use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use mosaic_shardkv::{KvStateMachine, PlacedSince};

use super::{CONTROLLER_GROUP, Event, World, prepare_storage};
use crate::cluster::Time;
use crate::cluster::agent::SimAgent;
use crate::cluster::net::chance;
use crate::cluster::node::SimNode;
use crate::cluster::rpc::Endpoint;

/// How long a node that is to die for good waits for a moment when it may.
const DIE_RETRY_MS: Time = 200;

impl World {
    pub(super) fn fault_step(&mut self) {
        match self.rng.below(10) {
            0..=2 => {
                let endpoints: Vec<Endpoint> = self
                    .controllers
                    .keys()
                    .chain(self.storage.keys())
                    .map(|node| Endpoint::Node(*node))
                    .chain((0..self.config.clients).map(Endpoint::Client))
                    .chain([Endpoint::Admin])
                    .collect();
                let minority: Vec<Endpoint> =
                    endpoints.into_iter().filter(|_| self.rng.below(3) == 0).collect();
                tracing::debug!(?minority, "partition");
                self.net.partition(minority);
                self.fault_stats.partitions += 1;
            }
            3 | 4 => self.net.heal(),
            5..=7 => {
                let nodes: Vec<NodeId> =
                    self.controllers.keys().chain(self.storage.keys()).copied().collect();
                let node = nodes[self.rng.below(nodes.len() as u64) as usize];
                let per_mille = self.config.faults.disk_loss_per_mille;
                if self.storage.contains_key(&node)
                    && chance(&mut self.rng, per_mille)
                    && self.may_lose_disk(node)
                {
                    self.lose_disk(node);
                } else {
                    self.crash(node);
                }
            }
            8 => {
                if let Some(leader) = self.controller_leader() {
                    self.crash(leader);
                }
            }
            _ => {
                if self.rng.below(1_000) < self.config.faults.full_restart_per_mille {
                    self.crash_everything();
                }
            }
        }
    }

    /// Whether storage node `node` may lose its data now, so that no group loses the data of
    /// a majority of its voters (which no system recovers from): every storage node is up (a
    /// node down may be short of data too, unseen; so no disk is lost once a node died for
    /// good: a group added on the dead node and on one back empty would have one founder of
    /// three) and settled (no
    /// earlier loss still being made good); every node a configuration lists for a group
    /// hosts a replica of it (so a node that lost its data earlier has rejoined, and no group
    /// is still to be created); and for every replica up, a majority of the voters it sees,
    /// `node` among them where it is a learner (it may be promoted at any moment: seed 2936
    /// of the repair sweep through snapshots wiped a learner whose promotion was applying, in
    /// a group whose third founder had lost its disk before the group was created), holds a
    /// replica of the group without `node`. Conservative: a group being created or destroyed,
    /// or a stale replica's view, also holds disk losses back.
    fn may_lose_disk(&self, node: NodeId) -> bool {
        if !self.every_storage_node_up() || self.config.faults.storage_nodes_down_max == 0 {
            return false;
        }
        // A node back from a loss is settled once it rejoined every group placed on it: until
        // then a group created meanwhile may list two nodes born after it (each rejoins it,
        // neither creates it) and never have a majority.
        self.listed_members_host_their_groups(None)
            && self.agents.values().all(SimAgent::is_settled)
            && self.keeps_majorities(node, |voter, group| self.hosts(voter, group))
    }

    /// Whether storage node `node` may stop for good now, as far as the groups go: every
    /// storage node is up and has recorded its birth, and every member the newest
    /// configuration lists for a group with `node` hosts it (a node down, back empty, or born
    /// when a group was added, may not create a group added on it and on the dead node: one
    /// founder of three), and every group keeps a majority of the voters each replica up sees,
    /// `node` among them where it is a learner (it may be promoted at any moment, even dead),
    /// that hold the group's data without `node`, a voter counted only if its own replica is
    /// up and sees itself a voter (an empty replica that joined, or a learner, may hold nothing
    /// yet).
    fn may_die(&self, node: NodeId) -> bool {
        self.every_storage_node_born()
            && self.listed_members_host_their_groups(Some(node))
            && self.keeps_majorities(node, |voter, group| {
                let replica = self.storage.get(&voter).and_then(SimNode::store);
                replica
                    .and_then(|store| store.peer(group))
                    .is_some_and(|peer| peer.status().conf_state.voters.contains(&voter))
            })
    }

    /// Whether, for every replica up, a majority of the voters it sees and `node` where it is
    /// a learner (a learner may be promoted at any moment, even once dead or wiped) is `intact`
    /// (given the member and the group) without `node`.
    fn keeps_majorities(&self, node: NodeId, intact: impl Fn(NodeId, GroupId) -> bool) -> bool {
        self.is_up(node)
            && self.storage.values().filter_map(SimNode::store).all(|store| {
                store.groups().all(|group| {
                    let Some(peer) = store.peer(group) else { return true };
                    let conf = peer.status().conf_state;
                    let promoted = conf.learners.get(&node);
                    let members: Vec<NodeId> =
                        conf.voters.iter().chain(promoted).copied().collect();
                    let count = members
                        .iter()
                        .filter(|member| **member != node && intact(**member, group))
                        .count();
                    conf.voters.is_empty() || count > members.len() / 2
                })
            })
    }

    /// Whether every node the newest configuration lists for a group hosts a replica of it,
    /// for every group, or (`of_node`) only for the groups it lists that node for.
    fn listed_members_host_their_groups(&self, of_node: Option<NodeId>) -> bool {
        let newest = self
            .controllers
            .values()
            .filter_map(|controller| controller.store()?.peer(CONTROLLER_GROUP))
            .map(|peer| peer.state_machine().state().latest())
            .max_by_key(|config| config.num);
        newest.is_some_and(|newest| {
            newest
                .groups
                .iter()
                .filter(|(_, members)| of_node.is_none_or(|node| members.contains(&node)))
                .all(|(group, members)| members.iter().all(|member| self.hosts(*member, *group)))
        })
    }

    /// Whether every storage node is up (none died for good).
    fn every_storage_node_up(&self) -> bool {
        self.storage.values().all(SimNode::is_up)
    }

    /// Whether every storage node is up and has recorded its store's birth (a node back empty
    /// that has not yet would count as born after a group added meanwhile, and not create it).
    fn every_storage_node_born(&self) -> bool {
        self.storage.values().all(|node| {
            node.store().is_some_and(|store| {
                let since = KvStateMachine::placed_since(store.engine());
                matches!(since, Ok(PlacedSince::Config(_)))
            })
        })
    }

    /// Whether storage node `host` is up and hosts a replica of `group`.
    fn hosts(&self, host: NodeId, group: GroupId) -> bool {
        self.storage
            .get(&host)
            .and_then(SimNode::store)
            .is_some_and(|store| store.groups().any(|hosted| hosted == group))
    }

    /// Crashes storage node `node`, which is up, and replaces its engine with an empty one
    /// (`FaultConfig::disk_loss_per_mille`); it restarts later like any crashed node.
    fn lose_disk(&mut self, node: NodeId) {
        tracing::debug!(node_id = %node, "disk lost");
        self.crash_now(node);
        let target = self.storage.get_mut(&node).expect("a storage node");
        assert!(target.lose_data(prepare_storage), "node {node} is down");
        self.fault_stats.disks_lost += 1;
    }

    /// Crashes every node that is up, whatever the limits (each restarts after its own pause).
    fn crash_everything(&mut self) {
        let nodes: Vec<NodeId> =
            self.controllers.keys().chain(self.storage.keys()).copied().collect();
        tracing::debug!("full restart");
        self.fault_stats.full_restarts += 1;
        for node in nodes {
            if self.is_up(node) {
                self.crash_now(node);
            }
        }
    }

    /// Crashes `node` if the limits on nodes down allow it, and schedules its restart;
    /// returns true if it crashed.
    pub(super) fn crash(&mut self, node: NodeId) -> bool {
        let faults = &self.config.faults;
        let is_controller = self.controllers.contains_key(&node);
        let (down, limit) = if is_controller {
            (
                self.controllers.values().filter(|n| !n.is_up()).count(),
                faults.controller_nodes_down_max,
            )
        } else {
            (self.storage.values().filter(|n| !n.is_up()).count(), faults.storage_nodes_down_max)
        };
        if down >= limit || !self.is_up(node) {
            return false;
        }
        self.crash_now(node);
        true
    }

    /// Crashes `node`, which is up, losing some of its unsynced writes, and schedules its
    /// restart.
    fn crash_now(&mut self, node: NodeId) {
        let faults = &self.config.faults;
        let is_controller = self.controllers.contains_key(&node);
        let down_ms = 1 + self.rng.below(faults.down_ms_max.max(1));
        let (unsynced, crashed) = if is_controller {
            if let Some(repairer) = self.repairers.remove(&node) {
                self.repairs_by_the_dead.0 += repairer.decommissions;
                self.repairs_by_the_dead.1 += repairer.retirements;
            }
            let target = self.controllers.get_mut(&node).expect("a controller");
            let unsynced = target.unsynced_writes();
            let kept = self.rng.below(unsynced as u64 + 1) as usize;
            (unsynced - kept, target.crash(kept))
        } else {
            let target = self.storage.get_mut(&node).expect("a storage node");
            let unsynced = target.unsynced_writes();
            let kept = self.rng.below(unsynced as u64 + 1) as usize;
            self.agents.remove(&node);
            (unsynced - kept, target.crash(kept))
        };
        assert!(crashed, "node {node} was up");
        self.end_stall_by_crash(node);
        tracing::debug!(node_id = %node, lost = unsynced, "crash");
        self.fault_stats.crashes += 1;
        self.fault_stats.unsynced_writes_lost += unsynced as u64;
        self.schedule(self.now + down_ms, Event::Restart(node));
    }

    /// A storage node dies for good (`SimConfig::repair`), picked at random among those that
    /// are up, registered, active and host a replica, and whose loss leaves every group a
    /// majority of intact voters ([`World::may_die`]: one more failure in a group of three
    /// is beyond what it survives, and not what the repair is for): crashed, and never
    /// restarted. Until some node may die, it tries again a little later (in the safety phase
    /// only).
    pub(super) fn die_for_good(&mut self) {
        if self.phase != super::Phase::Safety {
            return;
        }
        let state = self
            .controller_leader()
            .and_then(|leader| self.controllers[&leader].store()?.peer(CONTROLLER_GROUP))
            .map(|peer| peer.state_machine().state());
        let candidates: Vec<(NodeId, usize)> = match state {
            Some(state) if self.admin.is_set_up() => self
                .storage
                .iter()
                .filter(|(id, _)| {
                    state.nodes().contains_key(id) && !state.node_states().contains_key(id)
                })
                .filter_map(|(id, node)| Some((*id, node.store()?.groups().count())))
                .filter(|(id, hosted)| *hosted > 0 && self.may_die(*id))
                .collect(),
            _ => Vec::new(),
        };
        if candidates.is_empty() {
            self.schedule(self.now + DIE_RETRY_MS, Event::DieForGood);
            return;
        }
        let (node, hosted) = candidates[self.rng.below(candidates.len() as u64) as usize];
        tracing::debug!(node_id = %node, hosted, "dies for good");
        self.crash_now(node);
        self.dead.insert(node);
        self.fault_stats.dead_for_good.push((node, hosted));
    }

    /// Starts crashed `node` again, unless it died for good.
    pub(super) fn restart(&mut self, node: NodeId) {
        if self.dead.contains(&node) {
            return;
        }
        let restarted = if let Some(target) = self.controllers.get_mut(&node) {
            let restarted = target.restart();
            if restarted {
                let incarnation = target.incarnation();
                let process = super::controller_process(&self.config, &self.clock);
                self.controller_processes.insert(node, process);
                if let Some(repairer) = super::repairer(&self.config, node, incarnation) {
                    self.repairers.insert(node, repairer);
                }
            }
            restarted
        } else {
            let target = self.storage.get_mut(&node).expect("a storage node");
            let restarted = target.restart();
            if restarted {
                let controllers = self.controllers.keys().copied().collect();
                let store = target.store().expect("restarted");
                let agent = SimAgent::new(node, target.incarnation(), controllers, store);
                self.agents.insert(node, agent);
            }
            restarted
        };
        if restarted {
            tracing::debug!(node_id = %node, "restart");
            let outgoing = match self.controllers.get_mut(&node) {
                Some(target) => target.take_outgoing(),
                None => self.storage.get_mut(&node).expect("storage").take_outgoing(),
            };
            self.route_outgoing(node, outgoing);
        }
    }
}
