//! A deterministic in-memory network of Raft replicas, shared by the scenario tests and the
//! randomized simulator.
//!
//! Time advances only by [`Cluster::tick`]; messages sent during a tick are delivered in the
//! same tick (network latency is far below a tick) unless a fault delays them. Each replica
//! also has a monotonic clock ([`Cluster::clock`]) for lease reads: the cluster's ticks times
//! `tick_interval`, plus whatever [`Cluster::advance_clock`] added for that node; a paused
//! replica ([`Cluster::pause`]) keeps its clock running but gets no ticks, as a stalled process
//! would. Everything random comes from the cluster's seed, so a seed replays a run exactly.
//!
//! After every step the cluster checks Raft's safety properties (Figure 3 of the paper):
//! election safety, leader completeness and state-machine safety; `check_log_matching` checks
//! the log matching property on demand.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use mosaic_raft::{
    ConfChange, ConfState, Config, EntryKind, LogIndex, MemStorage, Message, MessageBody, NodeId,
    RawNode, ReadState, Result, Role, Storage, Term,
};

/// xorshift64*: the harness's own seeded generator.
#[derive(Clone, Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A value in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

/// Network faults, all off by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Messages dropped, per thousand.
    pub drop_per_mille: u32,
    /// Messages delivered twice, per thousand.
    pub duplicate_per_mille: u32,
    /// Messages delayed by up to this many ticks (0: none).
    pub delay_ticks_max: u64,
    /// Deliver each tick's messages in random order.
    pub reorder: bool,
}

impl Faults {
    /// 6.824's unreliable network: some loss, delay and reordering.
    pub fn unreliable() -> Self {
        Self { drop_per_mille: 100, duplicate_per_mille: 20, delay_ticks_max: 3, reorder: true }
    }
}

/// One running replica and its state machine.
pub struct Replica {
    pub node: RawNode<MemStorage>,
    /// The state machine: every applied command by index.
    pub state: BTreeMap<LogIndex, Bytes>,
    pub applied_index: LogIndex,
    pub read_states: Vec<ReadState>,
    pub dropped_reads: Vec<Bytes>,
    /// Set when the replica last became leader, until completeness was checked.
    new_leader: bool,
}

#[derive(Clone, Debug)]
struct Envelope {
    message: Message,
    deliver_at: u64,
}

/// Encodes a state machine as snapshot data.
pub fn encode_state(state: &BTreeMap<LogIndex, Bytes>) -> Bytes {
    let mut out = Vec::new();
    for (index, data) in state {
        out.extend_from_slice(&index.0.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }
    Bytes::from(out)
}

/// Decodes what [`encode_state`] produced.
pub fn decode_state(mut data: &[u8]) -> BTreeMap<LogIndex, Bytes> {
    let mut state = BTreeMap::new();
    while !data.is_empty() {
        let index = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
        state.insert(LogIndex(index), Bytes::copy_from_slice(&data[12..12 + len]));
        data = &data[12 + len..];
    }
    state
}

/// Removes and returns the replicas of `schedule` (replica -> tick) due at `now`.
pub fn take_due(schedule: &mut BTreeMap<NodeId, u64>, now: u64) -> Vec<NodeId> {
    let due = schedule.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect();
    schedule.retain(|_, at| *at > now);
    due
}

pub struct Cluster {
    pub ids: Vec<NodeId>,
    pub replicas: BTreeMap<NodeId, Replica>,
    /// The durable storage of crashed replicas.
    disks: BTreeMap<NodeId, MemStorage>,
    queue: VecDeque<Envelope>,
    pub faults: Faults,
    disconnected: BTreeSet<NodeId>,
    /// Directed links that drop everything.
    cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Stalled replicas: they get no ticks and no messages, but their clocks run on.
    paused: BTreeSet<NodeId>,
    /// Time added to a replica's clock on top of the cluster's ticks (survives restarts, as
    /// the machine's monotonic clock does).
    clock_skews: BTreeMap<NodeId, Duration>,
    pub rng: TestRng,
    pub seed: u64,
    pub now: u64,
    /// Messages handed to the network (before loss), for message-count bounds.
    pub messages_sent: u64,
    configure: fn(&mut Config),
    /// Compact a replica's log once this many entries are applied past its snapshot.
    pub snapshot_every: Option<u64>,
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// Every entry any replica applied: (term, data); no two replicas may disagree.
    committed: BTreeMap<LogIndex, (Term, Bytes)>,
}

impl Cluster {
    /// `n` replicas with ids 1..=n, all voters, default config.
    pub fn new(n: u64, seed: u64) -> Self {
        Self::with_config(n, seed, |_| {})
    }

    pub fn with_config(n: u64, seed: u64, configure: fn(&mut Config)) -> Self {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let conf = ConfState::with_voters(1..=n);
        let mut cluster = Self {
            ids: ids.clone(),
            replicas: BTreeMap::new(),
            disks: ids.iter().map(|id| (*id, MemStorage::new(conf.clone()))).collect(),
            queue: VecDeque::new(),
            faults: Faults::default(),
            disconnected: BTreeSet::new(),
            cut_links: BTreeSet::new(),
            paused: BTreeSet::new(),
            clock_skews: BTreeMap::new(),
            rng: TestRng::new(seed),
            seed,
            now: 0,
            messages_sent: 0,
            configure,
            snapshot_every: None,
            leaders_by_term: BTreeMap::new(),
            committed: BTreeMap::new(),
        };
        for id in ids {
            cluster.start(id);
        }
        cluster
    }

    fn config_for(&self, id: NodeId) -> Config {
        let mut config = Config::new(id.0);
        config.seed = self.seed.wrapping_mul(1_000_003).wrapping_add(id.0);
        (self.configure)(&mut config);
        config
    }

    /// Starts (or restarts) a replica from its durable storage.
    pub fn start(&mut self, id: NodeId) {
        let mut storage = self.disks.remove(&id).unwrap_or_else(|| panic!("node {id} has no disk"));
        let snapshot = storage.stored_snapshot().clone();
        // The replica applies again from its snapshot (this harness persists no applied index),
        // so it starts from the snapshot's membership, not the one its later applies left: as
        // a store that persists the membership with the applied index in one write.
        storage.set_conf_state(snapshot.metadata.conf_state.clone());
        let mut config = self.config_for(id);
        config.applied = snapshot.metadata.index;
        let mut node = RawNode::new(config, storage).expect("replica starts");
        node.set_clock(self.clock(id));
        let replica = Replica {
            node,
            state: decode_state(&snapshot.data),
            applied_index: snapshot.metadata.index,
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            new_leader: false,
        };
        self.replicas.insert(id, replica);
        self.process(id);
    }

    /// Adds a brand-new replica with an empty log (for membership changes). It learns the
    /// membership from the leader's snapshot or log.
    pub fn add_empty_node(&mut self, id: NodeId) {
        self.ids.push(id);
        self.disks.insert(id, MemStorage::new(ConfState::default()));
        self.start(id);
    }

    /// Kills a replica: whatever it persisted survives, the rest (including its state
    /// machine) is lost.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(replica) = self.replicas.remove(&id) {
            self.disks.insert(id, replica.node.storage().clone());
        }
    }

    /// Kills a replica in the middle of handling a `Ready`: the messages that may go out
    /// before persisting are sent, and then the process dies before its write lands.
    pub fn crash_mid_ready(&mut self, id: NodeId) {
        let Some(replica) = self.replicas.get_mut(&id) else { return };
        if replica.node.has_ready() {
            let ready = replica.node.ready();
            let messages = ready.messages;
            self.enqueue(messages);
        }
        let replica = self.replicas.remove(&id).expect("present");
        self.disks.insert(id, replica.node.storage().clone());
    }

    pub fn restart(&mut self, id: NodeId) {
        self.crash(id);
        self.start(id);
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.replicas.contains_key(&id)
    }

    pub fn disconnect(&mut self, id: NodeId) {
        self.disconnected.insert(id);
    }

    pub fn connect(&mut self, id: NodeId) {
        self.disconnected.remove(&id);
    }

    pub fn connect_all(&mut self) {
        self.disconnected.clear();
        self.cut_links.clear();
    }

    /// Cuts the network into the given groups: no message crosses between groups.
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.cut_links.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in *a {
                        for y in *b {
                            self.cut_links.insert((NodeId(*x), NodeId(*y)));
                        }
                    }
                }
            }
        }
    }

    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.disconnected.contains(&from)
            && !self.disconnected.contains(&to)
            && !self.paused.contains(&from)
            && !self.paused.contains(&to)
            && !self.cut_links.contains(&(from, to))
    }

    /// Stalls replica `id` (SIGSTOP, a long fsync): it gets no ticks and messages to or from
    /// it are lost, while its monotonic clock keeps running.
    pub fn pause(&mut self, id: NodeId) {
        self.paused.insert(id);
    }

    /// Wakes a replica [`Cluster::pause`] stalled. It hears of the time only with its next
    /// tick or call that passes the time (such as [`Cluster::lease_read`]).
    pub fn resume(&mut self, id: NodeId) {
        self.paused.remove(&id);
    }

    /// The monotonic clock of replica `id`: the cluster's ticks times its `tick_interval`,
    /// plus what [`Cluster::advance_clock`] added.
    pub fn clock(&self, id: NodeId) -> Duration {
        let ticks = u32::try_from(self.now).expect("tests run fewer than 2^32 ticks");
        let skew = self.clock_skews.get(&id).copied().unwrap_or_default();
        self.config_for(id).tick_interval * ticks + skew
    }

    /// Moves replica `id`'s clock forward by `by` without ticking it, and tells the replica.
    pub fn advance_clock(&mut self, id: NodeId, by: Duration) {
        *self.clock_skews.entry(id).or_default() += by;
        let now = self.clock(id);
        if let Some(replica) = self.replicas.get_mut(&id) {
            replica.node.set_clock(now);
        }
    }

    /// A lease read on replica `id` at its clock's current time.
    pub fn lease_read(&mut self, id: NodeId) -> Result<LogIndex> {
        let now = self.clock(id);
        self.replica_mut(id).node.lease_read(now)
    }

    fn enqueue(&mut self, messages: Vec<Message>) {
        for message in messages {
            self.messages_sent += 1;
            let delay = if self.faults.delay_ticks_max > 0 {
                self.rng.below(self.faults.delay_ticks_max + 1)
            } else {
                0
            };
            self.queue.push_back(Envelope { message, deliver_at: self.now + delay });
        }
    }

    /// Handles every `Ready` of replica `id`: persist, send, apply, advance.
    pub fn process(&mut self, id: NodeId) {
        let snapshot_every = self.snapshot_every;
        loop {
            let Some(replica) = self.replicas.get_mut(&id) else { return };
            if !replica.node.has_ready() {
                break;
            }
            let mut ready = replica.node.ready();
            let early = std::mem::take(&mut ready.messages);
            let store = replica.node.storage_mut();
            if let Some(snapshot) = ready.snapshot.clone() {
                store.apply_snapshot(snapshot.clone()).expect("snapshot applies");
                replica.state = decode_state(&snapshot.data);
                replica.applied_index = snapshot.metadata.index;
            }
            store.append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                store.set_hard_state(hard_state);
            }
            if ready.soft_state.is_some_and(|soft| soft.role == Role::Leader) {
                replica.new_leader = true;
            }
            let mut applied = Vec::new();
            for entry in &ready.committed_entries {
                assert_eq!(
                    entry.index,
                    replica.applied_index.next(),
                    "node {id} applies out of order (seed {})",
                    self.seed
                );
                replica.applied_index = entry.index;
                applied.push((entry.index, entry.term, entry.data.clone()));
                match entry.kind {
                    EntryKind::Normal if !entry.data.is_empty() => {
                        replica.state.insert(entry.index, entry.data.clone());
                    }
                    EntryKind::Normal => {}
                    EntryKind::ConfChange => {
                        let change = ConfChange::decode(&entry.data).expect("valid change");
                        let conf = replica.node.apply_conf_change(entry.index, change);
                        replica.node.storage_mut().set_conf_state(conf);
                    }
                }
            }
            replica.read_states.append(&mut ready.read_states);
            replica.dropped_reads.append(&mut ready.dropped_reads);
            let persisted = std::mem::take(&mut ready.persisted_messages);
            replica.node.advance();
            if let Some(every) = snapshot_every {
                let snapshot_index = replica.node.storage().stored_snapshot().metadata.index;
                if replica.applied_index.0 >= snapshot_index.0 + every {
                    Self::compact_replica(replica);
                }
            }
            self.enqueue(early);
            self.enqueue(persisted);
            for (index, term, data) in applied {
                self.record_applied(id, index, term, data);
            }
        }
        self.check_leader(id);
    }

    fn compact_replica(replica: &mut Replica) {
        let index = replica.applied_index;
        let conf = replica.node.storage().initial_state().expect("state").conf_state;
        let data = encode_state(&replica.state);
        replica
            .node
            .storage_mut()
            .snapshot_and_compact(index, conf, data)
            .expect("snapshot at the applied index");
    }

    /// Snapshots replica `id` at its applied index and discards the log up to there.
    pub fn compact(&mut self, id: NodeId) {
        if let Some(replica) = self.replicas.get_mut(&id) {
            Self::compact_replica(replica);
        }
    }

    fn record_applied(&mut self, id: NodeId, index: LogIndex, term: Term, data: Bytes) {
        match self.committed.get(&index) {
            Some((t, d)) => assert!(
                *t == term && *d == data,
                "state machine safety: node {id} applied {index}@{term} but {index}@{t} was \
                 applied elsewhere (seed {})",
                self.seed
            ),
            None => {
                self.committed.insert(index, (term, data));
            }
        }
    }

    /// Election safety and leader completeness for replica `id`.
    fn check_leader(&mut self, id: NodeId) {
        let seed = self.seed;
        let Some(replica) = self.replicas.get_mut(&id) else { return };
        if replica.node.role() != Role::Leader {
            return;
        }
        let term = replica.node.term();
        let previous = *self.leaders_by_term.entry(term).or_insert(id);
        assert_eq!(previous, id, "election safety: two leaders in term {term} (seed {seed})");
        if !replica.new_leader {
            return;
        }
        replica.new_leader = false;
        let store = replica.node.storage();
        let first = store.first_index().expect("first");
        let last = store.last_index().expect("last");
        for (index, (entry_term, _)) in &self.committed {
            if *index < first {
                continue;
            }
            assert!(
                *index <= last,
                "leader completeness: leader {id} of term {term} lacks committed {index} \
                 (last {last}, seed {seed})"
            );
            assert_eq!(
                store.term(*index).expect("term"),
                *entry_term,
                "leader completeness: leader {id} of term {term} has another entry at \
                 {index} (seed {seed})"
            );
        }
    }

    /// Log matching (Raft §5.3): if two logs have an entry with the same index and term, the
    /// logs are identical up to there.
    pub fn check_log_matching(&self) {
        type Log = BTreeMap<LogIndex, (Term, Bytes)>;
        let logs: Vec<(NodeId, Log)> = self
            .replicas
            .iter()
            .map(|(id, r)| {
                let entries = r.node.storage().all_entries();
                (*id, entries.iter().map(|e| (e.index, (e.term, e.data.clone()))).collect())
            })
            .collect();
        for (i, (a_id, a)) in logs.iter().enumerate() {
            for (b_id, b) in &logs[i + 1..] {
                let mut agree_from = None;
                for (index, (term, data)) in a.iter().rev() {
                    if let Some((other_term, other_data)) = b.get(index) {
                        if agree_from.is_none() && term == other_term {
                            agree_from = Some(*index);
                        }
                        if agree_from.is_some() {
                            assert!(
                                term == other_term && data == other_data,
                                "log matching: nodes {a_id} and {b_id} differ at {index} below a \
                                 matching entry at {agree_from:?} (seed {})",
                                self.seed
                            );
                        }
                    }
                }
            }
        }
    }

    /// Delivers every message that is due, until none is left (bounded).
    pub fn deliver(&mut self) {
        for _ in 0..1000 {
            if !self.deliver_round() {
                return;
            }
        }
        panic!("messages keep flowing without a tick (seed {})", self.seed);
    }

    /// Delivers the messages due now, but not the ones their delivery causes; returns false
    /// if there was nothing to deliver. Lets a test stop between protocol steps.
    pub fn deliver_round(&mut self) -> bool {
        let (mut due, later): (Vec<Envelope>, Vec<Envelope>) =
            self.queue.drain(..).partition(|e| e.deliver_at <= self.now);
        self.queue = later.into();
        if due.is_empty() {
            return false;
        }
        if self.faults.reorder {
            for i in (1..due.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                due.swap(i, j);
            }
        }
        for envelope in due {
            self.deliver_one(envelope.message);
        }
        true
    }

    fn deliver_one(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        let lost = !self.connected(from, to)
            || !self.replicas.contains_key(&to)
            || self.rng.chance(self.faults.drop_per_mille);
        if is_snapshot {
            // A real transport streams snapshots and knows whether the stream completed; it
            // reports that to the sender, as the Ready contract asks.
            self.report_snapshot(from, to, !lost);
        }
        if lost {
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate_per_mille) { 2 } else { 1 };
        for _ in 0..copies {
            let replica = self.replicas.get_mut(&to).expect("checked");
            replica.node.step(message.clone()).expect("message for this node");
            self.process(to);
        }
    }

    fn report_snapshot(&mut self, from: NodeId, to: NodeId, delivered: bool) {
        if self.replicas.contains_key(&from) {
            self.with_node(from, |node| node.report_snapshot(to, delivered));
        }
    }

    /// One tick of every running replica that is not paused (after telling it the time), then
    /// delivery.
    pub fn tick(&mut self) {
        self.now += 1;
        let ids: Vec<NodeId> =
            self.replicas.keys().copied().filter(|id| !self.paused.contains(id)).collect();
        for id in ids {
            let now = self.clock(id);
            if let Some(replica) = self.replicas.get_mut(&id) {
                replica.node.set_clock(now);
                replica.node.tick();
            }
            self.process(id);
        }
        self.deliver();
    }

    pub fn run_ticks(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// The leaders among running, connected replicas, by term.
    pub fn leaders(&self) -> BTreeMap<Term, Vec<NodeId>> {
        let mut leaders: BTreeMap<Term, Vec<NodeId>> = BTreeMap::new();
        for (id, replica) in &self.replicas {
            if replica.node.role() == Role::Leader
                && !self.disconnected.contains(id)
                && !self.paused.contains(id)
            {
                leaders.entry(replica.node.term()).or_default().push(*id);
            }
        }
        leaders
    }

    /// Ticks `ticks` times; after each, checks that `leader` holds no valid lease while
    /// another replica leads (`context` names the case in the failure).
    pub fn tick_checking_lease(&mut self, leader: NodeId, ticks: u64, context: &str) {
        for _ in 0..ticks {
            self.tick();
            let lease = self.lease_read(leader).is_ok();
            assert!(
                !(lease && self.another_leads(leader)),
                "lease of {leader} held while another leader exists ({context})"
            );
        }
    }

    /// Returns true if a replica other than `id` leads (in any term).
    pub fn another_leads(&self, id: NodeId) -> bool {
        self.replicas.iter().any(|(other, r)| *other != id && r.node.role() == Role::Leader)
    }

    /// Ticks until some replica leads; returns the ticks it took, or panics past `ticks_max`
    /// (`context` names the case).
    pub fn ticks_until_a_leader(&mut self, ticks_max: u64, context: &str) -> u64 {
        let mut ticks = 0;
        while self.leaders().is_empty() {
            self.tick();
            ticks += 1;
            assert!(ticks <= ticks_max, "no leader after {ticks} ticks ({context})");
        }
        ticks
    }

    /// 6.824's checkOneLeader: waits until exactly one leader holds the newest term among
    /// leaders, and returns it.
    pub fn check_one_leader(&mut self) -> NodeId {
        for _ in 0..50 {
            self.run_ticks(10);
            if let Some((term, ids)) = self.leaders().into_iter().next_back() {
                assert_eq!(ids.len(), 1, "term {term} has leaders {ids:?} (seed {})", self.seed);
                return ids[0];
            }
        }
        panic!("no leader elected within 500 ticks (seed {})", self.seed);
    }

    /// 6.824's checkNoLeader among connected replicas.
    pub fn check_no_leader(&self) {
        let leaders = self.leaders();
        assert!(leaders.is_empty(), "unexpected leaders {leaders:?} (seed {})", self.seed);
    }

    /// The term, asserting that every running connected replica agrees on it.
    pub fn check_terms(&self) -> Term {
        let terms: BTreeSet<Term> = self
            .replicas
            .iter()
            .filter(|(id, _)| !self.disconnected.contains(id) && !self.paused.contains(id))
            .map(|(_, r)| r.node.term())
            .collect();
        assert_eq!(terms.len(), 1, "replicas disagree on the term: {terms:?}");
        *terms.iter().next().expect("one term")
    }

    /// How many replicas applied `index`, and the command there (asserting they agree).
    pub fn n_committed(&self, index: LogIndex) -> (usize, Option<Bytes>) {
        let mut count = 0;
        let mut command: Option<Bytes> = None;
        for replica in self.replicas.values() {
            if let Some(data) = replica.state.get(&index) {
                if let Some(c) = &command {
                    assert_eq!(c, data, "replicas applied different commands at {index}");
                }
                command = Some(data.clone());
                count += 1;
            }
        }
        (count, command)
    }

    /// Proposes on `id` if it leads; returns the index.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Option<LogIndex> {
        let replica = self.replicas.get_mut(&id)?;
        let index = replica.node.propose(Bytes::copy_from_slice(data)).ok()?;
        self.process(id);
        Some(index)
    }

    /// 6.824's `one()`: submits a command through whichever replica leads and waits until at
    /// least `expected` replicas applied it; retries while leadership moves. Returns the
    /// index. With `retry` false, a command that was accepted but not committed fails.
    pub fn one(&mut self, data: &[u8], expected: usize, retry: bool) -> LogIndex {
        let deadline = self.now + 1000;
        let mut start = 0usize;
        while self.now < deadline {
            let mut index = None;
            for offset in 0..self.ids.len() {
                let id = self.ids[(start + offset) % self.ids.len()];
                if self.disconnected.contains(&id) {
                    continue;
                }
                if let Some(i) = self.propose(id, data) {
                    index = Some(i);
                    start = (start + offset) % self.ids.len();
                    break;
                }
            }
            if let Some(index) = index {
                for _ in 0..100 {
                    self.tick();
                    let (count, command) = self.n_committed(index);
                    if count >= expected && command.as_deref() == Some(data) {
                        return index;
                    }
                }
                assert!(retry, "one({data:?}) failed to reach agreement (seed {})", self.seed);
            } else {
                self.tick();
            }
            start += 1;
        }
        panic!("one({data:?}) failed to reach agreement (seed {})", self.seed);
    }

    /// Waits until at least `n` replicas applied `index`; returns the command.
    pub fn wait(&mut self, index: LogIndex, n: usize, ticks: u64) -> Option<Bytes> {
        for _ in 0..ticks {
            let (count, command) = self.n_committed(index);
            if count >= n {
                return command;
            }
            self.tick();
        }
        None
    }

    pub fn replica(&self, id: NodeId) -> &Replica {
        self.replicas.get(&id).unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn replica_mut(&mut self, id: NodeId) -> &mut Replica {
        self.replicas.get_mut(&id).unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Runs `f` on replica `id`, then handles its `Ready`.
    pub fn with_node<T>(&mut self, id: NodeId, f: impl FnOnce(&mut RawNode<MemStorage>) -> T) -> T {
        let result = f(&mut self.replica_mut(id).node);
        self.process(id);
        result
    }

    /// Highest index applied by any replica.
    pub fn max_applied(&self) -> LogIndex {
        self.committed.keys().next_back().copied().unwrap_or_default()
    }
}

pub fn node(id: u64) -> NodeId {
    NodeId(id)
}
