//! The store messages of a storage group, each answered with its own type.
//!
//! [`KvStateMachine`] answers every proposal with one type ([`Applied`]) and every read with
//! another ([`KvReadOutput`]), because the store holds the answers of all kinds of requests
//! alike. Which variant comes back is decided by the request: an entry's apply answers with
//! the kind of command the entry holds, which is the kind its proposer encoded (the store
//! answers a proposal with the apply of its own entry, matched by index and term), and a read
//! answers with the kind of its query. These constructors take a callback of the answer's own
//! type and unwrap the variant in one place, so a caller never handles an answer its request
//! cannot get. A variant that does not match its request is a bug in this crate and panics.

use std::collections::BTreeMap;

use mosaic_controller::ConfigNum;
use mosaic_engine::{EngineSnapshot, GroupId, KvEngine, ShardId};
use mosaic_raftstore::{Callback, Consistency, LeaderRead, ReadOutput, StoreMsg};

use crate::command::KvCommand;
use crate::migration::{MigrationCommand, MigrationOutcome};
use crate::ownership::Ownership;
use crate::state_machine::{Applied, KvGet, KvQuery, KvReadOutput, KvStateMachine, WriteOutcome};
use crate::version::Versioned;
use crate::watch::{ShardWatch, WatchReceiver};

/// A store message of a node hosting storage groups.
pub type KvStoreMsg<K> = StoreMsg<K, KvStateMachine>;

/// Proposes a client write ([`crate::KvWrite`]) or atomic batch ([`crate::KvBatch`]) to
/// `group`; `callback` gets its outcome once applied, or why it was refused or not applied
/// (the store's and the state machine's refusals as one).
pub fn propose_write<K: KvEngine>(
    group: GroupId,
    write: impl Into<KvCommand>,
    callback: Callback<WriteOutcome>,
) -> KvStoreMsg<K> {
    StoreMsg::Propose {
        group,
        proposal: write.into(),
        callback: Box::new(move |answer| {
            callback(answer.and_then(|applied| match applied? {
                Applied::Write(outcome) => Ok(outcome),
                Applied::Migration(outcome) => mismatch("a write", &outcome),
            }));
        }),
    }
}

/// Proposes a migration step to `group`; `callback` gets its outcome once applied, or why it
/// was refused or not applied.
pub fn propose_migration<K: KvEngine>(
    group: GroupId,
    command: MigrationCommand,
    callback: Callback<MigrationOutcome>,
) -> KvStoreMsg<K> {
    StoreMsg::Propose {
        group,
        proposal: KvCommand::Migration(command),
        callback: Box::new(move |answer| {
            callback(answer.and_then(|applied| match applied? {
                Applied::Migration(outcome) => Ok(outcome),
                Applied::Write(outcome) => mismatch("a migration step", &outcome),
            }));
        }),
    }
}

/// Reads one key of `group`; `callback` gets its value and version, if it has a value.
pub fn read_value<K: KvEngine>(
    group: GroupId,
    get: KvGet,
    consistency: Consistency,
    callback: Callback<ReadOutput<Option<Versioned>>>,
) -> KvStoreMsg<K> {
    StoreMsg::Read {
        group,
        query: KvQuery::Get(get),
        consistency,
        callback: Box::new(move |answer| {
            callback(answer.map(|read| {
                read.map(|output| match output {
                    KvReadOutput::Value(value) => value,
                    other => mismatch("a get", &other),
                })
            }));
        }),
    }
}

/// Reads a point-in-time view of `group`'s store in which it serves `shard`
/// ([`KvQuery::Shard`]; `shard_count`, the client's, checked), to scan it.
pub fn read_shard<K: KvEngine>(
    group: GroupId,
    shard: ShardId,
    shard_count: u32,
    consistency: Consistency,
    callback: Callback<ReadOutput<EngineSnapshot<K::Snapshot>>>,
) -> KvStoreMsg<K> {
    StoreMsg::Read {
        group,
        query: KvQuery::Shard { shard, shard_count },
        consistency,
        callback: Box::new(move |answer| {
            callback(answer.map(|read| {
                read.map(|output| match output {
                    KvReadOutput::Shard(view) => view,
                    other => mismatch("a shard read", &other),
                })
            }));
        }),
    }
}

/// Registers a watcher at `group`'s replica ([`KvQuery::Watch`], read at `consistency`: a
/// watch of the changes after now starts after the revision that read saw).
pub fn watch<K: KvEngine>(
    group: GroupId,
    watch: ShardWatch,
    consistency: Consistency,
    callback: Callback<ReadOutput<WatchReceiver>>,
) -> KvStoreMsg<K> {
    StoreMsg::Read {
        group,
        query: KvQuery::Watch(watch),
        consistency,
        callback: Box::new(move |answer| {
            callback(answer.map(|read| {
                read.map(|output| match output {
                    KvReadOutput::Watch(watcher) => watcher,
                    other => mismatch("a watch", &other),
                })
            }));
        }),
    }
}

/// Reads the shard ownership of `group` (`None` for a group that serves every shard).
pub fn read_ownership<K: KvEngine>(
    group: GroupId,
    consistency: Consistency,
    callback: Callback<ReadOutput<Option<Ownership>>>,
) -> KvStoreMsg<K> {
    StoreMsg::Read {
        group,
        query: KvQuery::Ownership,
        consistency,
        callback: Box::new(move |answer| {
            callback(answer.map(|read| read.map(ownership_of)));
        }),
    }
}

/// Reads the shard ownership and the applied membership of every group this node leads
/// (`StoreMsg::ReadLeaders`).
pub fn read_led_ownerships<K: KvEngine>(
    callback: Callback<BTreeMap<GroupId, LeaderRead<Option<Ownership>>>>,
) -> KvStoreMsg<K> {
    StoreMsg::ReadLeaders {
        query: KvQuery::Ownership,
        callback: Box::new(move |answer| {
            callback(answer.map(|led| {
                led.into_iter().map(|(group, read)| (group, read.map(ownership_of))).collect()
            }));
        }),
    }
}

/// Reads, at any replica of `group` that switched to configuration `num`, a point-in-time
/// view to stream `shard` from, which `group` is sending to `to` ([`KvQuery::Handoff`]).
pub fn read_handoff<K: KvEngine>(
    group: GroupId,
    num: ConfigNum,
    shard: ShardId,
    to: GroupId,
    callback: Callback<EngineSnapshot<K::Snapshot>>,
) -> KvStoreMsg<K> {
    StoreMsg::Read {
        group,
        query: KvQuery::Handoff { num, shard, to },
        // Any replica that has switched may stream a frozen shard (docs/migration.md).
        consistency: Consistency::Stale,
        callback: Box::new(move |answer| {
            callback(answer.map(|read| match read.output {
                KvReadOutput::Handoff(snapshot) => snapshot,
                other => mismatch("a handoff read", &other),
            }));
        }),
    }
}

fn ownership_of<S: mosaic_engine::KvRead>(output: KvReadOutput<S>) -> Option<Ownership> {
    match output {
        KvReadOutput::Ownership(ownership) => ownership,
        other => mismatch("an ownership read", &other),
    }
}

/// An answer of another kind than its request: a bug of this crate.
fn mismatch(request: &str, answer: &dyn std::fmt::Debug) -> ! {
    panic!("{request} was answered with {answer:?}: a request is answered in its own kind")
}
