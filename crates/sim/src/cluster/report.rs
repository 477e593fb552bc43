//! What a run reports: what it did (operations, configurations, faults, store and network
//! counters) and what it found (the linearizability verdict, the liveness outcome, diverging
//! replicas).

use std::fmt;

use mosaic_raftstore::StoreStats;

use crate::cluster::Time;
use crate::cluster::net::NetStats;
use crate::cluster::tagged;
use crate::linearizability::{Completion, History, Operation, Output, Verdict};

/// What the clients' watches received, in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watched {
    /// Watches.
    pub watches: usize,
    /// Revisions they received.
    pub revisions: usize,
    /// Streams they opened to receive them (a watch opens another after a move, a leader
    /// change, a lost stream).
    pub streams: usize,
}

/// Counters of the faults a run injected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Partitions started.
    pub partitions: u64,
    /// Nodes crashed (each restarted later).
    pub crashes: u64,
    /// Of those, controller leaders crashed right after a configuration change moved shards.
    pub controller_leader_crashes: u64,
    /// Times every node crashed at once.
    pub full_restarts: u64,
    /// Of the crashes, storage nodes that lost their data directory
    /// (`FaultConfig::disk_loss_per_mille`).
    pub disks_lost: u64,
    /// Joins a node's agent asked of its own store, rejoining a group after a disk loss.
    pub rejoin_joins: u64,
    /// Unsynced engine writes the crashes lost.
    pub unsynced_writes_lost: u64,
    /// Nodes whose ticks come faster than the stores' `tick_interval` (beyond what lease
    /// reads assume; see `FaultConfig::tick_interval_per_mille_min`).
    pub nodes_ticking_fast: u64,
    /// Stalls started (`FaultConfig::stalls`).
    pub stalls: u64,
    /// Of those, stalls of a node that led some group.
    pub stalled_leaders: u64,
    /// Of those, stalls whose node was also cut off from every other endpoint.
    pub stalls_cut_off: u64,
    /// Inputs that waited in a stalled node's inbox and were handed over when it resumed.
    pub stalled_inputs_delivered: u64,
    /// Inputs a stalled node lost: dropped from a full inbox, or lost in a crash.
    pub stalled_inputs_dropped: u64,
    /// Requests a stalled node's full inbox refused with `ServerBusy`.
    pub stalled_requests_busy: u64,
    /// Storage nodes that died for good (`SimConfig::repair`), each with the replicas it
    /// hosted then.
    pub dead_for_good: Vec<(mosaic_raft::NodeId, usize)>,
}

/// What a run did and found.
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Every client operation.
    pub history: History,
    /// The linearizability verdict on `history`.
    pub verdict: Verdict,
    /// When the liveness phase ended (virtual ms after it began), or why it did not.
    pub liveness: Result<Time, String>,
    /// Replicas of one group that applied the same log but hold different records, found
    /// once the cluster settled.
    pub divergence: Option<String>,
    /// The first contradiction among the key versions clients heard: a version naming two
    /// values of a key, a value held at two versions, or a value at version 0.
    pub version_violation: Option<String>,
    /// The first broken promise of a watch (`cluster/watcher.rs`): a revision out of order, a
    /// key out of its range, or a change clients heard that a watch up to date past it
    /// missed.
    pub watch_violation: Option<String>,
    /// What the clients' watches received.
    pub watched: Watched,
    /// The first broken Raft safety property seen while the run went on: two leaders of a
    /// group in one term, or two replicas holding different entries at an index both had
    /// committed.
    pub raft_violation: Option<String>,
    /// Client operations completed (returned or given up on).
    pub operations_completed: u64,
    /// Configurations the administrator created.
    pub configs_created: u64,
    /// Shards that moved from one group to another, as the configurations created say.
    pub shards_moved: u64,
    /// What every store did, summed over nodes and incarnations.
    pub stores: StoreStats,
    /// What the network did.
    pub net: NetStats,
    /// What the fault schedule did.
    pub faults: FaultStats,
    /// Replacements of a group member the controller applied (the groups carry them out).
    pub replacements: u64,
    /// Storage nodes the controller started decommissioning.
    pub decommissions: u64,
    /// Decommissioned storage nodes the controller marked retired.
    pub retirements: u64,
    /// Storage nodes the controller replicas' automatic repair decommissioned and retired
    /// (`SimConfig::repair`).
    pub repairs: (u64, u64),
}

impl RunReport {
    /// The compare-and-sets that returned: how many took effect, and how many failed.
    #[must_use]
    pub fn compare_and_sets(&self) -> (usize, usize) {
        let returned = |output: &Output| {
            self.history
                .operations()
                .iter()
                .filter(|record| matches!(record.operation, Operation::CompareAndSet { .. }))
                .filter(|record| {
                    matches!(&record.completion, Completion::Returned { output: o, .. } if o == output)
                })
                .count()
        };
        (returned(&Output::Written), returned(&Output::ConditionFailed))
    }

    /// The operations on tags' keys that returned (`SimConfig::batch_tags`): batches that
    /// took effect, batches whose conditions failed, and scans.
    #[must_use]
    pub fn batches_and_scans(&self) -> (usize, usize, usize) {
        let (mut written, mut failed, mut scans) = (0, 0, 0);
        let returned =
            self.history.operations().iter().filter(|record| {
                tagged::is_object_key(&record.key) && record.return_time().is_some()
            });
        for record in returned {
            match &record.completion {
                Completion::Returned { output: Output::Written, .. } => written += 1,
                Completion::Returned { output: Output::ConditionFailed, .. } => failed += 1,
                Completion::Returned { output: Output::Value(_), .. } => scans += 1,
                _ => {}
            }
        }
        (written, failed, scans)
    }

    /// Why the run failed, in words; `None` when it passed: every key linearizable, no Raft
    /// safety property broken, every key version heard naming one value, the liveness phase
    /// ended in time, and the replicas of every group agreed at its end.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        let mut reasons = Vec::new();
        if !self.verdict.is_linearizable() {
            reasons.push(self.verdict.to_string());
        }
        if let Some(violation) = &self.raft_violation {
            reasons.push(format!("raft safety: {violation}"));
        }
        if let Some(divergence) = &self.divergence {
            reasons.push(format!("replicas diverge: {divergence}"));
        }
        if let Some(violation) = &self.version_violation {
            reasons.push(format!("versions: {violation}"));
        }
        if let Some(violation) = &self.watch_violation {
            reasons.push(format!("watches: {violation}"));
        }
        if let Err(reason) = &self.liveness {
            reasons.push(format!("liveness: {reason}"));
        }
        (!reasons.is_empty()).then(|| reasons.join("\n"))
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |completion: fn(&Completion) -> bool| {
            self.history.operations().iter().filter(|record| completion(&record.completion)).count()
        };
        let unknown =
            count(|completion| matches!(completion, Completion::Pending | Completion::Unknown));
        let not_applied = count(|completion| *completion == Completion::NotApplied);
        let (cas_written, cas_failed) = self.compare_and_sets();
        let (batches_written, batches_failed, scans) = self.batches_and_scans();
        let Watched { watches, revisions, streams } = self.watched;
        write!(
            f,
            "seed {}: {} operations ({unknown} of unknown outcome, {not_applied} not applied; \
             compare-and-sets: {cas_written} took effect, {cas_failed} failed; batches: \
             {batches_written} took effect, {batches_failed} failed; {scans} scans; {watches} \
             watches receiving {revisions} revisions over {streams} streams), {} \
             configurations moving {} \
             shards, {} member replacements, {} nodes decommissioned ({} retired), {} \
             repaired ({} retired), {} snapshots installed, {} log compactions, {} leaderships \
             handed over, {} quiescences, {:?}, {:?}, \
             liveness {:?}",
            self.seed,
            self.operations_completed,
            self.configs_created,
            self.shards_moved,
            self.replacements,
            self.decommissions,
            self.retirements,
            self.repairs.0,
            self.repairs.1,
            self.stores.snapshots_installed,
            self.stores.log_compactions,
            self.stores.leader_transfers,
            self.stores.quiescences,
            self.net,
            self.faults,
            self.liveness
        )
    }
}
