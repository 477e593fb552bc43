//! The whole-cluster simulation (test layer L3, DESIGN.md "Test layers"): seeds of a cluster
//! under faults, each run checked for linearizability, liveness and identical replicas; that
//! a seed replays exactly; and that the checks catch deliberately broken clients (stale
//! reads, writes retried with a new seq).
//!
//! | variable | effect |
//! |---|---|
//! | `MOSAIC_SIM_SEEDS=N` | run N seeds instead of the default set |
//! | `MOSAIC_SIM_FIRST_SEED=F` | start those seeds at F instead of 0 |
//! | `MOSAIC_SIM_SEED=S` | replay exactly seed S |
//!
//! The variables apply to the two seed sweeps (`every_history_...` and `wide_groups_...`);
//! `MOSAIC_SIM_SEED` also picks the seed `a_seed_replays_exactly` runs twice.

mod support;

use mosaic_sim::cluster::{ReadMode, SimConfig, run};
use support::{Suite, env_u64, run_suite};

/// Seeds of the default configuration a run covers unless told otherwise (with the wide
/// configuration's, about a minute in a debug build on two cores).
const DEFAULT_SEEDS: u64 = 300;
/// Seeds of the wide configuration, which cost about twice as much each.
const WIDE_SEEDS: u64 = 100;

/// This file's seed variables.
const SIM: Suite = Suite { env: "MOSAIC_SIM", test_file: "cluster" };

/// Runs `config` on every seed of this run; fails naming each failing seed, why, and how to
/// replay it.
fn run_seeds(test_name: &str, config: &SimConfig, default_count: u64) {
    run_suite(&SIM, test_name, default_count, |seed| {
        let report = run(seed, config);
        eprintln!("{report}");
        report.failure()
    });
}

/// Three controller replicas; three groups of three on five storage nodes (so nodes share
/// groups), up to six more added and some removed; four clients on six keys.
#[test]
fn every_history_is_linearizable_and_the_cluster_recovers_after_faults() {
    run_seeds(
        "every_history_is_linearizable_and_the_cluster_recovers_after_faults",
        &SimConfig::default(),
        DEFAULT_SEEDS,
    );
}

/// Wider: five controller replicas, groups of five on seven storage nodes, sixteen shards,
/// six clients on ten keys, half their reads under the leader's lease, three nodes down at
/// once.
#[test]
fn wide_groups_on_seven_nodes_stay_linearizable_and_recover() {
    let mut config = SimConfig {
        controller_nodes: 5,
        storage_nodes: 7,
        group_size: 5,
        shard_count: 16,
        clients: 6,
        keys: 10,
        reads: ReadMode::LinearizableOrLease,
        ..SimConfig::default()
    };
    config.faults.storage_nodes_down_max = 3;
    config.faults.controller_nodes_down_max = 2;
    run_seeds("wide_groups_on_seven_nodes_stay_linearizable_and_recover", &config, WIDE_SEEDS);
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::default();
    let seed = env_u64("MOSAIC_SIM_SEED").unwrap_or(7);
    let first = run(seed, &config);
    let second = run(seed, &config);
    assert_eq!(first.to_string(), second.to_string(), "seed {seed}: the summaries differ");
    assert_eq!(
        first.history.operations(),
        second.history.operations(),
        "seed {seed}: the histories differ"
    );
    assert!(first.history.len() > 20, "seed {seed}: only {} operations", first.history.len());
}

/// A test that cannot fail is a defect: clients that read with `Consistency::Stale` at any
/// replica (a deliberate bug) must be caught reading stale values under partitions and
/// crashes, for some seed of a small fixed set.
#[test]
fn stale_reads_at_followers_are_caught() {
    let config = SimConfig { reads: ReadMode::StaleAtAnyReplica, ..SimConfig::default() };
    let mut caught = Vec::new();
    for seed in 0..16 {
        let report = run(seed, &config);
        if report.verdict.has_violation() {
            caught.push(seed);
        }
    }
    eprintln!("stale reads caught with seeds {caught:?}");
    assert!(!caught.is_empty(), "no seed of 0..16 caught a stale read");
}

/// A test that cannot fail is a defect: clients that give a retried write a new session seq
/// (a deliberate bug: the write may then apply twice) must be caught, for some seed of a
/// small fixed set.
#[test]
fn retries_with_a_new_seq_are_caught_applying_twice() {
    let config = SimConfig { fresh_seq_per_attempt: true, ..SimConfig::default() };
    let caught: Vec<u64> =
        (0..8).filter(|seed| run(*seed, &config).verdict.has_violation()).collect();
    eprintln!("writes applied twice caught with seeds {caught:?}");
    assert!(!caught.is_empty(), "no seed of 0..8 caught a write applied twice");
}
