//! The fault schedule of the safety phase: every so often, partition the endpoints, heal,
//! crash a node (within the limits on nodes down at once), or crash every node at once (the
//! full restarts of 6.824's shardkv tests), restarting each later from what its engine kept.

use mosaic_raft::NodeId;

use super::{Event, World};
use crate::cluster::agent::SimAgent;
use crate::cluster::rpc::Endpoint;

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
                    .chain(self.operator.is_some().then_some(Endpoint::Operator))
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
                self.crash(node);
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
        tracing::debug!(%node, lost = unsynced, "crash");
        self.fault_stats.crashes += 1;
        self.fault_stats.unsynced_writes_lost += unsynced as u64;
        self.schedule(self.now + down_ms, Event::Restart(node));
    }

    pub(super) fn restart(&mut self, node: NodeId) {
        let restarted = if let Some(target) = self.controllers.get_mut(&node) {
            target.restart()
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
            tracing::debug!(%node, "restart");
            let outgoing = match self.controllers.get_mut(&node) {
                Some(target) => target.take_outgoing(),
                None => self.storage.get_mut(&node).expect("storage").take_outgoing(),
            };
            self.route_outgoing(node, outgoing);
        }
    }
}
