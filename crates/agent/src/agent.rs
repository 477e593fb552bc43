//! [`NodeAgent`]: a storage node following the controller (the crate documentation says
//! what it decides, and how an executor runs it).

use std::collections::BTreeMap;

use mosaic_controller::{Command, ConfigNum, Configuration, ControllerView};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use mosaic_shardkv::{MigrationTask, PlacedSince, TaskKey, plan};

use crate::io::{Action, Answer, LocalState, Request, RequestId, Time};
use crate::rejoin::{Ask, Attempt};
use crate::task::{Step, Task, TaskEvent, task_event};

/// How often an executor calls [`NodeAgent::poll`].
pub const POLL_INTERVAL_MS: Time = 100;
/// The longest pause before a failing migration task starts again, unless configured
/// ([`AgentConfig::task_retry_max_ms`]).
pub const DEFAULT_TASK_RETRY_MAX_MS: Time = 5_000;
/// Shard pulls a node runs at once, unless configured ([`AgentConfig::pulls_max`]).
pub const DEFAULT_PULLS_MAX: usize = 4;
/// Configurations kept in memory (the ones groups here are switching between).
const CONFIGS_CACHED_MAX: usize = 64;

/// How an agent is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// This node.
    pub node: NodeId,
    /// The address it registers for itself (where other nodes and clients reach it).
    pub address: String,
    /// A request unanswered for this long has failed (and is cancelled).
    pub request_timeout_ms: Time,
    /// How long one rejoin attempt (many requests) may take.
    pub rejoin_attempt_ms: Time,
    /// The pause after a failed rejoin attempt.
    pub rejoin_retry_ms: Time,
    /// The longest pause before a failing migration task starts again: the pause is one
    /// poll after the first failure and doubles with each failure in a row up to this.
    pub task_retry_max_ms: Time,
    /// Shard pulls running at once, at most (each holds a stream at a source node and
    /// installs chunks here); a pull past it starts at a later poll, when one has ended.
    pub pulls_max: usize,
}

/// What the store says about when it was born ([`PlacedSince`]), as the agent needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Birth {
    /// Groups of configurations up to this one existed before the store: the node may have
    /// lost its replicas of them with a data directory, so it rejoins them rather than
    /// creating them.
    Known(ConfigNum),
    /// A new store: the latest configuration's number is recorded first, before the node
    /// registers (so no group can be placed on it before the record).
    Unknown,
}

impl Birth {
    /// The birth of a store whose placement record is `record` and which hosts groups or not.
    #[must_use]
    pub fn of_store(record: PlacedSince, hosts_groups: bool) -> Self {
        match record {
            PlacedSince::Config(since) => Self::Known(since),
            // A store from before the record: its groups were created here. (A new store is
            // `Pending` from its first open, whatever an operator created on it since.)
            PlacedSince::Unrecorded if hosts_groups => Self::Known(ConfigNum(0)),
            PlacedSince::Unrecorded | PlacedSince::Pending => Self::Unknown,
        }
    }
}

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// The latest configuration number, to record as the store's birth.
    LearnBirth,
    RecordBirth(ConfigNum),
    Register,
    /// The latest configuration.
    Poll,
    /// A configuration for placing a removed group.
    Config,
    /// What the store holds, after a poll.
    Local,
    /// Creating or destroying a replica of the group.
    Replica(GroupId),
    /// A rejoin's status read of the group at a node.
    RejoinStatus(GroupId, NodeId),
    /// A rejoin's step (a join here, a membership change at the leader).
    RejoinStep(GroupId),
    Task(TaskKey),
}

#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    deadline: Time,
}

/// A migration task that failed `failures` times in a row: it starts again at the first poll
/// from `retry_at` on. Another task under the same key (of a later configuration, or a pull
/// that got further) starts afresh.
#[derive(Debug)]
struct Failing {
    task: MigrationTask,
    failures: u32,
    retry_at: Time,
}

/// A rejoin of one group, once started.
#[derive(Debug)]
enum Rejoin {
    /// An attempt is running.
    Running(Box<Attempt>),
    /// The last attempt failed; the next one starts at the first poll from `at` on. `joined`
    /// is true if it had joined this node's replica (the next one brings it on from there).
    RetryAt {
        /// When.
        at: Time,
        /// Whether the replica here was joined.
        joined: bool,
    },
    /// Over: the node is a voter again, or there is nothing to rejoin.
    Over,
}

/// The agent of one storage node. See the crate documentation.
#[derive(Debug)]
pub struct NodeAgent {
    config: AgentConfig,
    /// The configuration number the store was born under, once known.
    since: Option<ConfigNum>,
    /// The birth being recorded: once a record is asked for, only that number is (an attempt
    /// given up on may still be written, and a later number written before it would be
    /// overwritten by the smaller one).
    recording: Option<ConfigNum>,
    registered: bool,
    /// True when the controller refused to register this node: it then follows nothing.
    refused: bool,
    /// The latest view polled.
    view: Option<ControllerView>,
    /// True when the last poll followed a configuration knowing the placement of every group
    /// (so the rejoins it needs have started; a removed group is placed by a configuration
    /// that may still have to be fetched).
    followed: bool,
    configs: BTreeMap<ConfigNum, Configuration>,
    rejoins: BTreeMap<GroupId, Rejoin>,
    /// The running tasks. Invariant: each has exactly one request pending.
    tasks: BTreeMap<TaskKey, Task>,
    /// The tasks whose last run failed, while the plan still asks for them.
    failing: BTreeMap<TaskKey, Failing>,
    pending: BTreeMap<RequestId, Pending>,
    next_id: RequestId,
    actions: Vec<Action>,
    /// The `agent` span (`node_id`), entered by `poll` and `on_answer`: made once, at ERROR
    /// level so that it is on whenever any line is (every line the agent logs names its
    /// node, a refusal to register included).
    span: tracing::Span,
}

impl NodeAgent {
    /// The agent of a node whose store was born as `birth` says.
    #[must_use]
    pub fn new(config: AgentConfig, birth: Birth) -> Self {
        let since = match birth {
            Birth::Known(since) => Some(since),
            Birth::Unknown => None,
        };
        let span = tracing::error_span!("agent", node_id = %config.node);
        Self {
            config,
            since,
            recording: None,
            registered: false,
            refused: false,
            view: None,
            followed: false,
            configs: BTreeMap::new(),
            rejoins: BTreeMap::new(),
            tasks: BTreeMap::new(),
            failing: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_id: 0,
            actions: Vec::new(),
            span,
        }
    }

    /// This node.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.config.node
    }

    /// True when the controller refused to register this node (it then follows nothing and
    /// serves only the groups it hosts).
    #[must_use]
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// True once the node is back with all its data: the store's birth is known, the agent
    /// followed a configuration knowing where every group is placed, and no rejoin is running
    /// or waiting to be retried. A node that lost its data directory is not settled until
    /// every group it was placed in took it back (a status page can show it as rejoining).
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.since.is_some()
            && self.followed
            && self.rejoins.values().all(|rejoin| matches!(rejoin, Rejoin::Over))
    }

    /// The periodic step, every [`POLL_INTERVAL_MS`]: gives up on what timed out, then
    /// learns the store's birth, registers, or reads the latest configuration.
    pub fn poll(&mut self, now: Time) -> Vec<Action> {
        let _agent = self.span.clone().entered();
        let expired: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let pending = self.pending.remove(&id).expect("listed");
            self.actions.push(Action::Cancel { id });
            self.answered(now, pending.purpose, Answer::Failed("no answer in time".into()));
        }
        let running: Vec<GroupId> = self
            .rejoins
            .iter()
            .filter(|(_, rejoin)| matches!(rejoin, Rejoin::Running(_)))
            .map(|(group, _)| *group)
            .collect();
        for group in running {
            self.rejoin_event(now, group, |attempt, nodes| attempt.poll(now, nodes));
        }
        if self.refused {
            // Follows nothing.
        } else if self.since.is_none() {
            if !self.waits_for(|p| matches!(p, Purpose::LearnBirth | Purpose::RecordBirth(_))) {
                match self.recording {
                    Some(since) => {
                        self.send(now, Purpose::RecordBirth(since), Request::RecordBirth(since));
                    }
                    None => self.send(now, Purpose::LearnBirth, Request::Query { num: None }),
                }
            }
        } else if !self.registered {
            self.register(now);
        } else if !self.waits_for(|p| matches!(p, Purpose::Poll | Purpose::Local)) {
            self.send(now, Purpose::Poll, Request::Query { num: None });
        }
        std::mem::take(&mut self.actions)
    }

    /// Handles `answer` to request `id` (an answer to a request given up on is ignored).
    pub fn on_answer(&mut self, now: Time, id: RequestId, answer: Answer) -> Vec<Action> {
        let _agent = self.span.clone().entered();
        if let Some(pending) = self.pending.remove(&id) {
            self.answered(now, pending.purpose, answer);
        }
        std::mem::take(&mut self.actions)
    }

    fn answered(&mut self, now: Time, purpose: Purpose, answer: Answer) {
        let node = self.config.node;
        if let Answer::View(view) = &answer {
            self.learn(&view.config);
        }
        match (purpose, answer) {
            (Purpose::Task(key), answer) => self.step(now, key, TaskEvent::Answer(answer)),
            (Purpose::LearnBirth, Answer::View(view)) => {
                let since = view.latest;
                self.recording = Some(since);
                self.send(now, Purpose::RecordBirth(since), Request::RecordBirth(since));
            }
            (Purpose::RecordBirth(since), Answer::Done) => {
                tracing::info!(config_num = %since, "new store: groups of configurations up to \
                    this one existed before it, and are rejoined rather than created");
                self.since = Some(since);
                self.register(now);
            }
            (Purpose::Register, Answer::Executed(outcome)) => {
                tracing::info!(address = %self.config.address, %outcome,
                    "registered with the controller");
                self.registered = true;
                self.send(now, Purpose::Poll, Request::Query { num: None });
            }
            (Purpose::Register, Answer::Refused(refusal)) => {
                tracing::error!(address = %self.config.address, %refusal,
                    "the controller refused to register this node; fix --advertise");
                self.refused = true;
            }
            (Purpose::Poll, Answer::View(view)) => {
                self.view = Some(view);
                self.send(now, Purpose::Local, Request::ReadLocal);
            }
            (Purpose::Config, Answer::View(_)) => {}
            (Purpose::Local, Answer::Local(local)) => self.follow(now, &local),
            (Purpose::Replica(_), Answer::Done) => {}
            (Purpose::RejoinStatus(group, at), answer) => {
                self.rejoin_event(now, group, |attempt, nodes| {
                    attempt.on_status(now, at, answer, nodes)
                });
            }
            (Purpose::RejoinStep(group), answer) => {
                self.rejoin_event(now, group, |attempt, nodes| attempt.on_step(now, answer, nodes));
            }
            (purpose, Answer::Failed(reason)) => {
                tracing::debug!(?purpose, %reason, "request failed; retrying later");
            }
            (purpose, answer) => panic!("node {node}: {purpose:?} answered with {answer:?}"),
        }
    }

    fn register(&mut self, now: Time) {
        if self.waits_for(|purpose| purpose == Purpose::Register) {
            return;
        }
        let command =
            Command::RegisterNode { node: self.config.node, address: self.config.address.clone() };
        self.send(now, Purpose::Register, Request::Execute(command));
    }

    fn waits_for(&self, matches: impl Fn(Purpose) -> bool) -> bool {
        self.pending.values().any(|pending| matches(pending.purpose))
    }

    fn send(&mut self, now: Time, purpose: Purpose, request: Request) {
        self.next_id += 1;
        let id = self.next_id;
        let deadline = now + self.config.request_timeout_ms;
        self.pending.insert(id, Pending { purpose, deadline });
        self.actions.push(Action::Send { id, request });
    }

    /// Caches `config`: the newest are kept, and always the one just learned (a removed
    /// group is placed by an old one, fetched for the next poll).
    fn learn(&mut self, config: &Configuration) {
        self.configs.insert(config.num, config.clone());
        while self.configs.len() > CONFIGS_CACHED_MAX {
            let oldest = *self.configs.keys().find(|num| **num != config.num).expect("two or more");
            self.configs.remove(&oldest);
        }
    }

    /// After a poll, with what the store holds: create this node's replica of every group
    /// placed here that is newer than the store, start bringing back the older ones, destroy
    /// the replicas of retired groups, then plan the led groups' work.
    fn follow(&mut self, now: Time, local: &LocalState) {
        let (Some(view), Some(since)) = (self.view.clone(), self.since) else { return };
        let node = self.config.node;
        let mut placed_all = true;
        for (group, life) in &view.lives {
            let group = *group;
            if life.retired {
                self.stop_rejoin(group);
                if local.hosted.contains(&group)
                    && !self.waits_for(|p| p == Purpose::Replica(group))
                {
                    self.send(now, Purpose::Replica(group), Request::DestroyGroup { group });
                }
                continue;
            }
            // A removed group that still holds shards is placed as the first configuration
            // that listed it placed it.
            let listing =
                if view.config.groups.contains_key(&group) { view.latest } else { life.added };
            let Some(config) = self.configs.get(&listing) else {
                placed_all = false;
                if !self.waits_for(|purpose| purpose == Purpose::Config) {
                    let request = Request::Query { num: Some(listing) };
                    self.send(now, Purpose::Config, request);
                }
                continue;
            };
            let Some(members) = config.groups.get(&group).filter(|m| m.contains(&node)) else {
                continue;
            };
            if life.added <= since {
                // The group existed before this store: a replica here may be gone with a
                // data directory (or half rejoined when the node stopped). Once per agent,
                // attempts retried.
                let hosted = local.hosted.contains(&group);
                match self.rejoins.get(&group) {
                    None => self.start_rejoin(now, group, &members.clone(), hosted),
                    Some(Rejoin::RetryAt { at, joined }) if *at <= now => {
                        let joined = *joined;
                        self.attempt_rejoin(now, group, hosted || joined);
                    }
                    Some(_) => {}
                }
                continue;
            }
            if local.hosted.contains(&group) || self.waits_for(|p| p == Purpose::Replica(group)) {
                continue;
            }
            let request = Request::CreateGroup { group, members: members.clone() };
            self.send(now, Purpose::Replica(group), request);
        }
        self.followed = placed_all;
        let mut planned: Vec<MigrationTask> = local
            .led
            .iter()
            .flat_map(|(group, ownership)| plan(*group, ownership, view.latest, &view.lives))
            .collect();
        self.failing.retain(|key, failing| {
            planned.iter().any(|task| task.key() == *key && *task == failing.task)
        });
        self.order_pulls(&mut planned);
        for task in planned {
            self.start_task(now, task);
        }
    }

    /// Orders `planned` so that the pull limit is shared fairly: the other tasks first (they
    /// take no pull slot), then the pulls whose last run did not fail, each group's first
    /// pull before any group's second, then the pulls that failed, the one paused longest
    /// first. So pulls from a source that keeps failing cannot hold every slot while another
    /// pull waits, and a group with many shards to pull does not hold back another group.
    fn order_pulls(&self, planned: &mut [MigrationTask]) {
        let mut rank_in_group: BTreeMap<GroupId, usize> = BTreeMap::new();
        let mut order: BTreeMap<TaskKey, (bool, Option<Time>, usize)> = BTreeMap::new();
        for task in planned.iter() {
            if let MigrationTask::Pull { group, .. } = task {
                let rank = rank_in_group.entry(*group).or_default();
                let failed = self.failing.get(&task.key()).map(|failing| failing.retry_at);
                order.insert(task.key(), (true, failed, *rank));
                *rank += 1;
            }
        }
        planned.sort_by_key(|task| order.get(&task.key()).copied().unwrap_or_default());
    }

    fn start_rejoin(&mut self, now: Time, group: GroupId, members: &[NodeId], hosted: bool) {
        let node = self.config.node;
        if members == [node] {
            tracing::error!(group_id = %group,
                "this node was the group's only member and its data directory was lost: the \
                 group's data is gone and its shards cannot be served");
            self.rejoins.insert(group, Rejoin::Over);
            return;
        }
        if !hosted {
            tracing::warn!(group_id = %group,
                "this store is newer than the group and holds no replica of it: rejoining \
                 through the group's leader (removed, then added back as a learner and \
                 promoted)");
        }
        self.attempt_rejoin(now, group, hosted);
    }

    /// Starts a rejoin attempt on `group`; `hosted` if the replica here exists.
    fn attempt_rejoin(&mut self, now: Time, group: GroupId, hosted: bool) {
        let nodes = self.registered_nodes();
        let give_up_at = now + self.config.rejoin_attempt_ms;
        let (attempt, asks) =
            Attempt::start(now, self.config.node, group, hosted, give_up_at, &nodes);
        self.rejoins.insert(group, Rejoin::Running(Box::new(attempt)));
        self.rejoin_asks(now, group, asks);
    }

    /// Every node the controller has registered (the replicas that may lead a group).
    fn registered_nodes(&self) -> Vec<NodeId> {
        self.view.as_ref().map(|view| view.nodes.keys().copied().collect()).unwrap_or_default()
    }

    /// Hands an event to `group`'s running rejoin attempt, if any, and carries out what it
    /// asks.
    fn rejoin_event(
        &mut self,
        now: Time,
        group: GroupId,
        event: impl FnOnce(&mut Attempt, &[NodeId]) -> Vec<Ask>,
    ) {
        let nodes = self.registered_nodes();
        let Some(Rejoin::Running(attempt)) = self.rejoins.get_mut(&group) else { return };
        let asks = event(attempt, &nodes);
        self.rejoin_asks(now, group, asks);
    }

    fn rejoin_asks(&mut self, now: Time, group: GroupId, asks: Vec<Ask>) {
        for ask in asks {
            match ask {
                Ask::Send(requests) => {
                    for request in requests {
                        let purpose = match &request {
                            Request::GroupStatus { node: at, .. } => {
                                Purpose::RejoinStatus(group, *at)
                            }
                            _ => Purpose::RejoinStep(group),
                        };
                        self.send(now, purpose, request);
                    }
                }
                Ask::CancelSearch => {
                    self.cancel(
                        |purpose| matches!(purpose, Purpose::RejoinStatus(g, _) if g == group),
                    );
                }
                Ask::Over(Ok(view)) => {
                    tracing::info!(group_id = %group, voter_count = view.voters.len(),
                        "rejoined the group");
                    self.rejoins.insert(group, Rejoin::Over);
                }
                Ask::Over(Err(error)) => {
                    tracing::warn!(group_id = %group, %error, "cannot rejoin yet; retrying");
                    let joined = match self.rejoins.get(&group) {
                        Some(Rejoin::Running(attempt)) => attempt.has_joined(),
                        _ => false,
                    };
                    let at = now + self.config.rejoin_retry_ms;
                    self.rejoins.insert(group, Rejoin::RetryAt { at, joined });
                }
            }
        }
    }

    /// Stops the rejoin of a retired group (its replicas are being destroyed).
    fn stop_rejoin(&mut self, group: GroupId) {
        if let Some(Rejoin::Running(_)) = self.rejoins.insert(group, Rejoin::Over) {
            self.cancel(|purpose| match purpose {
                Purpose::RejoinStatus(g, _) | Purpose::RejoinStep(g) => g == group,
                _ => false,
            });
        }
    }

    /// Gives up on every pending request whose purpose `matches`.
    fn cancel(&mut self, matches: impl Fn(Purpose) -> bool) {
        let cancelled: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, pending)| matches(pending.purpose))
            .map(|(id, _)| *id)
            .collect();
        for id in cancelled {
            self.pending.remove(&id);
            self.actions.push(Action::Cancel { id });
        }
    }

    fn start_task(&mut self, now: Time, task: MigrationTask) {
        let key = task.key();
        let paused = self.failing.get(&key).is_some_and(|failing| failing.retry_at > now);
        let pulls = || self.tasks.keys().filter(|key| matches!(key, TaskKey::Pull(..))).count();
        let pull_waits = matches!(key, TaskKey::Pull(..)) && pulls() >= self.config.pulls_max;
        if self.tasks.contains_key(&key) || paused || pull_waits {
            return;
        }
        task_event!(tracing::Level::DEBUG, &task, "starting a migration task");
        self.tasks.insert(key, Task::new(task));
        self.step(now, key, TaskEvent::Start);
    }

    /// Moves task `key` on after `event`; a task that is over is forgotten.
    fn step(&mut self, now: Time, key: TaskKey, event: TaskEvent) {
        let Some(mut task) = self.tasks.remove(&key) else { return };
        match task.step(event, &self.configs) {
            Step::Send(request) => {
                self.send(now, Purpose::Task(key), request);
                self.tasks.insert(key, task);
            }
            Step::Over => {
                self.failing.remove(&key);
                task_event!(tracing::Level::DEBUG, task.task(), "migration task over");
            }
            Step::Failed(reason) => self.task_failed(now, task.task(), &reason),
        }
    }

    /// Pauses task `key`, which failed: one poll after its first failure, twice as long
    /// after each further failure in a row, up to [`AgentConfig::task_retry_max_ms`]. Logged
    /// at the failures numbered by a power of two, so a task failing for long fills no log.
    fn task_failed(&mut self, now: Time, task: &MigrationTask, reason: &str) {
        let key = task.key();
        let fresh = || Failing { task: task.clone(), failures: 0, retry_at: now };
        let failing = self.failing.entry(key).or_insert_with(fresh);
        if failing.task != *task {
            *failing = fresh();
        }
        failing.failures = failing.failures.saturating_add(1);
        let doublings = (failing.failures - 1).min(Time::BITS - 1);
        let pause = POLL_INTERVAL_MS
            .saturating_mul(1 << doublings)
            .min(self.config.task_retry_max_ms)
            .max(POLL_INTERVAL_MS);
        failing.retry_at = now + pause;
        let failures = failing.failures;
        // A level is a constant of its call site: two lines, alike but for it.
        if failures.is_power_of_two() {
            task_event!(tracing::Level::INFO, task, failures, pause_ms = pause, %reason,
                "migration task failed; it starts again after the pause");
        } else {
            task_event!(tracing::Level::DEBUG, task, failures, pause_ms = pause, %reason,
                "migration task failed; it starts again after the pause");
        }
    }
}
