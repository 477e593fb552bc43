//! [`AgentRunner`]: executes the storage node's agent ([`mosaic_agent::NodeAgent`], which
//! decides what the node does about configurations, replicas and shard moves) over tonic
//! and the store. Nothing here decides: the simulator executes the same agent, so a seed
//! that runs it tests what this node does.
//!
//! One task owns the agent: it polls it every [`POLL_INTERVAL_MS`] and hands it every
//! answer; each request the agent makes runs in a task of its own and sends its answer
//! back, and a request the agent gives up on is aborted. The agent has at most a few
//! requests per group in flight, so the answers waiting are bounded by it.
//!
//! A shard pull is one request per chunk for the agent; here it is one stream per source:
//! a chunk asked where the previous one of the same pull ended is read from that stream,
//! any other opens a new one at the chunk's cursor, and a stream unused for
//! [`PULL_IDLE_MAX`] is dropped (it pins a point-in-time view at the source).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mosaic_agent::{
    Action, AgentConfig, Answer, Birth, LocalState, NodeAgent, POLL_INTERVAL_MS, Request, RequestId,
};
use mosaic_client::classify::{Failure, classify_status};
use mosaic_client::membership::{MembershipDriver, StepFailure};
use mosaic_client::{ControllerClient, ControllerClientOptions, Tls};
use mosaic_controller::{ConfigNum, ControllerView};
use mosaic_engine::{
    Engine, GroupId, ShardChunk, ShardCursor, ShardId, ShardRecord, WriteBatch, WriteOptions,
};
use mosaic_proto::migration::{position_to_pb, records_from_pb};
use mosaic_proto::pb::{self, shard_migration_client::ShardMigrationClient};
use mosaic_raft::NodeId;
use mosaic_raftstore::StoreMsg;
use mosaic_shardkv::request::{propose_migration, read_led_ownerships};
use mosaic_shardkv::{KvStateMachine, MigrationCommand, MigrationOutcome};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tonic::Streaming;

use crate::backend::NodeEngine;
use crate::config::ServerConfig;
use crate::disk::DiskGuard;
use crate::error::{Error, Result};
use crate::metrics::TransferMetrics;
use crate::runner::StoreHandle;
use crate::status::Directory;
use crate::transport::{RAFT_MESSAGE_BYTES_MAX, connect};

/// How long one attempt at a membership change may take before it is started again from a
/// fresh view (a new member catching up by snapshot may take long).
const MEMBERSHIP_ATTEMPT: Duration = Duration::from_secs(300);
/// Pause after a failed attempt at a membership change, and between two checks of whether a
/// replica no longer placed here may be destroyed.
const MEMBERSHIP_RETRY: Duration = Duration::from_secs(1);
/// An open pull stream unused for this long is dropped.
pub const PULL_IDLE_MAX: Duration = Duration::from_secs(30);

/// A client of another node's `ShardMigration` service.
type MigrationClient = ShardMigrationClient<tonic::transport::Channel>;

/// Runs the agent of one storage node. See the module documentation.
pub struct AgentRunner {
    config: AgentConfig,
    client: ControllerClient,
    store: StoreHandle<NodeEngine, KvStateMachine>,
    engine: Arc<Engine<NodeEngine>>,
    directory: Directory,
    request_timeout: Duration,
    /// Membership calls (a rejoin's), over the nodes the directory knew when it was made:
    /// made again when the directory changes, so its connections are reused meanwhile.
    membership: Mutex<Option<KnownDriver>>,
    /// The node's TLS identity, for connections to other nodes.
    tls: Option<Tls>,
    /// While the disk is nearly full, no shard chunk is installed here.
    disk: DiskGuard,
    /// Where the shards pulled are counted.
    transfers: TransferMetrics,
}

/// A membership driver and the node addresses it was made with.
type KnownDriver = (BTreeMap<NodeId, String>, Arc<MembershipDriver>);

/// One pull's stream from one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PullKey {
    source: NodeId,
    from: GroupId,
    to: GroupId,
    shard: ShardId,
    num: ConfigNum,
}

/// A pull stream, open where its next chunk starts.
struct OpenPull {
    next: ShardCursor,
    stream: Streaming<pb::ShardChunk>,
    used: Instant,
}

/// A request's answer, and the pull stream it leaves open.
struct Finished {
    id: RequestId,
    answer: Answer,
    pull: Option<(PullKey, OpenPull)>,
}

impl AgentRunner {
    /// The agent runner of the node `config` describes, connecting with `tls`, feeding
    /// `store` over `engine`, installing no shard chunk while `disk` is full, counting the
    /// shards it pulls in `transfers`.
    ///
    /// # Errors
    /// [`Error::Config`] when the controller addresses are not valid.
    pub fn new(
        config: &ServerConfig,
        tls: Option<Tls>,
        store: StoreHandle<NodeEngine, KvStateMachine>,
        engine: Arc<Engine<NodeEngine>>,
        directory: Directory,
        disk: DiskGuard,
        transfers: TransferMetrics,
    ) -> Result<Self> {
        let request_timeout = config.request_timeout();
        let options = ControllerClientOptions {
            timeout: request_timeout,
            tls: tls.clone(),
            ..Default::default()
        };
        let node = NodeId(config.node_id);
        let client = ControllerClient::of_node(config.controllers.clone(), options, node)
            .map_err(|error| Error::Config { reason: format!("controllers: {error}") })?;
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let config = AgentConfig {
            node,
            address: config.advertised().to_string(),
            // The executor's own deadlines come first; the agent's catch what hangs.
            request_timeout_ms: 2 * millis(request_timeout),
            membership_attempt_ms: millis(MEMBERSHIP_ATTEMPT),
            membership_retry_ms: millis(MEMBERSHIP_RETRY),
            task_retry_max_ms: config.migration_retry_max_ms,
            pulls_max: config.migration_pulls_max,
        };
        let membership = Mutex::new(None);
        Ok(Self {
            config,
            client,
            store,
            engine,
            directory,
            request_timeout,
            membership,
            tls,
            disk,
            transfers,
        })
    }

    /// Runs the agent until `closing` turns true.
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let node = self.config.node;
        let birth = match self.birth() {
            Ok(birth) => birth,
            Err(error) => {
                tracing::error!(node_id = %node, %error,
                    "cannot read the placement record; following no configuration");
                return;
            }
        };
        let this = Arc::new(self);
        let mut agent = NodeAgent::new(this.config.clone(), birth);
        let start = Instant::now();
        let now = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (finished, mut answers) = mpsc::unbounded_channel::<Finished>();
        let mut running: HashMap<RequestId, AbortHandle> = HashMap::new();
        let mut pulls: HashMap<PullKey, OpenPull> = HashMap::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(POLL_INTERVAL_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let actions = tokio::select! {
                _ = closing.wait_for(|closing| *closing) => break,
                _ = ticker.tick() => {
                    pulls.retain(|_, open| open.used.elapsed() < PULL_IDLE_MAX);
                    agent.poll(now())
                }
                Some(Finished { id, answer, pull }) = answers.recv() => {
                    running.remove(&id);
                    if let Some((key, open)) = pull {
                        pulls.insert(key, open);
                    }
                    agent.on_answer(now(), id, answer)
                }
            };
            for action in actions {
                match action {
                    Action::Send { id, request } => {
                        let pull = match &request {
                            Request::PullChunk { source, from, to, shard, num, cursor } => {
                                let key = PullKey {
                                    source: *source,
                                    from: *from,
                                    to: *to,
                                    shard: *shard,
                                    num: *num,
                                };
                                pulls.remove(&key).filter(|open| open.next == *cursor)
                            }
                            _ => None,
                        };
                        let (this, finished) = (Arc::clone(&this), finished.clone());
                        let task = tokio::spawn(async move {
                            let (answer, pull) = this.execute(request, pull).await;
                            // The receiver is gone only when the runner stopped.
                            let _ = finished.send(Finished { id, answer, pull });
                        });
                        running.insert(id, task.abort_handle());
                    }
                    Action::Cancel { id } => {
                        if let Some(task) = running.remove(&id) {
                            task.abort();
                        }
                    }
                }
            }
        }
        for task in running.values() {
            task.abort();
        }
    }

    /// The store's birth, from its placement record.
    fn birth(&self) -> std::result::Result<Birth, String> {
        let record =
            KvStateMachine::placed_since(&self.engine).map_err(|error| error.to_string())?;
        let groups = self.engine.group_ids().map_err(|error| error.to_string())?;
        Ok(Birth::of_store(record, !groups.is_empty()))
    }

    /// Carries out `request` (a chunk read from `pull` when it is open where the chunk
    /// starts).
    async fn execute(
        &self,
        request: Request,
        pull: Option<OpenPull>,
    ) -> (Answer, Option<(PullKey, OpenPull)>) {
        let failed = |error: &dyn std::fmt::Display| Answer::Failed(error.to_string());
        let answer = match request {
            Request::Query { num } => match self.client.query(num).await {
                Ok(answer) => {
                    for (node, address) in &answer.nodes {
                        if self.directory.set(*node, address) {
                            tracing::info!(peer = %node, %address, "learned a node's address");
                        }
                    }
                    Answer::View(ControllerView {
                        config: answer.config,
                        latest: answer.latest,
                        nodes: answer.nodes,
                        node_states: answer.node_states,
                        lives: answer.lives,
                        controllers: answer.controllers,
                    })
                }
                Err(error) => failed(&error),
            },
            Request::Execute(command) => match self.client.execute(command).await {
                Ok(Ok(outcome)) => Answer::Executed(outcome),
                Ok(Err(refusal)) => Answer::Refused(refusal.to_string()),
                Err(error) => failed(&error),
            },
            Request::RecordBirth(since) => {
                let engine = Arc::clone(&self.engine);
                let written = tokio::task::spawn_blocking(move || {
                    let mut batch = WriteBatch::new();
                    KvStateMachine::mark_placed_since(&mut batch, since);
                    engine.write(&batch, WriteOptions { sync: true })
                })
                .await;
                match written {
                    Ok(Ok(())) => Answer::Done,
                    Ok(Err(error)) => failed(&error),
                    Err(error) => failed(&error),
                }
            }
            Request::ReadLocal => match self.read_local().await {
                Ok(local) => Answer::Local(local),
                Err(error) => Answer::Failed(error),
            },
            Request::CreateGroup { group, members } => {
                let created =
                    self.store.ask(|callback| StoreMsg::CreateGroup { group, members, callback });
                match created.await {
                    Ok(()) => Answer::Done,
                    Err(error @ mosaic_raftstore::Error::InvalidArgument { .. }) => {
                        Answer::Refused(error.to_string())
                    }
                    Err(error) => failed(&error),
                }
            }
            Request::DestroyGroup { group, shown_out } => {
                let destroyed = self.store.ask(|callback| StoreMsg::DestroyGroup {
                    group,
                    shown_out,
                    callback,
                });
                match destroyed.await {
                    Ok(()) => Answer::Done,
                    Err(error @ mosaic_raftstore::Error::InvalidArgument { .. }) => {
                        Answer::Refused(error.to_string())
                    }
                    Err(error) => failed(&error),
                }
            }
            Request::GroupStatus { node, group } => {
                match self.membership().status(node, group).await {
                    Ok(view) => Answer::Leader(view),
                    Err(error) => Answer::Failed(format!("node {node}: {error}")),
                }
            }
            Request::JoinGroup { node, group, leader } if node == self.config.node => {
                let leader = Some(leader);
                match self
                    .store
                    .ask(|callback| StoreMsg::JoinGroup { group, leader, callback })
                    .await
                {
                    Ok(()) => Answer::Done,
                    Err(error) => failed(&error),
                }
            }
            Request::JoinGroup { node, group, leader } => {
                match self.membership().join(group, node, leader).await {
                    Ok(()) => Answer::Done,
                    Err(StepFailure::Refused(reason) | StepFailure::Failed(reason)) => {
                        Answer::Failed(reason)
                    }
                }
            }
            Request::ChangeMembership { leader, group, change, unchanged_since } => {
                match self.membership().change(group, leader, change, unchanged_since).await {
                    Ok(()) => Answer::Done,
                    Err(StepFailure::Refused(reason)) => Answer::Refused(reason),
                    Err(StepFailure::Failed(reason)) => Answer::Failed(reason),
                }
            }
            Request::Propose { group, command } => self.propose(group, command).await,
            Request::PullChunk { source, from, to, shard, num, cursor } => {
                let key = PullKey { source, from, to, shard, num };
                return match self.pull_chunk(key, cursor, pull).await {
                    Ok((chunk, open)) => (Answer::Chunk(chunk), open.map(|open| (key, open))),
                    Err(error) => (Answer::Failed(error), None),
                };
            }
            Request::DeleteShard { source, group, shard, num } => {
                let request = pb::DeleteShardRequest {
                    group_id: group.0,
                    shard_id: shard.0,
                    config_num: num.0,
                };
                match self.migration_client(source).await {
                    Ok(mut client) => match client.delete_shard(request).await {
                        Ok(response) if response.get_ref().deleted => {
                            Answer::Applied(MigrationOutcome::Done)
                        }
                        Ok(_) => Answer::Applied(MigrationOutcome::Stale("deleted already".into())),
                        Err(status) => match classify_status(&status) {
                            Failure::NotLeader { leader: Some(hint) } => {
                                Answer::Redirect(hint.node)
                            }
                            _ => Answer::Failed(status.message().to_string()),
                        },
                    },
                    Err(error) => Answer::Failed(error),
                }
            }
        };
        (answer, None)
    }

    /// Membership calls to the nodes known now.
    fn membership(&self) -> Arc<MembershipDriver> {
        let nodes = self.directory.all();
        let mut cached = self.membership.lock().unwrap_or_else(PoisonError::into_inner);
        match &*cached {
            Some((known, driver)) if *known == nodes => Arc::clone(driver),
            _ => {
                let driver = Arc::new(MembershipDriver::new(
                    nodes.clone(),
                    self.request_timeout,
                    self.tls.clone(),
                ));
                *cached = Some((nodes, Arc::clone(&driver)));
                driver
            }
        }
    }

    /// The groups hosted here, and the ownership of those led here.
    async fn read_local(&self) -> std::result::Result<LocalState, String> {
        let led = self
            .store
            .ask(read_led_ownerships)
            .await
            .map_err(|error| format!("reading the groups led here: {error}"))?;
        let hosted = self.engine.group_ids().map_err(|error| format!("listing groups: {error}"))?;
        let mut local =
            LocalState { hosted: hosted.into_iter().collect(), ..LocalState::default() };
        for (group, answer) in led {
            local.memberships.insert(group, answer.conf_state);
            match answer.output {
                Ok(Some(ownership)) => {
                    local.led.insert(group, ownership);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(group_id = %group, %error, "cannot read the group's ownership");
                }
            }
        }
        Ok(local)
    }

    /// Proposes a migration step to `group` here and waits for it to apply. A chunk of a
    /// shard is not installed while the disk is nearly full (the step fails, and the task is
    /// started again after its pause).
    async fn propose(&self, group: GroupId, command: MigrationCommand) -> Answer {
        if let MigrationCommand::InstallChunk { .. } = command
            && let Err(error) = self.disk.check_write()
        {
            return Answer::Failed(error.to_string());
        }
        // What a chunk brings, counted once it is installed (a chunk pulled again after a
        // failed install is counted once).
        let installs = match &command {
            MigrationCommand::InstallChunk { records, last, .. } => {
                Some((records.iter().map(ShardRecord::size_bytes).sum::<u64>(), *last))
            }
            _ => None,
        };
        let answer = self
            .store
            .ask_within(self.request_timeout, |callback| {
                propose_migration(group, command, callback)
            })
            .await;
        match answer {
            Ok(outcome) => {
                if let (MigrationOutcome::Done, Some((bytes, last))) = (&outcome, installs) {
                    self.transfers.shard_bytes_received.inc_by(bytes);
                    if last {
                        self.transfers.shards_received.inc();
                    }
                }
                Answer::Applied(outcome)
            }
            Err(error) => Answer::Failed(error.to_string()),
        }
    }

    /// A client of `node`'s `ShardMigration` service.
    async fn migration_client(&self, node: NodeId) -> std::result::Result<MigrationClient, String> {
        let address =
            self.directory.address(node).ok_or_else(|| format!("node {node}: address unknown"))?;
        let channel = connect(&address, self.tls.as_ref())
            .await
            .map_err(|error| format!("cannot connect to {address}: {error}"))?;
        Ok(ShardMigrationClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX))
    }

    /// The chunk of the pull `key` that starts at `cursor`: from `open` (a stream of that
    /// pull whose next chunk starts there), or from a new stream; the stream stays open for
    /// the next chunk unless this one is the last.
    async fn pull_chunk(
        &self,
        key: PullKey,
        cursor: ShardCursor,
        open: Option<OpenPull>,
    ) -> std::result::Result<(ShardChunk, Option<OpenPull>), String> {
        let mut stream = match open {
            Some(open) => open.stream,
            None => {
                let request = pb::PullShardRequest {
                    from_group: key.from.0,
                    to_group: key.to.0,
                    shard_id: key.shard.0,
                    config_num: key.num.0,
                    resume: position_to_pb(&cursor),
                };
                let mut client = self.migration_client(key.source).await?;
                let call = client.pull_shard(request);
                tokio::time::timeout(self.request_timeout, call)
                    .await
                    .map_err(|_| "no answer in time".to_string())?
                    .map_err(|status| status.message().to_string())?
                    .into_inner()
            }
        };
        // No deadline of its own: the source paces its chunks, and the agent gives up on a
        // chunk that takes longer than its request timeout.
        let message = stream
            .message()
            .await
            .map_err(|status| status.message().to_string())?
            .ok_or_else(|| "the stream ended before its last chunk".to_string())?;
        let records = records_from_pb(message.records).map_err(|error| error.to_string())?;
        let next = match records.last() {
            _ if message.last => None,
            Some(record) => Some(ShardCursor::after(record)),
            None => return Err("an empty chunk that is not the last".into()),
        };
        let open = next.clone().map(|next| OpenPull { next, stream, used: Instant::now() });
        Ok((ShardChunk { records, next }, open))
    }
}
