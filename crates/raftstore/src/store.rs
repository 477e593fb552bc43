//! [`Store`]: every replica this node hosts, driven by one loop: handle inbox messages, then
//! run Ready passes in which all busy groups persist together (group commit).
//!
//! One Ready pass (DESIGN.md "A write, end to end"; the order is the Raft core's contract):
//! 1. take a `Ready` from every group with work;
//! 2. send their `messages` (leaders' appends and heartbeats may go before the leader's own
//!    write), batched per destination node;
//! 3. persist every group's entries and hard state in ONE write batch, synced if any group
//!    needs it: one fsync, however many groups;
//! 4. send the `persisted_messages` (votes, acknowledgements), batched per node;
//! 5. apply every group's committed entries into ONE batch (data, sessions and applied index
//!    together), unsynced unless it changes a membership, write it, then answer the waiting
//!    proposals and reads;
//! 6. `advance` each group.
//!
//! The store has no clock, no threads and no sockets: ticks arrive as messages, and the
//! network is a [`Transport`]. A runner (a thread in production, the simulator in tests)
//! feeds it with [`Store::handle`] and calls [`Store::process`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mosaic_engine::{Engine, GroupId, KvEngine, WriteBatch, WriteOptions};
use mosaic_raft::{
    ConfState, HardState, LogIndex, Message, MessageBody, NodeId, RawNode, Role, SnapshotMetadata,
};

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::leader_balance::Handover;
use crate::metrics::StoreMetrics;
use crate::msg::{Callback, Consistency, LeaderRead, LeaderTerm, ShownOut, StoreMsg, Transport};
use crate::nodes_heard::NodesHeard;
use crate::peer::{Answers, Peer, PendingRead};
use crate::snapshot::{SnapshotReader, decode_chunk};
use crate::span::{self, GroupSpan};
use crate::state_machine::StateMachine;
use crate::storage::{
    GroupStorage, bootstrap_batch, initial_conf_state, mark_destroyed, was_destroyed,
};

/// Counters of what the store has done, for tests and benchmarks: read from its
/// [`StoreMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Ready passes that persisted or applied something.
    pub ready_passes: u64,
    /// `Ready`s handled (one per group per pass).
    pub readies: u64,
    /// Synced engine writes (one per pass at most: group commit).
    pub synced_writes: u64,
    /// Unsynced engine writes (apply batches, and persists that needed no sync).
    pub unsynced_writes: u64,
    /// Raft messages handed to the transport.
    pub messages_sent: u64,
    /// Raft messages dropped on arrival (unknown group, or addressed to another node).
    pub messages_dropped: u64,
    /// Snapshots handed to the transport.
    pub snapshots_sent: u64,
    /// Snapshots installed.
    pub snapshots_installed: u64,
    /// Log compactions.
    pub log_compactions: u64,
    /// Leaderships handed to a group's preferred voter (transfers started).
    pub leader_transfers: u64,
    /// Times a leader here quiesced its idle group.
    pub quiescences: u64,
}

/// Every replica on one node. See the module documentation.
pub struct Store<K: KvEngine, SM: StateMachine<K>, T: Transport<K>> {
    node: NodeId,
    engine: Arc<Engine<K>>,
    config: StoreConfig,
    transport: T,
    clock: Box<dyn Clock>,
    peers: BTreeMap<GroupId, Peer<K, SM>>,
    /// Groups that may have a `Ready`.
    dirty: BTreeSet<GroupId>,
    /// When each node was last heard (quiescent followers wake when their leader's is silent).
    nodes_heard: NodesHeard,
    metrics: StoreMetrics,
    /// The `node` span (see `crate::span`), the parent of every group span.
    span: tracing::Span,
}

impl<K: KvEngine, SM: StateMachine<K>, T: Transport<K>> Store<K, SM, T> {
    /// Opens the store of `node` over `engine`, recovering every group the engine holds: each
    /// restarts from its persisted log, hard state, membership and applied index. Lease reads
    /// and the durations in `metrics` are timed with `clock`.
    ///
    /// # Errors
    /// An invalid config; engine errors; a group whose Raft state the core refuses.
    pub fn open(
        node: NodeId,
        engine: Arc<Engine<K>>,
        config: StoreConfig,
        transport: T,
        clock: Box<dyn Clock>,
        metrics: StoreMetrics,
    ) -> Result<Self> {
        config.validate()?;
        if node.0 == 0 {
            return Err(Error::InvalidArgument { reason: "node id 0 is not valid".into() });
        }
        let mut store = Self {
            node,
            engine,
            config,
            transport,
            clock,
            peers: BTreeMap::new(),
            dirty: BTreeSet::new(),
            nodes_heard: NodesHeard::default(),
            metrics,
            span: span::node(node),
        };
        // The runner enters the span once the store is open; its recovery is logged in it too.
        let _node = store.span.clone().entered();
        for group in store.engine.group_ids()? {
            let peer = store.load_peer(group)?;
            tracing::info!(group_id = %group, applied_index = %peer.applied(), "recovered group");
            store.peers.insert(group, peer);
            store.dirty.insert(group);
        }
        store.count_groups();
        Ok(store)
    }

    fn load_peer(&self, group: GroupId) -> Result<Peer<K, SM>> {
        let term = self.engine.hard_state(group)?.term;
        let mut span = GroupSpan::new(&self.span, group, term);
        let _group = span.enter(term);
        let applied = self.engine.applied_index(group)?;
        let mut raft_config = self.config.raft_config(self.node, group);
        raft_config.applied = applied;
        let storage = GroupStorage::new(group, Arc::clone(&self.engine));
        let raft = RawNode::new(raft_config, storage).map_err(Error::Raft)?;
        let state_machine = SM::load(group, &self.engine)?;
        Ok(Peer::new(group, raft, state_machine, applied, self.config.election_ticks, span))
    }

    /// This node.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The store's `node` span (`node_id`). A runner enters it around its loop (once, or
    /// around every call of [`Store::handle`] and [`Store::process`] when one thread runs
    /// several stores), so that every line logged while the store works names its node: the
    /// store does not enter it itself, which would cost every call.
    #[must_use]
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The engine beneath every group.
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine<K>> {
        &self.engine
    }

    /// The store's metrics (shared handles: a server registers them to serve them).
    #[must_use]
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// What the store has done so far.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        let metrics = &self.metrics;
        StoreStats {
            ready_passes: metrics.ready_passes.get(),
            readies: metrics.readies.get(),
            synced_writes: metrics.synced_writes.get(),
            unsynced_writes: metrics.unsynced_writes.get(),
            messages_sent: metrics.messages_sent.get(),
            messages_dropped: metrics.messages_dropped.get(),
            snapshots_sent: metrics.snapshots_sent.get(),
            snapshots_installed: metrics.snapshots_installed.get(),
            log_compactions: metrics.log_compactions.get(),
            leader_transfers: metrics.leader_transfers.get(),
            quiescences: metrics.quiescences.get(),
        }
    }

    /// Sets the gauges of groups hosted and led here.
    fn count_groups(&self) {
        let leading = self.peers.values().filter(|peer| peer.raft.role() == Role::Leader).count();
        self.metrics.groups.set(gauge_value(self.peers.len()));
        self.metrics.groups_leading.set(gauge_value(leading));
    }

    /// The groups hosted here, in id order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.peers.keys().copied()
    }

    /// This node's replica of `group`, if hosted.
    #[must_use]
    pub fn peer(&self, group: GroupId) -> Option<&Peer<K, SM>> {
        self.peers.get(&group)
    }

    /// The transport (tests inspect what was sent).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Returns true if some group may have work for [`Store::process`].
    #[must_use]
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Handles one inbox message. Requests are answered through their callbacks, now or later.
    ///
    /// # Errors
    /// Engine errors (creating a group); the store must stop.
    pub fn handle(&mut self, msg: StoreMsg<K, SM>) -> Result<()> {
        match msg {
            StoreMsg::Raft { from, incarnation, messages } => {
                if self.nodes_heard.heard_from_incarnation(from, incarnation) {
                    self.wake_groups_led_from(from);
                }
                self.step_messages(from, messages);
            }
            StoreMsg::Propose { group, proposal, callback } => match self.peers.get_mut(&group) {
                Some(peer) => {
                    peer.propose(&proposal, callback);
                    self.metrics.proposals.inc();
                    self.dirty.insert(group);
                }
                None => callback(Err(Error::GroupNotFound { group })),
            },
            StoreMsg::Read { group, query, consistency, callback } => {
                self.read(group, query, consistency, callback);
            }
            StoreMsg::ReadLeaders { query, callback } => {
                let answers = self
                    .peers
                    .iter()
                    .filter(|(_, peer)| peer.raft.role() == Role::Leader)
                    .map(|(group, peer)| {
                        let read = LeaderRead {
                            conf_state: peer.raft.conf_state().clone(),
                            voters_applied_membership: peer.raft.voters_applied_membership(),
                            output: peer.state_machine.read(&self.engine, &query),
                        };
                        (*group, read)
                    })
                    .collect();
                callback(Ok(answers));
            }
            StoreMsg::Snapshot { from, group, message, chunks } => {
                self.nodes_heard.heard(from);
                self.receive_snapshot(from, group, message, &chunks);
            }
            StoreMsg::SnapshotStatus { group, to, delivered } => {
                if let Some(peer) = self.peers.get_mut(&group) {
                    peer.raft.report_snapshot(to, delivered);
                    self.dirty.insert(group);
                }
            }
            StoreMsg::Tick => {
                if self.nodes_heard.tick(self.config.heartbeat_ticks) {
                    self.send_node_heartbeats();
                }
                let now = self.clock.now();
                let mut quiescent = 0;
                let election_ticks = self.config.election_ticks;
                for (group, peer) in &mut self.peers {
                    let silent = |node| self.nodes_heard.silent_for(node, election_ticks);
                    if peer.tick_quiescent(silent) {
                        quiescent += 1;
                        continue;
                    }
                    let _group = peer.enter_span();
                    peer.tick(now);
                    if let Some(to) = peer.balance_leadership(self.config.leader_balance_ticks) {
                        tracing::info!(group_id = %group, to = %to,
                            "handing leadership to the group's preferred voter");
                        self.metrics.leader_transfers.inc();
                    }
                    if peer.quiesce_if_idle(&self.config) {
                        tracing::debug!(group_id = %group, "group quiesced");
                        self.metrics.quiescences.inc();
                    }
                    self.dirty.insert(*group);
                }
                self.metrics.groups_quiescent.set(gauge_value(quiescent));
            }
            StoreMsg::CreateGroup { group, members, callback } => {
                let result = self.create_group(group, &members);
                return answer_fatal(result, callback);
            }
            StoreMsg::JoinGroup { group, leader, callback } => {
                let result = self.join_group(group, leader);
                return answer_fatal(result, callback);
            }
            StoreMsg::DestroyGroup { group, shown_out, callback } => {
                let result = self.destroy_group(group, shown_out);
                return answer_fatal(result, callback);
            }
            StoreMsg::ChangeMembership { group, change, unchanged_since, callback } => {
                match self.peers.get_mut(&group) {
                    Some(peer) => {
                        peer.propose_conf_change(change, unchanged_since, callback);
                        self.dirty.insert(group);
                    }
                    None => callback(Err(Error::GroupNotFound { group })),
                }
            }
            StoreMsg::TransferLeader { group, to, callback } => match self.peers.get_mut(&group) {
                Some(peer) => {
                    let _group = peer.enter_span();
                    let result = peer.transfer_leadership(to);
                    if let Ok((Handover::Asked { to }, true)) = &result {
                        tracing::info!(group_id = %group, to = %to,
                            "handing leadership over, as asked");
                        self.metrics.leader_transfers.inc();
                        self.dirty.insert(group);
                    }
                    callback(result.map(|(handover, _)| handover));
                }
                None => callback(Err(Error::GroupNotFound { group })),
            },
            StoreMsg::Unreachable { node } => {
                // The core ignores a node that is not a member of the group.
                for peer in self.peers.values_mut() {
                    peer.raft.report_unreachable(node);
                }
            }
            StoreMsg::Status { group, confirm, callback } => match self.peers.get_mut(&group) {
                Some(peer) if confirm => {
                    peer.confirmed_status(callback);
                    self.dirty.insert(group);
                }
                Some(peer) => callback(Ok(peer.status())),
                None => callback(Err(Error::GroupNotFound { group })),
            },
        }
        Ok(())
    }

    fn read(
        &mut self,
        group: GroupId,
        query: SM::Query,
        consistency: Consistency,
        callback: Callback<crate::msg::ReadOutput<SM::ReadOutput>>,
    ) {
        let Some(peer) = self.peers.get_mut(&group) else {
            callback(Err(Error::GroupNotFound { group }));
            return;
        };
        let read = PendingRead::Query { query, callback, leading: None };
        match consistency {
            Consistency::Linearizable => peer.read_index(read),
            Consistency::Lease => peer.lease_read(&self.engine, read, self.clock.now()),
            Consistency::Stale => peer.stale_read(&self.engine, read),
        }
        self.dirty.insert(group);
    }

    fn step_messages(&mut self, from: NodeId, messages: Vec<(GroupId, Message)>) {
        for (group, message) in messages {
            if message.to != self.node || message.from != from {
                tracing::warn!(group_id = %group, peer = %from,
                    to_node = %message.to, from_node = %message.from,
                    "dropping a misaddressed raft message");
                self.metrics.messages_dropped.inc();
                continue;
            }
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                tracing::warn!(group_id = %group, peer = %from,
                    "dropping a snapshot message that came without its state");
                self.metrics.messages_dropped.inc();
                continue;
            }
            let Some(peer) = self.peers.get_mut(&group) else {
                tracing::debug!(group_id = %group, peer = %from,
                    "message for a group not hosted here");
                self.metrics.messages_dropped.inc();
                continue;
            };
            let _group = peer.enter_span();
            if let Err(error) = peer.raft.step(message) {
                tracing::warn!(group_id = %group, peer = %from, %error, "raft refused a message");
            }
            self.dirty.insert(group);
        }
    }

    /// Steps a snapshot from `from` into the group's Raft core, keeping its state for the
    /// install (which happens if Raft accepts it, in the next Ready pass).
    fn receive_snapshot(
        &mut self,
        from: NodeId,
        group: GroupId,
        message: Message,
        chunks: &[bytes::Bytes],
    ) {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            tracing::warn!(group_id = %group, peer = %from,
                "a snapshot stream without a snapshot message");
            return;
        };
        let index = snapshot.metadata.index;
        let total_bytes: u64 = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        if total_bytes > self.config.snapshot_bytes_max {
            tracing::error!(group_id = %group, peer = %from, %index,
                total_bytes, snapshot_bytes_max = self.config.snapshot_bytes_max,
                "refusing a snapshot over snapshot_bytes_max");
            return;
        }
        let mut records = Vec::new();
        for chunk in chunks {
            match decode_chunk(chunk) {
                Ok(decoded) => records.extend(decoded),
                Err(error) => {
                    tracing::warn!(group_id = %group, peer = %from, %index,
                        %error, "dropping a malformed snapshot");
                    return;
                }
            }
        }
        if message.to != self.node || message.from != from {
            tracing::warn!(group_id = %group, peer = %from,
                to_node = %message.to, from_node = %message.from,
                "dropping a misaddressed snapshot");
            return;
        }
        let Some(peer) = self.peers.get_mut(&group) else {
            tracing::debug!(group_id = %group, peer = %from,
                "snapshot for a group not hosted here");
            return;
        };
        let _group = peer.enter_span();
        peer.receive_snapshot(message, records);
        self.dirty.insert(group);
    }

    /// Creates this node's replica of a new group (see [`StoreMsg::CreateGroup`]).
    fn create_group(&mut self, group: GroupId, members: &[NodeId]) -> Result<()> {
        let conf_state = initial_conf_state(members);
        if conf_state.voters.len() != members.len() || !conf_state.contains(self.node) {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "group {group}: members {members:?} must be distinct and include node {}",
                    self.node
                ),
            });
        }
        if members.iter().any(|member| member.0 == 0) {
            return Err(Error::InvalidArgument { reason: "node id 0 is not valid".into() });
        }
        if group == GroupId::RESERVED {
            return Err(Error::InvalidArgument { reason: format!("group id {group} is reserved") });
        }
        if let Some(peer) = self.peers.get(&group) {
            let existing = peer.raft.status().conf_state;
            if existing.voters == conf_state.voters && existing.learners.is_empty() {
                return Ok(());
            }
            return Err(Error::InvalidArgument {
                reason: format!(
                    "group {group} exists here with voters {:?} and learners {:?}",
                    existing.voters, existing.learners
                ),
            });
        }
        if was_destroyed(&self.engine, group)? {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "group {group} had a replica on this node, destroyed since: it may have \
                     voted and acknowledged entries, so it is never created again with the \
                     group's first members; the node joins through the group's leader \
                     (JoinGroup, then added as a learner)"
                ),
            });
        }
        let mut batch = WriteBatch::new();
        bootstrap_batch(&mut batch, group, conf_state);
        self.add_peer(group, &batch)?;
        tracing::info!(group_id = %group, member_count = members.len(),
            "created group");
        Ok(())
    }

    /// Creates an empty replica with no membership (see [`StoreMsg::JoinGroup`]).
    fn join_group(&mut self, group: GroupId, leader: Option<LeaderTerm>) -> Result<()> {
        if group == GroupId::RESERVED {
            return Err(Error::InvalidArgument { reason: format!("group id {group} is reserved") });
        }
        if self.peers.contains_key(&group) {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        batch.set_conf_state(group, ConfState::default());
        if let Some(LeaderTerm { leader, term }) = leader {
            let hard_state = HardState { term, vote: Some(leader), commit: LogIndex(0) };
            batch.set_hard_state(group, hard_state);
        }
        self.add_peer(group, &batch)?;
        tracing::info!(
            group_id = %group,
            leader = leader.map(|known| tracing::field::display(known.leader)),
            term = leader.map(|known| tracing::field::display(known.term)),
            "joined group; waiting for a snapshot from its leader"
        );
        Ok(())
    }

    /// Removes this node's replica of `group` (see [`StoreMsg::DestroyGroup`]).
    fn destroy_group(&mut self, group: GroupId, shown_out: Option<ShownOut>) -> Result<()> {
        let Some(peer) = self.peers.get(&group) else {
            return Ok(());
        };
        let (last_index, last_term) = peer.raft.last_entry();
        // Compared as Raft compares logs: a leader of a later term may have a shorter log
        // than the one that showed the node out (found in review: a leader of term 8 re-added
        // the node at index 96 after the leader of term 7 had shown it out at 100).
        if let Some(out) = shown_out
            && (last_term, last_index) > (out.term, out.last_index)
        {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "group {group}: not destroyed: this replica has entries up to {last_index} \
                     of term {last_term}, past index {} where the leader of term {} showed this \
                     node out of the group: it was added back since",
                    out.last_index, out.term
                ),
            });
        }
        let mut peer = self.peers.remove(&group).expect("hosted");
        self.dirty.remove(&group);
        peer.fail_all(&Error::GroupNotFound { group });
        let mut batch = WriteBatch::new();
        batch.remove_group(group);
        mark_destroyed(&mut batch, group);
        self.engine.write(&batch, WriteOptions { sync: true })?;
        self.metrics.synced_writes.inc();
        self.count_groups();
        tracing::info!(group_id = %group, "destroyed group");
        Ok(())
    }

    /// Persists a new replica's initial state (`batch`) and starts it.
    fn add_peer(&mut self, group: GroupId, batch: &WriteBatch) -> Result<()> {
        self.engine.write(batch, WriteOptions { sync: true })?;
        self.metrics.synced_writes.inc();
        let peer = self.load_peer(group)?;
        self.peers.insert(group, peer);
        self.dirty.insert(group);
        self.count_groups();
        Ok(())
    }

    /// Runs Ready passes over the groups with work (see the module documentation), at most
    /// `ready_passes_max` of them.
    ///
    /// # Errors
    /// Engine errors: the store must stop (a node that cannot persist must not go on).
    pub fn process(&mut self) -> Result<()> {
        for _ in 0..self.config.ready_passes_max {
            if !self.ready_pass()? {
                break;
            }
        }
        Ok(())
    }

    /// One Ready pass; returns false when no group had a `Ready`.
    fn ready_pass(&mut self) -> Result<bool> {
        let mut readies = Vec::new();
        for group in std::mem::take(&mut self.dirty) {
            if let Some(peer) = self.peers.get_mut(&group)
                && peer.raft.has_ready()
            {
                let _group = peer.enter_span();
                readies.push((group, peer.raft.ready()));
            }
        }
        if readies.is_empty() {
            return Ok(false);
        }
        let started = self.clock.now();
        self.metrics.ready_passes.inc();
        self.metrics.readies.inc_by(readies.len() as u64);

        // 1-2. Messages that may leave before the write; snapshots on their own streams.
        let mut outbox: BTreeMap<NodeId, Vec<(GroupId, Message)>> = BTreeMap::new();
        let mut undelivered_snapshots = Vec::new();
        for (group, ready) in &mut readies {
            for message in std::mem::take(&mut ready.messages) {
                if let MessageBody::InstallSnapshot { snapshot } = &message.body {
                    let index = snapshot.metadata.index;
                    let peer =
                        self.peers.get_mut(group).expect("a ready comes from a hosted group");
                    let _group = peer.enter_span();
                    if !self.send_snapshot(*group, index, message.clone())? {
                        undelivered_snapshots.push((*group, message.to));
                    }
                    continue;
                }
                outbox.entry(message.to).or_default().push((*group, message));
            }
        }
        self.flush(&mut outbox);

        // 3. One write for every group's log and hard state.
        let mut batch = WriteBatch::new();
        let mut sync = false;
        let mut persisted_groups = 0_u64;
        for (group, ready) in &mut readies {
            persisted_groups += u64::from(
                ready.snapshot.is_some() || !ready.entries.is_empty() || ready.hard_state.is_some(),
            );
            if let Some(snapshot) = &ready.snapshot {
                let peer = self.peers.get_mut(group).expect("a ready comes from a hosted group");
                let _group = peer.enter_span();
                peer.install_snapshot(&mut batch, snapshot);
            }
            if !ready.entries.is_empty() {
                batch.append(*group, std::mem::take(&mut ready.entries));
            }
            if let Some(hard_state) = ready.hard_state {
                batch.set_hard_state(*group, hard_state);
            }
            sync |= ready.must_sync();
        }
        self.write(&batch, sync)?;
        if sync && !batch.is_empty() {
            #[expect(clippy::cast_precision_loss, reason = "a count of groups")]
            self.metrics.sync_groups.observe(persisted_groups as f64);
        }
        for (group, ready) in &readies {
            if let Some(snapshot) = &ready.snapshot {
                let peer = self.peers.get_mut(group).expect("hosted");
                let _group = peer.enter_span();
                peer.snapshot_installed(&self.engine, snapshot.metadata.index)?;
                self.metrics.snapshots_installed.inc();
            }
        }

        // 4. Acknowledgements and votes, now that they are durable.
        for (group, ready) in &mut readies {
            for message in std::mem::take(&mut ready.persisted_messages) {
                outbox.entry(message.to).or_default().push((*group, message));
            }
        }
        self.flush(&mut outbox);

        // 5. Apply every group's committed entries in one batch, then answer. The batch is
        // synced when it changes a membership: what a replica shows of its membership (a
        // leader's status, on which a removed node destroys its replica) must survive a crash,
        // or the voters left may count the removed replica again after a restart and wait for
        // ever for its vote (the simulator found a group of four left leaderless that way).
        let mut apply_batch = WriteBatch::new();
        let mut answers = Answers::new();
        let mut membership_changed = false;
        for (group, ready) in &mut readies {
            let peer = self.peers.get_mut(group).expect("a ready comes from a hosted group");
            let _group = peer.enter_span();
            let entries = std::mem::take(&mut ready.committed_entries);
            self.metrics.applied_entries.inc_by(entries.len() as u64);
            peer.applied_log.applied(&entries, &self.config);
            membership_changed |=
                peer.apply(&self.engine, &mut apply_batch, entries, &mut answers)?;
            if self.maybe_compact_log(*group, &mut apply_batch)? {
                self.metrics.log_compactions.inc();
            }
        }
        self.write(&apply_batch, membership_changed)?;
        for (group, _) in &readies {
            self.peers.get_mut(group).expect("hosted").state_machine.batch_written();
        }
        answers.send();

        // 6. Reads, role changes, advance.
        let mut roles_changed = false;
        for (group, ready) in readies {
            let peer = self.peers.get_mut(&group).expect("hosted");
            let _group = peer.enter_span();
            if let Some(hard_state) = ready.hard_state
                && hard_state.term != peer.observed_term
            {
                peer.observed_term = hard_state.term;
                self.metrics.term_changes.inc();
                // A replica votes for itself in a new term only when it campaigns (a group of
                // one, or a candidate again after a split vote, shows no role change).
                if hard_state.vote == Some(self.node) {
                    self.metrics.elections.inc();
                }
            }
            if let Some(soft_state) = ready.soft_state {
                tracing::debug!(group_id = %group, role = ?soft_state.role,
                    leader = soft_state.leader.map(tracing::field::display),
                    term = %peer.raft.term(), "role changed");
                if soft_state.role == Role::Leader {
                    self.metrics.leaderships.inc();
                }
                roles_changed = true;
                peer.on_role_change(soft_state.role);
            }
            peer.on_read_states(&self.engine, ready.read_states, ready.dropped_reads);
            peer.serve_applied_reads(&self.engine);
            peer.raft.advance();
            self.dirty.insert(group);
        }
        for (group, to) in undelivered_snapshots {
            if let Some(peer) = self.peers.get_mut(&group) {
                peer.raft.report_snapshot(to, false);
            }
        }
        if roles_changed {
            self.count_groups();
        }
        self.metrics
            .ready_pass_seconds
            .observe(self.clock.now().saturating_sub(started).as_secs_f64());
        Ok(true)
    }

    /// Hands a snapshot of `group` to the transport, read from an engine snapshot taken now.
    /// Returns false (and sends nothing) when the engine's applied index moved past `index`
    /// since Raft made the message; Raft then asks again.
    fn send_snapshot(
        &mut self,
        group: GroupId,
        index: mosaic_raft::LogIndex,
        message: Message,
    ) -> Result<bool> {
        let reader = SnapshotReader::new(group, self.engine.snapshot());
        let applied = reader.applied_index()?;
        if applied != index {
            tracing::debug!(group_id = %group, peer = %message.to, %index, applied_index = %applied,
                "snapshot went stale before sending");
            return Ok(false);
        }
        tracing::info!(group_id = %group, peer = %message.to, %index, "sending snapshot");
        self.metrics.snapshots_sent.inc();
        self.transport.send_snapshot(message.to, group, message, reader);
        Ok(true)
    }

    /// Adds a log compaction of `group` to `batch` when its log holds more applied entries, or
    /// more bytes of them, than the store's settings allow (`crate::log_compaction`). Returns
    /// true when it did.
    fn maybe_compact_log(&mut self, group: GroupId, batch: &mut WriteBatch) -> Result<bool> {
        let peer = self.peers.get_mut(&group).expect("hosted");
        let applied = peer.applied();
        let compacted = LogIndex(self.engine.first_index(group)?.0 - 1);
        let index = if compacted.0 == 0 && applied.0 > 0 {
            // A log that was never compacted starts at index 1 (a group created before
            // bootstrap snapshots, see `bootstrap_batch`): its initial membership is in no
            // entry, so index 1 is compacted at once and a replica that needs it gets a
            // snapshot.
            crate::storage::BOOTSTRAP_INDEX
        } else if let Some(index) =
            peer.applied_log.compaction_index(compacted, applied, &self.config)
        {
            index
        } else {
            return Ok(false);
        };
        let term = self.engine.term(group, index)?;
        // The membership as of the applied index; the compaction point's own membership is
        // not needed (a snapshot always carries the one of the applied index).
        let conf_state = peer.raft.conf_state().clone();
        batch.compact_log(group, SnapshotMetadata { index, term, conf_state });
        peer.applied_log.compacted(index);
        tracing::debug!(group_id = %group, %index, "compacting log");
        Ok(true)
    }

    fn write(&mut self, batch: &WriteBatch, sync: bool) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = self.clock.now();
        self.engine.write(batch, WriteOptions { sync })?;
        if sync {
            self.metrics.synced_writes.inc();
            self.metrics
                .sync_seconds
                .observe(self.clock.now().saturating_sub(started).as_secs_f64());
        } else {
            self.metrics.unsynced_writes.inc();
        }
        Ok(())
    }

    /// Node `node` restarted: its process may no longer lead the quiescent groups it led here
    /// (it lost its disk, say, and hosts them no more), so their replicas wake, and campaign
    /// unless it shows up as their leader again.
    fn wake_groups_led_from(&mut self, node: NodeId) {
        for (group, peer) in &mut self.peers {
            if peer.wake_if_led_from(node) {
                tracing::info!(group_id = %group, leader = %node,
                    "the leader's node restarted: waking the quiescent group");
            }
        }
    }

    /// Sends an empty batch to every other node hosting a replica of a group here, so that
    /// they hear this node while the groups they share are quiescent (`crate::nodes_heard`).
    fn send_node_heartbeats(&mut self) {
        let mut nodes = BTreeSet::new();
        for peer in self.peers.values() {
            let conf_state = peer.raft.conf_state();
            nodes.extend(conf_state.voters.iter().chain(&conf_state.learners).copied());
        }
        nodes.remove(&self.node);
        for node in nodes {
            self.transport.send(node, Vec::new());
        }
    }

    fn flush(&mut self, outbox: &mut BTreeMap<NodeId, Vec<(GroupId, Message)>>) {
        for (to, messages) in std::mem::take(outbox) {
            self.metrics.messages_sent.inc_by(messages.len() as u64);
            self.transport.send(to, messages);
        }
    }
}

impl<K: KvEngine, SM: StateMachine<K>, T: Transport<K>> Drop for Store<K, SM, T> {
    fn drop(&mut self) {
        for peer in self.peers.values_mut() {
            peer.fail_all(&Error::Stopped);
        }
    }
}

/// `count` as a gauge's value.
fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Answers a request with `result`; an engine error is also returned, to stop the store.
fn answer_fatal(result: Result<()>, callback: Callback<()>) -> Result<()> {
    let fatal = match &result {
        Err(error @ Error::Engine(_)) => Some(error.clone()),
        _ => None,
    };
    callback(result);
    fatal.map_or(Ok(()), Err)
}
