//! The end of a run: the switch from the safety phase to the liveness phase, and the checks
//! that decide when the liveness phase is over (every group settled at the latest
//! configuration with the voters it lists and no replica elsewhere, removed groups retired
//! and destroyed, every node decommissioned or dead for good retired, replicas identical,
//! every client done)
//! or has run out of time.

use std::collections::BTreeSet;

use mosaic_controller::NodeState;
use mosaic_engine::GroupCursor;
use mosaic_raft::NodeId;
use mosaic_shardkv::ShardState;

use super::{CONTROLLER_GROUP, Event, LIVENESS_CHECK_MS, Phase, World, leader_of};
use crate::cluster::client::SimClient;
use crate::cluster::config::FaultConfig;

impl World {
    pub(super) fn end_safety_phase(&mut self) {
        tracing::debug!(now = self.now, "liveness phase");
        self.phase = Phase::Liveness { since: self.now };
        self.net.heal();
        self.net.set_faults(FaultConfig::calm());
        self.end_stalls();
        let nodes: Vec<NodeId> =
            self.controllers.keys().chain(self.storage.keys()).copied().collect();
        for node in nodes {
            self.restart(node);
        }
        for client in &mut self.clients {
            client.limit(self.config.liveness_ops_per_client);
        }
        self.schedule(self.now + LIVENESS_CHECK_MS, Event::CheckLiveness);
    }

    pub(super) fn check_liveness(&mut self) {
        let Phase::Liveness { since } = self.phase else { return };
        let settled = self.settled().and_then(|()| self.replicas_agree());
        let clients_done = self.clients.iter().all(SimClient::is_finished);
        if self.divergence.is_some() {
            self.liveness = Some(Err("replicas diverged (see above)".into()));
            return;
        }
        if settled.is_ok() && clients_done {
            self.liveness = Some(Ok(self.now - since));
            return;
        }
        if self.now - since >= self.config.liveness_ms_max {
            let mut reasons = Vec::new();
            if let Err(reason) = settled {
                reasons.push(reason);
            }
            reasons.extend(
                self.clients.iter().filter(|client| !client.is_finished()).map(SimClient::describe),
            );
            self.liveness = Some(Err(format!(
                "not done {} ms after the faults stopped: {}",
                self.config.liveness_ms_max,
                reasons.join("; ")
            )));
            return;
        }
        self.schedule(self.now + LIVENESS_CHECK_MS, Event::CheckLiveness);
    }

    /// Whether every group of the latest configuration has the voters it lists (and no
    /// learner) and no replica on a node it does not list, and every replica has applied what its leader has and then holds exactly
    /// the same records (data, sessions, ownership); a difference is recorded in
    /// `divergence`.
    fn replicas_agree(&mut self) -> Result<(), String> {
        let latest = self.latest_config().ok_or("the controller group has no leader")?;
        for (group, members) in &latest.groups {
            let leader =
                leader_of(&self.storage, *group).ok_or(format!("group {group}: no leader"))?;
            let conf = self.storage[&leader]
                .store()
                .and_then(|store| store.peer(*group))
                .expect("the leader hosts the group")
                .status()
                .conf_state;
            let listed: BTreeSet<NodeId> = members.iter().copied().collect();
            if conf.voters != listed || !conf.learners.is_empty() {
                return Err(format!(
                    "group {group}: leader {leader} has voters {:?} and learners {:?}, the \
                     configuration lists {members:?}",
                    conf.voters, conf.learners
                ));
            }
            let unlisted: Vec<NodeId> = self
                .storage
                .iter()
                .filter(|(id, node)| {
                    !listed.contains(id) && node.store().is_some_and(|s| s.peer(*group).is_some())
                })
                .map(|(id, _)| *id)
                .collect();
            if !unlisted.is_empty() {
                return Err(format!(
                    "group {group}: nodes {unlisted:?} still host a replica the configuration \
                     does not place there"
                ));
            }
            let records = |node: NodeId| {
                let store = self.storage[&node].store()?;
                let applied = store.peer(*group)?.applied();
                let snapshot = store.engine().snapshot();
                let chunk = snapshot
                    .scan_group_chunk(*group, &GroupCursor::Start, u64::MAX)
                    .unwrap_or_else(|error| panic!("node {node}: scanning group {group}: {error}"));
                Some((applied, chunk.records))
            };
            let (applied, expected) = records(leader).expect("the leader is up");
            for member in members {
                match records(*member) {
                    Some((member_applied, _)) if member_applied != applied => {
                        return Err(format!(
                            "group {group}: node {member} applied {member_applied}, leader {leader} {applied}"
                        ));
                    }
                    Some((_, found)) if found != expected => {
                        self.divergence = Some(format!(
                            "group {group}: node {member} and leader {leader} both applied {applied} \
                             but hold different records:\n  {member}: {found:?}\n  {leader}: {expected:?}"
                        ));
                        return Err("replicas diverge".into());
                    }
                    Some(_) => {}
                    None => return Err(format!("group {group}: node {member} hosts no replica")),
                }
            }
        }
        Ok(())
    }

    /// The latest configuration, as the controller's leader has applied it.
    fn latest_config(&self) -> Option<mosaic_controller::Configuration> {
        let leader = self.controller_leader()?;
        let peer = self.controllers[&leader].store()?.peer(CONTROLLER_GROUP)?;
        Some(peer.state_machine().state().latest().clone())
    }

    /// Whether every group serves exactly its shards of the latest configuration (read from
    /// the leaders' applied state), every removed group is retired and destroyed and every
    /// node being decommissioned is retired; if not, what is missing.
    fn settled(&self) -> Result<(), String> {
        let leader = self.controller_leader().ok_or("the controller group has no leader")?;
        let machine = self.controllers[&leader]
            .store()
            .and_then(|store| store.peer(CONTROLLER_GROUP))
            .expect("the leader hosts the group")
            .state_machine();
        let state = machine.state();
        let latest = state.latest();
        let mut missing = Vec::new();
        for group in latest.groups.keys() {
            let Some(node) = leader_of(&self.storage, *group) else {
                missing.push(format!("group {group} has no leader"));
                continue;
            };
            let peer = self.storage[&node].store().and_then(|s| s.peer(*group)).expect("leads");
            let ownership = peer.state_machine().ownership().cloned().unwrap_or_default();
            let expected: Vec<_> = latest.shards_of(*group);
            let serving: Vec<_> = ownership
                .shards
                .iter()
                .filter(|(_, state)| **state == ShardState::Serving)
                .map(|(shard, _)| *shard)
                .collect();
            if ownership.num != latest.num
                || serving != expected
                || ownership.shards.len() != expected.len()
            {
                missing.push(format!(
                    "group {group} (leader {node}) is at {:?}, not serving {expected:?} at configuration {}",
                    ownership, latest.num
                ));
            }
        }
        for (group, life) in state.lives() {
            if life.removed.is_none() {
                continue;
            }
            let hosts: Vec<NodeId> = self
                .storage
                .iter()
                .filter(|(_, node)| node.store().is_some_and(|s| s.peer(*group).is_some()))
                .map(|(id, _)| *id)
                .collect();
            if !life.retired || !hosts.is_empty() {
                let ownership = leader_of(&self.storage, *group).and_then(|node| {
                    let peer = self.storage[&node].store()?.peer(*group)?;
                    peer.state_machine().ownership().cloned()
                });
                missing.push(format!(
                    "removed group {group} ({life:?}) is {} and hosted on {hosts:?}, leader at {ownership:?}",
                    if life.retired { "retired" } else { "not retired" }
                ));
            }
        }
        let leaving = state.node_states().iter().filter(|(_, s)| **s != NodeState::Retired);
        for (node, node_state) in leaving {
            missing.push(format!("node {node} is {node_state}, not retired"));
        }
        for node in &self.dead {
            if !state.node_states().contains_key(node) {
                missing.push(format!("node {node} died for good and is active, not retired"));
            }
        }
        if missing.is_empty() { Ok(()) } else { Err(missing.join("; ")) }
    }
}
