//! The world: virtual time, the event queue, and the wiring between nodes, agents, clients,
//! the administrator and the network. The fault schedule is in `world/faults.rs`, when each
//! node ticks and its stalls in `world/timing.rs`, the end of the run and its checks in
//! `world/liveness.rs`.
//!
//! Events run in `(time, sequence)` order from one `BTreeMap`, so equal times keep the order
//! they were scheduled in. After every event the world *pumps*: answers the stores filed
//! are routed (to the agent beside the store, or over the network), and requests an agent
//! makes of its own store are served at once, until nothing is left. Nothing else happens
//! between two events, and nothing reads a clock or an unseeded source.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosaic_controller::{
    ControllerMachine, DEFAULT_MAX_SESSIONS, DEFAULT_NODE_DOWN_AFTER, Liveness, bootstrap_batch,
    controller_store_config,
};
use mosaic_engine::{Engine, GroupId, MemKv, WriteBatch, WriteOptions};
use mosaic_raft::{NodeId, Role, SplitMix64};
use mosaic_raftstore::{Error, ManualClock, StateMachine, StoreConfig, StoreMsg, StoreStats};
use mosaic_shardkv::KvStateMachine;

use crate::cluster::Time;
use crate::cluster::admin::{Admin, AdminEvent};
use crate::cluster::agent::{POLL_INTERVAL_MS, SimAgent};
use crate::cluster::client::{ClientPolicy, SimClient};
use crate::cluster::config::SimConfig;
use crate::cluster::net::{Envelope, Network, Packet, chance};
use crate::cluster::node::{Outgoing, SimNode, add_stats};
use crate::cluster::raft_safety::RaftSafety;
use crate::cluster::repair::{REPAIR_TICK_MS, SimRepairer};
use crate::cluster::report::{FaultStats, RunReport, Watched};
use crate::cluster::rpc::{
    Caller, CompletionSink, ControllerProcess, Endpoint, Io, Reply, Request, RequestId, Response,
    controller_msg, storage_msg,
};
use crate::cluster::versions::VersionLedger;
use crate::cluster::watcher::missed_changes;
use crate::linearizability::{History, check};

mod faults;
mod liveness;
mod timing;

use timing::{NodeTiming, Stall};

pub(crate) use mosaic_types::CONTROLLER_GROUP;

/// Virtual time between two ticks of a node's store (election timeouts are 10 to 20 ticks).
const TICK_MS: Time = 10;
/// Virtual time between two checks of Raft's safety properties on a node (at one of its
/// ticks in every such interval).
const RAFT_SAFETY_CHECK_MS: Time = 50;
/// Virtual time between two polls of a client.
const CLIENT_POLL_MS: Time = 5;
/// Virtual time between two polls of the administrator.
const ADMIN_POLL_MS: Time = 20;
/// Virtual time between two checks of the liveness phase.
const LIVENESS_CHECK_MS: Time = 100;
/// In the safety phase, a client gives up on an operation after this long.
const GIVE_UP_AFTER_MS: Time = 4_000;
/// Mixed into the seed to seed `World::timing_rng`.
const TIMING_SEED_SALT: u64 = 0x7469_636b_2d72_6174;
/// The first storage node's id (controller replicas are 1, 2, ...).
pub(crate) const FIRST_STORAGE_NODE: u64 = 11;
/// Events one run may process, at most (a bound on every loop: a run that would go on
/// forever fails instead).
const EVENTS_MAX: u64 = 50_000_000;

/// What happens at a point of virtual time. The periodic ones schedule their next turn.
#[derive(Debug)]
enum Event {
    /// A packet arrives (or is cut off by a partition or a crashed receiver).
    Deliver(Envelope),
    /// A node's store ticks (unless it is stalled: then its ticks stop until it resumes).
    Tick(NodeId),
    /// A node stalls (safety phase only; `FaultConfig::stalls`).
    Stall,
    /// Stall number `stall` of `node` ends.
    Resume { node: NodeId, stall: u64 },
    /// A storage node's agent polls.
    AgentPoll(NodeId),
    /// A client polls.
    ClientPoll(u32),
    /// The administrator polls.
    AdminPoll,
    /// A controller replica's repair runner steps (`SimConfig::repair`).
    RepairPoll(NodeId),
    /// A storage node dies for good (`SimConfig::repair`).
    DieForGood,
    /// A step of the fault schedule (safety phase only).
    Fault,
    /// A crashed node starts again.
    Restart(NodeId),
    /// The controller's leader crashes (a failover during a migration).
    CrashControllerLeader,
    /// The safety phase ends and the liveness phase begins.
    EndSafetyPhase,
    /// The liveness phase checks whether it is over.
    CheckLiveness,
}

/// Runs the simulation `config` describes from `seed`. Panics only on a broken invariant of
/// the simulated code that an actor notices on the spot (a refusal no correct cluster
/// sends); the checks of the end are in the report.
#[must_use]
pub fn run(seed: u64, config: &SimConfig) -> RunReport {
    config.validate();
    let mut world = World::new(seed, config.clone());
    let liveness = world.run();
    let verdict = check(&world.history);
    let (watched, watch_violation) = world.watches();
    RunReport {
        seed,
        operations_completed: world.clients.iter().map(SimClient::completed).sum(),
        configs_created: world.admin.configs_created,
        shards_moved: world.admin.shards_moved,
        stores: world.store_stats(),
        net: world.net.stats,
        faults: world.fault_stats.clone(),
        replacements: world.admin.replacements,
        decommissions: world.admin.decommissions,
        retirements: world.admin.retirements,
        repairs: world.repairs_done(),
        raft_violation: world.raft_safety.take_violation(),
        divergence: world.divergence.take(),
        version_violation: world.versions.take_violation(),
        watch_violation,
        watched,
        history: world.history,
        verdict,
        liveness,
    }
}

/// Where a run is (module documentation of `cluster`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Faults strike and the administrator changes the groups.
    Safety,
    /// Faults stopped at `since`; the cluster must settle.
    Liveness { since: Time },
}

/// Everything a run simulates. Invariant: `agents` holds an agent exactly for the storage
/// nodes that are up, each of their current incarnation.
struct World {
    config: SimConfig,
    rng: SplitMix64,
    now: Time,
    /// Every node's clock, at `now` (lease reads are timed with it).
    clock: ManualClock,
    events: BTreeMap<(Time, u64), Event>,
    event_seq: u64,
    next_request_id: RequestId,
    net: Network,
    sink: CompletionSink,
    /// Requests an agent made of its own node, served in the next pump.
    local: VecDeque<(NodeId, Caller, Request)>,
    controllers: BTreeMap<NodeId, SimNode<ControllerMachine>>,
    /// What each controller replica's process keeps beside its store (new at each restart).
    controller_processes: BTreeMap<NodeId, ControllerProcess>,
    /// The repair runner of every controller replica that is up, if the run repairs.
    repairers: BTreeMap<NodeId, SimRepairer>,
    /// Nodes decommissioned and retired by the repair runners of earlier incarnations.
    repairs_by_the_dead: (u64, u64),
    storage: BTreeMap<NodeId, SimNode<KvStateMachine>>,
    /// Storage nodes that died for good: never restarted.
    dead: BTreeSet<NodeId>,
    /// The agent of every storage node that is up.
    agents: BTreeMap<NodeId, SimAgent>,
    clients: Vec<SimClient>,
    admin: Admin,
    history: History,
    /// The key versions clients heard.
    versions: VersionLedger,
    phase: Phase,
    liveness: Option<Result<Time, String>>,
    /// Replicas of a group that applied the same index but hold different records.
    divergence: Option<String>,
    /// Raft's safety properties, checked on every node every [`RAFT_SAFETY_CHECK_MS`].
    raft_safety: RaftSafety,
    fault_stats: FaultStats,
    /// Draws tick rates and stalls, apart from `rng` so that a configuration without them
    /// runs exactly as before they existed.
    timing_rng: SplitMix64,
    /// When every node ticks.
    timings: BTreeMap<NodeId, NodeTiming>,
    /// The nodes stalled now, with what waits in their inboxes.
    stalls: BTreeMap<NodeId, Stall>,
    /// The number of the next stall.
    next_stall: u64,
}

impl World {
    fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = SplitMix64::new(seed);
        let controller_ids: Vec<NodeId> = (1..=config.controller_nodes).map(NodeId).collect();
        let storage_ids: Vec<NodeId> =
            (0..config.storage_nodes).map(|index| NodeId(FIRST_STORAGE_NODE + index)).collect();
        let clock = ManualClock::new();
        let mut store_config = || StoreConfig {
            seed: rng.next_u64(),
            tick_interval: Duration::from_millis(TICK_MS),
            compact_log_after_entries: config.compact_log_after_entries,
            compact_log_keep_entries: config.compact_log_keep_entries,
            compact_log_after_bytes: config.compact_log_after_bytes,
            compact_log_keep_bytes: config.compact_log_keep_bytes,
            ..StoreConfig::default()
        };
        let shard_count = config.shard_count;
        let mut controllers = BTreeMap::new();
        for id in &controller_ids {
            let config = controller_store_config(store_config());
            let mut node = SimNode::start(*id, config, clock.clone(), |engine| {
                let mut batch = WriteBatch::new();
                bootstrap_batch(&mut batch, CONTROLLER_GROUP, shard_count, DEFAULT_MAX_SESSIONS);
                engine.write(&batch, WriteOptions { sync: true }).expect("in memory");
            });
            let members = controller_ids.clone();
            node.handle(StoreMsg::CreateGroup {
                group: CONTROLLER_GROUP,
                members,
                callback: Box::new(|result| result.expect("creating the controller group")),
            });
            controllers.insert(*id, node);
        }
        let mut storage = BTreeMap::new();
        for id in &storage_ids {
            let node = SimNode::start(*id, store_config(), clock.clone(), prepare_storage);
            storage.insert(*id, node);
        }
        let agents = storage
            .iter()
            .map(|(id, node): (&NodeId, &SimNode<KvStateMachine>)| {
                let store = node.store().expect("started");
                (*id, SimAgent::new(*id, 0, controller_ids.clone(), store))
            })
            .collect();
        let clients = (0..config.clients)
            .map(|index| SimClient::new(index, &config, controller_ids.clone()))
            .collect();
        let admin = Admin::new(
            controller_ids,
            storage_ids,
            config.group_size,
            config.initial_groups,
            config.added_groups_max,
            config.admin_interval_ms,
            config.membership.clone(),
        );
        let controller_processes =
            controllers.keys().map(|id| (*id, controller_process(&config, &clock))).collect();
        let repairers =
            controllers.keys().filter_map(|id| Some((*id, repairer(&config, *id, 0)?))).collect();
        let mut world = Self {
            net: Network::new(config.faults.clone()),
            config,
            rng,
            now: 0,
            clock,
            events: BTreeMap::new(),
            event_seq: 0,
            next_request_id: 0,
            sink: CompletionSink::default(),
            local: VecDeque::new(),
            controllers,
            controller_processes,
            repairers,
            repairs_by_the_dead: (0, 0),
            storage,
            dead: BTreeSet::new(),
            agents,
            clients,
            admin,
            history: History::new(),
            versions: VersionLedger::default(),
            phase: Phase::Safety,
            liveness: None,
            divergence: None,
            raft_safety: RaftSafety::default(),
            fault_stats: FaultStats::default(),
            timing_rng: SplitMix64::new(seed ^ TIMING_SEED_SALT),
            timings: BTreeMap::new(),
            stalls: BTreeMap::new(),
            next_stall: 0,
        };
        world.draw_tick_intervals();
        world.schedule_start();
        world
    }

    fn schedule(&mut self, at: Time, event: Event) {
        self.event_seq += 1;
        self.events.insert((at, self.event_seq), event);
    }

    fn schedule_start(&mut self) {
        let nodes: Vec<NodeId> =
            self.controllers.keys().chain(self.storage.keys()).copied().collect();
        for node in nodes {
            let offset = self.rng.below(TICK_MS);
            self.start_ticks(node, offset);
        }
        for node in self.storage.keys().copied().collect::<Vec<_>>() {
            let offset = self.rng.below(POLL_INTERVAL_MS);
            self.schedule(offset, Event::AgentPoll(node));
        }
        for index in 0..self.config.clients {
            self.schedule(u64::from(index), Event::ClientPoll(index));
        }
        self.schedule(0, Event::AdminPoll);
        if self.config.repair.is_some() {
            for node in self.controllers.keys().copied().collect::<Vec<_>>() {
                let offset = self.rng.below(REPAIR_TICK_MS);
                self.schedule(offset, Event::RepairPoll(node));
            }
            // In the first half, so that it finds a moment it may die in.
            let at = self.rng.below(self.config.fault_phase_ms / 2);
            self.schedule(at, Event::DieForGood);
        }
        let first_fault = self.config.faults.step_interval_ms;
        self.schedule(first_fault, Event::Fault);
        if let Some(stalls) = &self.config.faults.stalls {
            let first_stall = stalls.interval_ms;
            self.schedule(first_stall, Event::Stall);
        }
        self.schedule(self.config.fault_phase_ms, Event::EndSafetyPhase);
    }

    /// Runs events until the liveness phase ends, or a Raft safety property breaks; returns
    /// the liveness verdict.
    fn run(&mut self) -> Result<Time, String> {
        for _ in 0..EVENTS_MAX {
            let Some(((time, _), event)) = self.events.pop_first() else {
                return Err("no event left to run".into());
            };
            self.now = time;
            self.clock.set(Duration::from_millis(time));
            self.handle(event);
            self.pump();
            if let Some(liveness) = self.liveness.take() {
                return liveness;
            }
            if self.raft_safety.is_violated() {
                // What follows a broken Raft invariant proves nothing (and replicas whose logs
                // contradict each other can keep rejecting each other's appends for ever).
                return Err(format!("stopped at {} ms: a Raft safety property broke", self.now));
            }
        }
        Err(format!("the run did not end within {EVENTS_MAX} events"))
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver(envelope) => self.deliver(envelope),
            Event::Tick(node) => {
                if self.stalls.contains_key(&node) {
                    return; // No tick, and none until it resumes.
                }
                self.store_input(node, StoreInput::Tick);
                if self.now % RAFT_SAFETY_CHECK_MS < TICK_MS {
                    self.check_raft_safety(node);
                }
                self.schedule_next_tick(node);
            }
            Event::Stall => {
                if self.phase == Phase::Safety
                    && let Some(stalls) = self.config.faults.stalls.clone()
                {
                    self.stall_step(&stalls);
                    let interval = stalls.interval_ms;
                    let next = self.now + interval / 2 + self.timing_rng.below(interval);
                    self.schedule(next, Event::Stall);
                }
            }
            Event::Resume { node, stall } => self.resume(node, stall),
            Event::AgentPoll(node) => {
                if let Some(agent) = self.agents.get_mut(&node) {
                    let store = self.storage[&node].store().expect("an agent's node is up");
                    let mut io = Io::new(self.now, &mut self.rng, &mut self.next_request_id);
                    agent.poll(&mut io, store);
                    let sent = io.sent;
                    self.dispatch(Endpoint::Node(node), sent);
                }
                self.schedule(self.now + POLL_INTERVAL_MS, Event::AgentPoll(node));
            }
            Event::ClientPoll(index) => {
                let policy = self.client_policy();
                let client = &mut self.clients[index as usize];
                let mut io = Io::new(self.now, &mut self.rng, &mut self.next_request_id);
                if self.admin.is_set_up() {
                    client.poll(&mut io, &mut self.history, &mut self.versions, policy);
                }
                let sent = io.sent;
                self.dispatch(Endpoint::Client(index), sent);
                self.schedule(self.now + CLIENT_POLL_MS, Event::ClientPoll(index));
            }
            Event::AdminPoll => {
                let changing = self.phase == Phase::Safety;
                let mut io = Io::new(self.now, &mut self.rng, &mut self.next_request_id);
                self.admin.poll(&mut io, changing);
                let sent = io.sent;
                self.dispatch(Endpoint::Admin, sent);
                self.schedule(self.now + ADMIN_POLL_MS, Event::AdminPoll);
            }
            Event::RepairPoll(node) => {
                if let Some(repairer) = self.repairers.get_mut(&node) {
                    let mut io = Io::new(self.now, &mut self.rng, &mut self.next_request_id);
                    repairer.poll(&mut io);
                    let sent = io.sent;
                    self.dispatch(Endpoint::Node(node), sent);
                }
                self.schedule(self.now + REPAIR_TICK_MS, Event::RepairPoll(node));
            }
            Event::DieForGood => self.die_for_good(),
            Event::Fault => {
                if self.phase == Phase::Safety {
                    self.fault_step();
                    let interval = self.config.faults.step_interval_ms;
                    let next = self.now + interval / 2 + self.rng.below(interval);
                    self.schedule(next, Event::Fault);
                }
            }
            Event::Restart(node) => self.restart(node),
            Event::CrashControllerLeader => {
                if self.phase == Phase::Safety
                    && let Some(leader) = self.controller_leader()
                    && self.crash(leader)
                {
                    self.fault_stats.controller_leader_crashes += 1;
                }
            }
            Event::EndSafetyPhase => self.end_safety_phase(),
            Event::CheckLiveness => self.check_liveness(),
        }
    }

    /// What clients may do in the current phase: give up on operations, only while faults
    /// strike.
    fn client_policy(&self) -> ClientPolicy {
        let safety = self.phase == Phase::Safety;
        ClientPolicy {
            give_up_after_ms: safety.then_some(GIVE_UP_AFTER_MS),
            abandon_after_refusal_per_mille: if safety {
                self.config.abandon_after_refusal_per_mille
            } else {
                0
            },
        }
    }

    /// The clients' watches, the revisions and streams they received them over, and the
    /// first broken promise of a watch: seen as it received, or a change clients heard that a
    /// watch up to date past it missed (`watcher.rs`).
    fn watches(&self) -> (Watched, Option<String>) {
        let (mut spans, mut violation) = (Vec::new(), None);
        for client in &self.clients {
            let (watched, broken) = client.watched();
            violation = violation.or(broken);
            spans.extend(watched);
        }
        let watched = Watched {
            watches: spans.len(),
            revisions: spans.iter().map(|span| span.revisions.len()).sum(),
            streams: spans.iter().map(|span| span.streams as usize).sum(),
        };
        let violation = violation.or_else(|| missed_changes(&spans, &self.versions));
        (watched, violation)
    }

    fn store_stats(&self) -> StoreStats {
        let controllers = self.controllers.values().map(SimNode::stats);
        let storage = self.storage.values().map(SimNode::stats);
        controllers.chain(storage).fold(StoreStats::default(), add_stats)
    }

    // ---- Nodes --------------------------------------------------------------------------

    fn is_up(&self, node: NodeId) -> bool {
        self.controllers
            .get(&node)
            .map_or_else(|| self.storage.get(&node).is_some_and(SimNode::is_up), SimNode::is_up)
    }

    fn incarnation(&self, node: NodeId) -> u64 {
        self.controllers.get(&node).map_or_else(
            || self.storage.get(&node).map_or(0, SimNode::incarnation),
            SimNode::incarnation,
        )
    }

    /// Answers request `input` for `node` with `error` without handing it to the store.
    fn refuse(&mut self, node: NodeId, input: StoreInput, error: Error) {
        let msg = match (self.controllers.get(&node), self.storage.get(&node)) {
            (Some(target), _) => {
                let process = &self.controller_processes[&node];
                input
                    .into_msg(&self.sink, target.id(), target.incarnation(), |request, reply| {
                        controller_msg(request, reply, process)
                    })
                    .map(|msg| msg.refuse(error))
            }
            (None, Some(target)) => input
                .into_msg(&self.sink, target.id(), target.incarnation(), storage_msg)
                .map(|msg| msg.refuse(error)),
            (None, None) => None,
        };
        debug_assert!(msg.is_some(), "node {node} serves the request it refuses");
    }

    /// Hands `input` to `node`'s store and routes what it sends; if the node is stalled,
    /// `input` waits in its inbox instead.
    fn store_input(&mut self, node: NodeId, input: StoreInput) {
        if self.stalls.contains_key(&node) {
            self.hold(node, input);
            return;
        }
        if let Some(target) = self.controllers.get_mut(&node) {
            let process = &self.controller_processes[&node];
            if let Some(msg) =
                input.into_msg(&self.sink, target.id(), target.incarnation(), |request, reply| {
                    controller_msg(request, reply, process)
                })
            {
                target.handle(msg);
            }
            let outgoing = target.take_outgoing();
            self.route_outgoing(node, outgoing);
        } else if let Some(target) = self.storage.get_mut(&node) {
            if let Some(msg) =
                input.into_msg(&self.sink, target.id(), target.incarnation(), storage_msg)
            {
                target.handle(msg);
            }
            let outgoing = target.take_outgoing();
            self.route_outgoing(node, outgoing);
        }
    }

    /// Checks Raft's safety properties on every replica of `node` (if it is up). Every
    /// [`RAFT_SAFETY_CHECK_MS`], not after every input: cheap enough to run always, and
    /// what it catches lasts (a leader that won alone, a replica that committed what its
    /// group did not).
    fn check_raft_safety(&mut self, node: NodeId) {
        if let Some(target) = self.controllers.get(&node) {
            observe_replicas(&mut self.raft_safety, target);
        } else if let Some(target) = self.storage.get(&node) {
            observe_replicas(&mut self.raft_safety, target);
        }
    }

    fn route_outgoing(&mut self, from: NodeId, outgoing: Vec<Outgoing>) {
        let incarnation = self.incarnation(from);
        for sent in outgoing {
            let (to, packet) = match sent {
                Outgoing::Raft { to, messages } => (to, Packet::Raft(incarnation, messages)),
                Outgoing::Snapshot { to, group, message, chunks } => (
                    to,
                    Packet::Snapshot { group, message, chunks, sender_incarnation: incarnation },
                ),
            };
            self.send(Endpoint::Node(from), Endpoint::Node(to), packet);
        }
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, packet: Packet) {
        for (delay, envelope) in self.net.route(&mut self.rng, Envelope { from, to, packet }) {
            self.schedule(self.now + delay, Event::Deliver(envelope));
        }
    }

    /// Sends what an actor at `from` asked for: to its own node at once, otherwise over the
    /// network.
    fn dispatch(&mut self, from: Endpoint, sent: Vec<(NodeId, RequestId, Request)>) {
        for (node, id, request) in sent {
            if from == Endpoint::Node(node) {
                if matches!(request, Request::JoinGroup { .. }) {
                    self.fault_stats.rejoin_joins += 1;
                }
                self.local.push_back((node, Caller { endpoint: from, id }, request));
            } else {
                self.send(from, Endpoint::Node(node), Packet::Request { id, request });
            }
        }
    }

    fn deliver(&mut self, envelope: Envelope) {
        let Envelope { from, to, packet } = envelope;
        let reachable = self.net.connected(from, to)
            && match to {
                Endpoint::Node(node) => self.is_up(node),
                Endpoint::Client(_) | Endpoint::Admin => true,
            };
        if let Packet::Snapshot { group, sender_incarnation, .. } = &packet
            && let (Endpoint::Node(sender), Endpoint::Node(receiver)) = (from, to)
            && self.is_up(sender)
            && self.incarnation(sender) == *sender_incarnation
        {
            let status =
                StoreInput::SnapshotStatus { group: *group, to: receiver, delivered: reachable };
            self.store_input(sender, status);
        }
        if !reachable {
            self.net.stats.cut += 1;
            return;
        }
        match (to, packet) {
            (Endpoint::Node(node), Packet::Raft(incarnation, messages)) => {
                let Endpoint::Node(sender) = from else { unreachable!("raft comes from nodes") };
                self.store_input(node, StoreInput::Raft { from: sender, incarnation, messages });
            }
            (Endpoint::Node(node), Packet::Snapshot { group, message, chunks, .. }) => {
                let Endpoint::Node(sender) = from else {
                    unreachable!("snapshots come from nodes")
                };
                self.store_input(
                    node,
                    StoreInput::Snapshot { from: sender, group, message, chunks },
                );
            }
            (Endpoint::Node(node), Packet::Request { id, request }) => {
                let caller = Caller { endpoint: from, id };
                let arrived = self.now;
                self.store_input(node, StoreInput::Request { caller, request, arrived });
            }
            (endpoint, Packet::Response { id, response }) => self.respond(endpoint, id, response),
            (endpoint, packet) => unreachable!("{packet:?} delivered to {endpoint:?}"),
        }
    }

    /// Hands an answer to the actor at `endpoint`.
    fn respond(&mut self, endpoint: Endpoint, id: RequestId, response: Response) {
        let policy = self.client_policy();
        let mut io = Io::new(self.now, &mut self.rng, &mut self.next_request_id);
        let mut crash_controller_leader_in = None;
        match endpoint {
            Endpoint::Node(node) => {
                if let Some(agent) = self.agents.get_mut(&node) {
                    let store = self.storage[&node].store().expect("an agent's node is up");
                    agent.on_response(&mut io, id, response, store);
                } else if let Some(repairer) = self.repairers.get_mut(&node) {
                    repairer.on_response(&mut io, id, response);
                }
            }
            Endpoint::Client(index) => {
                let client = &mut self.clients[index as usize];
                client.on_response(
                    &mut io,
                    &mut self.history,
                    &mut self.versions,
                    policy,
                    id,
                    response,
                );
            }
            Endpoint::Admin => {
                let moving = self.admin.on_response(&mut io, id, response)
                    == Some(AdminEvent::ShardsMoving)
                    && self.phase == Phase::Safety;
                // A controller failover during the migration the change starts.
                if moving && chance(io.rng, self.config.faults.leader_crash_after_change_per_mille)
                {
                    crash_controller_leader_in = Some(1 + io.rng.below(200));
                }
            }
        }
        let sent = io.sent;
        self.dispatch(endpoint, sent);
        if let Some(delay) = crash_controller_leader_in {
            self.schedule(self.now + delay, Event::CrashControllerLeader);
        }
    }

    /// Serves local requests and routes answers until nothing is left.
    fn pump(&mut self) {
        loop {
            if let Some((node, caller, request)) = self.local.pop_front() {
                let arrived = self.now;
                self.store_input(node, StoreInput::Request { caller, request, arrived });
                continue;
            }
            let completions = std::mem::take(&mut *self.sink.lock().expect("one thread"));
            if completions.is_empty() {
                return;
            }
            for completion in completions {
                let node = completion.node;
                if !self.is_up(node) || self.incarnation(node) != completion.incarnation {
                    continue; // The process that took the request is gone.
                }
                let Caller { endpoint, id } = completion.caller;
                if endpoint == Endpoint::Node(node) {
                    self.respond(endpoint, id, completion.response);
                } else {
                    let packet = Packet::Response { id, response: completion.response };
                    self.send(Endpoint::Node(node), endpoint, packet);
                }
            }
        }
    }

    /// Nodes the repair runners decommissioned and retired, over every incarnation.
    fn repairs_done(&self) -> (u64, u64) {
        self.repairers.values().fold(self.repairs_by_the_dead, |(d, r), repairer| {
            (d + repairer.decommissions, r + repairer.retirements)
        })
    }

    /// The controller replica that leads in the highest term, if any is up and leads.
    fn controller_leader(&self) -> Option<NodeId> {
        leader_of(&self.controllers, CONTROLLER_GROUP)
    }
}

/// The node of `nodes` that leads `group` in the highest term, if any is up and leads.
fn leader_of<SM: StateMachine<MemKv>>(
    nodes: &BTreeMap<NodeId, SimNode<SM>>,
    group: GroupId,
) -> Option<NodeId> {
    nodes
        .iter()
        .filter_map(|(id, node)| {
            let status = node.store()?.peer(group)?.status();
            (status.soft_state.role == Role::Leader).then_some((status.hard_state.term, *id))
        })
        .max()
        .map(|(_, id)| id)
}

/// A new process's [`ControllerProcess`]: a view of liveness that holds a node down once
/// unheard for the run's `node_down_after_ms` (the server's default without repair).
fn controller_process(config: &SimConfig, clock: &ManualClock) -> ControllerProcess {
    let down_after = config
        .repair
        .as_ref()
        .map_or(DEFAULT_NODE_DOWN_AFTER, |repair| Duration::from_millis(repair.node_down_after_ms));
    ControllerProcess {
        liveness: Arc::new(Mutex::new(Liveness::new(down_after))),
        clock: clock.clone(),
    }
}

/// The repair runner of controller replica `node`'s incarnation `incarnation`, if the run
/// repairs.
fn repairer(config: &SimConfig, node: NodeId, incarnation: u64) -> Option<SimRepairer> {
    let after = Duration::from_millis(config.repair.as_ref()?.repair_after_ms);
    Some(SimRepairer::new(node, incarnation, after))
}

/// What a storage node's new engine holds before its store first opens: the mark that the
/// controller places its groups (a new store records its birth before it registers).
fn prepare_storage(engine: &Engine<MemKv>) {
    let mut batch = WriteBatch::new();
    KvStateMachine::mark_placed_by_controller(&mut batch);
    engine.write(&batch, WriteOptions { sync: true }).expect("in memory");
}

/// Checks Raft's safety properties on every replica of `node` (if it is up).
fn observe_replicas<SM: StateMachine<MemKv>>(safety: &mut RaftSafety, node: &SimNode<SM>) {
    let Some(store) = node.store() else { return };
    for group in store.groups() {
        let Some(peer) = store.peer(group) else { continue };
        let status = peer.status();
        safety.observe(node.id(), group, &status, |index| store.engine().term(group, index).ok());
    }
}

/// An input for a store, before it is made a `StoreMsg` of the store's state machine.
enum StoreInput {
    Tick,
    Raft {
        from: NodeId,
        incarnation: u64,
        messages: Vec<(GroupId, mosaic_raft::Message)>,
    },
    Snapshot {
        from: NodeId,
        group: GroupId,
        message: mosaic_raft::Message,
        chunks: Vec<bytes::Bytes>,
    },
    SnapshotStatus {
        group: GroupId,
        to: NodeId,
        delivered: bool,
    },
    Request {
        caller: Caller,
        request: Request,
        /// When it reached the node.
        arrived: Time,
    },
}

impl StoreInput {
    /// The store message; `None` for a request this kind of node does not serve.
    fn into_msg<SM: StateMachine<MemKv>>(
        self,
        sink: &CompletionSink,
        node: NodeId,
        incarnation: u64,
        serve: impl FnOnce(Request, Reply) -> Option<StoreMsg<MemKv, SM>>,
    ) -> Option<StoreMsg<MemKv, SM>> {
        Some(match self {
            Self::Tick => StoreMsg::Tick,
            Self::Raft { from, incarnation, messages } => {
                StoreMsg::Raft { from, incarnation, messages }
            }
            Self::Snapshot { from, group, message, chunks } => {
                StoreMsg::Snapshot { from, group, message, chunks }
            }
            Self::SnapshotStatus { group, to, delivered } => {
                StoreMsg::SnapshotStatus { group, to, delivered }
            }
            Self::Request { caller, request, arrived } => {
                let reply = Reply { sink: Arc::clone(sink), node, incarnation, caller, arrived };
                return serve(request, reply);
            }
        })
    }
}
