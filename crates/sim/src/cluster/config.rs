//! The shape of a simulated run: how many nodes, groups, clients and shards, how long each
//! phase lasts, and which faults strike. Every duration is in virtual milliseconds.

/// What a run simulates. [`SimConfig::default`] is the cluster the issue asks for: three
/// controller replicas, five storage nodes shared by three groups of three, four clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Replicas of the controller group (node ids 1, 2, ..., at most 10).
    pub controller_nodes: u64,
    /// Storage nodes (node ids 11, 12, ...).
    pub storage_nodes: u64,
    /// Storage groups created at the start (group ids 100, 101, ...).
    pub initial_groups: u64,
    /// Groups the administrator may add during the run, at most.
    pub added_groups_max: u64,
    /// Replicas per storage group.
    pub group_size: usize,
    /// Shards of the key space (small, so that every change moves some).
    pub shard_count: u32,
    /// Concurrent clients.
    pub clients: u32,
    /// Keys the clients share (few, so that they contend).
    pub keys: u32,
    /// Hash tags whose keys the clients change only through atomic batches and read only
    /// through scans, a third of their operations (`cluster/tagged.rs`: each tag is one object
    /// of the checker). 0 by default: every draw changes a seed's schedule, and the seeds kept
    /// as regression tests replay the schedules they were found with.
    pub batch_tags: u32,
    /// How clients read.
    pub reads: ReadMode,
    /// Clients give a write a new session seq on every attempt instead of retrying it with
    /// the same one: a deliberate bug (a retried write may then apply twice), to show that
    /// the checker catches a broken at-most-once guarantee.
    pub fresh_seq_per_attempt: bool,
    /// Clients name the version after the one they heard in a compare-and-set, while the
    /// history records the value heard: a deliberate bug, to show that the checker catches
    /// a compare-and-set whose outcome does not fit the values.
    pub cas_names_the_wrong_version: bool,
    /// Clients read a tag's keys one page of one key at a time, recording the pages as one
    /// read: a deliberate bug (pages are read at different points in time), to show that the
    /// checker catches a read that saw part of a batch.
    pub scans_in_pages_of_one_key: bool,
    /// Clients watch the keys of a tag they have just scanned, at the replica that answered
    /// the scan, one time in two when they watch nothing else (`cluster/watcher.rs`). Needs
    /// `batch_tags`.
    pub watches: bool,
    /// Watch sessions keep every third revision they receive without its changes: a
    /// deliberate bug, to show that a change a watch misses is caught.
    pub watches_lose_revisions: bool,
    /// In the safety phase, a client gives up on an operation after a refusal that says it
    /// was not applied with this probability, as a user whose deadline passed: a write none
    /// of whose attempts may have applied is then recorded as not applied, and must never
    /// take effect (what `mosaic_client`'s decision table promises for that refusal).
    pub abandon_after_refusal_per_mille: u64,
    /// Length of the safety phase.
    pub fault_phase_ms: u64,
    /// The liveness phase must end within this long.
    pub liveness_ms_max: u64,
    /// Operations each client completes in the liveness phase (after its pending one).
    pub liveness_ops_per_client: u32,
    /// Mean pause between two changes by the administrator, in the safety phase.
    pub admin_interval_ms: u64,
    /// Replacements of group members by the administrator (`mosaic admin node replace N
    /// --with M --group G`, carried out by the group); `None`: group members never change.
    pub membership: Option<MembershipConfig>,
    /// Automatic repair at the controller replicas, and a storage node that dies for good;
    /// `None`: no repair, and every crashed node restarts.
    pub repair: Option<RepairConfig>,
    /// Every store compacts a group's log once it holds more than this many applied entries
    /// (`StoreConfig::compact_log_after_entries`). The default, 12, makes lagging and joining
    /// replicas catch up by snapshot; the store's own default (10,000) makes them catch up
    /// from the log, from its first entry in a young group.
    pub compact_log_after_entries: u64,
    /// Applied entries a compaction keeps (`StoreConfig::compact_log_keep_entries`); below
    /// `compact_log_after_entries`.
    pub compact_log_keep_entries: u64,
    /// Every store also compacts a group's log once its applied entries hold more than this
    /// many bytes (`StoreConfig::compact_log_after_bytes`). The default, 2 KiB, about 20 of a
    /// client's puts, makes a log of a few migration entries compact too.
    pub compact_log_after_bytes: u64,
    /// Bytes of applied entries a compaction keeps, at most
    /// (`StoreConfig::compact_log_keep_bytes`); below `compact_log_after_bytes`.
    pub compact_log_keep_bytes: u64,
    /// The faults of the safety phase.
    pub faults: FaultConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            controller_nodes: 3,
            storage_nodes: 5,
            initial_groups: 3,
            added_groups_max: 6,
            group_size: 3,
            shard_count: 8,
            clients: 4,
            keys: 6,
            batch_tags: 0,
            reads: ReadMode::Linearizable,
            fresh_seq_per_attempt: false,
            cas_names_the_wrong_version: false,
            scans_in_pages_of_one_key: false,
            watches: false,
            watches_lose_revisions: false,
            abandon_after_refusal_per_mille: 100,
            fault_phase_ms: 30_000,
            liveness_ms_max: 30_000,
            liveness_ops_per_client: 3,
            admin_interval_ms: 1_000,
            membership: None,
            repair: None,
            compact_log_after_entries: 12,
            compact_log_keep_entries: 2,
            compact_log_after_bytes: 2 << 10,
            compact_log_keep_bytes: 512,
            faults: FaultConfig::default(),
        }
    }
}

impl SimConfig {
    /// Checks that the numbers make a cluster.
    ///
    /// # Panics
    /// Naming the first setting out of range.
    pub fn validate(&self) {
        let first_storage_node = crate::cluster::world::FIRST_STORAGE_NODE;
        assert!(
            self.controller_nodes >= 1 && self.controller_nodes < first_storage_node,
            "controller_nodes must be between 1 and {} (node ids {first_storage_node} on are \
             storage nodes)",
            first_storage_node - 1
        );
        assert!(
            self.group_size >= 1 && self.group_size as u64 <= self.storage_nodes,
            "group_size {} must be between 1 and storage_nodes {}",
            self.group_size,
            self.storage_nodes
        );
        assert!(self.initial_groups >= 1, "initial_groups must be at least 1");
        assert!(self.shard_count >= 1 && self.keys >= 1, "shard_count and keys must be positive");
        assert!(self.admin_interval_ms >= 1, "admin_interval_ms must be positive");
        assert!(self.faults.step_interval_ms >= 1, "faults.step_interval_ms must be positive");
        assert!(
            self.faults.delay_ms_min >= 1 && self.faults.delay_ms_min <= self.faults.delay_ms_max,
            "delays must satisfy 1 <= delay_ms_min <= delay_ms_max"
        );
        assert!(
            self.compact_log_keep_entries < self.compact_log_after_entries,
            "compact_log_keep_entries {} must be below compact_log_after_entries {}",
            self.compact_log_keep_entries,
            self.compact_log_after_entries
        );
        assert!(
            self.compact_log_keep_bytes < self.compact_log_after_bytes,
            "compact_log_keep_bytes {} must be below compact_log_after_bytes {}",
            self.compact_log_keep_bytes,
            self.compact_log_after_bytes
        );
        let faults = &self.faults;
        assert!(
            faults.tick_interval_per_mille_min >= 1
                && faults.tick_interval_per_mille_min <= faults.tick_interval_per_mille_max,
            "tick rates must satisfy 1 <= tick_interval_per_mille_min {} <= \
             tick_interval_per_mille_max {}",
            faults.tick_interval_per_mille_min,
            faults.tick_interval_per_mille_max
        );
        if let Some(stalls) = &faults.stalls {
            assert!(stalls.interval_ms >= 1, "stalls.interval_ms must be positive");
            assert!(
                stalls.duration_ms_min >= 1 && stalls.duration_ms_min <= stalls.duration_ms_max,
                "stalls must satisfy 1 <= duration_ms_min <= duration_ms_max"
            );
        }
        if let Some(repair) = &self.repair {
            assert!(
                repair.node_down_after_ms >= 1
                    && repair.repair_after_ms >= repair.node_down_after_ms,
                "repair must satisfy 1 <= node_down_after_ms <= repair_after_ms (as a controller \
                 replica's configuration must)"
            );
            assert!(
                self.storage_nodes > self.group_size as u64,
                "a node dead for good needs a storage node to take its replicas: group_size {} \
                 of storage_nodes {}",
                self.group_size,
                self.storage_nodes
            );
        }
        if let Some(membership) = &self.membership {
            assert!(
                membership.replace_per_mille <= 1_000
                    && membership.during_migration_per_mille <= 1_000
                    && membership.decommission_per_mille <= 1_000,
                "membership chances are per mille: at most 1000"
            );
            assert!(
                self.group_size < self.storage_nodes as usize,
                "membership changes need a storage node outside each group: group_size {} of \
                 storage_nodes {}",
                self.group_size,
                self.storage_nodes
            );
        }
    }
}

/// How the administrator replaces group members (`cluster/admin.rs`), in the safety phase:
/// the listed members change in a new configuration, and the group carries the change out
/// (its leader adds the new node as a learner, promotes it, removes the old one, which then
/// destroys its replica); and decommissions storage nodes (the controller gives each of the
/// node's replicas to another node at once; later the administrator marks it retired), as
/// long as more than `group_size + 1` nodes stay active. In the liveness phase every group
/// must end with the voters its configuration lists, and no replica on a node it does not
/// list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// The share of the administrator's changes that replace a member, per mille.
    pub replace_per_mille: u64,
    /// After a configuration change that moves shards, the next change is a replacement
    /// within 200 ms with this probability (a membership change during a migration).
    pub during_migration_per_mille: u64,
    /// The share of the administrator's changes that decommission a storage node (while
    /// enough stay active) or mark one being decommissioned retired, per mille. 0 by default:
    /// every draw changes a seed's schedule, and the seeds kept as regression tests replay
    /// the schedules they were found with.
    pub decommission_per_mille: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self { replace_per_mille: 500, during_migration_per_mille: 500, decommission_per_mille: 0 }
    }
}

/// Automatic repair (docs/controller.md "Automatic repair"): every controller replica runs
/// the shipped repairer (`mosaic_controller::Repairer`, executed as the server's repair runner
/// executes it: it reads its own replica, acts only as the leader, reads which groups still
/// hold a decommissioning node and proposes through its own replica), over the liveness its
/// replica hears from the agents' reads. One storage node that hosts a replica dies for good
/// in the first half of the safety phase, at a moment when every group keeps a majority of
/// intact voters without it (never restarted); the liveness phase then requires it retired,
/// its groups at full size on the other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairConfig {
    /// A storage node unheard for this long is down (a replica's `node-down-after-ms`).
    pub node_down_after_ms: u64,
    /// An active node down for this long is repaired (`auto-repair-after-ms`).
    pub repair_after_ms: u64,
}

impl Default for RepairConfig {
    /// Down after 1 s, repaired after 8 s: short enough for a run of seconds, and longer than
    /// almost every partition of the fault schedule (a live node cut off from the
    /// controller's leader that long is repaired too, as in production; two such repairs can
    /// leave too few active nodes to move the dead node's replicas to).
    fn default() -> Self {
        Self { node_down_after_ms: 1_000, repair_after_ms: 8_000 }
    }
}

/// How the simulated clients read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// `Consistency::Linearizable` at the leader (ReadIndex).
    Linearizable,
    /// Half the reads `Consistency::Lease` at the leader, the others `Linearizable`. Lease
    /// reads are linearizable as long as no node ticks faster than the store's
    /// `tick_interval` ([`FaultConfig::tick_interval_per_mille_min`] at least 1000).
    LinearizableOrLease,
    /// `Consistency::Stale` at any replica: a deliberate bug, to show that the checker
    /// catches stale reads.
    StaleAtAnyReplica,
}

/// The faults of the safety phase. Probabilities are per mille, per message or per fault
/// step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultConfig {
    /// A message is lost.
    pub loss_per_mille: u64,
    /// A message is delivered twice (Raft messages, and requests but a client's).
    pub duplicate_per_mille: u64,
    /// Every message takes between these delays (so messages overtake each other).
    pub delay_ms_min: u64,
    /// See `delay_ms_min`.
    pub delay_ms_max: u64,
    /// A message is held back much longer, up to `long_delay_ms_max`.
    pub long_delay_per_mille: u64,
    /// See `long_delay_per_mille`.
    pub long_delay_ms_max: u64,
    /// Mean pause between two fault steps (each partitions, heals or crashes something).
    pub step_interval_ms: u64,
    /// A crashed node stays down at most this long.
    pub down_ms_max: u64,
    /// Storage nodes down at once, at most.
    pub storage_nodes_down_max: usize,
    /// Controller replicas down at once, at most.
    pub controller_nodes_down_max: usize,
    /// After a configuration change that moves shards, the controller's leader crashes with
    /// this probability (a controller failover during a migration).
    pub leader_crash_after_change_per_mille: u64,
    /// At a fault step, every node crashes at once with this probability (whatever the
    /// limits above), each losing part of its unsynced writes.
    pub full_restart_per_mille: u64,
    /// A storage node's crash loses its data directory with this probability: the node
    /// restarts on an empty engine (a replaced disk) and brings itself back into its groups
    /// (the shipped agent's rejoin: removed, joined, caught up as a learner, promoted). Only
    /// while every storage node is up and settled (no rejoin due), every listed member hosts
    /// its group, and every replica's voters keep a majority hosting the group without that
    /// node, so that every group keeps its voters' data but one (losing more is losing the
    /// group). Default 0.
    pub disk_loss_per_mille: u64,
    /// Each node's store ticks every `TICK_MS * x / 1000` of virtual time (`TICK_MS` is the
    /// stores' `tick_interval`, 10 ms), `x` drawn per node from
    /// `[tick_interval_per_mille_min, tick_interval_per_mille_max]` when the run starts; the
    /// store's clock stays the world's, the true time. At least 1000 is what lease reads
    /// assume (a tick may come late, never early); below 1000 is a deliberate
    /// misconfiguration, a node whose ticks come too fast, so that its election timeout
    /// passes in less time than the leader's lease counts on. Default 1000 (every node at the
    /// same rate). Unlike the other faults, rates stay for the liveness phase.
    pub tick_interval_per_mille_min: u64,
    /// See `tick_interval_per_mille_min`.
    pub tick_interval_per_mille_max: u64,
    /// Stalled nodes (a stopped or starved store thread); `None`: no node stalls.
    pub stalls: Option<StallConfig>,
}

/// Stalls: now and then a node's store gets no ticks and no messages for a while, as a store
/// thread stopped by SIGSTOP, a slow fsync or a long GC pause would; the world's clock, which
/// the store reads, runs on. What arrives meanwhile waits in the node's inbox, in order, and
/// is handed over when the stall ends, followed by one tick (as the server's store runner
/// does: missed ticks are not replayed), after which the node ticks at its rate again. An
/// inbox holding `inbox_inputs_max` inputs drops further Raft messages and refuses further
/// requests with `ServerBusy` at once, as the runner does, never a snapshot's outcome (which
/// the runner waits to deliver). A node that crashes while
/// stalled loses its inbox. The liveness phase ends every stall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallConfig {
    /// Mean pause between two stalls (each stalls one node, if the limit allows).
    pub interval_ms: u64,
    /// A stall lasts between these (uniformly).
    pub duration_ms_min: u64,
    /// See `duration_ms_min`.
    pub duration_ms_max: u64,
    /// A stall picks a node that leads some group (a storage group, or the controller
    /// group) with this probability, otherwise any node that is up.
    pub leader_per_mille: u64,
    /// The stalled node is also cut off from every other node, the administrator and about
    /// half the clients (a partition that replaces the current one, healed at a later fault
    /// step) with this probability, so that the rest of its group elects another leader
    /// while it sleeps and the clients on its side keep sending it requests.
    pub cut_off_per_mille: u64,
    /// Nodes stalled at once, at most.
    pub stalled_nodes_max: usize,
    /// Inputs a stalled node's inbox holds, at most. Default 64, small enough that a stall
    /// of a busy node fills it (the server's default is larger; what matters is the behaviour
    /// past it).
    pub inbox_inputs_max: usize,
}

impl Default for StallConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            duration_ms_min: 100,
            duration_ms_max: 3_000,
            leader_per_mille: 500,
            cut_off_per_mille: 300,
            stalled_nodes_max: 1,
            inbox_inputs_max: 64,
        }
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            loss_per_mille: 30,
            duplicate_per_mille: 20,
            delay_ms_min: 1,
            delay_ms_max: 8,
            long_delay_per_mille: 30,
            long_delay_ms_max: 150,
            step_interval_ms: 700,
            down_ms_max: 1_500,
            storage_nodes_down_max: 2,
            controller_nodes_down_max: 1,
            leader_crash_after_change_per_mille: 500,
            full_restart_per_mille: 300,
            disk_loss_per_mille: 0,
            tick_interval_per_mille_min: 1_000,
            tick_interval_per_mille_max: 1_000,
            stalls: None,
        }
    }
}

impl FaultConfig {
    /// A network that only delays (1 to 3 ms) and never loses, and no stalls: the liveness
    /// phase's (the nodes keep their tick rates, which are not taken from here).
    #[must_use]
    pub fn calm() -> Self {
        Self {
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            delay_ms_min: 1,
            delay_ms_max: 3,
            long_delay_per_mille: 0,
            long_delay_ms_max: 0,
            step_interval_ms: u64::MAX,
            down_ms_max: 0,
            storage_nodes_down_max: 0,
            controller_nodes_down_max: 0,
            leader_crash_after_change_per_mille: 0,
            full_restart_per_mille: 0,
            disk_loss_per_mille: 0,
            tick_interval_per_mille_min: 1_000,
            tick_interval_per_mille_max: 1_000,
            stalls: None,
        }
    }
}
