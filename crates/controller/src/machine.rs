//! [`ControllerMachine`]: the [`ControllerState`] as the state machine of a raftstore group, so
//! the controller replicates on the same multi-raft runtime as the storage groups.
//!
//! The state lives in memory and in the engine. Every applied entry writes only the records it
//! changed into the store's apply batch; [`StateMachine::load`] reads them all back at start
//! and after a snapshot was installed. All records are the group's shard-0 data and sessions
//! ([`CONTROLLER_SHARD`]), which is what a raftstore group snapshot copies, so the state
//! travels in snapshots with nothing controller-specific in the runtime.
//!
//! # Storage layout
//! Values are encoded by [`crate::codec`] and start with its format version byte.
//! - data `meta`: the shard count and `max_sessions` (see "Creating the group").
//! - data `config/` ‖ number (u64 big-endian): configuration 1, 2, ... Configuration 0 is
//!   never stored: it follows from the shard count.
//! - data `node/` ‖ node id (u64 big-endian): the node's address.
//! - data `retired/` ‖ group id (u64 big-endian): the group retired (the value is the format
//!   version byte alone).
//! - data `node-state/` ‖ node id (u64 big-endian): the state of a node that is not active
//!   (decommissioning or retired).
//! - data `controller/` ‖ replica id (u64 big-endian): a controller replica's address.
//! - session of each client: its sequence number, last log index and result.
//!
//! # Creating the group
//! The shard count is fixed when the cluster is created, but [`StateMachine::load`] receives
//! only the group and the engine. So the process that creates the controller group writes
//! [`bootstrap_batch`] on every initial replica, before creating the group; a group without a
//! meta record loads with [`DEFAULT_SHARD_COUNT`] and [`DEFAULT_MAX_SESSIONS`] and writes that
//! meta record with the first entry that changes something, so its parameters never depend on
//! a later build's defaults. Replicas added later receive the record in a snapshot.
//!
//! Invariant: as of the last batch `apply` filled, the engine's records decode to exactly the
//! in-memory state (checked by `tests/machine.rs`); `load` refuses records that break an
//! invariant of [`ControllerState`] with [`mosaic_engine::Error::Corruption`].

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_engine::{Engine, GroupId, KvEngine, ShardCursor, ShardId, ShardRecord, WriteBatch};
use mosaic_raft::{LogIndex, NodeId};
use mosaic_raftstore::StateMachine;

use crate::codec;
use crate::command::{Outcome, Request};
use crate::configuration::{ConfigNum, Configuration};
use crate::decommission::NodeState;
use crate::error::Error;
use crate::state::GroupLife;
use crate::state::{ControllerState, DEFAULT_MAX_SESSIONS, DEFAULT_SHARD_COUNT};

/// The shard of the controller group that holds every record of its state.
pub const CONTROLLER_SHARD: ShardId = ShardId(0);

/// Bytes of records read per chunk when loading the state.
const LOAD_CHUNK_BYTES_MAX: u64 = 1 << 20;

const META_KEY: &[u8] = b"meta";
const CONFIG_KEY_PREFIX: &[u8] = b"config/";
const NODE_KEY_PREFIX: &[u8] = b"node/";
const RETIRED_KEY_PREFIX: &[u8] = b"retired/";
const NODE_STATE_KEY_PREFIX: &[u8] = b"node-state/";
const CONTROLLER_KEY_PREFIX: &[u8] = b"controller/";

/// A read of the controller's state: a configuration and the node registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControllerQuery {
    /// The configuration to read; the latest for `None`.
    pub num: Option<ConfigNum>,
}

/// What a [`ControllerQuery`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerView {
    /// The configuration asked for.
    pub config: Configuration,
    /// The number of the latest configuration.
    pub latest: ConfigNum,
    /// Every registered node and its address, in id order.
    pub nodes: BTreeMap<NodeId, String>,
    /// The state of every registered node that is not active, in id order.
    pub node_states: BTreeMap<NodeId, NodeState>,
    /// Every group any configuration listed, in id order.
    pub lives: BTreeMap<GroupId, GroupLife>,
    /// The address recorded for each controller replica, in id order
    /// ([`ControllerState::controllers`]).
    pub controllers: BTreeMap<NodeId, String>,
}

/// The controller group's state machine. See the module documentation.
#[derive(Debug)]
pub struct ControllerMachine {
    group: GroupId,
    state: ControllerState,
    /// True once the meta record is in the engine or in a batch handed to `apply`.
    meta_stored: bool,
}

/// Adds to `batch` the meta record of a new controller group: its shard count (fixed for the
/// cluster's life) and the number of client sessions it keeps. Write it on every initial
/// replica before creating the group (see the module documentation).
///
/// # Panics
/// If `shard_count` or `max_sessions` is 0.
pub fn bootstrap_batch(
    batch: &mut WriteBatch,
    group: GroupId,
    shard_count: u32,
    max_sessions: usize,
) {
    assert!(shard_count > 0, "a cluster needs at least one shard");
    assert!(max_sessions > 0, "max_sessions must be at least 1");
    batch.put_data(
        group,
        CONTROLLER_SHARD,
        Bytes::from_static(META_KEY),
        codec::encode_meta(shard_count, max_sessions),
    );
}

fn config_key(num: ConfigNum) -> Bytes {
    prefixed_key(CONFIG_KEY_PREFIX, num.0)
}

fn node_key(node: NodeId) -> Bytes {
    prefixed_key(NODE_KEY_PREFIX, node.0)
}

fn retired_key(group: GroupId) -> Bytes {
    prefixed_key(RETIRED_KEY_PREFIX, group.0)
}

fn node_state_key(node: NodeId) -> Bytes {
    prefixed_key(NODE_STATE_KEY_PREFIX, node.0)
}

fn controller_key(replica: NodeId) -> Bytes {
    prefixed_key(CONTROLLER_KEY_PREFIX, replica.0)
}

fn prefixed_key(prefix: &[u8], id: u64) -> Bytes {
    let mut key = BytesMut::with_capacity(prefix.len() + 8);
    key.put_slice(prefix);
    key.put_u64(id);
    key.freeze()
}

/// Parses the id after `prefix` in `key`, if `key` has that prefix.
fn parse_prefixed_key(key: &[u8], prefix: &[u8]) -> Option<Result<u64, String>> {
    let rest = key.strip_prefix(prefix)?;
    Some(
        <[u8; 8]>::try_from(rest)
            .map(u64::from_be_bytes)
            .map_err(|_| format!("malformed key {key:02x?}")),
    )
}

/// The records of a controller group as read from the engine, before they are checked.
#[derive(Default)]
struct Records {
    meta: Option<(u32, usize)>,
    configs: BTreeMap<u64, Configuration>,
    nodes: BTreeMap<NodeId, String>,
    node_states: BTreeMap<NodeId, NodeState>,
    retired: BTreeSet<GroupId>,
    sessions: BTreeMap<mosaic_engine::ClientId, crate::state::Session>,
    controllers: BTreeMap<NodeId, String>,
}

impl Records {
    fn add(&mut self, record: ShardRecord) -> Result<(), String> {
        match record {
            ShardRecord::Session { client, record } => {
                let session = codec::decode_session(&record)
                    .map_err(|error| format!("session of client {client}: {error}"))?;
                self.sessions.insert(client, session);
            }
            ShardRecord::Data { key, value } => {
                if *key == *META_KEY {
                    let meta = codec::decode_meta(&value).map_err(|error| error.to_string())?;
                    self.meta = Some(meta);
                } else if let Some(num) = parse_prefixed_key(&key, CONFIG_KEY_PREFIX) {
                    let num = num?;
                    let config = codec::decode_configuration(&value)
                        .map_err(|error| format!("configuration {num}: {error}"))?;
                    if config.num.0 != num {
                        return Err(format!("record of configuration {num} holds {}", config.num));
                    }
                    self.configs.insert(num, config);
                } else if let Some(node) = parse_prefixed_key(&key, NODE_KEY_PREFIX) {
                    let node = NodeId(node?);
                    let address = codec::decode_node_address(&value)
                        .map_err(|error| format!("node {node}: {error}"))?;
                    self.nodes.insert(node, address);
                } else if let Some(group) = parse_prefixed_key(&key, RETIRED_KEY_PREFIX) {
                    let group = GroupId(group?);
                    codec::decode_marker(&value)
                        .map_err(|error| format!("retired group {group}: {error}"))?;
                    self.retired.insert(group);
                } else if let Some(node) = parse_prefixed_key(&key, NODE_STATE_KEY_PREFIX) {
                    let node = NodeId(node?);
                    let state = codec::decode_node_state(&value)
                        .map_err(|error| format!("state of node {node}: {error}"))?;
                    self.node_states.insert(node, state);
                } else if let Some(replica) = parse_prefixed_key(&key, CONTROLLER_KEY_PREFIX) {
                    let replica = NodeId(replica?);
                    let address = codec::decode_node_address(&value)
                        .map_err(|error| format!("controller replica {replica}: {error}"))?;
                    self.controllers.insert(replica, address);
                } else {
                    return Err(format!("unknown record {key:02x?}"));
                }
            }
        }
        Ok(())
    }

    /// Builds the state: configuration 0 from the shard count, then configurations 1, 2, ...
    /// without a gap.
    fn into_state(self) -> Result<ControllerState, String> {
        let (shard_count, max_sessions) =
            self.meta.unwrap_or((DEFAULT_SHARD_COUNT, DEFAULT_MAX_SESSIONS));
        let mut configs = vec![Configuration::initial(shard_count)];
        for (num, config) in self.configs {
            if num != configs.len() as u64 {
                return Err(format!(
                    "configuration {num} is stored but configuration {} is missing",
                    configs.len()
                ));
            }
            configs.push(config);
        }
        ControllerState::from_parts(
            self.nodes,
            self.node_states,
            configs,
            &self.retired,
            self.sessions,
            max_sessions,
            self.controllers,
        )
    }
}

impl ControllerMachine {
    /// The group.
    #[must_use]
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The applied state.
    #[must_use]
    pub fn state(&self) -> &ControllerState {
        &self.state
    }

    /// Answers `query` from the applied state.
    ///
    /// # Errors
    /// [`Error::UnknownConfig`] for a number past the latest.
    pub fn view(&self, query: &ControllerQuery) -> crate::Result<ControllerView> {
        let config = self.state.config(query.num)?.clone();
        Ok(ControllerView {
            config,
            latest: self.state.latest().num,
            nodes: self.state.nodes().clone(),
            node_states: self.state.node_states().clone(),
            lives: self.state.lives().clone(),
            controllers: self.state.controllers().clone(),
        })
    }

    fn put_meta(&self, batch: &mut WriteBatch) {
        bootstrap_batch(batch, self.group, self.state.shard_count(), self.state.max_sessions());
    }
}

impl<K: KvEngine> StateMachine<K> for ControllerMachine {
    type Proposal = Request;
    type Query = ControllerQuery;
    type ApplyOutput = crate::Result<Outcome>;
    type ReadOutput = crate::Result<ControllerView>;

    fn load(group: GroupId, engine: &Engine<K>) -> mosaic_raftstore::Result<Self> {
        let corruption = |reason: String| {
            mosaic_raftstore::Error::Engine(mosaic_engine::Error::Corruption {
                path: engine.path().to_path_buf(),
                reason: format!("controller group {group}: {reason}"),
            })
        };
        let snapshot = engine.snapshot();
        let mut records = Records::default();
        let mut cursor = Some(ShardCursor::Start);
        // Ends: every chunk but the last holds at least one record and moves the cursor on.
        while let Some(from) = cursor.take() {
            let chunk =
                snapshot.scan_shard_chunk(group, CONTROLLER_SHARD, &from, LOAD_CHUNK_BYTES_MAX)?;
            for record in chunk.records {
                records.add(record).map_err(corruption)?;
            }
            cursor = chunk.next;
        }
        let meta_stored = records.meta.is_some();
        let state = records.into_state().map_err(corruption)?;
        Ok(Self { group, state, meta_stored })
    }

    fn check_proposal(&self, _proposal: &Request) -> mosaic_raftstore::Result<()> {
        Ok(())
    }

    fn encode(proposal: &Request) -> Bytes {
        codec::encode_request(proposal)
    }

    fn apply(
        &mut self,
        _engine: &Engine<K>,
        batch: &mut WriteBatch,
        index: LogIndex,
        data: &Bytes,
    ) -> mosaic_raftstore::Result<crate::Result<Outcome>> {
        let request = match codec::decode_request(data) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(group_id = %self.group, %index, %error,
                    "answering an undecodable controller entry with an error");
                let reason = format!("entry {index}: {error}");
                return Ok(Err(Error::MalformedRequest { reason }));
            }
        };
        let client = request.client;
        let (result, changes) = self.state.apply_with_changes(index, request);
        if changes.is_empty() {
            return Ok(result);
        }
        if !self.meta_stored {
            self.put_meta(batch);
            self.meta_stored = true;
        }
        if let Some(num) = changes.config_created {
            let config = self.state.config(Some(num)).expect("the configuration just created");
            batch.put_data(
                self.group,
                CONTROLLER_SHARD,
                config_key(num),
                codec::encode_configuration(config),
            );
        }
        if let Some(node) = changes.node_changed {
            let address = &self.state.nodes()[&node];
            batch.put_data(
                self.group,
                CONTROLLER_SHARD,
                node_key(node),
                codec::encode_node_address(address),
            );
        }
        if let Some(replica) = changes.controller_changed {
            let address = &self.state.controllers()[&replica];
            batch.put_data(
                self.group,
                CONTROLLER_SHARD,
                controller_key(replica),
                codec::encode_node_address(address),
            );
        }
        if let Some(node) = changes.node_state_changed {
            batch.put_data(
                self.group,
                CONTROLLER_SHARD,
                node_state_key(node),
                codec::encode_node_state(self.state.node_state(node)),
            );
        }
        if let Some(group) = changes.group_retired {
            batch.put_data(
                self.group,
                CONTROLLER_SHARD,
                retired_key(group),
                codec::encode_marker(),
            );
        }
        // The client's own session is gone only if it was evicted at once (then the deletion
        // below covers it).
        if changes.session_written
            && let Some(session) = self.state.sessions().get(&client)
        {
            batch.put_session(self.group, CONTROLLER_SHARD, client, codec::encode_session(session));
        }
        for evicted in changes.sessions_evicted {
            batch.delete_session(self.group, CONTROLLER_SHARD, evicted);
        }
        Ok(result)
    }

    fn batch_written(&mut self) {
        // `apply` reads only the in-memory state, never the engine: nothing is pending.
    }

    fn read(
        &self,
        _engine: &Engine<K>,
        query: &ControllerQuery,
    ) -> mosaic_raftstore::Result<crate::Result<ControllerView>> {
        Ok(self.view(query))
    }
}
