//! Shard migration in the state machine, without Raft or network: two groups' state machines
//! over one in-memory engine, fed the entries their logs would carry, checking after each
//! step which shards each group serves, what it stores, and that a reload from the engine
//! gives the same state.

use std::collections::BTreeMap;

use bytes::Bytes;
use mosaic_controller::{ConfigNum, Configuration};
use mosaic_engine::{
    ClientId, ClusterId, Engine, EngineConfig, GroupId, MemKv, NodeIdentity, ShardCursor, ShardId,
    WriteBatch, WriteOptions,
};
use mosaic_raft::{LogIndex, NodeId};
use mosaic_raftstore::{Error, StateMachine};
use mosaic_shardkv::watch::{ShardWatch, WatchEnd, WatchEvent, WatchRange, WatchReceiver};
use mosaic_shardkv::{
    Applied, BATCH_ITEMS_MAX, BatchCondition, BatchWrite, KvBatch, KvCommand, KvGet, KvQuery,
    KvReadOutput, KvStateMachine, KvWrite, METADATA_SHARD, MigrationCommand, MigrationOutcome,
    Ownership, SCAN_KEYS_MAX, ScanPage, ShardScan, ShardState, Version, Versioned, WriteEffect,
    WriteKind, WriteOutcome, scan_refusal,
};
use mosaic_types::shard_for_key;

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);
const SHARDS: u32 = 4;

/// The key `name` if it is in `shard` (of [`SHARDS`]), otherwise `name~1`, `name~2`, ..., the
/// first that is: the tests name keys freely, the groups check that a key is in its shard. A
/// shard past [`SHARDS`] (the metadata shard) keeps `name`.
fn key_in(shard: u32, name: &str) -> Bytes {
    if shard >= SHARDS {
        return Bytes::copy_from_slice(name.as_bytes());
    }
    std::iter::once(name.to_string())
        .chain((1..).map(|n| format!("{name}~{n}")))
        .map(Bytes::from)
        .find(|key| shard_for_key(key, SHARDS) == ShardId(shard))
        .expect("some suffix lands in every shard")
}

/// One node's engine and the state machines of the groups it hosts, with each group's next
/// log index.
struct Node {
    engine: Engine<MemKv>,
    groups: BTreeMap<GroupId, (KvStateMachine, u64)>,
    /// Every entry applied to each group, in order.
    logs: BTreeMap<GroupId, Vec<Bytes>>,
}

impl Node {
    fn new(placed_by_controller: bool) -> Self {
        let identity = NodeIdentity { cluster_id: ClusterId(1), node_id: NodeId(1) };
        let engine = Engine::open(MemKv::new("node"), identity, &EngineConfig::default())
            .expect("open the engine");
        if placed_by_controller {
            let mut batch = WriteBatch::new();
            KvStateMachine::mark_placed_by_controller(&mut batch);
            engine.write(&batch, WriteOptions::default()).expect("mark the node");
        }
        let mut node = Self { engine, groups: BTreeMap::new(), logs: BTreeMap::new() };
        for group in [G1, G2] {
            let machine = node.load(group);
            node.groups.insert(group, (machine, 1));
        }
        node
    }

    fn load(&self, group: GroupId) -> KvStateMachine {
        <KvStateMachine as StateMachine<MemKv>>::load(group, &self.engine).expect("load")
    }

    /// Applies one entry to `group` in a batch of its own and writes it.
    fn apply(
        &mut self,
        group: GroupId,
        command: impl Into<KvCommand>,
    ) -> mosaic_raftstore::Result<Applied> {
        let (machine, next_index) = self.groups.get_mut(&group).expect("hosted");
        let data = <KvStateMachine as StateMachine<MemKv>>::encode(&command.into());
        let mut batch = WriteBatch::new();
        let index = LogIndex(*next_index);
        *next_index += 1;
        let answer = StateMachine::<MemKv>::apply(machine, &self.engine, &mut batch, index, &data)
            .expect("no engine error");
        self.engine.write(&batch, WriteOptions::default()).expect("write");
        StateMachine::<MemKv>::batch_written(machine);
        self.logs.entry(group).or_default().push(data);
        answer
    }

    /// Both groups go from `previous` to `next`, which moves `shard` from `from` to `to`: the
    /// pull, the old owner's deletion and the new owner's confirmation.
    fn move_shard(
        &mut self,
        previous: &Configuration,
        next: &Configuration,
        shard: u32,
        from: GroupId,
        to: GroupId,
    ) {
        for group in [G1, G2] {
            assert_eq!(self.migrate(group, reconfigure(previous, next)), MigrationOutcome::Done);
        }
        self.pull(next.num.0, shard, from, to, 1 << 20);
        let (num, shard) = (next.num, ShardId(shard));
        let delete = MigrationCommand::DeleteShard { num, shard };
        assert_eq!(self.migrate(from, delete), MigrationOutcome::Done);
        let confirm = MigrationCommand::ConfirmHandoff { num, shard };
        assert_eq!(self.migrate(to, confirm), MigrationOutcome::Done);
    }

    /// A node whose replica of `group` applied every entry this node's did: the first
    /// `separately` one batch each, then all the others in one batch (a replica that fell
    /// behind there and caught up the rest of the log at once).
    fn replayed(&self, group: GroupId, separately: usize) -> Node {
        let mut node = Node::new(true);
        let (machine, next_index) = node.groups.get_mut(&group).expect("hosted");
        let mut batch = WriteBatch::new();
        for (position, data) in self.logs[&group].iter().enumerate() {
            let index = LogIndex(*next_index);
            *next_index += 1;
            StateMachine::<MemKv>::apply(machine, &node.engine, &mut batch, index, data)
                .expect("no engine error")
                .expect("applied");
            if position < separately || position + 1 == self.logs[&group].len() {
                node.engine.write(&batch, WriteOptions::default()).expect("write");
                StateMachine::<MemKv>::batch_written(machine);
                batch = WriteBatch::new();
            }
        }
        node
    }

    fn migrate(&mut self, group: GroupId, command: MigrationCommand) -> MigrationOutcome {
        match self.apply(group, command) {
            Ok(Applied::Migration(outcome)) => outcome,
            other => panic!("group {group}: {other:?}"),
        }
    }

    fn write(
        &mut self,
        group: GroupId,
        client: u64,
        seq: u64,
        shard: u32,
        key: &str,
        value: &str,
    ) -> mosaic_raftstore::Result<WriteOutcome> {
        let write = conditional(WriteKind::Append, client, seq, shard, key, value, None);
        match self.apply(group, write)? {
            Applied::Write(outcome) => Ok(outcome),
            other => panic!("a write answered {other:?}"),
        }
    }

    fn read(
        &self,
        group: GroupId,
        shard: u32,
        key: &str,
    ) -> mosaic_raftstore::Result<Option<Bytes>> {
        Ok(self.read_versioned(group, shard, key)?.map(|stored| stored.value))
    }

    fn read_versioned(
        &self,
        group: GroupId,
        shard: u32,
        key: &str,
    ) -> mosaic_raftstore::Result<Option<Versioned>> {
        let query = KvQuery::Get(KvGet { shard: ShardId(shard), key: key_in(shard, key) });
        match StateMachine::<MemKv>::read(&self.groups[&group].0, &self.engine, &query)? {
            KvReadOutput::Value(value) => Ok(value),
            other => panic!("a get answered {other:?}"),
        }
    }

    fn ownership(&self, group: GroupId) -> Option<Ownership> {
        let ownership = self.groups[&group].0.ownership().cloned();
        assert_eq!(
            self.load(group).ownership(),
            ownership.as_ref(),
            "group {group} reloads the same"
        );
        ownership
    }

    fn state(&self, group: GroupId, shard: u32) -> Option<ShardState> {
        self.ownership(group).expect("placed by a controller").state(ShardId(shard))
    }

    /// Streams `shard` from `from`'s handoff snapshot into `to` in chunks of at most
    /// `chunk_bytes`, from where `to`'s installed chunks end; returns the number of chunks.
    fn pull(
        &mut self,
        num: u64,
        shard: u32,
        from: GroupId,
        to: GroupId,
        chunk_bytes: u64,
    ) -> usize {
        self.pull_some(num, shard, from, to, chunk_bytes, usize::MAX)
    }

    /// As [`Node::pull`], but stops after `chunks_max` chunks (a leader that lost its
    /// leadership mid-pull).
    fn pull_some(
        &mut self,
        num: u64,
        shard: u32,
        from: GroupId,
        to: GroupId,
        chunk_bytes: u64,
        chunks_max: usize,
    ) -> usize {
        let query = KvQuery::Handoff { num: ConfigNum(num), shard: ShardId(shard), to };
        let KvReadOutput::Handoff(snapshot) =
            StateMachine::<MemKv>::read(&self.groups[&from].0, &self.engine, &query)
                .expect("handoff")
        else {
            panic!("a handoff answered something else");
        };
        let mut cursor = self.ownership(to).expect("placed").resume_point(ShardId(shard));
        let mut chunks = 0;
        while chunks < chunks_max {
            let chunk = snapshot
                .scan_shard_chunk(from, ShardId(shard), &cursor, chunk_bytes)
                .expect("scan");
            chunks += 1;
            let last = chunk.next.is_none();
            let install = MigrationCommand::InstallChunk {
                num: ConfigNum(num),
                shard: ShardId(shard),
                from: Some(cursor),
                records: chunk.records,
                last,
            };
            assert_eq!(self.migrate(to, install), MigrationOutcome::Done);
            match chunk.next {
                Some(next) => cursor = next,
                None => return chunks,
            }
        }
        chunks
    }
}

fn config(num: u64, owners: [Option<GroupId>; SHARDS as usize]) -> Configuration {
    let mut groups = BTreeMap::new();
    for group in owners.iter().flatten() {
        groups.insert(*group, vec![NodeId(group.0), NodeId(group.0 + 10)]);
    }
    Configuration { num: ConfigNum(num), shards: owners.to_vec(), groups }
}

fn reconfigure(previous: &Configuration, next: &Configuration) -> MigrationCommand {
    MigrationCommand::Reconfigure { previous: previous.clone(), next: next.clone() }
}

fn is_stale(outcome: &MigrationOutcome) -> bool {
    matches!(outcome, MigrationOutcome::Stale(_))
}

#[test]
fn a_shard_moves_with_its_data_and_sessions_and_the_old_copy_is_deleted() {
    let mut node = Node::new(true);
    let c0 = Configuration::initial(SHARDS);
    let c1 = config(1, [Some(G1); 4]);
    let c2 = config(2, [Some(G1), Some(G1), Some(G2), Some(G2)]);

    // Before any configuration a controller-placed group serves nothing.
    assert_eq!(node.write(G1, 7, 1, 0, "k", "v"), Err(Error::WrongGroup { config_num: 0 }));
    assert_eq!(node.migrate(G1, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    // Group 2 is not in configuration 1: it starts there without pulling anything.
    assert_eq!(node.migrate(G2, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    assert_eq!(node.ownership(G2).map(|o| (o.num, o.shards.len())), Some((ConfigNum(1), 0)));
    for shard in 0..SHARDS {
        assert_eq!(node.state(G1, shard), Some(ShardState::Serving));
        for (seq, value) in [(1, "a"), (2, "b")] {
            node.write(G1, 100 + u64::from(shard), seq, shard, &format!("key{shard}"), value)
                .expect("group 1 serves every shard");
        }
        // Many keys so the pull takes several chunks.
        for i in 0..20 {
            node.write(G1, 500 + i, 1, shard, &format!("bulk{i:02}"), "0123456789").expect("write");
        }
    }
    assert_eq!(node.write(G2, 1, 1, 0, "k", "v"), Err(Error::WrongGroup { config_num: 1 }));

    // Configuration 2: shards 2 and 3 go to group 2.
    assert_eq!(node.migrate(G1, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    assert_eq!(node.migrate(G2, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    assert_eq!(node.state(G1, 2), Some(ShardState::Sending { to: Some(G2) }));
    assert_eq!(node.state(G2, 2), Some(ShardState::Pulling { from: G1 }));
    assert_eq!(node.ownership(G2).expect("placed").sources[&G1], vec![NodeId(1), NodeId(11)]);
    // Nobody serves a moving shard; the shards that stay keep serving.
    assert_eq!(node.write(G1, 102, 3, 2, "key2", "c"), Err(Error::WrongGroup { config_num: 2 }));
    assert_eq!(node.read(G1, 2, "key2"), Err(Error::WrongGroup { config_num: 2 }));
    assert_eq!(node.write(G2, 102, 3, 2, "key2", "c"), Err(Error::ShardNotReady));
    assert_eq!(node.read(G1, 0, "key0"), Ok(Some(Bytes::from("ab"))));
    node.write(G1, 100, 3, 0, "key0", "c").expect("an unaffected shard serves");
    // Neither group moves on while shards are moving.
    let c3 = config(3, [Some(G1), Some(G1), Some(G2), Some(G2)]);
    for group in [G1, G2] {
        assert!(matches!(node.migrate(group, reconfigure(&c2, &c3)), MigrationOutcome::NotYet(_)));
    }
    // A handoff to the wrong group or of the wrong configuration is refused.
    for (num, to) in [(2, GroupId(9)), (1, G2)] {
        let query = KvQuery::Handoff { num: ConfigNum(num), shard: ShardId(2), to };
        let refused = StateMachine::<MemKv>::read(&node.groups[&G1].0, &node.engine, &query);
        assert!(matches!(refused, Err(Error::WrongGroup { .. })), "{num} {to}: {refused:?}");
    }

    // Shard 2 arrives in chunks. A leader that stops after three leaves the position where
    // they end; a chunk from anywhere else (a deposed leader's, starting over) is refused,
    // and the next pull continues from that position.
    assert_eq!(node.pull_some(2, 2, G1, G2, 64, 3), 3);
    let resume = node.ownership(G2).expect("placed").resume_point(ShardId(2));
    assert!(matches!(resume, ShardCursor::AfterSession(_) | ShardCursor::AfterData(_)));
    assert_eq!(node.state(G2, 2), Some(ShardState::Pulling { from: G1 }));
    let restart = MigrationCommand::InstallChunk {
        num: ConfigNum(2),
        shard: ShardId(2),
        from: Some(ShardCursor::Start),
        records: Vec::new(),
        last: true,
    };
    assert!(is_stale(&node.migrate(G2, restart)));
    assert_eq!(node.ownership(G2).expect("placed").resume_point(ShardId(2)), resume);
    // It serves once the last chunk is applied; shard 3 still pulls.
    let chunks = node.pull(2, 2, G1, G2, 64);
    assert!(chunks > 1, "{chunks} more chunks");
    assert!(
        node.ownership(G2).expect("placed").resume.is_empty(),
        "an arrived shard resumes nowhere"
    );
    assert_eq!(node.state(G2, 2), Some(ShardState::Confirming { from: G1 }));
    assert_eq!(node.read(G2, 2, "key2"), Ok(Some(Bytes::from("ab"))));
    assert_eq!(node.write(G2, 103, 3, 3, "key3", "c"), Err(Error::ShardNotReady));
    // Imported sessions count as written when they arrived here (the source group's log
    // indices mean nothing in this group's eviction order), also once reloaded.
    let next_index = node.groups[&G2].1;
    let imported = node.groups[&G2].0.session(ShardId(2), ClientId(102)).expect("imported");
    assert!(imported.last_index.0 < next_index, "{imported:?}, group 2 next at {next_index}");
    assert_eq!(node.load(G2).session(ShardId(2), ClientId(102)), Some(imported));
    // The client's session came along: its retried write is not applied twice.
    assert!(node.write(G2, 102, 2, 2, "key2", "b").expect("served").duplicate);
    assert!(!node.write(G2, 102, 3, 2, "key2", "c").expect("served").duplicate);
    assert_eq!(node.read(G2, 2, "key2"), Ok(Some(Bytes::from("abc"))));
    // A chunk that arrives late (a deposed leader's proposal) changes nothing.
    let late = MigrationCommand::InstallChunk {
        num: ConfigNum(2),
        shard: ShardId(2),
        from: Some(ShardCursor::Start),
        records: Vec::new(),
        last: true,
    };
    assert!(is_stale(&node.migrate(G2, late)));

    // The old owner deletes its copy: data and sessions are gone; a repeat is stale.
    let delete = MigrationCommand::DeleteShard { num: ConfigNum(2), shard: ShardId(2) };
    assert_eq!(node.migrate(G1, delete.clone()), MigrationOutcome::Done);
    assert!(is_stale(&node.migrate(G1, delete)));
    assert_eq!(node.engine.get_data(G1, ShardId(2), &key_in(2, "key2")).expect("read"), None);
    assert_eq!(node.engine.session(G1, ShardId(2), ClientId(102)).expect("read"), None);
    assert_eq!(node.groups[&G1].0.session(ShardId(2), ClientId(102)), None);
    assert_eq!(node.state(G1, 2), None);
    let confirm = MigrationCommand::ConfirmHandoff { num: ConfigNum(2), shard: ShardId(2) };
    assert_eq!(node.migrate(G2, confirm.clone()), MigrationOutcome::Done);
    assert!(is_stale(&node.migrate(G2, confirm)));
    assert_eq!(node.state(G2, 2), Some(ShardState::Serving));

    // Shard 3: an empty pull is one chunk.
    node.pull(2, 3, G1, G2, 1 << 20);
    assert_eq!(
        node.migrate(G1, MigrationCommand::DeleteShard { num: ConfigNum(2), shard: ShardId(3) }),
        MigrationOutcome::Done
    );
    assert_eq!(
        node.migrate(G2, MigrationCommand::ConfirmHandoff { num: ConfigNum(2), shard: ShardId(3) }),
        MigrationOutcome::Done
    );
    let settled = node.ownership(G2).expect("placed");
    assert!(settled.is_settled() && settled.sources.is_empty(), "{settled:?}");
    assert_eq!(node.read(G2, 3, "bulk19"), Ok(Some(Bytes::from("0123456789"))));

    // Both settled: configuration 3 applies; a repeat is stale, a gap is not yet.
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c2, &c3)), MigrationOutcome::Done);
        assert!(is_stale(&node.migrate(group, reconfigure(&c2, &c3))));
        let c5 = config(5, [Some(G1); 4]);
        let c4 = config(4, [Some(G1); 4]);
        assert!(matches!(node.migrate(group, reconfigure(&c4, &c5)), MigrationOutcome::NotYet(_)));
    }
}

/// Found by the simulator (`members_replaced_...`, seed 7082): a replica that applied a
/// shard's deletion, the shard's return (without a key its other owner had deleted meanwhile)
/// and an append to that key in one batch appended to the value its engine held before the
/// batch, while the replicas that had applied them in separate batches appended to nothing;
/// the diverged replica later led and served the old value. A replica catching up a long
/// log (re-added after a removal) applies many entries per batch.
#[test]
fn a_replica_that_applies_a_shard_leaving_and_returning_in_one_batch_agrees_with_the_others() {
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    let c2 = config(2, [Some(G1), Some(G1), Some(G2), Some(G1)]);
    let c3 = config(3, [Some(G1); 4]);
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    node.write(G1, 1, 1, 2, "k", "old").expect("served");
    let behind_from = node.logs[&G1].len();

    node.move_shard(&c1, &c2, 2, G1, G2);
    let remove = KvWrite {
        kind: WriteKind::Delete,
        client: ClientId(2),
        seq: 1,
        shard: ShardId(2),
        key: key_in(2, "k"),
        value: Bytes::new(),
        expects_session: false,
        condition: None,
    };
    assert!(matches!(node.apply(G2, remove), Ok(Applied::Write(_))));

    node.move_shard(&c2, &c3, 2, G2, G1);
    node.write(G1, 3, 1, 2, "k", "new").expect("served");
    assert_eq!(node.read(G1, 2, "k"), Ok(Some(Bytes::from("new"))));

    let lagging = node.replayed(G1, behind_from);
    assert_eq!(lagging.read(G1, 2, "k"), Ok(Some(Bytes::from("new"))));
}

#[test]
fn groups_swapping_shards_both_ways_settle() {
    let mut node = Node::new(true);
    let c0 = Configuration::initial(SHARDS);
    let c1 = config(1, [Some(G1), Some(G1), Some(G2), Some(G2)]);
    let c2 = config(2, [Some(G2), Some(G1), Some(G1), Some(G2)]);
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    node.write(G1, 1, 1, 0, "zero", "from-g1").expect("write");
    node.write(G2, 2, 1, 2, "two", "from-g2").expect("write");
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    }
    // Each pulls from the other; neither waits for its own send to finish first.
    node.pull(2, 0, G1, G2, 1 << 20);
    node.pull(2, 2, G2, G1, 1 << 20);
    for (group, shard, from) in [(G1, 2, G2), (G2, 0, G1)] {
        assert_eq!(
            node.migrate(
                from,
                MigrationCommand::DeleteShard { num: ConfigNum(2), shard: ShardId(shard) }
            ),
            MigrationOutcome::Done
        );
        assert_eq!(
            node.migrate(
                group,
                MigrationCommand::ConfirmHandoff { num: ConfigNum(2), shard: ShardId(shard) }
            ),
            MigrationOutcome::Done
        );
    }
    assert_eq!(node.read(G2, 0, "zero"), Ok(Some(Bytes::from("from-g1"))));
    assert_eq!(node.read(G1, 2, "two"), Ok(Some(Bytes::from("from-g2"))));
    for group in [G1, G2] {
        assert!(node.ownership(group).expect("placed").is_settled());
    }
}

#[test]
fn a_delete_before_the_old_owner_switched_waits() {
    let mut node = Node::new(true);
    let c0 = Configuration::initial(SHARDS);
    let c1 = config(1, [Some(G1); 4]);
    node.migrate(G1, reconfigure(&c0, &c1));
    let early = MigrationCommand::DeleteShard { num: ConfigNum(2), shard: ShardId(0) };
    assert!(matches!(node.migrate(G1, early), MigrationOutcome::NotYet(_)));
    assert_eq!(node.state(G1, 0), Some(ShardState::Serving), "nothing deleted");
    let handoff = KvQuery::Handoff { num: ConfigNum(2), shard: ShardId(0), to: G2 };
    let refused = StateMachine::<MemKv>::read(&node.groups[&G1].0, &node.engine, &handoff);
    assert!(matches!(refused, Err(Error::ShardNotReady)), "{refused:?}");
}

#[test]
fn a_group_not_placed_by_a_controller_serves_every_shard_and_migrates_nothing() {
    let mut node = Node::new(false);
    assert_eq!(node.ownership(G1), None);
    node.write(G1, 1, 1, 3, "k", "v").expect("served");
    assert_eq!(node.read(G1, 3, "k"), Ok(Some(Bytes::from("v"))));
    let c1 = config(1, [Some(G1); 4]);
    let refused = node.apply(G1, reconfigure(&Configuration::initial(SHARDS), &c1));
    assert!(matches!(refused, Err(Error::InvalidArgument { .. })), "{refused:?}");
    assert_eq!(node.ownership(G1), None, "nothing changed");
}

#[test]
fn the_metadata_shard_is_never_a_user_shard() {
    for placed in [false, true] {
        let mut node = Node::new(placed);
        let refused = node.write(G1, 1, 1, METADATA_SHARD.0, "ownership", "forged");
        assert!(matches!(refused, Err(Error::InvalidArgument { .. })), "{refused:?}");
        assert!(matches!(
            node.read(G1, METADATA_SHARD.0, "ownership"),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

/// A placed group knows the cluster's shard count from its configuration and refuses a key
/// named in a shard it does not hash to (a client with another shard count) before the write
/// enters the log or the read is served, and before it looks at whether it owns that shard:
/// nothing is written, no session starts, nothing is read.
#[test]
fn a_key_named_in_another_shard_is_refused_and_nothing_is_written() {
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1), Some(G1), None, None]));
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
        assert_eq!(node.ownership(group).expect("placed").shard_count, SHARDS);
    }
    let key = key_in(0, "k");
    let wrong = Error::WrongShard { named: ShardId(1), key_shard: ShardId(0), shard_count: SHARDS };
    let write = |group_shard: u32| KvWrite {
        kind: WriteKind::Put,
        client: ClientId(9),
        seq: 1,
        shard: ShardId(group_shard),
        key: key.clone(),
        value: Bytes::from("misplaced"),
        expects_session: false,
        condition: None,
    };
    let check = |group: GroupId| {
        let proposal = KvCommand::from(write(1));
        StateMachine::<MemKv>::check_proposal(&node.groups[&group].0, &proposal)
    };
    assert_eq!(check(G1), Err(wrong.clone()));
    // G2 serves neither shard: still told the key is misplaced, not sent to refresh routing.
    assert_eq!(check(G2), Err(wrong.clone()));
    let get = KvQuery::Get(KvGet { shard: ShardId(1), key: key.clone() });
    let read = StateMachine::<MemKv>::read(&node.groups[&G1].0, &node.engine, &get);
    assert_eq!(read.err(), Some(wrong));
    for shard in 0..SHARDS {
        assert_eq!(node.engine.get_data(G1, ShardId(shard), &key).expect("read"), None);
        assert_eq!(node.groups[&G1].0.session(ShardId(shard), ClientId(9)), None);
    }
    // The same key in its own shard is served.
    assert!(matches!(node.apply(G1, write(0)), Ok(Applied::Write(_))));
    assert_eq!(node.read(G1, 0, "k"), Ok(Some(Bytes::from("misplaced"))));
}

/// The bytes a Raft snapshot of `group` carries (its data, sessions and metadata), as
/// 6.824's challenge 1 measures an old owner's storage.
fn snapshot_bytes(node: &Node, group: GroupId) -> usize {
    let reader = mosaic_raftstore::SnapshotReader::new(group, node.engine.snapshot());
    reader.read_all(1 << 20).expect("read the snapshot").iter().map(Bytes::len).sum()
}

/// 6.824 challenge 1: once its shards have moved away and been deleted, the old owner's
/// storage is bounded by its metadata, whatever it held before.
#[test]
fn an_old_owner_keeps_nothing_of_the_shards_it_handed_off() {
    let mut node = Node::new(true);
    let c0 = Configuration::initial(SHARDS);
    let c1 = config(1, [Some(G1); SHARDS as usize]);
    let c2 = config(2, [Some(G2); SHARDS as usize]);
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    let value = "v".repeat(1024);
    for i in 0..256u32 {
        let client = 1 + u64::from(i % 32);
        node.write(G1, client, u64::from(i / 32) + 1, i % SHARDS, &format!("key-{i}"), &value)
            .expect("write");
    }
    let held = snapshot_bytes(&node, G1);
    assert!(held > 256 * 1024, "group 1 holds {held} bytes");
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    }
    for shard in 0..SHARDS {
        node.pull(2, shard, G1, G2, 64 * 1024);
        let delete = MigrationCommand::DeleteShard { num: ConfigNum(2), shard: ShardId(shard) };
        assert_eq!(node.migrate(G1, delete), MigrationOutcome::Done);
        let confirm = MigrationCommand::ConfirmHandoff { num: ConfigNum(2), shard: ShardId(shard) };
        assert_eq!(node.migrate(G2, confirm), MigrationOutcome::Done);
    }
    let left = snapshot_bytes(&node, G1);
    let moved = snapshot_bytes(&node, G2);
    eprintln!("group 1 held {held} bytes, keeps {left} after the handoff; group 2 holds {moved}");
    assert!(left < 256, "group 1 keeps {left} bytes of shards it handed off");
    assert!(moved >= held - left, "group 2 holds {moved} bytes, group 1 held {held}");
    assert_eq!(node.read(G2, 3, "key-3"), Ok(Some(Bytes::from(value))));
}

/// A write that expects its client's session (a retry, or any later write of a client that
/// wrote the shard before) is refused once the session was evicted, instead of applied again;
/// the client's next write starts a new session.
#[test]
fn a_write_that_expects_an_evicted_session_is_refused_and_not_applied_again() {
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    assert_eq!(node.migrate(G1, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    let append = |seq: u64, value: &str, expects_session: bool| KvWrite {
        kind: WriteKind::Append,
        client: ClientId(1),
        seq,
        shard: ShardId(0),
        key: key_in(0, "k"),
        value: Bytes::copy_from_slice(value.as_bytes()),
        expects_session,
        condition: None,
    };
    assert!(matches!(node.apply(G1, append(1, "x", false)), Ok(Applied::Write(_))));
    assert!(matches!(node.apply(G1, append(2, "y", true)), Ok(Applied::Write(_))));
    for client in 0..mosaic_shardkv::SESSIONS_PER_SHARD_MAX as u64 {
        node.write(G1, 1_000 + client, 1, 0, "other", ".").expect("served");
    }
    assert_eq!(node.groups[&G1].0.session(ShardId(0), ClientId(1)), None, "evicted");

    let expired = Err(Error::SessionExpired { shard: ShardId(0), client: ClientId(1) });
    assert_eq!(node.apply(G1, append(2, "y", true)), expired);
    assert_eq!(node.read(G1, 0, "k"), Ok(Some(Bytes::from("xy"))));
    assert!(matches!(node.apply(G1, append(3, "z", false)), Ok(Applied::Write(_))));
    assert_eq!(node.read(G1, 0, "k"), Ok(Some(Bytes::from("xyz"))));
}

/// A write of `kind` to `key` in `shard` by `client`, conditional on `condition` if given.
fn conditional(
    kind: WriteKind,
    client: u64,
    seq: u64,
    shard: u32,
    key: &str,
    value: &str,
    condition: Option<Version>,
) -> KvWrite {
    KvWrite {
        kind,
        client: ClientId(client),
        seq,
        shard: ShardId(shard),
        key: key_in(shard, key),
        value: Bytes::copy_from_slice(value.as_bytes()),
        expects_session: false,
        condition,
    }
}

impl Node {
    /// Applies `write` to `group`; the effect it answers, and whether it was a duplicate.
    fn effect(&mut self, group: GroupId, write: KvWrite) -> (Option<WriteEffect>, bool) {
        match self.apply(group, write) {
            Ok(Applied::Write(WriteOutcome { effect, duplicate, .. })) => (effect, duplicate),
            other => panic!("group {group}: a write answered {other:?}"),
        }
    }

    /// The value and version of `key` in `shard` at `group`.
    fn versioned(&self, group: GroupId, shard: u32, key: &str) -> Option<(Bytes, Version)> {
        let read = self.read_versioned(group, shard, key).expect("served");
        read.map(|stored| (stored.value, stored.version))
    }

    /// The revision of `shard` at `group`, checked against a reload from the engine.
    fn revision(&self, group: GroupId, shard: u32) -> u64 {
        let revision = self.groups[&group].0.revision(ShardId(shard));
        assert_eq!(self.load(group).revision(ShardId(shard)), revision, "{group} reloads it");
        revision
    }
}

/// Every change of a shard takes the shard's next revision as the key's version; a
/// conditional write takes effect only on the version it names (0: only on an absent key), and
/// otherwise writes nothing and says what the version is; a retry answers what the first
/// attempt did; shards count apart; a reload and a replica that replays the log in one batch
/// agree.
#[test]
fn a_conditional_write_takes_effect_only_on_the_version_it_names() {
    use WriteEffect::{ConditionFailed, Written};
    use WriteKind::{Append, Delete, Put};
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    assert_eq!(node.migrate(G1, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    let v = Version;
    let mut apply = |seq, kind, key, value, condition| {
        node.effect(G1, conditional(kind, 1, seq, 0, key, value, condition))
    };
    assert_eq!(apply(1, Put, "k", "a", None), (Some(Written(v(1))), false));
    assert_eq!(apply(2, Append, "k", "b", None), (Some(Written(v(2))), false));
    // A stale version fails and changes nothing; the right one takes effect.
    assert_eq!(apply(3, Put, "k", "x", Some(v(1))), (Some(ConditionFailed(v(2))), false));
    assert_eq!(apply(4, Put, "k", "c", Some(v(2))), (Some(Written(v(3))), false));
    // Create-only: fails on a key that exists, takes effect on one that does not.
    assert_eq!(
        apply(5, Put, "k", "y", Some(Version::ABSENT)),
        (Some(ConditionFailed(v(3))), false)
    );
    assert_eq!(apply(6, Put, "n", "new", Some(Version::ABSENT)), (Some(Written(v(4))), false));
    // Deleting an absent key changes nothing, not even the revision.
    assert_eq!(apply(7, Delete, "gone", "", None), (Some(Written(v(4))), false));
    assert_eq!(apply(8, Delete, "n", "", Some(v(3))), (Some(ConditionFailed(v(4))), false));
    assert_eq!(apply(9, Delete, "n", "", Some(v(4))), (Some(Written(v(5))), false));
    assert_eq!(
        apply(10, Append, "n", "", Some(v(4))),
        (Some(ConditionFailed(Version::ABSENT)), false)
    );
    // A retry answers what its first attempt did, failed or not; a late copy of an older
    // write answers nothing it could mistake.
    assert_eq!(
        apply(10, Append, "n", "", Some(Version::ABSENT)),
        (Some(ConditionFailed(Version::ABSENT)), true)
    );
    assert_eq!(apply(4, Put, "k", "c", Some(v(2))), (None, true));
    let retry_of_success = conditional(Put, 2, 1, 0, "k", "d", Some(v(3)));
    assert_eq!(node.effect(G1, retry_of_success.clone()), (Some(Written(v(6))), false));
    assert_eq!(node.effect(G1, retry_of_success), (Some(Written(v(6))), true));

    assert_eq!(node.versioned(G1, 0, "k"), Some((Bytes::from("d"), v(6))));
    assert_eq!(node.versioned(G1, 0, "n"), None);
    assert_eq!(node.revision(G1, 0), 6);
    // Another shard counts on its own.
    assert_eq!(
        node.effect(G1, conditional(Put, 3, 1, 1, "k", "e", None)),
        (Some(Written(v(1))), false)
    );
    assert_eq!(node.revision(G1, 1), 1);
    assert_eq!(node.revision(G1, 2), 0);
    // A replica that applied the same log, most of it in one batch, has the same versions.
    let replica = node.replayed(G1, 3);
    assert_eq!(replica.versioned(G1, 0, "k"), node.versioned(G1, 0, "k"));
    assert_eq!(replica.revision(G1, 0), 6);
    assert_eq!(replica.revision(G1, 1), 1);
}

/// A shard's revision moves with it, chunk by chunk, and so do its keys' versions and what
/// each session's last write did: at the new owner a compare-and-set on the version read at
/// the old one takes effect, the retry of one applied at the old owner answers as it did
/// there, and versions go on growing, back at the first owner too, so none is ever given
/// twice.
#[test]
fn a_shard_moves_with_its_revision_versions_and_write_effects() {
    use WriteEffect::{ConditionFailed, Written};
    use WriteKind::Put;
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    let v = Version;
    for (seq, value) in [(1, "a"), (2, "b")] {
        node.effect(G1, conditional(Put, 1, seq, 2, "k", value, None));
    }
    let applied_at_g1 = conditional(Put, 2, 1, 2, "k", "c", Some(v(2)));
    assert_eq!(node.effect(G1, applied_at_g1.clone()), (Some(Written(v(3))), false));
    let failed_at_g1 = conditional(Put, 3, 1, 2, "other", "x", Some(v(7)));
    assert_eq!(
        node.effect(G1, failed_at_g1.clone()),
        (Some(ConditionFailed(Version::ABSENT)), false)
    );
    let read_at_g1 = node.versioned(G1, 2, "k").expect("written");

    // Shard 2 moves to group 2 in chunks small enough to hold one record each.
    let c2 = config(2, [Some(G1), Some(G1), Some(G2), Some(G1)]);
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    }
    assert!(node.pull(2, 2, G1, G2, 1,) > 3, "one record a chunk");
    assert_eq!(node.revision(G2, 2), 3);
    assert_eq!(node.versioned(G2, 2, "k"), Some(read_at_g1.clone()));
    assert_eq!(node.effect(G2, applied_at_g1), (Some(Written(v(3))), true));
    assert_eq!(node.effect(G2, failed_at_g1), (Some(ConditionFailed(Version::ABSENT)), true));
    let (num, shard) = (ConfigNum(2), ShardId(2));
    assert_eq!(
        node.migrate(G1, MigrationCommand::DeleteShard { num, shard }),
        MigrationOutcome::Done
    );
    assert_eq!(
        node.migrate(G2, MigrationCommand::ConfirmHandoff { num, shard }),
        MigrationOutcome::Done
    );
    assert_eq!(node.revision(G1, 2), 0, "the old owner keeps nothing of the shard");
    assert_eq!(
        node.effect(G2, conditional(Put, 4, 1, 2, "k", "d", Some(read_at_g1.1))),
        (Some(Written(v(4))), false)
    );

    // Back to group 1: the versions go on from where group 2 left them.
    let c3 = config(3, [Some(G1); 4]);
    node.move_shard(&c2, &c3, 2, G2, G1);
    assert_eq!(node.revision(G1, 2), 4);
    assert_eq!(
        node.effect(G1, conditional(Put, 5, 1, 2, "k", "e", Some(v(3)))),
        (Some(ConditionFailed(v(4))), false)
    );
    assert_eq!(
        node.effect(G1, conditional(Put, 5, 2, 2, "k", "e", Some(v(4)))),
        (Some(Written(v(5))), false)
    );
    assert_eq!(node.versioned(G1, 2, "k"), Some((Bytes::from("e"), v(5))));
}

/// Client id 0 holds each shard's revision: a write that names it is refused before it
/// enters the log and, should one be in a log anyway, when it is applied; nothing changes.
#[test]
fn a_write_of_client_zero_is_refused_and_the_revision_is_untouched() {
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    assert_eq!(node.migrate(G1, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    node.effect(G1, conditional(WriteKind::Put, 1, 1, 0, "k", "a", None));
    let zero = conditional(WriteKind::Put, 0, 9, 0, "k", "b", None);
    let reserved = Error::InvalidArgument { reason: "client id 0 is reserved".into() };
    let machine = &node.groups[&G1].0;
    let refused = StateMachine::<MemKv>::check_proposal(machine, &KvCommand::Write(zero.clone()));
    assert_eq!(refused, Err(reserved.clone()));
    assert_eq!(node.apply(G1, zero), Err(reserved));
    assert_eq!(node.versioned(G1, 0, "k"), Some((Bytes::from("a"), Version(1))));
    assert_eq!(node.revision(G1, 0), 1);
}

/// A compare-and-set whose session was evicted before its retry arrived: the retry (which
/// the client sends expecting its session, docs/api.md) is refused, not compared against the
/// version its own first attempt wrote; nothing changes.
#[test]
fn a_retried_conditional_write_whose_session_was_evicted_is_refused() {
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    assert_eq!(node.migrate(G1, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    let create = conditional(WriteKind::Put, 1, 1, 0, "lock", "me", Some(Version::ABSENT));
    assert_eq!(node.effect(G1, create.clone()), (Some(WriteEffect::Written(Version(1))), false));
    for client in 0..mosaic_shardkv::SESSIONS_PER_SHARD_MAX as u64 {
        node.write(G1, 1_000 + client, 1, 0, "other", ".").expect("served");
    }
    assert_eq!(node.groups[&G1].0.session(ShardId(0), ClientId(1)), None, "evicted");
    let retry = KvWrite { expects_session: true, ..create };
    let expired = Err(Error::SessionExpired { shard: ShardId(0), client: ClientId(1) });
    assert_eq!(node.apply(G1, retry), expired);
    assert_eq!(node.versioned(G1, 0, "lock"), Some((Bytes::from("me"), Version(1))));
}

/// A hash tag whose keys are in `shard`: `{tag}:name` for any name.
fn tag_in(shard: u32) -> String {
    String::from_utf8(key_in(shard, "user").to_vec()).expect("text")
}

/// A batch of `client`'s session `seq` on keys of `shard`, each named `{tag}:name`.
fn batch(
    client: u64,
    seq: u64,
    shard: u32,
    conditions: &[(&str, u64)],
    writes: &[(WriteKind, &str, &str)],
) -> KvBatch {
    let tag = tag_in(shard);
    let key = |name: &str| Bytes::from(format!("{{{tag}}}:{name}"));
    KvBatch {
        client: ClientId(client),
        seq,
        shard: ShardId(shard),
        expects_session: false,
        conditions: conditions
            .iter()
            .map(|(name, version)| BatchCondition { key: key(name), version: Version(*version) })
            .collect(),
        writes: writes
            .iter()
            .map(|(kind, name, value)| BatchWrite {
                kind: *kind,
                key: key(name),
                value: Bytes::copy_from_slice(value.as_bytes()),
            })
            .collect(),
    }
}

impl Node {
    /// Applies `batch` to `group`; the effect it answers, and whether it was a duplicate.
    fn batch_effect(&mut self, group: GroupId, batch: KvBatch) -> (Option<WriteEffect>, bool) {
        match self.apply(group, batch) {
            Ok(Applied::Write(WriteOutcome { effect, duplicate, .. })) => (effect, duplicate),
            other => panic!("group {group}: a batch answered {other:?}"),
        }
    }

    /// The value and version of `{tag}:name` in `shard` at `group`.
    fn tagged(&self, group: GroupId, shard: u32, name: &str) -> Option<(Bytes, Version)> {
        let key = format!("{{{}}}:{name}", tag_in(shard));
        let get = KvGet { shard: ShardId(shard), key: Bytes::from(key) };
        let machine = &self.groups[&group].0;
        match StateMachine::<MemKv>::read(machine, &self.engine, &KvQuery::Get(get)) {
            Ok(KvReadOutput::Value(value)) => value.map(|stored| (stored.value, stored.version)),
            Ok(_) => panic!("a get answered something else"),
            Err(error) => panic!("group {group} refused a get: {error}"),
        }
    }
}

/// An atomic batch on keys of one hash tag: every write takes effect at one new revision when
/// every condition holds (a later write of a key sees an earlier one), nothing when one does
/// not (the answer names the first that failed and its key's version); a retry answers what the
/// first attempt did, at the shard's next owner too; a batch that changes nothing keeps the
/// revision; a batch without a write, too large, or with a key of another shard is refused
/// before the log; a replica that replays the log in one batch agrees.
#[test]
fn an_atomic_batch_applies_every_write_at_one_revision_or_none() {
    use WriteEffect::{BatchConditionFailed, Written};
    use WriteKind::{Append, Delete, Put};
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    let v = Version;
    assert_eq!(
        node.batch_effect(G1, batch(1, 1, 0, &[], &[(Put, "a", "1")])),
        (Some(Written(v(1))), false)
    );

    let both = batch(
        2,
        1,
        0,
        &[("a", 1), ("b", 0)],
        &[(Put, "a", "2"), (Put, "b", "x"), (Append, "b", "y"), (Delete, "c", "")],
    );
    assert_eq!(node.batch_effect(G1, both.clone()), (Some(Written(v(2))), false));
    assert_eq!(node.tagged(G1, 0, "a"), Some((Bytes::from("2"), v(2))));
    assert_eq!(node.tagged(G1, 0, "b"), Some((Bytes::from("xy"), v(2))));
    assert_eq!(node.tagged(G1, 0, "c"), None);
    assert_eq!(node.revision(G1, 0), 2);

    // The second condition fails: nothing is written, the answer names it.
    let stale = batch(2, 2, 0, &[("a", 2), ("b", 1)], &[(Delete, "a", ""), (Put, "c", "z")]);
    let failed = BatchConditionFailed { condition: 1, version: v(2) };
    assert_eq!(node.batch_effect(G1, stale.clone()), (Some(failed), false));
    assert_eq!(node.tagged(G1, 0, "a"), Some((Bytes::from("2"), v(2))));
    assert_eq!(node.tagged(G1, 0, "c"), None);
    assert_eq!(node.revision(G1, 0), 2);
    // Retries: the last answers what it did, an older one nothing it could mistake.
    assert_eq!(node.batch_effect(G1, stale.clone()), (Some(failed), true));
    assert_eq!(node.batch_effect(G1, both), (None, true));
    // Deleting keys without a value changes nothing, not even the revision.
    let nothing = batch(3, 1, 0, &[("c", 0)], &[(Delete, "c", ""), (Delete, "d", "")]);
    assert_eq!(node.batch_effect(G1, nothing), (Some(Written(v(2))), false));
    assert_eq!(node.revision(G1, 0), 2);

    // Refused before the log, nothing changed.
    let machine = &node.groups[&G1].0;
    let check = |command: KvBatch| StateMachine::<MemKv>::check_proposal(machine, &command.into());
    let invalid = |result| matches!(result, Err(Error::InvalidArgument { .. }));
    assert!(invalid(check(batch(4, 1, 0, &[("a", 2)], &[]))), "no write");
    let many: Vec<(WriteKind, &str, &str)> = vec![(Put, "k", "v"); BATCH_ITEMS_MAX + 1];
    assert!(invalid(check(batch(4, 1, 0, &[], &many))), "too many");
    assert!(check(batch(4, 1, 0, &[], &many[..BATCH_ITEMS_MAX])).is_ok(), "at the limit");
    let mut elsewhere = batch(4, 1, 0, &[], &[(Put, "a", "v")]);
    elsewhere.writes.push(BatchWrite {
        kind: Put,
        key: Bytes::from(format!("{{{}}}:a", tag_in(1))),
        value: Bytes::from("v"),
    });
    assert_eq!(
        check(elsewhere),
        Err(Error::WrongShard { named: ShardId(0), key_shard: ShardId(1), shard_count: SHARDS })
    );
    let zero = KvBatch { client: ClientId(0), ..batch(4, 1, 0, &[], &[(Put, "a", "v")]) };
    assert!(invalid(check(zero)), "client 0");

    // A replica that replays the log in one batch agrees.
    let replica = node.replayed(G1, 1);
    for name in ["a", "b", "c"] {
        assert_eq!(replica.tagged(G1, 0, name), node.tagged(G1, 0, name), "{name}");
    }

    // The shard moves to group 2: the retry of the failed batch answers as it did, and the
    // next batch takes the revision after the last.
    let c2 = config(2, [Some(G2), Some(G1), Some(G1), Some(G1)]);
    node.move_shard(&c1, &c2, 0, G1, G2);
    assert_eq!(node.batch_effect(G2, stale), (Some(failed), true));
    let next = batch(2, 3, 0, &[("a", 2), ("b", 2)], &[(Append, "a", "3")]);
    assert_eq!(node.batch_effect(G2, next), (Some(Written(v(3))), false));
    assert_eq!(node.tagged(G2, 0, "a"), Some((Bytes::from("23"), v(3))));
    assert_eq!(node.tagged(G2, 0, "b"), Some((Bytes::from("xy"), v(2))));
}

impl Node {
    /// Scans `group`'s replica as the node serves a scan: a view read at the state machine,
    /// then the page read from it.
    fn scan(&self, group: GroupId, scan: &ShardScan) -> mosaic_raftstore::Result<ScanPage> {
        let query = KvQuery::Shard { shard: scan.shard, shard_count: scan.shard_count };
        match StateMachine::<MemKv>::read(&self.groups[&group].0, &self.engine, &query)? {
            KvReadOutput::Shard(view) => Ok(scan.read(group, &view)?),
            other => panic!("a shard read answered {other:?}"),
        }
    }
}

fn shard_scan(shard: u32, limit: u32, limit_bytes: u64) -> ShardScan {
    let (start, end, shard_count) = (Bytes::new(), None, SHARDS);
    ShardScan {
        shard: ShardId(shard),
        shard_count,
        start,
        end,
        limit,
        limit_bytes,
        keys_only: false,
    }
}

/// Every page of a scan of `shard` at `group`, each starting after the last key of the one
/// before, as a client pages.
fn pages(node: &Node, group: GroupId, first: &ShardScan) -> Vec<ScanPage> {
    let mut scan = first.clone();
    let mut pages = Vec::new();
    loop {
        let page = node.scan(group, &scan).expect("served");
        let more = page.more;
        if let Some(last) = page.entries.last() {
            scan.start = Bytes::from([last.key.as_ref(), &[0]].concat());
        }
        pages.push(page);
        if !more {
            return pages;
        }
    }
}

#[test]
fn a_scan_reads_one_shards_keys_in_order_in_bounded_pages_and_follows_the_shard_when_it_moves() {
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    let names = ["e", "a", "d", "b", "c"];
    for (seq, name) in (1..).zip(names) {
        let put = conditional(WriteKind::Put, 1, seq, 2, name, &format!("value of {name}"), None);
        node.effect(G1, put);
    }
    node.effect(G1, conditional(WriteKind::Put, 1, 9, 1, "a", "another shard", None));
    let mut expected: Vec<(Bytes, Bytes, Version)> = names
        .iter()
        .map(|name| {
            let (value, version) = node.versioned(G1, 2, name).expect("written");
            (key_in(2, name), value, version)
        })
        .collect();
    expected.sort();
    let entries = |pages: &[ScanPage]| -> Vec<(Bytes, Bytes, Version)> {
        pages
            .iter()
            .flat_map(|page| &page.entries)
            .map(|entry| (entry.key.clone(), entry.value.clone(), entry.version))
            .collect()
    };

    // One page, or pages bounded by keys or by bytes (at least one key each): the same keys.
    let whole = node.scan(G1, &shard_scan(2, SCAN_KEYS_MAX, 1 << 20)).expect("served");
    assert!(!whole.more);
    assert_eq!(entries(&[whole]), expected);
    let by_two = pages(&node, G1, &shard_scan(2, 2, 1 << 20));
    assert_eq!(by_two.iter().map(|page| page.entries.len()).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(entries(&by_two), expected);
    let by_bytes = pages(&node, G1, &shard_scan(2, SCAN_KEYS_MAX, 1));
    assert_eq!(by_bytes.len(), 5, "one key a page");
    assert_eq!(entries(&by_bytes), expected);
    // A range, and keys without their values.
    let mut range = shard_scan(2, 100, 1 << 20);
    (range.start, range.end) = (expected[1].0.clone(), Some(expected[3].0.clone()));
    range.keys_only = true;
    let page = node.scan(G1, &range).expect("served");
    let keys: Vec<_> = page.entries.iter().map(|entry| entry.key.clone()).collect();
    assert_eq!(keys, [expected[1].0.clone(), expected[2].0.clone()]);
    assert!(page.entries.iter().all(|entry| entry.value.is_empty()));

    // Malformed scans are named.
    for (bad, says) in [
        (shard_scan(2, 0, 1), "1 to 10000 keys"),
        (shard_scan(2, SCAN_KEYS_MAX + 1, 1), "1 to 10000 keys"),
        (shard_scan(2, 1, 0), "byte limit"),
        (ShardScan { end: Some(Bytes::new()), ..shard_scan(2, 1, 1) }, "end after it starts"),
    ] {
        let refused = scan_refusal(&bad).expect("refused");
        assert!(refused.contains(says), "{bad:?}: {refused}");
    }
    assert_eq!(scan_refusal(&range), None);
    // A client routing by another shard count would read only some shards: refused.
    let miscounted = ShardScan { shard_count: SHARDS * 2, ..shard_scan(2, 2, 1 << 20) };
    assert!(
        matches!(node.scan(G1, &miscounted), Err(Error::WrongShard { shard_count: SHARDS, .. })),
        "a scan by another shard count"
    );

    // Shard 2 moves to group 2: while it is on its way, neither group serves a scan of it.
    let c2 = config(2, [Some(G1), Some(G1), Some(G2), Some(G1)]);
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    }
    let scan = shard_scan(2, 2, 1 << 20);
    assert!(matches!(node.scan(G1, &scan), Err(Error::WrongGroup { config_num: 2 })));
    assert!(matches!(node.scan(G2, &scan), Err(Error::ShardNotReady)));
    assert!(node.scan(G1, &shard_scan(1, 2, 1 << 20)).is_ok(), "group 1 still serves shard 1");
    // Pulled in chunks of one record, the shard reads the same at its new owner.
    assert!(node.pull(2, 2, G1, G2, 1) > 3);
    assert_eq!(entries(&pages(&node, G2, &scan)), expected);
    assert!(matches!(node.scan(G1, &scan), Err(Error::WrongGroup { config_num: 2 })));
}

impl Node {
    /// Registers a watcher of `range` in `shard` at `group` from `from`, as the node does: a
    /// read of the state machine.
    fn watch(
        &self,
        group: GroupId,
        shard: u32,
        from: Option<u64>,
        range: WatchRange,
    ) -> mosaic_raftstore::Result<WatchReceiver> {
        let watch = ShardWatch { shard: ShardId(shard), shard_count: SHARDS, from, range };
        let query = KvQuery::Watch(watch);
        match StateMachine::<MemKv>::read(&self.groups[&group].0, &self.engine, &query)? {
            KvReadOutput::Watch(watch) => Ok(watch),
            other => panic!("a watch answered {other:?}"),
        }
    }

    /// A watcher of every key of `shard` at `group` from `from`, registered.
    fn watch_all(&self, group: GroupId, shard: u32, from: Option<u64>) -> WatchReceiver {
        let range = WatchRange { start: Bytes::new(), end: None };
        self.watch(group, shard, from, range).expect("served and registered")
    }
}

/// A change as a watcher saw it: revision, key, value (`None`: deleted); or its stream's end.
type Watched = Result<(u64, Bytes, Option<Bytes>), WatchEnd>;

/// Every event queued for `watcher` now.
fn watched(watcher: &mut WatchReceiver) -> Vec<Watched> {
    std::iter::from_fn(|| watcher.try_recv().ok())
        .flat_map(|event| match event {
            WatchEvent::Changes(changes) => changes
                .into_iter()
                .map(|change| Ok((change.revision, change.key, change.value)))
                .collect(),
            WatchEvent::End(end) => vec![Err(end)],
        })
        .collect()
}

/// A watch sees every change of its shard's keys in its range once, in revision order (a
/// batch's changes at one revision), nothing of a write that changed nothing or of another
/// shard; a watcher resuming from a revision gets the changes kept from there, and a replica
/// that applied the log in one batch keeps the same. When the shard moves, the old owner's
/// watchers end at its last revision there, and the new owner, once it serves the shard, takes
/// watchers from the next revision on (an older one is compacted there). A replica whose state
/// is replaced ends its watchers as reset.
#[test]
fn a_watch_sees_each_change_once_in_order_and_follows_the_shard_to_its_new_owner() {
    use WriteKind::{Delete, Put};
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    let mut everything = node.watch_all(G1, 2, None);
    let tagged = |name: &str| Bytes::from(format!("{{{}}}:{name}", tag_in(2)));
    let mut only_b =
        node.watch(G1, 2, None, WatchRange::prefix(tagged("b"))).expect("served and registered");
    let a = key_in(2, "a");
    node.effect(G1, conditional(Put, 1, 1, 2, "a", "1", None));
    node.batch_effect(G1, batch(2, 1, 2, &[], &[(Put, "b", "x"), (Put, "c", "y")]));
    node.effect(G1, conditional(Delete, 1, 2, 2, "a", "", None));
    node.effect(G1, conditional(Delete, 1, 3, 2, "a", "", None));
    node.effect(G1, conditional(Put, 1, 4, 1, "a", "elsewhere", None));
    let (x, y) = (Some(Bytes::from("x")), Some(Bytes::from("y")));
    let history = vec![
        Ok((1, a.clone(), Some(Bytes::from("1")))),
        Ok((2, tagged("b"), x.clone())),
        Ok((2, tagged("c"), y)),
        Ok((3, a.clone(), None)),
    ];
    assert_eq!(watched(&mut everything), history);
    assert_eq!(watched(&mut only_b), [Ok((2, tagged("b"), x))]);
    assert_eq!(watched(&mut node.watch_all(G1, 2, Some(2))), history[1..]);
    let replica = node.replayed(G1, 0);
    assert_eq!(watched(&mut replica.watch_all(G1, 2, Some(1))), history);

    // Shard 2 moves to group 2: the old owner's watchers end at revision 3, its last there.
    let c2 = config(2, [Some(G1), Some(G1), Some(G2), Some(G1)]);
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    }
    assert_eq!(watched(&mut everything), [Err(WatchEnd::Moved { revision: 3 })]);
    assert_eq!(watched(&mut only_b), [Err(WatchEnd::Moved { revision: 3 })]);
    let range = WatchRange { start: Bytes::new(), end: None };
    assert!(matches!(node.watch(G1, 2, Some(4), range.clone()), Err(Error::WrongGroup { .. })));
    assert!(matches!(node.watch(G2, 2, Some(4), range.clone()), Err(Error::ShardNotReady)));
    // The new owner goes on from revision 4; the changes before are not kept there.
    node.pull(2, 2, G1, G2, 1 << 20);
    let mut resumed = node.watch_all(G2, 2, Some(4));
    assert_eq!(
        node.watch(G2, 2, Some(3), range.clone()).unwrap_err(),
        Error::Compacted { oldest_revision: 4 }
    );
    node.effect(G2, conditional(Put, 1, 5, 2, "a", "2", None));
    assert_eq!(watched(&mut resumed), [Ok((4, a, Some(Bytes::from("2"))))]);
    // A client routing by another shard count is refused.
    let watch = ShardWatch { shard: ShardId(2), shard_count: SHARDS * 2, from: None, range };
    let query = KvQuery::Watch(watch);
    let refused = StateMachine::<MemKv>::read(&node.groups[&G2].0, &node.engine, &query);
    assert!(matches!(refused, Err(Error::WrongShard { .. })), "{refused:?}");

    // The replica's state is replaced (a snapshot installed): its watchers end as reset.
    let reloaded = node.load(G2);
    node.groups.get_mut(&G2).expect("hosted").0 = reloaded;
    assert_eq!(watched(&mut resumed), [Err(WatchEnd::Reset)]);
}

/// Found in review: a shard given to no group ended its watchers as moved, and a client
/// resumed at the group given it later, where it started over empty with other revisions,
/// and missed them. The watchers of a shard given to no group end as unowned.
#[test]
fn the_watchers_of_a_shard_given_to_no_group_end_as_unowned() {
    let mut node = Node::new(true);
    let (c0, c1) = (Configuration::initial(SHARDS), config(1, [Some(G1); 4]));
    for group in [G1, G2] {
        assert_eq!(node.migrate(group, reconfigure(&c0, &c1)), MigrationOutcome::Done);
    }
    let mut watcher = node.watch_all(G1, 2, None);
    node.effect(G1, conditional(WriteKind::Put, 1, 1, 2, "a", "1", None));
    let c2 = config(2, [Some(G1), Some(G1), None, Some(G1)]);
    assert_eq!(node.migrate(G1, reconfigure(&c1, &c2)), MigrationOutcome::Done);
    let ends: Vec<Watched> = watched(&mut watcher).into_iter().filter(Result::is_err).collect();
    assert_eq!(ends, [Err(WatchEnd::Unowned { revision: 1 })]);
}
