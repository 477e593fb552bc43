//! The simulated operator: changes the membership of storage groups the way `mosaic admin
//! --nodes ... group add-replica` and `remove-replica` do (crates/cli/src/admin/replicas.rs),
//! one job at a time.
//!
//! A job drives one group's voters to a target set, one change at a time, reading the
//! leader's status before every step (each storage node is asked; the first to confirm its
//! leadership by a ReadIndex round answers) and asking the planner the CLI runs too
//! ([`mosaic_raftstore::membership`]) what to do next, so that it goes on where it stopped
//! whatever happened in between (a lost answer, a leader change, a crash, a partition).
//!
//! A refusal (another change pending, a learner not caught up, no leader known) is retried
//! after a pause, as the CLI does; a job unfinished after `MembershipConfig::job_ms_max` is
//! given up (a later job goes on from the state it left).
//!
//! In the safety phase the operator picks a random group of the latest configuration every
//! `MembershipConfig::interval_ms` on average: a group it has not changed gets one of its
//! listed members replaced by a storage node the configuration does not list for it; a group
//! it changed gets its listed members back. In the liveness phase it puts back every group it
//! changed that is not retired, so that every group ends with the voters its configuration
//! lists. So at most one listed member of a group is out of it at a time.
//!
//! The controller is never told: it does not track Raft memberships. A listed node may then
//! host a removed replica (it stays, inactive, as in production), a node the configuration
//! does not list may lead, and node agents create and destroy replicas by the configuration
//! alone.

use std::collections::{BTreeMap, BTreeSet};

use mosaic_controller::{ControllerQuery, ControllerView};
use mosaic_engine::{ClientId, GroupId};
use mosaic_raft::{NodeId, Role, Status};
use mosaic_raftstore::Error;
use mosaic_raftstore::membership::{LeaderView, MembershipJob, MembershipStep};

use crate::cluster::Time;
use crate::cluster::config::MembershipConfig;
use crate::cluster::controller_link::ControllerLink;
use crate::cluster::report::MembershipStats;
use crate::cluster::rpc::{Io, Request, RequestId, Response};

/// A request unanswered for this long has failed (the CLI's call timeout).
const REQUEST_TIMEOUT_MS: Time = 1_000;
/// The pause before asking again after a refusal or while a learner catches up
/// (`replicas.rs` `RETRY_PAUSE`).
const RETRY_PAUSE_MS: Time = 200;

/// What the operator waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Waiting {
    Nothing,
    /// The latest configuration, to choose a job from.
    View {
        id: RequestId,
        target: NodeId,
        deadline: Time,
    },
    /// The group's status from every storage node, until one answers as its leader.
    Status {
        ids: BTreeSet<RequestId>,
        deadline: Time,
    },
    /// The answer to a step.
    Step {
        id: RequestId,
        step: MembershipStep,
        deadline: Time,
    },
}

/// One group's membership change in progress.
#[derive(Debug)]
struct Job {
    group: GroupId,
    /// What is left to do.
    membership: MembershipJob,
    give_up_at: Time,
}

/// The operator. See the module documentation.
pub(crate) struct Operator {
    controller: ControllerLink,
    storage_nodes: Vec<NodeId>,
    config: MembershipConfig,
    /// Groups whose voters it changed, with the members their configuration lists.
    changed: BTreeMap<GroupId, BTreeSet<NodeId>>,
    job: Option<Job>,
    waiting: Waiting,
    /// Nothing starts before then (a pause, or the time of the next job).
    next_at: Time,
    /// True in the liveness phase: only put groups back.
    restoring: bool,
    /// What it did.
    pub(crate) stats: MembershipStats,
}

impl Operator {
    /// An operator of `storage_nodes`, reading configurations from `controllers`.
    pub(crate) fn new(
        controllers: Vec<NodeId>,
        storage_nodes: Vec<NodeId>,
        config: MembershipConfig,
    ) -> Self {
        let next_at = config.interval_ms;
        Self {
            controller: ControllerLink::new(controllers, ClientId(1 << 42)),
            storage_nodes,
            config,
            changed: BTreeMap::new(),
            job: None,
            waiting: Waiting::Nothing,
            next_at,
            restoring: false,
            stats: MembershipStats::default(),
        }
    }

    /// From now on only put back the groups it changed, at once (the liveness phase). The job
    /// in progress, if any, is dropped: a restoration goes on from where it left the group.
    pub(crate) fn restore_only(&mut self, now: Time) {
        self.restoring = true;
        self.job = None;
        self.waiting = Waiting::Nothing;
        self.next_at = now;
    }

    /// Starts the next job by `at` if no job is running (a change during a migration).
    pub(crate) fn hurry(&mut self, at: Time) {
        if self.job.is_none() && self.waiting == Waiting::Nothing {
            self.next_at = self.next_at.min(at);
        }
    }

    /// True once, in the liveness phase, every group it changed is back to its listed
    /// members (or retired).
    pub(crate) fn is_done(&self) -> bool {
        self.restoring && self.changed.is_empty() && self.job.is_none()
    }

    /// What it is doing, for a failure report.
    pub(crate) fn describe(&self) -> String {
        format!(
            "operator: job {:?}, waiting for {:?}, groups to put back {:?}",
            self.job, self.waiting, self.changed
        )
    }

    /// The periodic step: fails what timed out, gives up a job that took too long, then
    /// starts the next step or job.
    pub(crate) fn poll(&mut self, io: &mut Io<'_>) {
        let deadline = match &self.waiting {
            Waiting::Nothing => None,
            Waiting::View { deadline, .. }
            | Waiting::Status { deadline, .. }
            | Waiting::Step { deadline, .. } => Some(*deadline),
        };
        if deadline.is_some_and(|deadline| deadline <= io.now) {
            if let Waiting::View { target, .. } = self.waiting {
                self.controller.failed(target, None);
            }
            self.waiting = Waiting::Nothing;
        }
        if self.waiting != Waiting::Nothing || io.now < self.next_at {
            return;
        }
        match &self.job {
            Some(job) if job.give_up_at <= io.now => {
                tracing::debug!(?job, "membership job given up");
                self.stats.jobs_given_up += 1;
                self.job = None;
                self.schedule_next(io);
            }
            Some(_) => self.ask_status(io),
            None if self.restoring && self.changed.is_empty() => {}
            None => {
                let target = self.controller.target();
                let id = io.request(target, Request::ControllerRead(ControllerQuery { num: None }));
                self.waiting = Waiting::View { id, target, deadline: io.now + REQUEST_TIMEOUT_MS };
            }
        }
    }

    /// Handles the answer to request `id`.
    pub(crate) fn on_response(&mut self, io: &mut Io<'_>, id: RequestId, response: Response) {
        match &mut self.waiting {
            Waiting::View { id: waited, target, .. } if *waited == id => {
                let target = *target;
                self.waiting = Waiting::Nothing;
                match response {
                    Response::ControllerView(Ok(Ok(view))) => {
                        self.controller.answered(target);
                        self.choose(io, &view);
                    }
                    Response::ControllerView(Ok(Err(error))) => {
                        panic!("operator: reading the latest configuration: {error}")
                    }
                    Response::ControllerView(Err(error)) => {
                        self.controller.failed(target, Some(&error));
                    }
                    other => panic!("operator: a configuration read answered {other:?}"),
                }
            }
            Waiting::Status { ids, .. } if ids.contains(&id) => {
                ids.remove(&id);
                let none_left = ids.is_empty();
                match response {
                    Response::Status(Ok(status)) if status.soft_state.role == Role::Leader => {
                        self.waiting = Waiting::Nothing;
                        self.decide(io, &status);
                    }
                    Response::Status(_) if none_left => self.pause(io),
                    Response::Status(_) => {}
                    other => panic!("operator: a status read answered {other:?}"),
                }
            }
            Waiting::Step { id: waited, step, .. } if *waited == id => {
                let step = *step;
                self.waiting = Waiting::Nothing;
                self.stepped(io, step, response);
            }
            // The answer to a request given up on, or a status after the leader's.
            _ => {}
        }
    }

    /// Chooses the next job from the latest configuration `view`.
    fn choose(&mut self, io: &mut Io<'_>, view: &ControllerView) {
        self.changed.retain(|group, _| view.lives.get(group).is_none_or(|life| !life.retired));
        let chosen = if self.restoring {
            self.changed.first_key_value().map(|(group, listed)| (*group, listed.clone()))
        } else {
            self.choose_change(io, view)
        };
        let Some((group, target)) = chosen else {
            self.schedule_next(io);
            return;
        };
        tracing::debug!(%group, ?target, "membership job");
        self.stats.jobs_started += 1;
        self.job = Some(Job {
            group,
            membership: MembershipJob::exactly(target),
            give_up_at: io.now + self.config.job_ms_max,
        });
        self.ask_status(io);
    }

    /// A random group of `view` and the voters to give it: its listed members back if it was
    /// changed, otherwise one listed member replaced by a node outside the group.
    fn choose_change(
        &mut self,
        io: &mut Io<'_>,
        view: &ControllerView,
    ) -> Option<(GroupId, BTreeSet<NodeId>)> {
        let groups: Vec<GroupId> = view.config.groups.keys().copied().collect();
        if groups.is_empty() {
            return None;
        }
        let group = groups[io.rng.below(groups.len() as u64) as usize];
        if let Some(listed) = self.changed.get(&group) {
            return Some((group, listed.clone()));
        }
        let listed: BTreeSet<NodeId> = view.config.groups[&group].iter().copied().collect();
        let outside: Vec<NodeId> =
            self.storage_nodes.iter().filter(|node| !listed.contains(node)).copied().collect();
        if outside.is_empty() {
            return None;
        }
        let old = *listed.iter().nth(io.rng.below(listed.len() as u64) as usize)?;
        let new = outside[io.rng.below(outside.len() as u64) as usize];
        tracing::debug!(%group, %old, %new, "replacing a member");
        self.stats.replacements += 1;
        self.changed.insert(group, listed.clone());
        let mut target = listed;
        target.remove(&old);
        target.insert(new);
        Some((group, target))
    }

    /// The next step of the job, from the leader's `status` (see the module documentation).
    fn decide(&mut self, io: &mut Io<'_>, status: &Status) {
        let Some(job) = self.job.as_mut() else { return };
        let Some(view) = LeaderView::of_leader(status) else { return };
        let step = job.membership.next(&view);
        let group = job.group;
        let (node, request) = match step {
            MembershipStep::Join { node, leader } => (node, Request::JoinGroup { group, leader }),
            MembershipStep::Change { change, unchanged_since } => {
                (view.leader, Request::ChangeMembership { group, change, unchanged_since })
            }
            MembershipStep::Wait => {
                self.pause(io);
                return;
            }
            MembershipStep::Done => {
                let job = self.job.take().expect("a job");
                let target = job.membership.voters();
                tracing::debug!(group = %job.group, voters = ?view.voters, "membership job done");
                if self.changed.get(&job.group) == Some(target) {
                    self.changed.remove(&job.group);
                }
                self.stats.jobs_done += 1;
                self.schedule_next(io);
                return;
            }
        };
        let id = io.request(node, request);
        self.waiting = Waiting::Step { id, step, deadline: io.now + REQUEST_TIMEOUT_MS };
    }

    /// `step` was answered with `response`.
    fn stepped(&mut self, io: &mut Io<'_>, step: MembershipStep, response: Response) {
        let Some(job) = self.job.as_mut() else { return };
        let group = job.group;
        match (step, response) {
            (MembershipStep::Join { node, .. }, Response::Done(Ok(()))) => {
                job.membership.joined(node);
                self.ask_status(io);
            }
            (MembershipStep::Change { change, .. }, Response::Membership(Ok(conf))) => {
                tracing::debug!(%group, ?change, ?conf, "membership changed");
                self.stats.changes += 1;
                self.ask_status(io);
            }
            (step, Response::Done(Err(error)) | Response::Membership(Err(error))) => {
                tracing::debug!(%group, ?step, %error, "membership step refused; retrying");
                if let Error::InvalidArgument { .. } = error {
                    // The CLI stops here: nothing it can retry would help.
                    panic!("operator: group {group}: {step:?} refused: {error}");
                }
                self.pause(io);
            }
            (step, response) => panic!("operator: {step:?} answered with {response:?}"),
        }
    }

    fn ask_status(&mut self, io: &mut Io<'_>) {
        let Some(job) = &self.job else { return };
        let group = job.group;
        let ids = self
            .storage_nodes
            .iter()
            .map(|node| io.request(*node, Request::GroupStatus { group }))
            .collect();
        self.waiting = Waiting::Status { ids, deadline: io.now + REQUEST_TIMEOUT_MS };
    }

    fn pause(&mut self, io: &mut Io<'_>) {
        self.waiting = Waiting::Nothing;
        self.next_at = io.now + RETRY_PAUSE_MS;
    }

    fn schedule_next(&mut self, io: &mut Io<'_>) {
        self.next_at = if self.restoring {
            io.now
        } else {
            io.now + 1 + io.rng.below(2 * self.config.interval_ms)
        };
    }
}
