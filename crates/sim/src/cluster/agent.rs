//! The node agent: the part of a storage node process that production runs on tokio
//! (crates/server `follower.rs`, `migrator.rs`, and the caller's side of
//! `migration_service.rs`), as an explicit state machine driven by polls and answers.
//!
//! Every [`POLL_INTERVAL_MS`] the agent (once registered with the controller) reads the
//! latest configuration, creates its replica of every group placed on this node that it
//! does not host (including removed groups that still hold shards), destroys its replica of
//! every retired group, reads the ownership of every group led here (`ReadLeaders`) and
//! starts the tasks `mosaic_shardkv::plan` returns, at most one per `TaskKey`:
//! - `Reconfigure`: fetch configurations `next - 1` and `next`, propose the switch;
//! - `Pull`: ask a replica of the previous owner for one chunk at a time (a `Handoff` read
//!   there), propose it as `InstallChunk` here, wait until it applies, ask for the next;
//!   a replica that fails hands over to the next one, from the same cursor;
//! - `Confirm`: have a replica of the previous owner propose `DeleteShard`, then propose
//!   `ConfirmHandoff` here;
//! - `Retire`: `Command::RetireGroup` to the controller.
//!
//! Each task waits for one answer at a time. A task whose request fails or times out stops,
//! and a later poll starts it again from the state in the group's log: every step names its
//! configuration, so repeating one changes nothing (the state machine answers `Stale`).
//! A crash loses the agent's memory: the node starts a new agent, which registers again.
//!
//! Replicas follow the configuration alone, never a group's Raft membership (which the
//! controller does not track): a replica the operator removed stays, inactive, until its
//! group is retired; a replica on a node the configuration does not list is destroyed only
//! when its group is retired; and a listed node that does not host its replica yet creates it
//! with the listed members even when the operator has replaced that node meanwhile (so does
//! the production follower, at its next configuration). Such a replica believes itself a
//! voter of a membership the group has left; its short log keeps it from being elected, and
//! it rejoins properly when the operator adds the node back.

use std::collections::{BTreeMap, BTreeSet};

use mosaic_controller::{Command, ConfigNum, Configuration, ControllerQuery, ControllerView};
use mosaic_engine::{ClientId, GroupId, ShardCursor};
use mosaic_raft::NodeId;
use mosaic_raftstore::Error;
use mosaic_shardkv::{Applied, MigrationCommand, MigrationOutcome, MigrationTask, TaskKey, plan};

use crate::cluster::Time;
use crate::cluster::controller_link::ControllerLink;
use crate::cluster::rpc::{Io, Request, RequestId, Response};

/// How often the agent reads the latest configuration (`follower.rs` `POLL_INTERVAL`).
pub(crate) const POLL_INTERVAL_MS: Time = 100;
/// A request unanswered for this long has failed.
const REQUEST_TIMEOUT_MS: Time = 1_000;
/// Configurations kept in memory.
const CONFIGS_CACHED_MAX: usize = 64;

/// What an answer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Register,
    Poll,
    /// A configuration for placing a removed group.
    Config,
    Leaders,
    /// Creating or destroying a replica of the group.
    Replica(GroupId),
    Task(TaskKey),
}

#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    target: NodeId,
    deadline: Time,
}

/// What moves a task on.
#[derive(Debug)]
enum TaskEvent {
    /// It was just started.
    Start,
    /// Its request was answered.
    Answer(Response),
    /// Its request got no answer in time.
    NoAnswer,
}

/// Where a running task is.
#[derive(Debug)]
enum Progress {
    /// Fetching configurations, then proposing the switch.
    Reconfigure,
    /// Pulling chunks.
    Pull(PullProgress),
    /// Deleting at the source, then confirming.
    Confirm(ConfirmProgress),
    /// Waiting for the controller.
    Retire,
}

/// Where a `Pull` task is.
#[derive(Debug, Default)]
struct PullProgress {
    /// The source replica asked (an index into the task's `nodes`).
    source: usize,
    /// Where the next chunk starts.
    cursor: ShardCursor,
    /// True while a chunk is being installed here.
    installing: bool,
    /// True when that chunk is the final one.
    last: bool,
}

/// Where a `Confirm` task is.
#[derive(Debug, Default)]
struct ConfirmProgress {
    /// The source replica asked to delete (an index into the task's `nodes`).
    source: usize,
    /// True once `ConfirmHandoff` is proposed here.
    confirming: bool,
}

/// The agent of one storage node. See the module documentation.
pub(crate) struct NodeAgent {
    node: NodeId,
    controller: ControllerLink,
    register: Option<mosaic_controller::Request>,
    registered: bool,
    view: Option<ControllerView>,
    configs: BTreeMap<ConfigNum, Configuration>,
    /// The running tasks. Invariant: each has exactly one request pending.
    tasks: BTreeMap<TaskKey, (MigrationTask, Progress)>,
    pending: BTreeMap<RequestId, Pending>,
}

impl NodeAgent {
    /// The agent of `node`'s incarnation `incarnation`, following the controller replicas
    /// `controllers`.
    pub(crate) fn new(node: NodeId, incarnation: u64, controllers: Vec<NodeId>) -> Self {
        let client = ClientId((1 << 40) | (node.0 << 20) | incarnation);
        Self {
            node,
            controller: ControllerLink::new(controllers, client),
            register: None,
            registered: false,
            view: None,
            configs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// The periodic step: fails what timed out, then registers or reads the configuration.
    pub(crate) fn poll(&mut self, io: &mut Io<'_>) {
        let expired: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.deadline <= io.now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let pending = self.pending.remove(&id).expect("listed");
            self.unanswered(io, &pending, None);
        }
        if self.waits_for(Purpose::Register) || self.waits_for(Purpose::Poll) {
            return;
        }
        if self.registered {
            let query = ControllerQuery { num: None };
            self.send_controller(io, Purpose::Poll, Request::ControllerRead(query));
        } else {
            let node = self.node;
            let register = self.register.get_or_insert_with(|| {
                let address = format!("sim-{node}:1");
                self.controller.new_request(Command::RegisterNode { node, address })
            });
            let request = Request::ControllerPropose(register.clone());
            self.send_controller(io, Purpose::Register, request);
        }
    }

    /// Handles the answer to request `id`; `hosted` are the groups this node's store hosts.
    pub(crate) fn on_response(
        &mut self,
        io: &mut Io<'_>,
        id: RequestId,
        response: Response,
        hosted: &BTreeSet<GroupId>,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return; // Timed out already.
        };
        let node = self.node;
        match (pending.purpose, response) {
            (Purpose::Task(key), response) => {
                if self.controller.is_replica(pending.target) {
                    match &response {
                        Response::ControllerView(Err(error))
                        | Response::ControllerOutcome(Err(error)) => {
                            self.controller.failed(pending.target, Some(error));
                        }
                        _ => self.controller.answered(pending.target),
                    }
                }
                self.step(io, key, TaskEvent::Answer(response));
            }
            (Purpose::Register, Response::ControllerOutcome(answer)) => match answer {
                Ok(Ok(outcome)) => {
                    tracing::debug!(%node, ?outcome, "registered");
                    self.controller.answered(pending.target);
                    self.registered = true;
                }
                Ok(Err(refusal)) => panic!("node {node}: registration refused: {refusal}"),
                Err(error) => self.unanswered(io, &pending, Some(&error)),
            },
            (Purpose::Poll, Response::ControllerView(answer)) => match answer {
                Ok(Ok(view)) => {
                    self.controller.answered(pending.target);
                    self.learn(&view.config);
                    self.view = Some(view);
                    self.follow(io, hosted);
                }
                Ok(Err(error)) => panic!("node {node}: reading the latest configuration: {error}"),
                Err(error) => self.unanswered(io, &pending, Some(&error)),
            },
            (Purpose::Config, Response::ControllerView(answer)) => match answer {
                Ok(Ok(view)) => self.learn(&view.config),
                Ok(Err(error)) => panic!("node {node}: reading a configuration: {error}"),
                Err(error) => self.unanswered(io, &pending, Some(&error)),
            },
            (Purpose::Leaders, Response::Leaders(led)) => {
                for (group, ownership) in led.unwrap_or_default() {
                    if let Ok(Some(ownership)) = ownership {
                        self.plan(io, group, &ownership);
                    }
                }
            }
            (Purpose::Replica(group), Response::Done(result)) => {
                if let Err(error) = result {
                    tracing::warn!(%node, %group, %error, "creating or destroying a replica failed");
                }
            }
            (purpose, response) => panic!("node {node}: {purpose:?} answered with {response:?}"),
        }
    }

    fn waits_for(&self, purpose: Purpose) -> bool {
        self.pending.values().any(|pending| pending.purpose == purpose)
    }

    fn send(&mut self, io: &mut Io<'_>, purpose: Purpose, target: NodeId, request: Request) {
        let id = io.request(target, request);
        let deadline = io.now + REQUEST_TIMEOUT_MS;
        self.pending.insert(id, Pending { purpose, target, deadline });
    }

    fn send_controller(&mut self, io: &mut Io<'_>, purpose: Purpose, request: Request) {
        let target = self.controller.target();
        self.send(io, purpose, target, request);
    }

    fn send_local(&mut self, io: &mut Io<'_>, purpose: Purpose, request: Request) {
        let node = self.node;
        self.send(io, purpose, node, request);
    }

    /// The request `pending` got no answer, or the refusal `error`.
    fn unanswered(&mut self, io: &mut Io<'_>, pending: &Pending, error: Option<&Error>) {
        if self.controller.is_replica(pending.target) {
            self.controller.failed(pending.target, error);
        }
        if let Purpose::Task(key) = pending.purpose {
            self.step(io, key, TaskEvent::NoAnswer);
        }
    }

    fn learn(&mut self, config: &Configuration) {
        self.configs.insert(config.num, config.clone());
        while self.configs.len() > CONFIGS_CACHED_MAX {
            self.configs.pop_first();
        }
    }

    /// After a poll: create and destroy replicas, then plan the led groups' work.
    fn follow(&mut self, io: &mut Io<'_>, hosted: &BTreeSet<GroupId>) {
        let view = self.view.clone().expect("just polled");
        for (group, life) in &view.lives {
            let group = *group;
            if self.waits_for(Purpose::Replica(group)) {
                continue;
            }
            if life.retired {
                if hosted.contains(&group) {
                    self.send_local(io, Purpose::Replica(group), Request::DestroyGroup { group });
                }
                continue;
            }
            if hosted.contains(&group) {
                continue;
            }
            // A removed group that still holds shards is placed as the first configuration
            // that listed it placed it.
            let listing =
                if view.config.groups.contains_key(&group) { view.latest } else { life.added };
            let Some(config) = self.configs.get(&listing) else {
                if !self.waits_for(Purpose::Config) {
                    let query = ControllerQuery { num: Some(listing) };
                    self.send_controller(io, Purpose::Config, Request::ControllerRead(query));
                }
                continue;
            };
            let Some(members) = config.groups.get(&group).filter(|m| m.contains(&self.node)) else {
                continue;
            };
            let request = Request::CreateGroup { group, members: members.clone() };
            self.send_local(io, Purpose::Replica(group), request);
        }
        if !self.waits_for(Purpose::Leaders) {
            self.send_local(io, Purpose::Leaders, Request::ReadLeaders);
        }
    }

    fn plan(&mut self, io: &mut Io<'_>, group: GroupId, ownership: &mosaic_shardkv::Ownership) {
        let Some(view) = self.view.clone() else { return };
        for task in plan(group, ownership, view.latest, &view.lives) {
            let key = task.key();
            if self.tasks.contains_key(&key) {
                continue;
            }
            let progress = match &task {
                MigrationTask::Reconfigure { .. } => Progress::Reconfigure,
                MigrationTask::Pull { .. } => Progress::Pull(PullProgress::default()),
                MigrationTask::Confirm { .. } => Progress::Confirm(ConfirmProgress::default()),
                MigrationTask::Retire { .. } => Progress::Retire,
            };
            tracing::debug!(node = %self.node, ?task, "starting a migration task");
            self.tasks.insert(key, (task, progress));
            self.step(io, key, TaskEvent::Start);
        }
    }

    /// Moves task `key` on after `event`; a task that is over (done, or failed until a
    /// later poll starts it again) is forgotten.
    fn step(&mut self, io: &mut Io<'_>, key: TaskKey, event: TaskEvent) {
        let Some((task, mut progress)) = self.tasks.remove(&key) else { return };
        let request = match (&task, &mut progress) {
            (MigrationTask::Reconfigure { group, next }, Progress::Reconfigure) => {
                self.reconfigure(*group, *next, event)
            }
            (MigrationTask::Pull { .. }, Progress::Pull(progress)) => {
                pull(self.node, &task, progress, event)
            }
            (MigrationTask::Confirm { .. }, Progress::Confirm(progress)) => {
                confirm(self.node, &task, progress, event)
            }
            (MigrationTask::Retire { group }, Progress::Retire) => match event {
                TaskEvent::Start => {
                    let request =
                        self.controller.new_request(Command::RetireGroup { group: *group });
                    Some((self.controller.target(), Request::ControllerPropose(request)))
                }
                TaskEvent::Answer(_) | TaskEvent::NoAnswer => None,
            },
            (task, progress) => unreachable!("task {task:?} with progress {progress:?}"),
        };
        match request {
            Some((target, request)) => {
                self.send(io, Purpose::Task(key), target, request);
                self.tasks.insert(key, (task, progress));
            }
            None => tracing::debug!(node = %self.node, ?key, "migration task over"),
        }
    }

    /// The next request of a `Reconfigure` task: the configurations it lacks, then the
    /// switch; `None` once the switch was answered, or something failed.
    fn reconfigure(
        &mut self,
        group: GroupId,
        next: ConfigNum,
        event: TaskEvent,
    ) -> Option<(NodeId, Request)> {
        match event {
            TaskEvent::Start => {}
            TaskEvent::Answer(Response::ControllerView(Ok(Ok(view)))) => self.learn(&view.config),
            TaskEvent::Answer(Response::KvApplied(outcome)) => {
                tracing::debug!(node = %self.node, %group, %next, ?outcome, "switch proposed");
                return None;
            }
            TaskEvent::Answer(_) | TaskEvent::NoAnswer => return None,
        }
        let previous = ConfigNum(next.0 - 1);
        for num in [previous, next] {
            if !self.configs.contains_key(&num) {
                let query = ControllerQuery { num: Some(num) };
                return Some((self.controller.target(), Request::ControllerRead(query)));
            }
        }
        let command = MigrationCommand::Reconfigure {
            previous: self.configs[&previous].clone(),
            next: self.configs[&next].clone(),
        };
        Some((self.node, Request::KvPropose { group, command: command.into() }))
    }
}

/// The next request of a `Pull` task: a chunk from a source replica, then its install here
/// (saying where the chunk starts), and so on until the final chunk is installed, starting
/// where the chunks installed so far end (the task's `resume`). A source that fails hands over to the next
/// one, from the same cursor; `None` once the shard is installed, or every source failed,
/// or an install did not apply.
fn pull(
    here: NodeId,
    task: &MigrationTask,
    progress: &mut PullProgress,
    event: TaskEvent,
) -> Option<(NodeId, Request)> {
    let MigrationTask::Pull { group, shard, num, from, nodes, resume } = task else {
        unreachable!("a pull task")
    };
    let (group, shard, num) = (*group, *shard, *num);
    match event {
        TaskEvent::Start => progress.cursor = resume.clone(),
        TaskEvent::Answer(Response::Chunk(Ok(chunk))) => {
            progress.installing = true;
            progress.last = chunk.next.is_none();
            let start = progress.cursor.clone();
            if let Some(next) = chunk.next {
                progress.cursor = next;
            }
            let command = MigrationCommand::InstallChunk {
                num,
                shard,
                from: Some(start),
                records: chunk.records,
                last: progress.last,
            };
            return Some((here, Request::KvPropose { group, command: command.into() }));
        }
        TaskEvent::Answer(Response::KvApplied(Ok(Applied::Migration(MigrationOutcome::Done))))
            if !progress.last =>
        {
            progress.installing = false
        }
        // The final chunk applied, or the shard was installed already (`Stale`), or the
        // group is not ready (`NotYet`), or this replica no longer leads: over.
        TaskEvent::Answer(Response::KvApplied(_)) => return None,
        TaskEvent::Answer(_) | TaskEvent::NoAnswer if progress.installing => return None,
        TaskEvent::Answer(_) | TaskEvent::NoAnswer => progress.source += 1,
    }
    let source = *nodes.get(progress.source)?;
    let request =
        Request::PullChunk { group: *from, to: group, shard, num, cursor: progress.cursor.clone() };
    Some((source, request))
}

/// The next request of a `Confirm` task: `DeleteShard` at a source replica (each in turn
/// until one applies it or finds it done; not when the source is retired, see
/// [`MigrationTask::Confirm`]), then `ConfirmHandoff` here; `None` once that is answered, or
/// every source failed.
fn confirm(
    here: NodeId,
    task: &MigrationTask,
    progress: &mut ConfirmProgress,
    event: TaskEvent,
) -> Option<(NodeId, Request)> {
    let MigrationTask::Confirm { group, shard, num, from, nodes, from_retired } = task else {
        unreachable!("a confirm task")
    };
    let (shard, num) = (*shard, *num);
    match event {
        TaskEvent::Start if !from_retired => {}
        _ if progress.confirming => return None,
        TaskEvent::Start
        | TaskEvent::Answer(Response::KvApplied(Ok(Applied::Migration(
            MigrationOutcome::Done | MigrationOutcome::Stale(_),
        )))) => {
            progress.confirming = true;
            let command = MigrationCommand::ConfirmHandoff { num, shard };
            return Some((here, Request::KvPropose { group: *group, command: command.into() }));
        }
        TaskEvent::Answer(_) | TaskEvent::NoAnswer => progress.source += 1,
    }
    let source = *nodes.get(progress.source)?;
    let command = MigrationCommand::DeleteShard { num, shard };
    Some((source, Request::KvPropose { group: *from, command: command.into() }))
}
