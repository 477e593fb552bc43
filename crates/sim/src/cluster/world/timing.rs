//! When each node's store ticks, and its stalls (`FaultConfig::tick_interval_per_mille_min`,
//! `FaultConfig::stalls`).
//!
//! Every store reads the world's clock, the true time; what differs between nodes is how
//! often they tick. A node ticks every `TICK_MS * x / 1000` of virtual time, its rate `x`
//! drawn when the run starts, counted in microseconds so that rates near 1000 mean
//! something at a 10 ms tick; a tick is due at the first whole millisecond at or after its
//! ideal time, so ticks `TICK_MS * x / 1000` apart are never less than `TICK_MS` apart when
//! `x >= 1000` (what lease reads assume).
//!
//! A stalled node gets nothing: its tick chain stops at its first tick during the stall, and
//! its inputs wait in a bounded inbox. When it resumes it gets those inputs in order, then
//! one tick, and ticks again a whole interval later, as the server's store runner does after
//! a stall. Invariant: a node has a scheduled `Event::Tick` exactly when it is not stalled
//! (one that fires during a stall ends the chain; `resume` and a crash start it again).

use std::collections::VecDeque;

use mosaic_raft::{NodeId, Role};
use mosaic_raftstore::Error;

use super::{Event, StoreInput, TICK_MS, World};
use crate::cluster::Time;
use crate::cluster::config::StallConfig;
use crate::cluster::net::chance;
use crate::cluster::rpc::Endpoint;

/// Microseconds per millisecond of virtual time.
const MICROS_PER_MS: u64 = 1_000;

/// When one node ticks.
#[derive(Clone, Copy, Debug)]
pub(super) struct NodeTiming {
    /// Virtual time between two of its ticks, in microseconds.
    tick_interval_us: u64,
    /// When its next tick is due, ideally, in microseconds of virtual time.
    next_tick_us: u64,
}

/// A stalled node.
pub(super) struct Stall {
    /// The stall's number (its `Event::Resume` names it).
    id: u64,
    /// What arrived meanwhile, in order.
    inbox: VecDeque<StoreInput>,
    /// `StallConfig::inbox_inputs_max`.
    inbox_inputs_max: usize,
}

impl World {
    /// Draws every node's tick rate.
    pub(super) fn draw_tick_intervals(&mut self) {
        let faults = &self.config.faults;
        let (min, max) = (faults.tick_interval_per_mille_min, faults.tick_interval_per_mille_max);
        let nodes: Vec<NodeId> =
            self.controllers.keys().chain(self.storage.keys()).copied().collect();
        for node in nodes {
            let per_mille = min + self.timing_rng.below(max - min + 1);
            if per_mille < 1_000 {
                self.fault_stats.nodes_ticking_fast += 1;
            }
            let tick_interval_us = TICK_MS * MICROS_PER_MS * per_mille / 1_000;
            tracing::debug!(node_id = %node, tick_interval_us, "tick rate");
            self.timings.insert(node, NodeTiming { tick_interval_us, next_tick_us: 0 });
        }
    }

    /// Schedules `node`'s first tick at `at`.
    pub(super) fn start_ticks(&mut self, node: NodeId, at: Time) {
        let timing = self.timings.get_mut(&node).expect("every node has a tick rate");
        timing.next_tick_us = at * MICROS_PER_MS;
        self.schedule(at, Event::Tick(node));
    }

    /// Schedules `node`'s next tick, one interval after the one just due.
    pub(super) fn schedule_next_tick(&mut self, node: NodeId) {
        let timing = self.timings.get_mut(&node).expect("every node has a tick rate");
        timing.next_tick_us += timing.tick_interval_us;
        let at = timing.next_tick_us.div_ceil(MICROS_PER_MS).max(self.now + 1);
        self.schedule(at, Event::Tick(node));
    }

    /// Stalls a node, if fewer than `stalls.stalled_nodes_max` are: often one that leads a
    /// group, sometimes also cut off from everyone.
    pub(super) fn stall_step(&mut self, stalls: &StallConfig) {
        if self.stalls.len() >= stalls.stalled_nodes_max {
            return;
        }
        let leaders: Vec<NodeId> = self.leaders();
        let up: Vec<NodeId> = self
            .controllers
            .keys()
            .chain(self.storage.keys())
            .copied()
            .filter(|node| self.is_up(*node) && !self.stalls.contains_key(node))
            .collect();
        let leading: Vec<NodeId> =
            leaders.iter().copied().filter(|node| up.contains(node)).collect();
        let candidates =
            if !leading.is_empty() && chance(&mut self.timing_rng, stalls.leader_per_mille) {
                leading
            } else {
                up
            };
        if candidates.is_empty() {
            return;
        }
        let node = candidates[self.timing_rng.below(candidates.len() as u64) as usize];
        let duration_ms = stalls.duration_ms_min
            + self.timing_rng.below(stalls.duration_ms_max - stalls.duration_ms_min + 1);
        let id = self.next_stall;
        self.next_stall += 1;
        let cut_off = chance(&mut self.timing_rng, stalls.cut_off_per_mille);
        tracing::debug!(node_id = %node, duration_ms, cut_off, "stall");
        self.fault_stats.stalls += 1;
        if leaders.contains(&node) {
            self.fault_stats.stalled_leaders += 1;
        }
        if cut_off {
            // Clients on its side still reach it: their requests wait in its inbox.
            let clients: Vec<Endpoint> = (0..self.config.clients)
                .filter(|_| self.timing_rng.below(2) == 0)
                .map(Endpoint::Client)
                .collect();
            self.net.partition(std::iter::once(Endpoint::Node(node)).chain(clients));
            self.fault_stats.stalls_cut_off += 1;
        }
        let inbox_inputs_max = stalls.inbox_inputs_max;
        self.stalls.insert(node, Stall { id, inbox: VecDeque::new(), inbox_inputs_max });
        self.schedule(self.now + duration_ms, Event::Resume { node, stall: id });
    }

    /// Puts `input` in stalled `node`'s inbox; if the inbox is full, refuses a request with
    /// `ServerBusy` at once and drops anything else (never a snapshot's outcome, which the
    /// runner waits to deliver), as the server's store runner does.
    pub(super) fn hold(&mut self, node: NodeId, input: StoreInput) {
        let stall = self.stalls.get_mut(&node).expect("the node is stalled");
        let must_deliver = matches!(input, StoreInput::SnapshotStatus { .. });
        if stall.inbox.len() < stall.inbox_inputs_max || must_deliver {
            stall.inbox.push_back(input);
        } else if matches!(input, StoreInput::Request { .. }) {
            self.fault_stats.stalled_requests_busy += 1;
            self.refuse(
                node,
                input,
                Error::ServerBusy { reason: "the store inbox is full".into() },
            );
        } else {
            self.fault_stats.stalled_inputs_dropped += 1;
        }
    }

    /// Ends stall `id` of `node` (if it still goes on): hands over what waited, then one
    /// tick, and starts ticking again.
    pub(super) fn resume(&mut self, node: NodeId, id: u64) {
        if self.stalls.get(&node).is_none_or(|stall| stall.id != id) {
            return; // Ended by a crash or by the liveness phase.
        }
        let stall = self.stalls.remove(&node).expect("stalled");
        tracing::debug!(node_id = %node, waiting = stall.inbox.len(), "resume");
        self.fault_stats.stalled_inputs_delivered += stall.inbox.len() as u64;
        for input in stall.inbox {
            self.store_input(node, input);
        }
        self.store_input(node, StoreInput::Tick);
        self.schedule_next_tick_after_resume(node);
    }

    /// Ends every stall (the liveness phase begins).
    pub(super) fn end_stalls(&mut self) {
        let stalled: Vec<(NodeId, u64)> =
            self.stalls.iter().map(|(node, stall)| (*node, stall.id)).collect();
        for (node, id) in stalled {
            self.resume(node, id);
        }
    }

    /// A stalled `node` crashed: its inbox is lost, and its tick chain starts again (ticks do
    /// nothing while it is down).
    pub(super) fn end_stall_by_crash(&mut self, node: NodeId) {
        if let Some(stall) = self.stalls.remove(&node) {
            self.fault_stats.stalled_inputs_dropped += stall.inbox.len() as u64;
            self.schedule_next_tick_after_resume(node);
        }
    }

    fn schedule_next_tick_after_resume(&mut self, node: NodeId) {
        let timing = self.timings.get_mut(&node).expect("every node has a tick rate");
        timing.next_tick_us = self.now * MICROS_PER_MS;
        self.schedule_next_tick(node);
    }

    /// The nodes that lead some group (storage or controller) as far as they know.
    fn leaders(&self) -> Vec<NodeId> {
        let mut leaders: Vec<NodeId> = self
            .storage
            .iter()
            .filter(|(_, node)| {
                node.store().is_some_and(|store| {
                    store.groups().any(|group| {
                        store
                            .peer(group)
                            .is_some_and(|peer| peer.status().soft_state.role == Role::Leader)
                    })
                })
            })
            .map(|(id, _)| *id)
            .collect();
        leaders.extend(self.controller_leader());
        leaders
    }
}
