//! The simulated operator: changes the membership of storage groups the way `mosaic admin
//! --nodes ... group add-replica` and `remove-replica` do (crates/cli/src/admin/replicas.rs),
//! one job at a time.
//!
//! A job drives one group's voters to a target set, one change at a time: it is the
//! membership run the CLI and a rejoining node execute too
//! ([`mosaic_raftstore::membership_run`]), which reads the leader's status before every step
//! (each storage node is asked; the first to confirm its leadership by a ReadIndex round
//! answers), asks the planner what to do next, retries after a pause, and gives up after
//! `MembershipConfig::job_ms_max` (a later job goes on from the state it left). This module
//! only carries the run's requests over the simulated network.
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
use mosaic_raft::NodeId;
use mosaic_raftstore::Error;
use mosaic_raftstore::membership::{LeaderView, MembershipJob};
use mosaic_raftstore::membership_run::{
    LeaderSearch, MembershipError, MembershipRun, RunAction, StepFailure,
};

use crate::cluster::Time;
use crate::cluster::config::MembershipConfig;
use crate::cluster::controller_link::ControllerLink;
use crate::cluster::report::MembershipStats;
use crate::cluster::rpc::{Io, Request, RequestId, Response};

/// A request unanswered for this long has failed (the CLI's call timeout).
const REQUEST_TIMEOUT_MS: Time = 1_000;

/// What the operator waits for.
#[derive(Debug)]
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
        asked: BTreeMap<RequestId, NodeId>,
        search: LeaderSearch,
        deadline: Time,
    },
    /// The answer to a step.
    Step {
        id: RequestId,
        deadline: Time,
    },
}

/// The operator. See the module documentation.
pub(crate) struct Operator {
    controller: ControllerLink,
    storage_nodes: Vec<NodeId>,
    config: MembershipConfig,
    /// Groups whose voters it changed, with the members their configuration lists.
    changed: BTreeMap<GroupId, BTreeSet<NodeId>>,
    /// One group's membership change in progress.
    job: Option<MembershipRun>,
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
        if self.job.is_none() && matches!(self.waiting, Waiting::Nothing) {
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

    /// The periodic step: fails what timed out, then starts the next step or job.
    pub(crate) fn poll(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
            Waiting::View { target, deadline, .. } if deadline <= now => {
                self.controller.failed(target, None);
            }
            Waiting::Status { deadline, .. } if deadline <= now => {
                self.on_run(io, |run| run.on_leader(now, Err("no answer in time".into())));
            }
            Waiting::Step { deadline, .. } if deadline <= now => {
                let failed = Err(StepFailure::Failed("no answer in time".into()));
                self.on_run(io, |run| run.on_step(now, failed));
            }
            waiting => self.waiting = waiting,
        }
        if !matches!(self.waiting, Waiting::Nothing) || now < self.next_at {
            return;
        }
        match &self.job {
            Some(_) => self.on_run(io, |run| run.poll(now)),
            None if self.restoring && self.changed.is_empty() => {}
            None => {
                let target = self.controller.target();
                let id = io.request(target, Request::ControllerRead(ControllerQuery { num: None }));
                self.waiting = Waiting::View { id, target, deadline: now + REQUEST_TIMEOUT_MS };
            }
        }
    }

    /// Handles the answer to request `id`.
    pub(crate) fn on_response(&mut self, io: &mut Io<'_>, id: RequestId, response: Response) {
        let now = io.now;
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
            Waiting::Status { asked, search, .. } if asked.contains_key(&id) => {
                let node = asked[&id];
                let answer = match response {
                    Response::Status(Ok(status)) => Ok(LeaderView::of_leader(&status)),
                    Response::Status(Err(error)) => Err(error.to_string()),
                    other => panic!("operator: a status read answered {other:?}"),
                };
                if let Some(found) = search.answer(node, answer) {
                    self.waiting = Waiting::Nothing;
                    self.on_run(io, |run| run.on_leader(now, found));
                }
            }
            Waiting::Step { id: waited, .. } if *waited == id => {
                self.waiting = Waiting::Nothing;
                let answer = match response {
                    Response::Done(Ok(())) => Ok(()),
                    Response::Membership(Ok(conf)) => {
                        tracing::debug!(
                            group_id =
                                self.job.as_ref().map(|job| tracing::field::display(job.group())),
                            ?conf,
                            "membership changed"
                        );
                        self.stats.changes += 1;
                        Ok(())
                    }
                    Response::Done(Err(error)) | Response::Membership(Err(error)) => {
                        Err(match error {
                            Error::InvalidArgument { .. } => {
                                StepFailure::Refused(error.to_string())
                            }
                            error => StepFailure::Failed(error.to_string()),
                        })
                    }
                    other => panic!("operator: a membership step answered {other:?}"),
                };
                self.on_run(io, |run| run.on_step(now, answer));
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
        tracing::debug!(group_id = %group, ?target, "membership job");
        self.stats.jobs_started += 1;
        let give_up_at = io.now + self.config.job_ms_max;
        let (run, action) = MembershipRun::start(group, MembershipJob::exactly(target), give_up_at);
        self.job = Some(run);
        self.act(io, action);
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
        tracing::debug!(group_id = %group, from_node = %old, to_node = %new, "replacing a member");
        self.stats.replacements += 1;
        self.changed.insert(group, listed.clone());
        let mut target = listed;
        target.remove(&old);
        target.insert(new);
        Some((group, target))
    }

    /// Hands an event to the job's run, and carries out what it asks.
    fn on_run(
        &mut self,
        io: &mut Io<'_>,
        event: impl FnOnce(&mut MembershipRun) -> Option<RunAction>,
    ) {
        let Some(run) = self.job.as_mut() else { return };
        if let Some(action) = event(run) {
            self.act(io, action);
        }
    }

    /// Carries out `action` of the job's run.
    fn act(&mut self, io: &mut Io<'_>, action: RunAction) {
        let Some(run) = &self.job else { return };
        let group = run.group();
        let deadline = io.now + REQUEST_TIMEOUT_MS;
        match action {
            RunAction::ReadLeader => {
                let search = LeaderSearch::new(self.storage_nodes.iter().copied())
                    .expect("the simulation has storage nodes");
                let asked = self
                    .storage_nodes
                    .iter()
                    .map(|node| (io.request(*node, Request::GroupStatus { group }), *node))
                    .collect();
                self.waiting = Waiting::Status { asked, search, deadline };
            }
            RunAction::Join { node, leader } => {
                let id = io.request(node, Request::JoinGroup { group, leader });
                self.waiting = Waiting::Step { id, deadline };
            }
            RunAction::Change { leader, change, unchanged_since } => {
                tracing::debug!(group_id = %group, ?change, "changing the membership");
                let request = Request::ChangeMembership { group, change, unchanged_since };
                let id = io.request(leader, request);
                self.waiting = Waiting::Step { id, deadline };
            }
            RunAction::Pause { until } => self.next_at = until,
            RunAction::Finished(Ok(view)) => {
                let run = self.job.take().expect("a job");
                let target = run.job().voters();
                tracing::debug!(group_id = %group, voters = ?view.voters, "membership job done");
                if self.changed.get(&group) == Some(target) {
                    self.changed.remove(&group);
                }
                self.stats.jobs_done += 1;
                self.schedule_next(io);
            }
            RunAction::Finished(Err(error @ MembershipError::Refused { .. })) => {
                // The CLI stops here: nothing it can retry would help.
                panic!("operator: {error}");
            }
            RunAction::Finished(Err(error)) => {
                tracing::debug!(group_id = %group, %error, "membership job given up");
                self.job = None;
                self.stats.jobs_given_up += 1;
                self.schedule_next(io);
            }
        }
    }

    fn schedule_next(&mut self, io: &mut Io<'_>) {
        self.next_at = if self.restoring {
            io.now
        } else {
            io.now + 1 + io.rng.below(2 * self.config.interval_ms)
        };
    }
}
