//! One migration task in progress ([`mosaic_shardkv::plan`] decides which; this module how):
//! each step names the next request, or ends the task.
//!
//! - `Reconfigure`: fetch configurations `next - 1` and `next` (unless known), propose the
//!   switch.
//! - `Pull`: ask a replica of the previous owner for one chunk at a time, propose it as
//!   `InstallChunk` here (saying where it starts), wait until it applies, ask for the next;
//!   a replica that fails hands over to the next one, from the same cursor.
//! - `Confirm`: have a replica of the previous owner delete its copy (each in turn until one
//!   applies it or finds it done, a replica that names another node as the group's leader
//!   adding that node to those asked; not when the previous owner is retired, see
//!   [`MigrationTask::Confirm`]), then propose `ConfirmHandoff` here.
//! - `Retire`: `Command::RetireGroup` to the controller.
//!
//! A task whose request fails stops ([`Step::Failed`]); a later poll starts it again from the
//! state in the group's log, after a pause that grows with each failure in a row (the agent's
//! backoff). Every step names its configuration, so repeating one changes nothing (the state
//! machine answers `Stale`).

use std::collections::BTreeMap;

use mosaic_controller::{Command, ConfigNum, Configuration};
use mosaic_engine::{GroupId, ShardCursor, ShardId};
use mosaic_raft::NodeId;
use mosaic_shardkv::{MigrationCommand, MigrationOutcome, MigrationTask};

use crate::io::{Answer, Request};

/// Logs an event about migration task `$task` (a `&MigrationTask`) at `$level`, with the
/// fields every such line carries: `task` (its kind), `group_id`, and `shard`,
/// `from_group_id` (the previous owner) and `config_num` where the task has them; then the
/// line's own fields and message.
macro_rules! task_event {
    ($level:expr, $task:expr, $($rest:tt)+) => {{
        let fields = $crate::task::TaskFields::of($task);
        tracing::event!(
            $level,
            task = fields.kind,
            group_id = %fields.group,
            shard = fields.shard.map(tracing::field::display),
            from_group_id = fields.from.map(tracing::field::display),
            config_num = fields.num.map(tracing::field::display),
            $($rest)+
        )
    }};
}
pub(crate) use task_event;

/// What a log line says of a migration task (see `task_event!`).
pub(crate) struct TaskFields {
    /// The kind: `reconfigure`, `pull`, `confirm` or `retire`.
    pub(crate) kind: &'static str,
    /// The group whose task it is.
    pub(crate) group: GroupId,
    /// The shard moved, for a pull or a confirm.
    pub(crate) shard: Option<ShardId>,
    /// The shard's previous owner, for a pull or a confirm.
    pub(crate) from: Option<GroupId>,
    /// The configuration: the one switched to, or the one that moved the shard.
    pub(crate) num: Option<ConfigNum>,
}

impl TaskFields {
    /// The fields of `task`.
    pub(crate) fn of(task: &MigrationTask) -> Self {
        match *task {
            MigrationTask::Reconfigure { group, next } => {
                Self { kind: "reconfigure", group, shard: None, from: None, num: Some(next) }
            }
            MigrationTask::Pull { group, shard, num, from, .. } => {
                Self { kind: "pull", group, shard: Some(shard), from: Some(from), num: Some(num) }
            }
            MigrationTask::Confirm { group, shard, num, from, .. } => Self {
                kind: "confirm",
                group,
                shard: Some(shard),
                from: Some(from),
                num: Some(num),
            },
            MigrationTask::Retire { group } => {
                Self { kind: "retire", group, shard: None, from: None, num: None }
            }
        }
    }
}

/// What moves a task on.
#[derive(Debug)]
pub(crate) enum TaskEvent {
    /// It was just started.
    Start,
    /// Its request was answered (possibly with [`Answer::Failed`]).
    Answer(Answer),
}

/// What a task does after an event.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Sends this request and waits for its answer.
    Send(Request),
    /// The task is over: done, or nothing to do now (the group is not ready for it, or
    /// another task got further).
    Over,
    /// The task stopped on a failure: a request failed, or every replica asked failed.
    Failed(String),
}

/// A task and where it is.
#[derive(Debug)]
pub(crate) struct Task {
    task: MigrationTask,
    progress: Progress,
}

/// Where a running task is.
#[derive(Debug)]
enum Progress {
    /// Fetching configurations, then proposing the switch. What it fetched is kept here: the
    /// agent's cache may have evicted it by the time the answer comes (it keeps the newest).
    Reconfigure {
        /// The configurations this task fetched.
        fetched: BTreeMap<ConfigNum, Configuration>,
    },
    /// Pulling chunks.
    Pull {
        /// The source replica asked (an index into the task's `nodes`).
        source: usize,
        /// Where the next chunk starts.
        cursor: ShardCursor,
        /// True while a chunk is being installed here.
        installing: bool,
        /// True when that chunk is the final one.
        last: bool,
    },
    /// Deleting at the source, then confirming.
    Confirm {
        /// The source replica asked to delete (an index into the task's `nodes` followed by
        /// `named`).
        source: usize,
        /// Leaders the replicas asked named, each once at most, asked after the task's
        /// `nodes`: a source group that changed members may be led by a node the
        /// configurations no longer list for it, or by a listed node asked before it led.
        named: Vec<NodeId>,
        /// True once `ConfirmHandoff` is proposed here.
        confirming: bool,
    },
    /// Waiting for the controller.
    Retire,
}

impl Task {
    /// `task`, not started.
    pub(crate) fn new(task: MigrationTask) -> Self {
        let progress = match &task {
            MigrationTask::Reconfigure { .. } => Progress::Reconfigure { fetched: BTreeMap::new() },
            MigrationTask::Pull { resume, .. } => {
                Progress::Pull { source: 0, cursor: resume.clone(), installing: false, last: false }
            }
            MigrationTask::Confirm { .. } => {
                Progress::Confirm { source: 0, named: Vec::new(), confirming: false }
            }
            MigrationTask::Retire { .. } => Progress::Retire,
        };
        Self { task, progress }
    }

    /// The task as planned.
    pub(crate) fn task(&self) -> &MigrationTask {
        &self.task
    }

    /// What the task does after `event`. `configs` are the configurations known here (the
    /// agent learns a configuration an answer brings before the task sees it).
    pub(crate) fn step(
        &mut self,
        event: TaskEvent,
        configs: &BTreeMap<ConfigNum, Configuration>,
    ) -> Step {
        let task = &self.task;
        match (task, &mut self.progress) {
            (MigrationTask::Reconfigure { group, next }, Progress::Reconfigure { fetched }) => {
                reconfigure(task, *group, *next, event, configs, fetched)
            }
            (
                MigrationTask::Pull { group, shard, num, from, nodes, .. },
                Progress::Pull { source, cursor, installing, last },
            ) => {
                match event {
                    TaskEvent::Start => {}
                    TaskEvent::Answer(Answer::Chunk(chunk)) if !*installing => {
                        *installing = true;
                        *last = chunk.next.is_none();
                        let start = cursor.clone();
                        if let Some(next) = chunk.next {
                            *cursor = next;
                        }
                        let command = MigrationCommand::InstallChunk {
                            num: *num,
                            shard: *shard,
                            from: Some(start),
                            records: chunk.records,
                            last: *last,
                        };
                        return Step::Send(Request::Propose { group: *group, command });
                    }
                    TaskEvent::Answer(Answer::Applied(MigrationOutcome::Done))
                        if *installing && !*last =>
                    {
                        *installing = false;
                    }
                    TaskEvent::Answer(answer @ Answer::Applied(_)) if *installing => {
                        // The final chunk applied, or the shard was installed already or
                        // another pull got further (`Stale`), or the group is not ready
                        // (`NotYet`): over.
                        task_event!(tracing::Level::INFO, task, %answer, "pull over");
                        return Step::Over;
                    }
                    // An install that failed: this replica may no longer lead.
                    TaskEvent::Answer(answer) if *installing => {
                        return Step::Failed(format!("installing a chunk: {answer}"));
                    }
                    // The source failed: the next one goes on from the same cursor.
                    TaskEvent::Answer(_) => *source += 1,
                }
                let Some(source) = nodes.get(*source).copied() else {
                    return Step::Failed(format!("no replica of group {from} served the pull"));
                };
                Step::Send(Request::PullChunk {
                    source,
                    from: *from,
                    to: *group,
                    shard: *shard,
                    num: *num,
                    cursor: cursor.clone(),
                })
            }
            (
                MigrationTask::Confirm { group, shard, num, from, nodes, from_retired },
                Progress::Confirm { source, named, confirming },
            ) => {
                match event {
                    TaskEvent::Start if !from_retired => {}
                    TaskEvent::Answer(Answer::Failed(reason)) if *confirming => {
                        return Step::Failed(format!("confirming the handoff: {reason}"));
                    }
                    TaskEvent::Answer(answer @ Answer::Redirect(_)) if *confirming => {
                        return Step::Failed(format!("confirming the handoff: {answer}"));
                    }
                    TaskEvent::Answer(answer) if *confirming => {
                        task_event!(tracing::Level::INFO, task, %answer, "handoff confirmed");
                        return Step::Over;
                    }
                    TaskEvent::Start
                    | TaskEvent::Answer(Answer::Applied(
                        MigrationOutcome::Done | MigrationOutcome::Stale(_),
                    )) => {
                        *confirming = true;
                        let command = MigrationCommand::ConfirmHandoff { num: *num, shard: *shard };
                        return Step::Send(Request::Propose { group: *group, command });
                    }
                    TaskEvent::Answer(Answer::Redirect(leader)) => {
                        // Asked next unless it will be anyway; each node named once at most
                        // (a listed node asked before it led is asked again).
                        let mut ahead = nodes.iter().chain(named.iter()).skip(*source + 1);
                        if !named.contains(&leader) && !ahead.any(|node| *node == leader) {
                            named.push(leader);
                        }
                        *source += 1;
                    }
                    TaskEvent::Answer(_) => *source += 1,
                }
                let Some(source) = nodes.iter().chain(named.iter()).nth(*source).copied() else {
                    return Step::Failed(format!("no replica of group {from} deleted its copy"));
                };
                Step::Send(Request::DeleteShard { source, group: *from, shard: *shard, num: *num })
            }
            (MigrationTask::Retire { group }, Progress::Retire) => match event {
                TaskEvent::Start => {
                    Step::Send(Request::Execute(Command::RetireGroup { group: *group }))
                }
                TaskEvent::Answer(Answer::Failed(reason)) => {
                    Step::Failed(format!("retiring the removed group: {reason}"))
                }
                TaskEvent::Answer(answer) => {
                    task_event!(tracing::Level::INFO, task, %answer,
                        "retiring the removed group answered");
                    Step::Over
                }
            },
            (task, progress) => unreachable!("task {task:?} with progress {progress:?}"),
        }
    }
}

/// What `task`, a `Reconfigure` of `group` to `next`, does after `event`: fetch the
/// configurations it lacks, then propose the switch; over once the switch was answered.
fn reconfigure(
    task: &MigrationTask,
    group: GroupId,
    next: ConfigNum,
    event: TaskEvent,
    configs: &BTreeMap<ConfigNum, Configuration>,
    fetched: &mut BTreeMap<ConfigNum, Configuration>,
) -> Step {
    let previous = ConfigNum(next.0 - 1);
    match event {
        TaskEvent::Start => {}
        TaskEvent::Answer(Answer::View(view)) => {
            if view.config.num == previous || view.config.num == next {
                fetched.insert(view.config.num, view.config);
            }
        }
        TaskEvent::Answer(Answer::Failed(reason)) => {
            return Step::Failed(format!("switching to configuration {next}: {reason}"));
        }
        TaskEvent::Answer(answer) => {
            task_event!(tracing::Level::INFO, task, %answer, "switch answered");
            return Step::Over;
        }
    }
    let known = |num: ConfigNum| fetched.get(&num).or_else(|| configs.get(&num)).cloned();
    let Some(previous) = known(previous) else {
        return Step::Send(Request::Query { num: Some(previous) });
    };
    let Some(next) = known(next) else {
        return Step::Send(Request::Query { num: Some(next) });
    };
    Step::Send(Request::Propose {
        group,
        command: MigrationCommand::Reconfigure { previous, next },
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mosaic_engine::{ShardChunk, ShardId, ShardRecord};
    use mosaic_raft::NodeId;

    use super::*;

    fn data(key: &'static str) -> ShardRecord {
        ShardRecord::Data { key: Bytes::from_static(key.as_bytes()), value: Bytes::new() }
    }

    fn answer(task: &mut Task, answer: Answer) -> Step {
        task.step(TaskEvent::Answer(answer), &BTreeMap::new())
    }

    const GROUP: GroupId = GroupId(100);
    const FROM: GroupId = GroupId(101);
    const SHARD: ShardId = ShardId(3);
    const NUM: ConfigNum = ConfigNum(7);

    #[test]
    fn a_pull_installs_chunk_by_chunk_and_hands_over_to_the_next_source_at_the_same_cursor() {
        let (n1, n2) = (NodeId(1), NodeId(2));
        let mut task = Task::new(MigrationTask::Pull {
            group: GROUP,
            shard: SHARD,
            num: NUM,
            from: FROM,
            nodes: vec![n1, n2],
            resume: ShardCursor::Start,
        });
        let pull = |source, cursor| {
            Step::Send(Request::PullChunk {
                source,
                from: FROM,
                to: GROUP,
                shard: SHARD,
                num: NUM,
                cursor,
            })
        };
        let install = |from, records, last| {
            let command = MigrationCommand::InstallChunk {
                num: NUM,
                shard: SHARD,
                from: Some(from),
                records,
                last,
            };
            Step::Send(Request::Propose { group: GROUP, command })
        };
        assert_eq!(task.step(TaskEvent::Start, &BTreeMap::new()), pull(n1, ShardCursor::Start));
        let after_a = ShardCursor::after(&data("a"));
        let chunk = ShardChunk { records: vec![data("a")], next: Some(after_a.clone()) };
        assert_eq!(
            answer(&mut task, Answer::Chunk(chunk)),
            install(ShardCursor::Start, vec![data("a")], false)
        );
        assert_eq!(
            answer(&mut task, Answer::Applied(MigrationOutcome::Done)),
            pull(n1, after_a.clone())
        );
        assert_eq!(answer(&mut task, Answer::Failed("gone".into())), pull(n2, after_a.clone()));
        let chunk = ShardChunk { records: vec![data("b")], next: None };
        assert_eq!(
            answer(&mut task, Answer::Chunk(chunk)),
            install(after_a, vec![data("b")], true)
        );
        assert_eq!(answer(&mut task, Answer::Applied(MigrationOutcome::Done)), Step::Over);
    }

    /// A pull of `SHARD` from group `FROM`, whose only replica is on node 1.
    fn pull_from_node_1() -> MigrationTask {
        MigrationTask::Pull {
            group: GROUP,
            shard: SHARD,
            num: NUM,
            from: FROM,
            nodes: vec![NodeId(1)],
            resume: ShardCursor::Start,
        }
    }

    #[test]
    fn a_pull_stops_when_every_source_failed_or_an_install_did_not_apply() {
        let mut task = Task::new(pull_from_node_1());
        assert!(matches!(task.step(TaskEvent::Start, &BTreeMap::new()), Step::Send(_)));
        assert_eq!(
            answer(&mut task, Answer::Failed("gone".into())),
            Step::Failed("no replica of group 101 served the pull".into())
        );

        let mut task = Task::new(MigrationTask::Pull {
            group: GROUP,
            shard: SHARD,
            num: NUM,
            from: FROM,
            nodes: vec![NodeId(1), NodeId(2)],
            resume: ShardCursor::Start,
        });
        task.step(TaskEvent::Start, &BTreeMap::new());
        let chunk =
            ShardChunk { records: vec![data("a")], next: Some(ShardCursor::after(&data("a"))) };
        assert!(matches!(answer(&mut task, Answer::Chunk(chunk)), Step::Send(_)));
        // Not leading any more: the task ends rather than pulling from another source.
        let failed = answer(&mut task, Answer::Failed("not leader".into()));
        assert!(matches!(failed, Step::Failed(_)), "{failed:?}");
    }

    #[test]
    fn a_confirm_deletes_at_a_source_then_confirms_here() {
        let (n1, n2) = (NodeId(1), NodeId(2));
        let confirm = |from_retired| {
            Task::new(MigrationTask::Confirm {
                group: GROUP,
                shard: SHARD,
                num: NUM,
                from: FROM,
                nodes: vec![n1, n2],
                from_retired,
            })
        };
        let delete = |source| {
            Step::Send(Request::DeleteShard { source, group: FROM, shard: SHARD, num: NUM })
        };
        let confirm_here = || {
            Step::Send(Request::Propose {
                group: GROUP,
                command: MigrationCommand::ConfirmHandoff { num: NUM, shard: SHARD },
            })
        };
        let mut task = confirm(false);
        assert_eq!(task.step(TaskEvent::Start, &BTreeMap::new()), delete(n1));
        let not_yet = Answer::Applied(MigrationOutcome::NotYet("not switched".into()));
        assert_eq!(answer(&mut task, not_yet), delete(n2));
        let stale = Answer::Applied(MigrationOutcome::Stale("deleted already".into()));
        assert_eq!(answer(&mut task, stale), confirm_here());
        assert_eq!(answer(&mut task, Answer::Applied(MigrationOutcome::Done)), Step::Over);

        // Every source failed: nothing confirmed.
        let mut task = confirm(false);
        task.step(TaskEvent::Start, &BTreeMap::new());
        assert_eq!(answer(&mut task, Answer::Failed("gone".into())), delete(n2));
        let failed = answer(&mut task, Answer::Failed("gone".into()));
        assert_eq!(failed, Step::Failed("no replica of group 101 deleted its copy".into()));

        // A retired source holds nothing: confirm at once; a confirmation that fails fails.
        let mut task = confirm(true);
        assert_eq!(task.step(TaskEvent::Start, &BTreeMap::new()), confirm_here());
        let failed = answer(&mut task, Answer::Failed("not leader".into()));
        assert_eq!(failed, Step::Failed("confirming the handoff: not leader".into()));
    }

    /// Found by the simulator (a node dead for good while members were replaced): a removed
    /// group led by a member its configurations no longer list never handed its shard off.
    #[test]
    fn a_confirm_follows_a_source_that_names_a_leader_outside_the_nodes_listed() {
        let (n1, n2, n9) = (NodeId(1), NodeId(2), NodeId(9));
        let confirm = |nodes: Vec<NodeId>| {
            let mut task = Task::new(MigrationTask::Confirm {
                group: GROUP,
                shard: SHARD,
                num: NUM,
                from: FROM,
                nodes,
                from_retired: false,
            });
            let started = task.step(TaskEvent::Start, &BTreeMap::new());
            (task, started)
        };
        let delete = |source| {
            Step::Send(Request::DeleteShard { source, group: FROM, shard: SHARD, num: NUM })
        };
        let (mut task, started) = confirm(vec![n1, n2]);
        assert_eq!(started, delete(n1));
        assert_eq!(answer(&mut task, Answer::Redirect(n9)), delete(n2));
        // Named again: asked once.
        assert_eq!(answer(&mut task, Answer::Redirect(n9)), delete(n9));
        let confirm_here = Step::Send(Request::Propose {
            group: GROUP,
            command: MigrationCommand::ConfirmHandoff { num: NUM, shard: SHARD },
        });
        assert_eq!(answer(&mut task, Answer::Applied(MigrationOutcome::Done)), confirm_here);
        // A confirmation here answered with a redirect is not a confirmation.
        assert!(matches!(answer(&mut task, Answer::Redirect(n1)), Step::Failed(_)));

        // A listed node named before its turn is asked in its turn; one asked before it led
        // is asked again, once: the leadership moving back and forth ends the task.
        let (mut task, started) = confirm(vec![n1, n2]);
        assert_eq!(started, delete(n1));
        assert_eq!(answer(&mut task, Answer::Redirect(n2)), delete(n2));
        assert_eq!(answer(&mut task, Answer::Redirect(n1)), delete(n1));
        assert_eq!(answer(&mut task, Answer::Redirect(n2)), delete(n2));
        assert_eq!(
            answer(&mut task, Answer::Redirect(n1)),
            Step::Failed("no replica of group 101 deleted its copy".into())
        );
    }

    #[test]
    fn a_switch_fetches_the_configurations_it_lacks_first() {
        let mut task = Task::new(MigrationTask::Reconfigure { group: GROUP, next: NUM });
        let mut configs = BTreeMap::new();
        let fetch = |num| Step::Send(Request::Query { num: Some(num) });
        assert_eq!(task.step(TaskEvent::Start, &configs), fetch(ConfigNum(6)));
        let six = Configuration { num: ConfigNum(6), ..Configuration::initial(4) };
        configs.insert(six.num, six.clone());
        let view = |config: &Configuration| {
            Answer::View(mosaic_controller::ControllerView {
                config: config.clone(),
                latest: NUM,
                nodes: BTreeMap::new(),
                node_states: BTreeMap::new(),
                lives: BTreeMap::new(),
                controllers: BTreeMap::new(),
            })
        };
        assert_eq!(task.step(TaskEvent::Answer(view(&six)), &configs), fetch(NUM));
        let seven = Configuration { num: NUM, ..Configuration::initial(4) };
        configs.insert(seven.num, seven.clone());
        let switch = MigrationCommand::Reconfigure { previous: six, next: seven.clone() };
        assert_eq!(
            task.step(TaskEvent::Answer(view(&seven)), &configs),
            Step::Send(Request::Propose { group: GROUP, command: switch })
        );
        assert_eq!(
            task.step(TaskEvent::Answer(Answer::Applied(MigrationOutcome::Done)), &configs),
            Step::Over
        );
        let mut task = Task::new(MigrationTask::Reconfigure { group: GROUP, next: NUM });
        task.step(TaskEvent::Start, &BTreeMap::new());
        assert_eq!(
            task.step(TaskEvent::Answer(Answer::Failed("no answer".into())), &configs),
            Step::Failed("switching to configuration 7: no answer".into())
        );
    }

    #[test]
    fn a_log_line_names_a_task_by_ids_and_an_answer_by_counts() {
        let pull = pull_from_node_1();
        let fields = TaskFields::of(&pull);
        assert_eq!(
            (fields.kind, fields.group, fields.shard, fields.from, fields.num),
            ("pull", GROUP, Some(SHARD), Some(FROM), Some(NUM))
        );
        let fields = TaskFields::of(&MigrationTask::Retire { group: GROUP });
        assert_eq!((fields.kind, fields.shard, fields.num), ("retire", None, None));

        let chunk = Answer::Chunk(ShardChunk { records: vec![data("a"), data("b")], next: None });
        assert_eq!(chunk.to_string(), "a chunk of 2 records, the last");
        let moves = (0..3)
            .map(|shard| mosaic_controller::ShardMove {
                shard: ShardId(shard),
                from: Some(FROM),
                to: Some(GROUP),
            })
            .collect();
        let created =
            Answer::Executed(mosaic_controller::Outcome::ConfigCreated { num: NUM, moves });
        assert_eq!(created.to_string(), "executed: configuration 7 created, 3 shards change owner");
    }
}
