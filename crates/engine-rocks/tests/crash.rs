//! Crash test: a child process (this test binary, re-executed) writes synced log batches and
//! unsynced apply batches to a store and reports each synced batch on stdout; the parent kills
//! it with SIGKILL at random moments and, after each kill, reopens the store and checks that
//! every batch reported as synced is there and that the state is consistent: every group has
//! the same log (one batch wrote them all), and each group's applied index matches its data.
//!
//! `MOSAIC_ENGINE_CRASH_SEED` replays a run (the seed is printed); `MOSAIC_ENGINE_CRASH_ROUNDS`
//! sets how many kills (default 40).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use mosaic_engine::conformance::IDENTITY;
use mosaic_engine::{ClientId, GroupId, ShardId, WriteBatch, WriteOptions};
use mosaic_engine_rocks::{RocksConfig, RocksEngine, open};
use mosaic_raft::{ConfState, Entry, EntryKind, HardState, LogIndex, SnapshotMetadata, Term};

const CHILD_ENV: &str = "MOSAIC_ENGINE_CRASH_CHILD";
const GROUPS: [GroupId; 4] = [GroupId(1), GroupId(2), GroupId(3), GroupId(900)];
const SHARD: ShardId = ShardId(0);
const CLIENT: ClientId = ClientId(1);
/// A child stops by itself after this many rounds if nobody kills it.
const CHILD_ROUNDS_MAX: u64 = 200_000;
/// Entries kept below the applied index when the child compacts.
const COMPACTION_LAG: u64 = 10;

fn payload(group: GroupId, index: u64) -> Bytes {
    Bytes::from(format!("group {group} entry {index}").repeat(8))
}

fn key(index: u64) -> Bytes {
    Bytes::from(format!("key-{index:08}"))
}

/// Applies entry `index` of every group in one unsynced batch, as the apply path does.
fn apply(engine: &RocksEngine, index: u64) {
    let mut batch = WriteBatch::new();
    for group in GROUPS {
        let entry = engine.entries(group, LogIndex(index), LogIndex(index + 1), None).unwrap();
        assert_eq!(entry[0].data, payload(group, index), "group {group} entry {index}");
        batch.put_data(group, SHARD, Bytes::from("counter"), Bytes::from(index.to_string()));
        batch.put_data(group, SHARD, key(index), entry[0].data.clone());
        if index > 20 {
            batch.delete_data(group, SHARD, key(index - 20));
        }
        batch.put_session(group, SHARD, CLIENT, Bytes::from(index.to_string()));
        batch.set_applied_index(group, LogIndex(index));
    }
    engine.write(&batch, WriteOptions { sync: false }).unwrap();
}

/// The child role: resume from the store (re-applying what a crash lost), then write rounds
/// until killed.
#[test]
#[ignore = "child process of crash_keeps_every_synced_batch_and_consistent_state"]
fn crash_child() {
    let path =
        std::env::var(CHILD_ENV).expect("run by the crash test with MOSAIC_ENGINE_CRASH_CHILD");
    let engine = open(Path::new(&path), IDENTITY, &RocksConfig::small()).unwrap();
    let last = engine.last_index(GROUPS[0]).unwrap().0;
    for applied in engine.applied_index(GROUPS[0]).unwrap().0 + 1..=last {
        apply(&engine, applied);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready {last}").unwrap();
    stdout.flush().unwrap();
    for index in last + 1..last + CHILD_ROUNDS_MAX {
        let mut batch = WriteBatch::new();
        for group in GROUPS {
            let entry = Entry {
                term: Term(1),
                index: LogIndex(index),
                kind: EntryKind::Normal,
                data: payload(group, index),
            };
            batch.append(group, vec![entry]);
            batch.set_hard_state(
                group,
                HardState { term: Term(1), vote: None, commit: LogIndex(index) },
            );
            if index % 50 == 0 {
                batch.compact_log(
                    group,
                    SnapshotMetadata {
                        index: LogIndex(index - COMPACTION_LAG),
                        term: Term(1),
                        conf_state: ConfState::with_voters([1]),
                    },
                );
            }
        }
        engine.write(&batch, WriteOptions { sync: true }).unwrap();
        writeln!(stdout, "synced {index}").unwrap();
        stdout.flush().unwrap();
        apply(&engine, index);
    }
}

/// splitmix64: a small seeded generator, so a seed replays the same kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| value.parse().unwrap_or_else(|_| panic!("{name}={value}")))
}

/// Checks the store after a kill; returns its last index.
fn check_store(path: &Path, synced: u64, context: &str) -> u64 {
    let engine = open(path, IDENTITY, &RocksConfig::small()).unwrap();
    let last = engine.last_index(GROUPS[0]).unwrap();
    let applied = engine.applied_index(GROUPS[0]).unwrap();
    assert!(
        last.0 >= synced,
        "{context}: batch {synced} was reported synced, last index is {last}"
    );
    for group in GROUPS {
        let context = format!("{context} group {group}");
        assert_eq!(engine.last_index(group).unwrap(), last, "{context}: logs differ across groups");
        assert_eq!(engine.applied_index(group).unwrap(), applied, "{context}: applied differs");
        assert!(applied <= last, "{context}: applied {applied} past last {last}");
        assert_eq!(engine.hard_state(group).unwrap().commit, last, "{context}: hard state");
        let first = engine.first_index(group).unwrap();
        let stored = engine.entries(group, first, last.next(), None).unwrap();
        for entry in &stored {
            assert_eq!(
                entry.data,
                payload(group, entry.index.0),
                "{context}: entry {}",
                entry.index
            );
        }
        let counter = engine.get_data(group, SHARD, b"counter").unwrap();
        let session = engine.session(group, SHARD, CLIENT).unwrap();
        if applied.0 == 0 {
            assert_eq!((counter, session), (None, None), "{context}: data without applied index");
        } else {
            let expected = Some(Bytes::from(applied.0.to_string()));
            assert_eq!(counter, expected, "{context}: data does not match applied {applied}");
            assert_eq!(session, expected, "{context}: session does not match applied {applied}");
            assert!(engine.get_data(group, SHARD, &key(applied.0)).unwrap().is_some(), "{context}");
        }
        assert_eq!(engine.get_data(group, SHARD, &key(applied.0 + 1)).unwrap(), None, "{context}");
    }
    last.0
}

#[test]
fn crash_keeps_every_synced_batch_and_consistent_state() {
    let seed = env_u64("MOSAIC_ENGINE_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
    });
    let rounds = env_u64("MOSAIC_ENGINE_CRASH_ROUNDS").unwrap_or(40);
    eprintln!("crash test: MOSAIC_ENGINE_CRASH_SEED={seed} MOSAIC_ENGINE_CRASH_ROUNDS={rounds}");
    let mut rng = Rng(seed);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store");
    let mut synced_total = 0;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait until the child has opened the store, then let it write for a random while.
        let ready = lines.by_ref().map_while(|line| line.ok()).find(|line| line.contains("ready "));
        assert!(ready.is_some(), "seed {seed} round {round}: child exited before it was ready");
        std::thread::sleep(Duration::from_millis(rng.next(150)));
        child.kill().unwrap();
        child.wait().unwrap();
        let synced = lines
            .map_while(|line| line.ok())
            // The harness prints "test crash_child ... " before the first line of the child.
            .filter_map(|line| line.rsplit_once("synced ")?.1.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let context = format!("seed {seed} round {round}");
        synced_total = check_store(&path, synced, &context);
    }
    eprintln!("crash test: {rounds} kills, {synced_total} synced rounds in total");
    assert!(synced_total > 0, "seed {seed}: no child ever completed a synced batch");
}
