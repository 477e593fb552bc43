//! [`NodeAgent`]: a storage node following the controller (the crate documentation says
//! what it decides, and how an executor runs it).

use std::collections::{BTreeMap, BTreeSet};

use mosaic_controller::{Command, ConfigNum, Configuration, ControllerView, GroupLife};
use mosaic_engine::GroupId;
use mosaic_raft::{ConfState, NodeId};
use mosaic_raftstore::ShownOut;
use mosaic_raftstore::membership::{LeaderView, MembershipJob};
use mosaic_shardkv::{MigrationTask, PlacedSince, TaskKey, plan};

use crate::io::{Action, Answer, LocalState, Request, RequestId, Time};
use crate::membership::{Ask, Attempt, RunKind};
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
    /// How long one attempt at a membership change (many requests) may take.
    pub membership_attempt_ms: Time,
    /// The pause after a failed attempt at a membership change, and between two checks of
    /// whether a replica no longer placed here may be destroyed.
    pub membership_retry_ms: Time,
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
    /// lost its replicas of them with a data directory, so it never creates them (it makes
    /// sure it is out of them, and their leaders add it back as a new replica).
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
    /// Creating the group's replica here.
    Create(GroupId),
    /// Destroying the group's replica here.
    Destroy(GroupId),
    /// A membership run's status read of its group at a node.
    RunStatus(RunKey, NodeId),
    /// A membership run's step (a join, a membership change at the leader).
    RunStep(RunKey),
    /// What the store holds, read just before a leave's removal of this node is sent (held
    /// in `leave_checks`): a replica here now is one the leader added, and stays.
    LeaveCheck(GroupId),
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

/// A membership run: of one kind, on one group.
type RunKey = (GroupId, RunKind);

/// A membership run, once started.
#[derive(Debug)]
enum Run {
    /// An attempt is running.
    Running(Box<Attempt>),
    /// The last attempt failed; the next one may start at the first poll from then on.
    RetryAt(Time),
    /// A [`RunKind::Leave`] found the node out of the group; it checks again from then on
    /// while no replica is here.
    Checked(Time),
    /// Over for this agent (a leave of a group whose only member is this node).
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
    /// (so the leaves it needs have started; a removed group is placed by a configuration
    /// that may still have to be fetched).
    followed: bool,
    configs: BTreeMap<ConfigNum, Configuration>,
    /// The membership runs started, and the leaves over.
    runs: BTreeMap<RunKey, Run>,
    /// The groups whose replica the store refused to create (it destroyed one before).
    not_creating: BTreeSet<GroupId>,
    /// The removal of this node a leave sends once the store is read again (see
    /// `Purpose::LeaveCheck`).
    leave_checks: BTreeMap<GroupId, Request>,
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
            runs: BTreeMap::new(),
            not_creating: BTreeSet::new(),
            leave_checks: BTreeMap::new(),
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

    /// True once the node is back in a safe state: the store's birth is known, the agent
    /// followed a configuration knowing where every group is placed, and every replica it
    /// may have lost with a data directory is out of its group (no [`RunKind::Leave`] is
    /// running or waiting to be retried; a status page can show the node as rejoining).
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.since.is_some()
            && self.followed
            && self.runs.iter().all(|((_, kind), run)| {
                *kind != RunKind::Leave || matches!(run, Run::Over | Run::Checked(_))
            })
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
        let running: Vec<RunKey> = self
            .runs
            .iter()
            .filter(|(_, run)| matches!(run, Run::Running(_)))
            .map(|(key, _)| *key)
            .collect();
        for key in running {
            self.run_event(now, key, |attempt| attempt.poll(now));
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
                    this one existed before it, and are joined through their leaders rather than \
                    created");
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
            (Purpose::Create(_), Answer::Done) => {}
            (Purpose::Create(group), Answer::Refused(reason)) => {
                // The store destroyed a replica of the group before: it joins through the
                // group's leader instead.
                tracing::info!(group_id = %group, %reason, "not creating the group's replica");
                self.not_creating.insert(group);
            }
            (Purpose::Destroy(group), Answer::Refused(reason)) => {
                tracing::info!(group_id = %group, %reason, "the replica was kept");
            }
            (Purpose::Destroy(group), Answer::Done) => {
                // The node is out of the group (or the group is retired): were the group to
                // place it again, it would be checked out of the group again first (a
                // replica destroyed right after it was added back must not stay a member).
                self.runs.remove(&(group, RunKind::Leave));
            }
            (Purpose::RunStatus(key, at), answer) => {
                self.run_event(now, key, |attempt| attempt.on_status(now, at, answer));
            }
            (Purpose::RunStep(key), answer) => {
                self.run_event(now, key, |attempt| attempt.on_step(now, answer));
            }
            (Purpose::LeaveCheck(group), answer) => self.leave_checked(now, group, answer),
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

    /// After a poll, with what the store holds: for every group placed here, create its
    /// replica (a new group, the founding members unchanged) or make sure a replica lost
    /// with a data directory is out of it; release the replicas no longer placed here and
    /// destroy those of retired groups; keep the members of every group led here as
    /// configured; then plan the led groups' migration work.
    fn follow(&mut self, now: Time, local: &LocalState) {
        let (Some(view), Some(since)) = (self.view.clone(), self.since) else { return };
        let node = self.config.node;
        let mut placed_all = true;
        self.runs.retain(|(group, kind), run| {
            *kind != RunKind::Reshape
                || local.memberships.contains_key(group)
                || matches!(run, Run::Running(_))
        });
        for (group, life) in &view.lives {
            let group = *group;
            if life.retired {
                self.stop_runs(group);
                if local.hosted.contains(&group)
                    && !self.waits_for(|p| p == Purpose::Destroy(group))
                {
                    let request = Request::DestroyGroup { group, shown_out: None };
                    self.send(now, Purpose::Destroy(group), request);
                }
                continue;
            }
            let listing = last_listing(life, view.latest);
            let Some(members) = self.members_in(now, listing, group) else {
                placed_all = false;
                continue;
            };
            if let Some(membership) = local.memberships.get(&group) {
                // Nodes leaving the cluster (only a removed group's last listing may still
                // name one) join after the others: one dead for good would otherwise hold
                // back the nodes the group's shards are looked for on.
                let leaving =
                    members.iter().filter(|node| view.node_states.contains_key(node)).copied();
                self.reshape(now, group, &members, leaving.collect(), membership);
            }
            let hosted = local.hosted.contains(&group);
            let listed = members.contains(&node);
            if hosted {
                if listed {
                    // Nothing to leave (a leave running from an older reading would take out
                    // a replica the leader just added).
                    self.stop_run((group, RunKind::Release));
                    self.stop_run((group, RunKind::Leave));
                } else {
                    self.release(now, group);
                }
                continue;
            }
            self.stop_run((group, RunKind::Release));
            if self.waits_for(|p| p == Purpose::Create(group)) {
                continue;
            }
            if life.added > since && !self.not_creating.contains(&group) {
                // A group created after the store: a founding member creates its replica
                // with the founding members (the one place `CreateGroup` is right), unless
                // the store had one before (it refuses then: that replica took part). Even
                // a founder no longer listed does: its empty replica is the one it would
                // have had from the group's birth had every message to it been lost, so
                // it changes nothing Raft does not already survive, and the group may need
                // it for a majority (its other founders replaced before they created
                // theirs). Once created, it is released like any replica not placed here.
                let founders = if !life.founders.is_empty() {
                    life.founders.clone()
                } else if listed {
                    // From a controller that does not send them: the configuration that
                    // added the group.
                    let Some(founding) = self.members_in(now, life.added, group) else {
                        placed_all = false;
                        continue;
                    };
                    founding
                } else {
                    // Not fetched for a group not placed here: that would be a
                    // configuration read for every such group at every poll.
                    Vec::new()
                };
                if founders.contains(&node) {
                    let request = Request::CreateGroup { group, members: founders };
                    self.send(now, Purpose::Create(group), request);
                    continue;
                }
            }
            if !listed {
                // Not placed here, and no replica: nothing to do.
                continue;
            }
            self.leave(now, group, &members);
        }
        self.followed = placed_all;
        let mut planned: Vec<MigrationTask> = local
            .led
            .iter()
            .flat_map(|(group, ownership)| plan(*group, ownership, view.latest, &view.lives))
            .collect();
        for task in &mut planned {
            if let MigrationTask::Pull { from, nodes, .. }
            | MigrationTask::Confirm { from, nodes, .. } = task
            {
                self.add_current_members(&view, *from, nodes);
            }
        }
        self.failing.retain(|key, failing| {
            planned.iter().any(|task| task.key() == *key && *task == failing.task)
        });
        self.order_pulls(&mut planned);
        for task in planned {
            self.start_task(now, task);
        }
    }

    /// `group`'s members in configuration `num` (none if it does not list the group), or
    /// `None` while that configuration is not known here: it is asked for then (one
    /// configuration at a time), for a later poll.
    fn members_in(&mut self, now: Time, num: ConfigNum, group: GroupId) -> Option<Vec<NodeId>> {
        if let Some(config) = self.configs.get(&num) {
            return Some(config.groups.get(&group).cloned().unwrap_or_default());
        }
        if !self.waits_for(|purpose| purpose == Purpose::Config) {
            self.send(now, Purpose::Config, Request::Query { num: Some(num) });
        }
        None
    }

    /// Adds to `nodes` (the previous owner's members when the shard moved) the members the
    /// configuration places `group` on now, if known: the group may have replaced every
    /// member since, and a shard must still be pulled from it and deleted at it.
    fn add_current_members(&self, view: &ControllerView, group: GroupId, nodes: &mut Vec<NodeId>) {
        let Some(life) = view.lives.get(&group) else { return };
        let listing = last_listing(life, view.latest);
        let Some(members) = self.configs.get(&listing).and_then(|config| config.groups.get(&group))
        else {
            return;
        };
        for member in members {
            if !nodes.contains(member) {
                nodes.push(*member);
            }
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

    /// Makes sure this node, placed in `group` (listing `members`) but holding no replica of
    /// it, is not a member: its replica may have been lost with a data directory, and must
    /// count in no quorum until the group's leader adds it back as a new node. Checked again
    /// after a pause for as long as no replica is here (the leader may have added the node
    /// while its replica was being destroyed, and would wait for that learner for ever).
    fn leave(&mut self, now: Time, group: GroupId, members: &[NodeId]) {
        let node = self.config.node;
        let key = (group, RunKind::Leave);
        match self.runs.get(&key) {
            None if members == [node] => {
                tracing::error!(group_id = %group,
                    "this node is the group's only member and holds no replica of it (its data \
                     directory was lost): the group's data is gone and its shards cannot be \
                     served");
                self.runs.insert(key, Run::Over);
            }
            None => {
                tracing::info!(group_id = %group,
                    "placed in a group this store holds no replica of: making sure the node is \
                     not a member (a replica lost with a data directory must count in no \
                     quorum) before the group's leader adds it as a new replica");
                self.start_run(now, key, MembershipJob::remove(node));
            }
            Some(Run::RetryAt(at) | Run::Checked(at)) if *at <= now => {
                self.start_run(now, key, MembershipJob::remove(node));
            }
            Some(_) => {}
        }
    }

    /// Destroys this node's replica of `group`, no longer placed here, once the group's
    /// leader shows the node out of the group (checked again after a pause while it is a
    /// member: its leader removes it once the members placed are voters).
    fn release(&mut self, now: Time, group: GroupId) {
        if self.waits_for(|p| p == Purpose::Destroy(group)) {
            return;
        }
        let key = (group, RunKind::Release);
        match self.runs.get(&key) {
            Some(Run::Running(_)) => {}
            Some(Run::RetryAt(at)) if *at > now => {}
            _ => self.start_run(now, key, MembershipJob::awaiting_removal(self.config.node)),
        }
    }

    /// Keeps the members of `group`, led here with `membership` applied, those the
    /// configuration lists (`members`), the `leaving` ones joining last: one attempt at a
    /// time, a new one when the configuration changed the target.
    fn reshape(
        &mut self,
        now: Time,
        group: GroupId,
        members: &[NodeId],
        leaving: BTreeSet<NodeId>,
        membership: &ConfState,
    ) {
        let key = (group, RunKind::Reshape);
        let target: BTreeSet<NodeId> = members.iter().copied().collect();
        let settled = membership.voters == target && membership.learners.is_empty();
        match self.runs.get(&key) {
            Some(Run::Running(attempt)) if *attempt.job().voters() == target => return,
            Some(Run::RetryAt(at)) if *at > now => return,
            Some(Run::Running(_)) => self.stop_run(key),
            _ => {}
        }
        if settled {
            self.runs.remove(&key);
        } else {
            tracing::info!(group_id = %group, target = ?target, voters = ?membership.voters,
                learners = ?membership.learners,
                "the group's members differ from those its configuration lists: changing them \
                 one at a time");
            self.start_run(now, key, MembershipJob::exactly(target).joining_last(leaving));
        }
    }

    /// Starts an attempt at `job` for run `key`. A leave or a release looks for the group's
    /// leader among every registered node; a reshape runs here, where the group is led.
    fn start_run(&mut self, now: Time, key: RunKey, job: MembershipJob) {
        let (group, kind) = key;
        let (asked, give_up_at) = match kind {
            RunKind::Leave => (self.registered_nodes(), now + self.config.membership_attempt_ms),
            // One check, read again while the node is a member for at most a request's time:
            // the node's leader may take long to remove it (a new member catching up).
            RunKind::Release => (self.registered_nodes(), now + self.config.request_timeout_ms),
            RunKind::Reshape => (vec![self.config.node], now + self.config.membership_attempt_ms),
        };
        let (attempt, asks) = Attempt::start(now, group, job, give_up_at, asked);
        self.runs.insert(key, Run::Running(Box::new(attempt)));
        self.run_asks(now, key, asks);
    }

    /// Every node the controller has registered (the replicas that may lead a group).
    fn registered_nodes(&self) -> Vec<NodeId> {
        self.view.as_ref().map(|view| view.nodes.keys().copied().collect()).unwrap_or_default()
    }

    /// Hands an event to run `key`'s attempt, if one is running, and carries out what it
    /// asks.
    fn run_event(&mut self, now: Time, key: RunKey, event: impl FnOnce(&mut Attempt) -> Vec<Ask>) {
        let Some(Run::Running(attempt)) = self.runs.get_mut(&key) else { return };
        let asks = event(attempt);
        self.run_asks(now, key, asks);
    }

    fn run_asks(&mut self, now: Time, key: RunKey, asks: Vec<Ask>) {
        for ask in asks {
            match ask {
                Ask::Send(requests) => {
                    for request in requests {
                        let purpose = match &request {
                            Request::GroupStatus { node: at, .. } => Purpose::RunStatus(key, *at),
                            Request::ChangeMembership { .. } if key.1 == RunKind::Leave => {
                                // The node's replica may have been created since the leave
                                // started (the leader joins the node): read the store first.
                                self.leave_checks.insert(key.0, request);
                                self.send(now, Purpose::LeaveCheck(key.0), Request::ReadLocal);
                                continue;
                            }
                            _ => Purpose::RunStep(key),
                        };
                        self.send(now, purpose, request);
                    }
                }
                Ask::CancelSearch => {
                    self.cancel(|purpose| matches!(purpose, Purpose::RunStatus(k, _) if k == key));
                }
                Ask::Over(Ok(view)) => self.run_done(now, key, &view),
                Ask::Over(Err(error)) => {
                    let (group, kind) = key;
                    match kind {
                        RunKind::Leave => tracing::warn!(group_id = %group, %error,
                            "cannot make sure this node is out of the group yet; retrying"),
                        RunKind::Release => tracing::debug!(group_id = %group, %error,
                            "the replica no longer placed here cannot be destroyed yet"),
                        RunKind::Reshape => tracing::info!(group_id = %group, %error,
                            "the group's members are not yet those configured; retrying"),
                    }
                    let at = now + self.config.membership_retry_ms;
                    self.runs.insert(key, Run::RetryAt(at));
                }
            }
        }
    }

    /// Run `key` did its job; `view` is the leader's last.
    fn run_done(&mut self, now: Time, key: RunKey, view: &LeaderView) {
        let (group, kind) = key;
        match kind {
            RunKind::Leave => {
                tracing::debug!(group_id = %group, voter_count = view.voters.len(),
                    "this node is out of the group; its leader adds it as a new replica");
                let at = now + self.config.membership_retry_ms;
                self.runs.insert(key, Run::Checked(at));
            }
            RunKind::Release => {
                self.runs.remove(&key);
                if self.placed_here(group) {
                    // Placed here again meanwhile: the leader may be adding this replica.
                    return;
                }
                tracing::info!(group_id = %group,
                    "the group's leader removed this node: destroying its replica");
                let shown_out = ShownOut { term: view.term, last_index: view.last_index };
                let request = Request::DestroyGroup { group, shown_out: Some(shown_out) };
                self.send(now, Purpose::Destroy(group), request);
            }
            RunKind::Reshape => {
                tracing::info!(group_id = %group, voters = ?view.voters,
                    "the group's members are those its configuration lists");
                self.runs.remove(&key);
            }
        }
    }

    /// True when the latest configuration polled places this node in `group`.
    fn placed_here(&self, group: GroupId) -> bool {
        self.view.as_ref().is_some_and(|view| {
            view.config
                .groups
                .get(&group)
                .is_some_and(|members| members.contains(&self.config.node))
        })
    }

    /// The store read before a leave's removal of this node: a replica here now was added by
    /// the group's leader after the leave started, so the leave stops; otherwise the removal
    /// is sent.
    fn leave_checked(&mut self, now: Time, group: GroupId, answer: Answer) {
        let key = (group, RunKind::Leave);
        let Some(removal) = self.leave_checks.remove(&group) else { return };
        match answer {
            Answer::Local(local) if local.hosted.contains(&group) => {
                tracing::info!(group_id = %group,
                    "a replica is here now (the group's leader added this node): not leaving");
                self.runs.remove(&key);
            }
            Answer::Local(_) => self.send(now, Purpose::RunStep(key), removal),
            answer => self.run_event(now, key, |attempt| attempt.on_step(now, answer)),
        }
    }

    /// Stops run `key` (its requests are cancelled) and forgets it.
    fn stop_run(&mut self, key: RunKey) {
        if let Some(Run::Running(_)) = self.runs.remove(&key) {
            if key.1 == RunKind::Leave {
                self.leave_checks.remove(&key.0);
            }
            self.cancel(|purpose| match purpose {
                Purpose::RunStatus(k, _) | Purpose::RunStep(k) => k == key,
                Purpose::LeaveCheck(group) => key == (group, RunKind::Leave),
                _ => false,
            });
        }
    }

    /// Stops every membership run of a retired group (its replicas are being destroyed).
    fn stop_runs(&mut self, group: GroupId) {
        for kind in [RunKind::Leave, RunKind::Release, RunKind::Reshape] {
            self.stop_run((group, kind));
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

/// The last configuration that lists the group of `life` (the latest is `latest`): a removed
/// group that still holds shards keeps the members its last configuration gave it.
fn last_listing(life: &GroupLife, latest: ConfigNum) -> ConfigNum {
    life.removed.map_or(latest, |removed| ConfigNum(removed.0 - 1))
}
