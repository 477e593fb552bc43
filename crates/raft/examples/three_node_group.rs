//! A Raft group of three replicas in one process, driven through the Ready loop.
//!
//! ```text
//! cargo run --release -p mosaic-raft --example three_node_group [-- --nodes N --commands N]
//! ```
//!
//! The story it prints: the replicas elect a leader; a client replicates writes to a tiny
//! key-value state machine (`set <key> <value>`); reads are served linearizably with ReadIndex;
//! the leader is killed, the others elect a new one and no acknowledged write is lost; every
//! replica compacts its log into a snapshot; the dead replica restarts from its disk and
//! catches up from the leader's snapshot.
//!
//! Each replica is a [`RawNode`] over [`MemStorage`]. The application's whole job is
//! [`Cluster::process`]: it carries out each [`mosaic_raft::Ready`] in the order its docs
//! demand (send, persist, send what waited for the persist, apply, advance). Messages travel
//! through a FIFO queue and time advances only by `tick()` (each replica's monotonic clock, for
//! lease reads, is the tick count times `Config::tick_interval`), so every run prints the same
//! story.
#![allow(clippy::print_stdout, reason = "an example binary: its narrative on stdout is the point")]

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use mosaic_raft::{
    ConfChange, ConfState, Config, EntryKind, LogIndex, MemStorage, Message, MessageBody, NodeId,
    RawNode, ReadState, Role, Storage, Term,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: three_node_group [--nodes N] [--commands N]

  --nodes N      replicas in the group, 3 to 9 (default 3)
  --commands N   writes to replicate, 2 to 1000000 (default 300)";

const NODES_DEFAULT: u64 = 3;
/// The group must keep a majority after losing its leader.
const NODES_MIN: u64 = 3;
const NODES_MAX: u64 = 9;
const COMMANDS_DEFAULT: u64 = 300;
/// One write before the leader dies (something to read), one after.
const COMMANDS_MIN: u64 = 2;
const COMMANDS_MAX: u64 = 1_000_000;
/// Writes the client proposes between two ticks. The leader sends them to each follower in
/// one Append, built when the next `Ready` is.
const PROPOSALS_PER_TICK: u64 = 16;
/// Distinct keys the writes cycle through.
const KEY_COUNT: u64 = 64;
/// Writes proposed on the leader just before it is killed, never acknowledged.
const IN_FLIGHT_WRITES: u64 = 3;
/// Ticks a phase may take on top of its proposals (an election takes 10 to 40 ticks).
const PHASE_TICKS_MAX: u64 = 500;
/// `Ready`s one call to `process` may hand out before something must be wrong.
const READIES_PER_PROCESS_MAX: usize = 1_000;
/// Messages the network may deliver between two ticks.
const DELIVERIES_PER_TICK_MAX: usize = 1_000_000;

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("three_node_group failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The command line.
struct Options {
    nodes: u64,
    commands: u64,
}

impl Options {
    /// Parses the arguments; `None` when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> std::result::Result<Option<Self>, String> {
        let mut options = Self { nodes: NODES_DEFAULT, commands: COMMANDS_DEFAULT };
        while let Some(arg) = args.next() {
            let (target, low, high) = match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--nodes" => (&mut options.nodes, NODES_MIN, NODES_MAX),
                "--commands" => (&mut options.commands, COMMANDS_MIN, COMMANDS_MAX),
                _ => return Err(format!("unknown argument {arg:?}")),
            };
            let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
            *target = match value.parse::<u64>() {
                Ok(n) if (low..=high).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "{arg} must be a number from {low} to {high}, not {value:?}"
                    ));
                }
            };
        }
        Ok(Some(options))
    }
}

fn run(options: Options) -> Result<()> {
    let nodes = options.nodes;
    println!("Mosaic Raft core: a group of {nodes} replicas driven through the Ready loop.");
    println!("Each replica is a RawNode over MemStorage. Messages go through an in-process queue");
    println!("and time advances only by tick(), so every run tells the same story.");
    let mut cluster = Cluster::new(nodes)?;

    heading("1. Electing a leader");
    println!("Every replica starts as a follower in term 0. The first whose randomized election");
    println!("timeout (10 to 19 ticks) expires asks for pre-votes, then for votes (Raft §5.2).");
    let leader = cluster.wait_for_leader()?;
    println!(
        "Node {leader} leads term {}. By tick {} every replica has applied its no-op entry: \
         committing\nan entry of its own term is how a new leader learns the commit index \
         (Raft §8).",
        cluster.replica(leader)?.node.term(),
        cluster.tick
    );
    cluster.print_status();

    let before_failure = options.commands / 2;
    heading(&format!("2. Replicating {}", plural(before_failure, "write")));
    cluster.replicate_writes(before_failure)?;
    cluster.print_status();

    heading("3. Linearizable reads with ReadIndex (Raft dissertation §6.4)");
    cluster.show_reads()?;

    heading("4. Killing the leader");
    cluster.kill_leader_and_reelect()?;
    cluster.print_status();

    let after_failure = options.commands - before_failure;
    heading(&format!("5. Replicating {} with one node dead", plural(after_failure, "write")));
    cluster.replicate_writes(after_failure)?;
    cluster.print_status();

    heading("6. Compacting every log into a snapshot");
    cluster.compact_all()?;

    heading("7. Restarting the dead node");
    cluster.restart_dead_node()?;
    cluster.print_status();

    heading("Summary");
    cluster.check_agreement()
}

fn heading(title: &str) {
    println!("\n== {title}");
}

/// Returns "1 tick", "2 ticks", ...
fn plural(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// The state machine: a map applied from `set <key> <value>` commands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KeyValueStore {
    map: BTreeMap<String, String>,
}

impl KeyValueStore {
    fn command(key: &str, value: &str) -> Bytes {
        Bytes::from(format!("set {key} {value}"))
    }

    /// Applies a command from the log.
    ///
    /// # Errors
    /// When the entry is not a `set` command: the log holds something this application never
    /// proposed.
    fn apply(&mut self, data: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(data)?;
        let mut words = text.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("set"), Some(key), Some(value), None) => {
                self.map.insert(key.to_owned(), value.to_owned());
                Ok(())
            }
            _ => Err(format!("not a command: {text:?}").into()),
        }
    }

    /// The snapshot image: one `key value` line per key.
    fn encode(&self) -> Bytes {
        let text: String = self.map.iter().map(|(key, value)| format!("{key} {value}\n")).collect();
        Bytes::from(text)
    }

    /// Decodes what [`KeyValueStore::encode`] produced.
    ///
    /// # Errors
    /// When the image is not one.
    fn decode(data: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(data)?;
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let (key, value) =
                line.split_once(' ').ok_or_else(|| format!("bad snapshot line {line:?}"))?;
            map.insert(key.to_owned(), value.to_owned());
        }
        Ok(Self { map })
    }
}

/// One live replica: the Raft core, its state machine and the reads it is serving.
struct Replica {
    node: RawNode<MemStorage>,
    state: KeyValueStore,
    /// Highest index applied to `state`.
    applied: LogIndex,
    /// The role last reported in a `Ready`, to narrate changes.
    role: Role,
    /// ReadIndex answers waiting until `applied` reaches their index.
    waiting_reads: Vec<ReadState>,
    /// Served reads by context: the read index and the value read.
    served_reads: BTreeMap<Bytes, (LogIndex, Option<String>)>,
    /// Contexts of reads the core gave up on (leadership changed).
    dropped_reads: Vec<Bytes>,
}

impl Replica {
    /// Opens a replica over what its disk holds (`storage`).
    fn start(id: NodeId, storage: MemStorage) -> Result<Self> {
        let snapshot = storage.stored_snapshot();
        let state = KeyValueStore::decode(&snapshot.data)?;
        let applied = snapshot.metadata.index;
        // The state machine is rebuilt from the snapshot; the log after it is applied again.
        let config = Config { applied, ..Config::new(id.0) };
        let node = RawNode::new(config, storage)?;
        Ok(Self {
            node,
            state,
            applied,
            role: Role::Follower,
            waiting_reads: Vec::new(),
            served_reads: BTreeMap::new(),
            dropped_reads: Vec::new(),
        })
    }

    /// Serves the reads whose index has been applied (the key is the context's second word).
    fn serve_reads(&mut self) {
        let (ready, waiting) =
            self.waiting_reads.drain(..).partition(|read| read.index <= self.applied);
        self.waiting_reads = waiting;
        for read in ready {
            let key = std::str::from_utf8(&read.context)
                .ok()
                .and_then(|context| context.split_once(' '))
                .map(|(_, key)| key);
            let value = key.and_then(|key| self.state.map.get(key).cloned());
            self.served_reads.insert(read.context, (read.index, value));
        }
    }

    /// Returns true once this replica leads and has committed an entry of its own term: only
    /// then does it know the commit index (Raft §5.4.2, §8).
    fn leads_with_commit(&self) -> bool {
        self.node.role() == Role::Leader
            && self.node.storage().term(self.node.committed()).ok() == Some(self.node.term())
    }
}

/// A write the client proposed and has not heard back about.
struct Proposal {
    node: NodeId,
    term: Term,
    key: String,
    value: String,
}

/// The client: what it proposed, and what was acknowledged to it.
#[derive(Default)]
struct Client {
    /// By log index.
    pending: BTreeMap<LogIndex, Proposal>,
    /// Every acknowledged write, latest value per key: what any read must see from now on.
    acknowledged: BTreeMap<String, String>,
    acknowledged_count: u64,
    next_command: u64,
}

impl Client {
    /// A write is acknowledged when the replica that accepted it applies the entry at its index
    /// from the same term; the same index from another term means the write was lost.
    fn on_applied(&mut self, node: NodeId, index: LogIndex, term: Term) {
        if self.pending.get(&index).is_none_or(|proposal| proposal.node != node) {
            return;
        }
        if let Some(proposal) = self.pending.remove(&index)
            && proposal.term == term
        {
            self.acknowledged.insert(proposal.key, proposal.value);
            self.acknowledged_count += 1;
        }
    }
}

/// The replicas, their disks, and the network between them.
struct Cluster {
    replicas: BTreeMap<NodeId, Replica>,
    /// The disk of each dead replica: whatever it had persisted when it died.
    disks: BTreeMap<NodeId, MemStorage>,
    network: VecDeque<Message>,
    client: Client,
    tick: u64,
    messages_sent: u64,
    readies: u64,
}

impl Cluster {
    fn new(nodes: u64) -> Result<Self> {
        let conf = ConfState::with_voters(1..=nodes);
        let mut replicas = BTreeMap::new();
        for id in (1..=nodes).map(NodeId) {
            replicas.insert(id, Replica::start(id, MemStorage::new(conf.clone()))?);
        }
        Ok(Self {
            replicas,
            disks: BTreeMap::new(),
            network: VecDeque::new(),
            client: Client::default(),
            tick: 0,
            messages_sent: 0,
            readies: 0,
        })
    }

    fn replica(&self, id: NodeId) -> Result<&Replica> {
        self.replicas.get(&id).ok_or_else(|| format!("node {id} is not running").into())
    }

    fn replica_mut(&mut self, id: NodeId) -> Result<&mut Replica> {
        self.replicas.get_mut(&id).ok_or_else(|| format!("node {id} is not running").into())
    }

    /// The leader of the highest term among running replicas.
    fn leader(&self) -> Option<NodeId> {
        self.replicas
            .iter()
            .filter(|(_, replica)| replica.node.role() == Role::Leader)
            .max_by_key(|(_, replica)| replica.node.term())
            .map(|(id, _)| *id)
    }

    /// Carries out every `Ready` of replica `id`, in the order the `Ready` contract demands.
    fn process(&mut self, id: NodeId) -> Result<()> {
        let tick = self.tick;
        let Some(replica) = self.replicas.get_mut(&id) else { return Ok(()) };
        for _ in 0..READIES_PER_PROCESS_MAX {
            if !replica.node.has_ready() {
                return Ok(());
            }
            let mut ready = replica.node.ready();
            self.readies += 1;
            if let Some(soft) = ready.soft_state {
                narrate_soft_state(tick, id, replica, soft.role, soft.leader);
            }

            // 1. A leader's appends and heartbeats may go out before its own write.
            send(&mut self.network, &mut self.messages_sent, tick, ready.messages);

            // 2. Persist the snapshot (after installing it into the state machine), the
            // entries and the hard state as one write. MemStorage is memory: a disk engine
            // would fsync here when `ready.must_sync()`.
            if let Some(snapshot) = ready.snapshot.take() {
                replica.state = KeyValueStore::decode(&snapshot.data)?;
                replica.applied = snapshot.metadata.index;
                println!(
                    "  tick {tick:>4}  node {id} installs the snapshot at index {} (term {}): \
                     {} keys",
                    snapshot.metadata.index,
                    snapshot.metadata.term,
                    replica.state.map.len()
                );
                replica.node.storage_mut().apply_snapshot(snapshot)?;
            }
            let storage = replica.node.storage_mut();
            storage.append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                storage.set_hard_state(hard_state);
            }

            // 3. Votes and acknowledgements promise durability: only now may they go out.
            send(&mut self.network, &mut self.messages_sent, tick, ready.persisted_messages);

            // 4. Apply the committed entries in order, then serve the reads they unblock.
            for entry in &ready.committed_entries {
                let expected = replica.applied.next();
                if entry.index != expected {
                    return Err(format!(
                        "node {id} got entry {} to apply, expected {expected}",
                        entry.index
                    )
                    .into());
                }
                match entry.kind {
                    // The no-op a new leader appends (Raft §8): nothing to apply.
                    EntryKind::Normal if entry.data.is_empty() => {}
                    EntryKind::Normal => {
                        replica.state.apply(&entry.data)?;
                        self.client.on_applied(id, entry.index, entry.term);
                    }
                    EntryKind::ConfChange => {
                        let change = ConfChange::decode(&entry.data)?;
                        let conf = replica.node.apply_conf_change(entry.index, change);
                        replica.node.storage_mut().set_conf_state(conf);
                    }
                }
                replica.applied = entry.index;
            }
            replica.waiting_reads.append(&mut ready.read_states);
            replica.serve_reads();
            for context in ready.dropped_reads {
                println!("  tick {tick:>4}  node {id} drops read {context:?}: leadership changed");
                replica.dropped_reads.push(context);
            }

            // 5. Tell the core this Ready is persisted and applied.
            replica.node.advance();
        }
        Err(format!("node {id} still has a Ready after {READIES_PER_PROCESS_MAX}").into())
    }

    /// Delivers queued messages (and whatever they cause) until the network is quiet.
    fn deliver_all(&mut self) -> Result<()> {
        for _ in 0..DELIVERIES_PER_TICK_MAX {
            let Some(message) = self.network.pop_front() else { return Ok(()) };
            let (from, to) = (message.from, message.to);
            let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
            let delivered = match self.replicas.get_mut(&to) {
                Some(replica) => {
                    replica.node.step(message)?;
                    true
                }
                None => false,
            };
            // A transport tells the sender about failed sends and about snapshots.
            if let Some(sender) = self.replicas.get_mut(&from) {
                if !delivered {
                    sender.node.report_unreachable(to);
                }
                if is_snapshot {
                    sender.node.report_snapshot(to, delivered);
                }
            }
            self.process(to)?;
            self.process(from)?;
        }
        Err(format!("the network is still busy after {DELIVERIES_PER_TICK_MAX} deliveries").into())
    }

    /// The monotonic clock every replica reads: in a real process, `Instant::now()` less the
    /// time the process started. Here it is the tick count times the configured tick interval.
    fn clock(&self) -> Result<Duration> {
        let ticks = u32::try_from(self.tick).map_err(|_| "too many ticks")?;
        Ok(Config::new(1).tick_interval * ticks)
    }

    /// Advances every running replica's clock by one tick, then delivers what that caused.
    fn tick(&mut self) -> Result<()> {
        self.tick += 1;
        let now = self.clock()?;
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        for id in ids {
            let node = &mut self.replica_mut(id)?.node;
            node.set_clock(now);
            node.tick();
            self.process(id)?;
        }
        self.deliver_all()
    }

    /// Ticks until a leader has committed an entry of its term and every running replica
    /// follows it and has applied what it committed; returns the leader.
    fn wait_for_leader(&mut self) -> Result<NodeId> {
        for _ in 0..PHASE_TICKS_MAX {
            self.tick()?;
            if let Some(leader) = self.leader() {
                let settled = self.replica(leader)?.leads_with_commit()
                    && self.replicas.values().all(|r| r.node.leader() == Some(leader))
                    && self.all_applied();
                if settled {
                    return Ok(leader);
                }
            }
        }
        Err(format!("no leader after {PHASE_TICKS_MAX} ticks").into())
    }

    fn require_leader(&self) -> Result<NodeId> {
        self.leader().ok_or_else(|| "no leader".into())
    }

    /// Returns true when every running replica has applied everything the leader committed.
    fn all_applied(&self) -> bool {
        let Some(leader) = self.leader().and_then(|id| self.replicas.get(&id)) else {
            return false;
        };
        let committed = leader.node.committed();
        self.replicas.values().all(|replica| replica.applied == committed)
    }

    /// Proposes the client's next write on `leader`.
    fn propose_write(&mut self, leader: NodeId, key: String) -> Result<()> {
        let value = format!("v{}", self.client.next_command);
        self.client.next_command += 1;
        let replica = self.replica_mut(leader)?;
        let term = replica.node.term();
        let index = replica.node.propose(KeyValueStore::command(&key, &value))?;
        self.client.pending.insert(index, Proposal { node: leader, term, key, value });
        Ok(())
    }

    /// Proposes `count` writes, `PROPOSALS_PER_TICK` per tick, and ticks until all are
    /// acknowledged and applied everywhere.
    fn replicate_writes(&mut self, count: u64) -> Result<()> {
        let leader = self.require_leader()?;
        let (tick_start, messages_start, readies_start) =
            (self.tick, self.messages_sent, self.readies);
        let acknowledged_start = self.client.acknowledged_count;
        println!(
            "The client proposes {PROPOSALS_PER_TICK} writes per tick on node {leader}; each batch \
             goes out as one Append per follower."
        );
        let mut proposed = 0;
        for _ in 0..count.div_ceil(PROPOSALS_PER_TICK) + PHASE_TICKS_MAX {
            if proposed < count {
                let batch = PROPOSALS_PER_TICK.min(count - proposed);
                for _ in 0..batch {
                    let key = format!("key-{}", self.client.next_command % KEY_COUNT);
                    self.propose_write(leader, key)?;
                }
                proposed += batch;
                self.process(leader)?;
                self.deliver_all()?;
            }
            if proposed == count && self.client.pending.is_empty() && self.all_applied() {
                let acknowledged = self.client.acknowledged_count - acknowledged_start;
                println!(
                    "{} acknowledged and applied on every running replica in {}, with {} \
                     messages and {} Readys in all.",
                    plural(acknowledged, "write"),
                    plural(self.tick - tick_start, "tick"),
                    self.messages_sent - messages_start,
                    self.readies - readies_start
                );
                return Ok(());
            }
            self.tick()?;
        }
        Err(format!("{} writes still pending", self.client.pending.len()).into())
    }

    /// Issues a ReadIndex read of `key` on `id` and ticks until it is served.
    fn read(&mut self, id: NodeId, key: &str) -> Result<(LogIndex, Option<String>)> {
        let context = Bytes::from(format!("read-{} {key}", self.tick));
        self.replica_mut(id)?.node.read_index(context.clone())?;
        self.process(id)?;
        self.deliver_all()?;
        for _ in 0..PHASE_TICKS_MAX {
            let replica = self.replica_mut(id)?;
            if let Some(served) = replica.served_reads.remove(&context) {
                return Ok(served);
            }
            if replica.dropped_reads.contains(&context) {
                return Err(format!("node {id} dropped the read of {key}").into());
            }
            self.tick()?;
        }
        Err(format!("the read of {key} on node {id} was not served").into())
    }

    /// Reads the last written key on the leader and on a follower, and checks both see the
    /// acknowledged value.
    fn show_reads(&mut self) -> Result<()> {
        let leader = self.require_leader()?;
        let follower =
            self.replicas.keys().copied().find(|id| *id != leader).ok_or("no follower")?;
        let key = format!("key-{}", (self.client.next_command - 1) % KEY_COUNT);
        let expected = self.client.acknowledged.get(&key).cloned();
        println!(
            "A read is linearizable if it sees every write acknowledged before it began. The \
             leader\nnotes its commit index, confirms with a heartbeat round that a majority \
             still follows it,\nand serves the read once it has applied up to that index. No \
             log entry is written."
        );
        for (id, how) in [(leader, "on the leader"), (follower, "forwarded by a follower")] {
            let (index, value) = self.read(id, &key)?;
            println!(
                "  node {id} ({how}): get {key} -> {} (read index {index})",
                value.as_deref().unwrap_or("<missing>")
            );
            if value != expected {
                return Err(format!("read {value:?} for {key}, acknowledged {expected:?}").into());
            }
        }
        let now = self.clock()?;
        match self.replica_mut(leader)?.node.lease_read(now) {
            Ok(index) => println!(
                "  node {id} could also read at {index} under its leader lease (dissertation \
                 §6.4.1):\n  a majority acknowledged it within the last election timeout, so \
                 no other leader exists yet.",
                id = leader
            ),
            Err(error) => println!("  node {leader} has no lease read right now: {error}"),
        }
        Ok(())
    }

    /// Proposes a few writes the followers receive but the leader never hears back about,
    /// kills the leader, and ticks until another leads.
    fn kill_leader_and_reelect(&mut self) -> Result<()> {
        let old = self.require_leader()?;
        let old_term = self.replica(old)?.node.term();
        for n in 0..IN_FLIGHT_WRITES {
            self.propose_write(old, format!("in-flight-{n}"))?;
        }
        // Its Ready sends the Appends and persists the entries; the answers arrive too late.
        self.process(old)?;
        let dead = self.replicas.remove(&old).ok_or("the leader vanished")?;
        let disk = dead.node.storage().clone();
        let hard_state = disk.hard_state();
        println!(
            "Node {old} proposes {IN_FLIGHT_WRITES} more writes, sends them to its followers and \
             dies before\nhearing back. Its process state is gone; its disk keeps term {}, vote \
             for node {}, commit {},\nand entries up to {}.",
            hard_state.term,
            hard_state.vote.map_or_else(|| "none".to_owned(), |v| v.to_string()),
            hard_state.commit,
            disk.last_index()?
        );
        self.disks.insert(old, disk);
        self.deliver_all()?;

        println!(
            "The followers hear nothing for an election timeout. PreVote asks first whether an \
             election\ncould succeed, so a lone partitioned node cannot raise everyone's term."
        );
        let tick_start = self.tick;
        let leader = self.wait_for_leader()?;
        // Borrows only the replicas: the client is updated below.
        let replica = self.replicas.get(&leader).ok_or("the new leader vanished")?;
        let term = replica.node.term();
        println!(
            "Node {leader} leads term {term} (was node {old} in term {old_term}) after {}; \
             commit index {}.",
            plural(self.tick - tick_start, "tick"),
            replica.node.committed()
        );

        let lost: Vec<&String> = self
            .client
            .acknowledged
            .iter()
            .filter(|(key, value)| replica.state.map.get(*key) != Some(*value))
            .map(|(key, _)| key)
            .collect();
        if !lost.is_empty() {
            return Err(format!("acknowledged writes lost after failover: {lost:?}").into());
        }
        println!(
            "All {} acknowledged writes are in node {leader}'s state machine: an entry \
             acknowledged by a\nmajority is in every later leader's log (Leader Completeness, \
             Raft §5.4).",
            self.client.acknowledged_count
        );
        // The client never heard back about the dead leader's last writes: it gives up on them.
        let unanswered: Vec<Proposal> =
            std::mem::take(&mut self.client.pending).into_values().collect();
        let kept =
            unanswered.iter().filter(|p| replica.state.map.get(&p.key) == Some(&p.value)).count();
        println!(
            "Of the {} unacknowledged in-flight writes, {kept} reached enough followers and were \
             committed\nby the new leader; Raft may keep or drop such writes, a client must \
             retry them idempotently.",
            unanswered.len()
        );
        Ok(())
    }

    /// Snapshots every running replica at its applied index and discards the log up to it.
    fn compact_all(&mut self) -> Result<()> {
        println!(
            "Each replica snapshots its state machine at its applied index, then drops the log \
             up to it."
        );
        for (id, replica) in &mut self.replicas {
            let index = replica.applied;
            let first_before = replica.node.storage().first_index()?;
            let conf = replica.node.status().conf_state;
            let data = replica.state.encode();
            let bytes = data.len();
            replica.node.storage_mut().snapshot_and_compact(index, conf, data)?;
            println!(
                "  node {id}: snapshot at index {index} ({} keys, {bytes} bytes); log now starts \
                 at {} (was {first_before})",
                replica.state.map.len(),
                replica.node.storage().first_index()?
            );
        }
        Ok(())
    }

    /// Restarts the dead replica from its disk and ticks until it has caught up.
    fn restart_dead_node(&mut self) -> Result<()> {
        let (id, disk) = self.disks.pop_first().ok_or("no dead node")?;
        let leader = self.require_leader()?;
        let leader_first = self.replica(leader)?.node.storage().first_index()?;
        println!(
            "Node {id} restarts from its disk: commit {}, entries up to {}. It re-applies its \
             committed\nentries, but needs entries from {} on, which node {leader} has compacted \
             (its log starts\nat {leader_first}): node {leader} sends its snapshot instead \
             (Raft §7).",
            disk.hard_state().commit,
            disk.last_index()?,
            disk.last_index()?.next(),
        );
        let tick_start = self.tick;
        self.replicas.insert(id, Replica::start(id, disk)?);
        self.process(id)?;
        for _ in 0..PHASE_TICKS_MAX {
            self.tick()?;
            if self.replica(id)?.node.leader() == Some(leader) && self.all_applied() {
                println!(
                    "Node {id} caught up after {}: applied {}, like every replica.",
                    plural(self.tick - tick_start, "tick"),
                    self.replica(id)?.applied
                );
                return Ok(());
            }
        }
        Err(format!("node {id} did not catch up in {PHASE_TICKS_MAX} ticks").into())
    }

    fn print_status(&self) {
        for (id, replica) in &self.replicas {
            let status = replica.node.status();
            println!(
                "  node {id}  {:<13}  term {:>2}  commit {:>4}  applied {:>4}  log {}",
                role_name(status.soft_state.role),
                status.hard_state.term,
                status.hard_state.commit,
                replica.applied,
                if status.first_index > status.last_index {
                    format!("empty after the snapshot at {}", status.last_index)
                } else {
                    format!("{}..={}", status.first_index, status.last_index)
                }
            );
        }
        for id in self.disks.keys() {
            println!("  node {id}  dead");
        }
    }

    /// Checks that every replica holds the same state, with every acknowledged write in it.
    fn check_agreement(&self) -> Result<()> {
        let leader = self.replica(self.require_leader()?)?;
        for (id, replica) in &self.replicas {
            if replica.state != leader.state || replica.applied != leader.applied {
                return Err(format!("node {id} disagrees with the leader").into());
            }
        }
        let missing = self
            .client
            .acknowledged
            .iter()
            .filter(|(key, value)| leader.state.map.get(*key) != Some(*value))
            .count();
        if missing > 0 {
            return Err(format!("{missing} acknowledged writes are missing").into());
        }
        println!(
            "All {} replicas applied the same {} entries and hold the same {} keys; all {} \
             acknowledged\nwrites are visible. Ticks: {}, messages: {}, Readys: {}.",
            self.replicas.len(),
            leader.applied,
            leader.state.map.len(),
            self.client.acknowledged_count,
            self.tick,
            self.messages_sent,
            self.readies
        );
        Ok(())
    }
}

/// Prints a replica's role change.
fn narrate_soft_state(
    tick: u64,
    id: NodeId,
    replica: &mut Replica,
    role: Role,
    leader: Option<NodeId>,
) {
    let term = replica.node.term();
    let what = match (role, leader) {
        (Role::Follower, Some(leader)) => format!("follows node {leader} in term {term}"),
        (Role::Follower, None) => format!("follows no one yet in term {term}"),
        (Role::PreCandidate, _) => format!("timed out: asks for pre-votes for term {}", term.0 + 1),
        (Role::Candidate, _) => format!("asks for votes in term {term}"),
        (Role::Leader, _) => format!("won: leads term {term}"),
    };
    println!("  tick {tick:>4}  node {id} {what} (was {})", role_name(replica.role));
    replica.role = role;
}

/// Queues messages on the network, telling of the snapshots among them.
fn send(network: &mut VecDeque<Message>, sent: &mut u64, tick: u64, messages: Vec<Message>) {
    for message in messages {
        if let MessageBody::InstallSnapshot { snapshot } = &message.body {
            println!(
                "  tick {tick:>4}  node {} sends node {} its snapshot at index {} ({} bytes)",
                message.from,
                message.to,
                snapshot.metadata.index,
                snapshot.data.len()
            );
        }
        *sent += 1;
        network.push_back(message);
    }
}
