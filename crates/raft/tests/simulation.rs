//! The randomized simulator of the Raft core, in the style of FoundationDB's and TigerBeetle's
//! deterministic simulation: every seed builds a group of 3 to 7 replicas and a fault mix,
//! runs a safety phase under faults and then a liveness phase without them. A seed replays
//! exactly: all randomness comes from it, and the harness never iterates a `HashMap`.
//!
//! Safety phase: clients propose unique commands to whichever replica leads, and issue
//! ReadIndex and lease reads; the network loses, duplicates, reorders and delays messages,
//! splits into random partitions, isolates the leader and heals; replicas crash (dropping
//! everything not yet persisted, sometimes in the middle of a `Ready`, after the leader's
//! appends went out) and restart; logs are compacted; leadership is transferred.
//! The harness checks election safety, leader completeness and state-machine safety after
//! every step; the simulator checks log matching every [`LOG_MATCHING_EVERY_TICKS`] and that
//! every read is linearizable: its index is at least the highest index applied anywhere
//! before it was issued (Raft dissertation §6.4).
//!
//! Liveness phase: the network heals, faults stop and every crashed replica restarts. A
//! leader followed by every replica for [`LEADER_HOLD_TICKS`] must emerge within
//! [`STABLE_LEADER_TICKS_MAX`], and every proposal made afterwards must be applied on every
//! replica within [`COMMIT_TICKS_MAX`].
//! At the end all state machines are equal and no command was applied twice.
//!
//! The default seed set runs in CI; the environment picks others:
//! `MOSAIC_RAFT_SIM_SEEDS=N` runs seeds `F..F+N` instead (`F` is `MOSAIC_RAFT_SIM_FIRST_SEED`,
//! default 0) and `MOSAIC_RAFT_SIM_SEED=S` replays seed `S` alone. A seed's replica count is
//! `3 + seed % 5`; each `#[test]` runs the seeds of one replica count, so they run in parallel.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe};

use bytes::Bytes;
use harness::{Cluster, Faults, TestRng};
use mosaic_raft::{Config, LogIndex, NodeId, Role, Term};

/// Seeds in the default (CI) set, across all replica counts.
const DEFAULT_SEED_COUNT: u64 = 24_000;
const NODE_COUNT_MIN: u64 = 3;
const NODE_COUNT_MAX: u64 = 7;
/// The safety phase lasts between these many ticks.
const SAFETY_TICKS_MIN: u64 = 200;
const SAFETY_TICKS_MAX: u64 = 400;
const LOG_MATCHING_EVERY_TICKS: u64 = 20;
/// After the faults stop, a leader every replica follows must emerge within this many ticks
/// (an election timeout is 10 to 20 ticks; a replica with a higher term may force one more
/// election, and split votes cost a timeout each). The worst seen in 24,000 seeds is 168.
const STABLE_LEADER_TICKS_MAX: u64 = 300;
/// The liveness phase proposes once a leader has been followed by every replica for this many
/// ticks: two election timeouts, so that a CheckQuorum round ran without faults (a leader
/// isolated until the heal may otherwise still step down, rightly dropping what it accepted).
const LEADER_HOLD_TICKS: u64 = 20;
/// Proposals made in the liveness phase, one after the other.
const LIVENESS_PROPOSALS: u64 = 5;
/// Each liveness proposal must be applied on every replica within this many ticks (two
/// election timeouts; messages take no time without faults, so the worst seen is 1).
const COMMIT_TICKS_MAX: u64 = 20;
/// Below this many seeds in one test, the fault-coverage assertions are skipped.
const COVERAGE_SEEDS_MIN: usize = 200;

// ---- The seed set -------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

fn node_count(seed: u64) -> u64 {
    NODE_COUNT_MIN + seed % (NODE_COUNT_MAX - NODE_COUNT_MIN + 1)
}

/// The seeds this run covers for groups of `nodes` replicas.
fn seeds_for(nodes: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("MOSAIC_RAFT_SIM_SEED") {
        return if node_count(seed) == nodes { vec![seed] } else { Vec::new() };
    }
    let first = env_u64("MOSAIC_RAFT_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("MOSAIC_RAFT_SIM_SEEDS").unwrap_or(DEFAULT_SEED_COUNT);
    (first..first + count).filter(|seed| node_count(*seed) == nodes).collect()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else {
        "(non-string panic)".to_owned()
    }
}

/// Runs every seed of groups of `nodes` replicas; fails naming each failing seed and how to
/// replay it.
fn simulate_seeds(nodes: u64) {
    let seeds = seeds_for(nodes);
    let mut failures = Vec::new();
    let mut total = Stats::default();
    for seed in &seeds {
        match panic::catch_unwind(AssertUnwindSafe(|| simulate(*seed))) {
            Ok(outcome) => total.add(&outcome.stats),
            Err(payload) => failures.push((*seed, panic_message(payload.as_ref()))),
        }
    }
    let report: Vec<String> = failures
        .iter()
        .map(|(seed, message)| {
            format!(
                "seed {seed} failed: {message}\n  replay: MOSAIC_RAFT_SIM_SEED={seed} cargo test \
                 -p mosaic-raft --test simulation"
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds with {nodes} replicas failed:\n{}",
        failures.len(),
        seeds.len(),
        report.join("\n")
    );
    // Shown with `--nocapture`: what the seeds exercised, and the worst liveness latencies.
    eprintln!("{} seeds of {nodes} replicas passed: {total:?}", seeds.len());
    if seeds.len() >= COVERAGE_SEEDS_MIN {
        total.assert_covers_the_faults(nodes);
    }
}

// ---- One seed -----------------------------------------------------------------------------

/// Replica settings a seed may run with (`Cluster::with_config` takes a plain function).
const CONFIGS: [fn(&mut Config); 5] = [
    configure_default,
    configure_without_pre_vote,
    configure_without_check_quorum,
    configure_small_windows,
    configure_small_uncommitted_bound,
];

fn configure_default(_: &mut Config) {}

fn configure_without_pre_vote(config: &mut Config) {
    config.pre_vote = false;
}

fn configure_without_check_quorum(config: &mut Config) {
    config.check_quorum = false;
}

/// Small messages and windows: flow control, probing and pipelining get exercised, and lost
/// appends fill the window. (Not smaller: a replica thousands of entries behind must catch up
/// within the harness's bound of delivery rounds per tick.)
fn configure_small_windows(config: &mut Config) {
    config.entries_bytes_per_message_max = 512;
    config.inflight_messages_max = 3;
    config.inflight_bytes_max = 1024;
    config.committed_bytes_per_ready_max = 256;
}

fn configure_small_uncommitted_bound(config: &mut Config) {
    config.uncommitted_bytes_max = 512;
}

/// What can go wrong in one seed's safety phase, and how often (chances are per thousand
/// ticks).
#[derive(Clone, Debug)]
struct FaultMix {
    config: usize,
    network: Faults,
    partition_per_mille: u32,
    crash_per_mille: u32,
    restart_delay_ticks_max: u64,
    compact_per_mille: u32,
    snapshot_every: Option<u64>,
    transfer_per_mille: u32,
    propose_per_mille: u32,
    read_per_mille: u32,
    /// Chance per tick that the leader is asked to quiesce (it does if its group is at rest).
    quiesce_per_mille: u32,
    /// Chance per tick to switch between faulty and calm stretches (no network faults).
    calm_toggle_per_mille: u32,
}

fn pick<T: Copy>(rng: &mut TestRng, choices: &[T]) -> T {
    choices[rng.below(choices.len() as u64) as usize]
}

impl FaultMix {
    fn random(rng: &mut TestRng) -> Self {
        Self {
            config: rng.below(CONFIGS.len() as u64) as usize,
            network: Faults {
                drop_per_mille: pick(rng, &[0, 10, 50, 100, 200]),
                duplicate_per_mille: pick(rng, &[0, 20, 100]),
                // 12 ticks outlasts an election timeout: messages arrive terms late.
                delay_ticks_max: pick(rng, &[0, 1, 3, 5, 12]),
                reorder: rng.chance(500),
            },
            partition_per_mille: pick(rng, &[0, 10, 30, 60, 120]),
            crash_per_mille: pick(rng, &[0, 5, 15, 40, 100]),
            restart_delay_ticks_max: pick(rng, &[0, 10, 40]),
            compact_per_mille: pick(rng, &[0, 20, 100]),
            snapshot_every: pick(rng, &[None, None, Some(5), Some(30)]),
            transfer_per_mille: pick(rng, &[0, 5, 20]),
            propose_per_mille: pick(rng, &[200, 500, 900]),
            read_per_mille: pick(rng, &[0, 50, 200]),
            quiesce_per_mille: pick(rng, &[0, 100, 500]),
            calm_toggle_per_mille: pick(rng, &[0, 10, 30]),
        }
    }
}

/// Counts of what a seed did, to check that the default set really exercises the faults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stats {
    proposals: u64,
    reads_answered: u64,
    lease_reads: u64,
    crashes: u64,
    crashes_mid_ready: u64,
    partitions: u64,
    compactions: u64,
    transfers: u64,
    /// Leaders that quiesced their group.
    quiescences: u64,
    terms_with_leader: u64,
    applied_in_safety_phase: u64,
    /// Ticks from the heal until the leader the liveness phase proposes to was in place.
    stable_leader_ticks_max: u64,
    /// Ticks from a liveness proposal until every replica applied it.
    commit_ticks_max: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.proposals += other.proposals;
        self.reads_answered += other.reads_answered;
        self.lease_reads += other.lease_reads;
        self.crashes += other.crashes;
        self.crashes_mid_ready += other.crashes_mid_ready;
        self.partitions += other.partitions;
        self.compactions += other.compactions;
        self.transfers += other.transfers;
        self.quiescences += other.quiescences;
        self.terms_with_leader += other.terms_with_leader;
        self.applied_in_safety_phase += other.applied_in_safety_phase;
        self.stable_leader_ticks_max =
            self.stable_leader_ticks_max.max(other.stable_leader_ticks_max);
        self.commit_ticks_max = self.commit_ticks_max.max(other.commit_ticks_max);
    }

    fn assert_covers_the_faults(&self, nodes: u64) {
        let counts = [
            ("proposals", self.proposals),
            ("answered reads", self.reads_answered),
            ("lease reads", self.lease_reads),
            ("crashes", self.crashes),
            ("crashes mid-ready", self.crashes_mid_ready),
            ("partitions", self.partitions),
            ("compactions", self.compactions),
            ("transfers", self.transfers),
            ("quiescences", self.quiescences),
            ("entries applied under faults", self.applied_in_safety_phase),
        ];
        for (what, count) in counts {
            assert!(count > 0, "the {nodes}-replica seeds never exercised {what}: {self:?}");
        }
    }
}

/// What a seed ended with: two runs of one seed must produce the same.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages_sent: u64,
    ticks: u64,
    term: Term,
    committed: LogIndex,
    /// FNV-1a over the final state machine.
    state_hash: u64,
    stats: Stats,
}

struct Simulation {
    seed: u64,
    cluster: Cluster,
    /// The simulator's own choices, separate from the network's generator.
    rng: TestRng,
    mix: FaultMix,
    /// Crashed replicas and the tick at which each restarts.
    down: BTreeMap<NodeId, u64>,
    /// Replicas cut off with `disconnect`.
    disconnected: BTreeSet<NodeId>,
    /// Every read issued, by context: the highest index applied anywhere when it was issued.
    reads: BTreeMap<Bytes, LogIndex>,
    /// Ticks without network faults or new partitions.
    calm: bool,
    proposals_made: u64,
    terms_with_leader: BTreeSet<Term>,
    stats: Stats,
}

fn simulate(seed: u64) -> Outcome {
    let mut rng = TestRng::new(seed ^ 0x5EED_0F5E_ED5E_ED00);
    let mix = FaultMix::random(&mut rng);
    let nodes = node_count(seed);
    let mut cluster = Cluster::with_config(nodes, seed, CONFIGS[mix.config]);
    cluster.snapshot_every = mix.snapshot_every;
    cluster.faults = mix.network;
    let mut sim = Simulation {
        seed,
        cluster,
        rng,
        mix,
        down: BTreeMap::new(),
        disconnected: BTreeSet::new(),
        reads: BTreeMap::new(),
        calm: false,
        proposals_made: 0,
        terms_with_leader: BTreeSet::new(),
        stats: Stats::default(),
    };
    sim.safety_phase();
    sim.liveness_phase()
}

impl Simulation {
    fn ids(&self) -> Vec<NodeId> {
        self.cluster.ids.clone()
    }

    fn running(&self) -> Vec<NodeId> {
        self.cluster.replicas.keys().copied().collect()
    }

    fn random_running(&mut self) -> Option<NodeId> {
        let running = self.running();
        (!running.is_empty()).then(|| pick(&mut self.rng, &running))
    }

    /// A replica that believes it leads (there may be stale ones in older terms).
    fn random_leader(&mut self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .cluster
            .replicas
            .iter()
            .filter(|(_, r)| r.node.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        (!leaders.is_empty()).then(|| pick(&mut self.rng, &leaders))
    }

    fn next_payload(&mut self) -> Bytes {
        self.proposals_made += 1;
        Bytes::from(format!("s{}-p{}", self.seed, self.proposals_made))
    }

    fn safety_phase(&mut self) {
        let ticks = SAFETY_TICKS_MIN + self.rng.below(SAFETY_TICKS_MAX - SAFETY_TICKS_MIN + 1);
        for step in 1..=ticks {
            self.random_events();
            self.cluster.tick();
            self.check_reads();
            self.restart_due();
            self.observe_leaders();
            if step % LOG_MATCHING_EVERY_TICKS == 0 {
                self.cluster.check_log_matching();
            }
        }
        self.stats.applied_in_safety_phase = self.cluster.max_applied().0;
    }

    fn random_events(&mut self) {
        let mix = self.mix.clone();
        if self.rng.chance(mix.calm_toggle_per_mille) {
            self.calm = !self.calm;
            self.cluster.faults = if self.calm { Faults::default() } else { mix.network };
        }
        if self.rng.chance(mix.propose_per_mille) {
            self.propose();
        }
        if self.rng.chance(mix.read_per_mille) {
            self.read();
        }
        if !self.calm && self.rng.chance(mix.partition_per_mille) {
            self.change_partitions();
        }
        if self.rng.chance(mix.crash_per_mille) {
            self.crash();
        }
        if self.rng.chance(mix.compact_per_mille) {
            self.compact();
        }
        if self.rng.chance(mix.transfer_per_mille) {
            self.transfer();
        }
        if self.rng.chance(mix.quiesce_per_mille) {
            self.quiesce();
        }
    }

    fn propose(&mut self) {
        // Mostly to a leader; sometimes to anyone (refused on a follower).
        let target = if self.rng.chance(900) { self.random_leader() } else { None };
        let Some(id) = target.or_else(|| self.random_running()) else { return };
        let count = 1 + self.rng.below(3);
        for _ in 0..count {
            let data = self.next_payload();
            if self.cluster.propose(id, &data).is_some() {
                self.stats.proposals += 1;
            }
        }
    }

    /// Issues a ReadIndex read on a random replica, remembering what it must at least see, and
    /// checks a lease read on a leader.
    fn read(&mut self) {
        let Some(id) = self.random_running() else { return };
        let context = Bytes::from(format!("s{}-r{}", self.seed, self.reads.len()));
        self.reads.insert(context.clone(), self.cluster.max_applied());
        // Refusals (no leader known, queue full) are fine: nothing comes back for them.
        let _ = self.cluster.with_node(id, |node| node.read_index(context));

        // The lease holds across crashes too: a restarted replica, which forgot that it heard
        // from the leader, ignores votes for an election timeout after it starts.
        if let Some(leader) = self.random_leader() {
            let floor = self.cluster.max_applied();
            if let Ok(index) = self.cluster.lease_read(leader) {
                self.stats.lease_reads += 1;
                assert!(
                    index >= floor,
                    "lease read on {leader} at {index} misses index {floor} applied before it \
                     (seed {})",
                    self.seed
                );
            }
        }
    }

    /// Linearizable reads: every answer covers what was applied before the read was issued.
    fn check_reads(&mut self) {
        for (id, replica) in &mut self.cluster.replicas {
            for read in replica.read_states.drain(..) {
                let floor = self.reads.get(&read.context).unwrap_or_else(|| {
                    panic!(
                        "node {id} answered unknown read {:?} (seed {})",
                        read.context, self.seed
                    )
                });
                assert!(
                    read.index >= *floor,
                    "stale read: node {id} got read index {} for {:?}, but index {floor} was \
                     applied before the read was issued (seed {})",
                    read.index,
                    read.context,
                    self.seed
                );
                self.stats.reads_answered += 1;
            }
            replica.dropped_reads.clear();
        }
    }

    fn change_partitions(&mut self) {
        self.stats.partitions += 1;
        let mut ids: Vec<u64> = self.ids().iter().map(|id| id.0).collect();
        match self.rng.below(5) {
            0 | 1 => {
                // A random split into two or three groups.
                for i in (1..ids.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    ids.swap(i, j);
                }
                let first = 1 + self.rng.below(ids.len() as u64 - 1) as usize;
                let (a, rest) = ids.split_at(first);
                if rest.len() > 1 && self.rng.chance(300) {
                    let second = 1 + self.rng.below(rest.len() as u64 - 1) as usize;
                    let (b, c) = rest.split_at(second);
                    self.cluster.partition(&[a, b, c]);
                } else {
                    self.cluster.partition(&[a, rest]);
                }
            }
            2 => {
                if let Some(leader) = self.random_leader() {
                    let others: Vec<u64> =
                        ids.iter().copied().filter(|id| *id != leader.0).collect();
                    self.cluster.partition(&[&[leader.0], &others]);
                }
            }
            3 => {
                let id = NodeId(pick(&mut self.rng, &ids));
                if self.disconnected.remove(&id) {
                    self.cluster.connect(id);
                } else {
                    self.disconnected.insert(id);
                    self.cluster.disconnect(id);
                }
            }
            _ => {
                self.cluster.connect_all();
                self.disconnected.clear();
            }
        }
    }

    fn crash(&mut self) {
        // Half the time the leader, the most interesting victim.
        let leader = if self.rng.chance(500) { self.random_leader() } else { None };
        let Some(id) = leader.or_else(|| self.random_running()) else { return };
        self.check_reads();
        self.stats.crashes += 1;
        match self.rng.below(3) {
            0 => self.cluster.crash(id),
            _ => {
                // Leave a Ready half handled: a leader's new entry goes out in the appends
                // that may be sent before persisting, then the process dies before its write.
                self.stats.crashes_mid_ready += 1;
                let data = self.next_payload();
                let replica = self.cluster.replica_mut(id);
                if replica.node.role() == Role::Leader {
                    let _ = replica.node.propose(data);
                } else {
                    replica.node.tick();
                }
                self.cluster.crash_mid_ready(id);
            }
        }
        let delay = self.rng.below(self.mix.restart_delay_ticks_max + 1);
        self.down.insert(id, self.cluster.now + delay);
    }

    fn restart_due(&mut self) {
        let now = self.cluster.now;
        let due: Vec<NodeId> = harness::take_due(&mut self.down, now);
        for id in due {
            self.cluster.start(id);
        }
    }

    fn compact(&mut self) {
        let Some(id) = self.random_running() else { return };
        let replica = self.cluster.replica(id);
        let snapshot_index = replica.node.storage().stored_snapshot().metadata.index;
        if replica.applied_index > snapshot_index {
            self.stats.compactions += 1;
            self.cluster.compact(id);
        }
    }

    fn transfer(&mut self) {
        let Some(leader) = self.random_leader() else { return };
        let ids = self.ids();
        let target = pick(&mut self.rng, &ids);
        if target != leader
            && self.cluster.with_node(leader, |node| node.transfer_leader(target)).is_ok()
        {
            self.stats.transfers += 1;
        }
    }

    fn quiesce(&mut self) {
        let Some(leader) = self.random_leader() else { return };
        let was_quiescent = self.cluster.replica(leader).node.is_quiescent();
        if self.cluster.with_node(leader, |node| node.quiesce()) && !was_quiescent {
            self.stats.quiescences += 1;
        }
    }

    fn observe_leaders(&mut self) {
        for replica in self.cluster.replicas.values() {
            if replica.node.role() == Role::Leader {
                self.terms_with_leader.insert(replica.node.term());
            }
        }
    }

    /// The leader every replica runs under, once there is one: all replicas are up, share its
    /// term and follow it.
    fn stable_leader(&self) -> Option<NodeId> {
        if self.cluster.replicas.len() != self.cluster.ids.len() {
            return None;
        }
        let (id, leader) =
            self.cluster.replicas.iter().find(|(_, r)| r.node.role() == Role::Leader)?;
        let term = leader.node.term();
        self.cluster
            .replicas
            .values()
            .all(|r| r.node.term() == term && r.node.leader() == Some(*id))
            .then_some(*id)
    }

    fn liveness_phase(mut self) -> Outcome {
        let seed = self.seed;
        self.cluster.faults = Faults::default();
        self.cluster.connect_all();
        self.disconnected.clear();
        for id in std::mem::take(&mut self.down).into_keys() {
            self.cluster.start(id);
        }
        let healed_at = self.cluster.now;
        let mut stable_since: Option<(NodeId, u64)> = None;
        loop {
            stable_since = match (self.stable_leader(), stable_since) {
                (Some(leader), Some((since_leader, since))) if leader == since_leader => {
                    Some((leader, since))
                }
                (Some(leader), _) => Some((leader, self.cluster.now)),
                (None, _) => None,
            };
            if stable_since.is_some_and(|(_, since)| self.cluster.now >= since + LEADER_HOLD_TICKS)
            {
                break;
            }
            assert!(
                self.cluster.now < healed_at + STABLE_LEADER_TICKS_MAX,
                "liveness: no leader followed by every replica for {LEADER_HOLD_TICKS} ticks \
                 within {STABLE_LEADER_TICKS_MAX} ticks after the faults stopped (seed {seed})\n{}",
                self.describe()
            );
            self.tick_checked();
        }
        self.stats.stable_leader_ticks_max = self.cluster.now - healed_at;
        let nodes = self.cluster.ids.len();
        let mut last_index = LogIndex(0);
        for _ in 0..LIVENESS_PROPOSALS {
            let data = self.next_payload();
            let proposed_at = self.cluster.now;
            let deadline = proposed_at + COMMIT_TICKS_MAX;
            // The leader may refuse for a while (a transfer under way, the uncommitted bound);
            // a proposal it accepts must commit.
            let index = loop {
                let leader = self.stable_leader();
                if let Some(index) = leader.and_then(|id| self.cluster.propose(id, &data)) {
                    break index;
                }
                assert!(
                    self.cluster.now < deadline,
                    "liveness: no leader accepted a proposal within {COMMIT_TICKS_MAX} ticks \
                     (seed {seed})\n{}",
                    self.describe()
                );
                self.tick_checked();
            };
            loop {
                let applied: Vec<Option<&Bytes>> = self
                    .cluster
                    .replicas
                    .values()
                    .filter(|r| r.applied_index >= index)
                    .map(|r| r.state.get(&index))
                    .collect();
                assert!(
                    applied.iter().all(|command| *command == Some(&data)),
                    "liveness: the proposal at {index} was lost: replicas applied {applied:?} \
                     there (seed {seed})\n{}",
                    self.describe()
                );
                if applied.len() == nodes {
                    let ticks = self.cluster.now - proposed_at;
                    self.stats.commit_ticks_max = self.stats.commit_ticks_max.max(ticks);
                    break;
                }
                assert!(
                    self.cluster.now < deadline,
                    "liveness: proposal at {index} applied on {} of {nodes} replicas \
                     {COMMIT_TICKS_MAX} ticks after it was made (seed {seed})\n{}",
                    applied.len(),
                    self.describe()
                );
                self.tick_checked();
            }
            last_index = index;
        }
        self.cluster.check_log_matching();
        self.check_state_machines_converged(last_index)
    }

    /// Every replica's status and the fault mix, for failure messages.
    fn describe(&self) -> String {
        let mut out = format!("{:?}\n", self.mix);
        for (id, replica) in &self.cluster.replicas {
            let status = replica.node.status();
            out += &format!(
                "  node {id}: {:?} term {} leader {:?} commit {} applied {} log [{}, {}]\n",
                status.soft_state.role,
                status.hard_state.term,
                status.soft_state.leader,
                status.hard_state.commit,
                replica.applied_index,
                status.first_index,
                status.last_index,
            );
            for (peer, progress) in &status.progress {
                out += &format!("    {peer}: {progress:?}\n");
            }
        }
        out
    }

    fn tick_checked(&mut self) {
        self.cluster.tick();
        self.check_reads();
        self.observe_leaders();
    }

    /// Every replica applied the same commands, each at most once; returns the outcome.
    fn check_state_machines_converged(mut self, last_index: LogIndex) -> Outcome {
        let seed = self.seed;
        let ids = self.ids();
        let first = self.cluster.replica(ids[0]);
        for id in &ids[1..] {
            let replica = self.cluster.replica(*id);
            assert_eq!(
                replica.state, first.state,
                "replicas {} and {id} ended with different state machines (seed {seed})",
                ids[0]
            );
        }
        assert!(first.applied_index >= last_index, "applied below the last proposal");
        let mut seen = BTreeSet::new();
        for (index, data) in &first.state {
            assert!(
                seen.insert(data),
                "command {data:?} applied twice, again at {index} (seed {seed})"
            );
        }
        let mut state_hash: u64 = 0xCBF2_9CE4_8422_2325;
        for (index, data) in &first.state {
            for byte in index.0.to_be_bytes().iter().chain(data.iter()) {
                state_hash = (state_hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01B3);
            }
        }
        let leader = self.stable_leader().expect("the liveness phase ends with a stable leader");
        let node = &self.cluster.replica(leader).node;
        self.stats.terms_with_leader = self.terms_with_leader.len() as u64;
        Outcome {
            messages_sent: self.cluster.messages_sent,
            ticks: self.cluster.now,
            term: node.term(),
            committed: node.committed(),
            state_hash,
            stats: self.stats,
        }
    }
}

// ---- Tests --------------------------------------------------------------------------------

#[test]
fn three_replicas_stay_safe_under_faults_and_recover_after() {
    simulate_seeds(3);
}

#[test]
fn four_replicas_stay_safe_under_faults_and_recover_after() {
    simulate_seeds(4);
}

#[test]
fn five_replicas_stay_safe_under_faults_and_recover_after() {
    simulate_seeds(5);
}

#[test]
fn six_replicas_stay_safe_under_faults_and_recover_after() {
    simulate_seeds(6);
}

#[test]
fn seven_replicas_stay_safe_under_faults_and_recover_after() {
    simulate_seeds(7);
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [7, 1234, 99_999] {
        let first = simulate(seed);
        let second = simulate(seed);
        assert_eq!(first, second, "seed {seed} ran differently the second time");
        assert!(first.messages_sent > 0 && first.committed > LogIndex(0), "seed {seed}: {first:?}");
    }
    assert_ne!(simulate(7), simulate(12), "different seeds (same replica count) ran the same");
}
