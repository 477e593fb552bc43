//! A controller replica's automatic repair in the simulation ([`crate::cluster::RepairConfig`]):
//! the shipped decisions of [`Repairer`], carried out over the simulated requests as the
//! server's repair runner (`crates/server/src/repair_runner.rs`) carries them out over gRPC.
//! This module decides nothing.
//!
//! Every [`REPAIR_TICK`] it reads its own replica, which answers only as the leader (the
//! server's runner reads through a controller client and acts only when the leader that
//! answered is itself: the same replicas act); without an answer it forgets what it saw
//! ([`Repairer::reset`]). As the leader, while a node is decommissioning, it asks every storage
//! node the latest configuration lists which groups it leads (`ReadLeaders`, the group status
//! a `NodeAdmin.GroupStatus` call returns), taking for each group the first listed member that
//! answers as its leader, as `ClusterStatus` does; then it proposes the command the repairer
//! returns through its own replica, under its own session, and tells the repairer the answer.

use std::collections::BTreeMap;
use std::time::Duration;

use mosaic_controller::{
    Command, ConfigNum, Configuration, ControllerQuery, NodeReport, Outcome, REPAIR_TICK,
    RepairStep, Repairer, may_hold, still_counted,
};
use mosaic_engine::{ClientId, GroupId};
use mosaic_raft::NodeId;

use crate::cluster::Time;
use crate::cluster::rpc::{ControllerAnswer, Io, LedOwnership, Request, RequestId, Response};

/// How long the repairer waits for an answer (its own replica's, or a storage node's).
const REQUEST_TIMEOUT_MS: Time = 1_000;

/// The interval between two steps, in virtual milliseconds.
pub(crate) const REPAIR_TICK_MS: Time = REPAIR_TICK.as_millis() as Time;

/// What the repairer waits for.
enum Waiting {
    /// Nothing: the next tick starts a step.
    Nothing,
    /// Its replica's answer to a read of the latest configuration.
    View { id: RequestId, deadline: Time, step: Duration },
    /// The storage nodes' answers to `ReadLeaders`, to find the groups holding the
    /// decommissioning nodes.
    Leaders {
        seen: Seen,
        asked: BTreeMap<RequestId, NodeId>,
        led: BTreeMap<NodeId, BTreeMap<GroupId, LedOwnership>>,
        deadline: Time,
    },
    /// Its replica's answer to `command`.
    Command { id: RequestId, command: Command, deadline: Time, step: Duration },
}

/// What the leader's answer said, read once per step: the latest configuration and every
/// registered node's report, at the time of the step.
struct Seen {
    config: Configuration,
    reports: BTreeMap<NodeId, NodeReport>,
    step: Duration,
}

/// The repair runner of one controller replica's incarnation. See the module documentation.
pub(crate) struct SimRepairer {
    node: NodeId,
    repairer: Repairer,
    client: ClientId,
    seq: u64,
    waiting: Waiting,
    /// Commands its replica applied: nodes decommissioned, nodes retired.
    pub(crate) decommissions: u64,
    pub(crate) retirements: u64,
}

impl SimRepairer {
    /// The runner of controller replica `node`'s incarnation `incarnation`, repairing a node
    /// down for `after`.
    pub(crate) fn new(node: NodeId, incarnation: u64, after: Duration) -> Self {
        Self {
            node,
            repairer: Repairer::new(after),
            // A session per process, as the server's runner takes its client's random id.
            client: ClientId((1 << 42) | (node.0 << 20) | incarnation),
            seq: 0,
            waiting: Waiting::Nothing,
            decommissions: 0,
            retirements: 0,
        }
    }

    /// The periodic step: gives up on what is overdue, then starts a step if none is under
    /// way.
    pub(crate) fn poll(&mut self, io: &mut Io<'_>) {
        let overdue = match &self.waiting {
            Waiting::Nothing => false,
            Waiting::View { deadline, .. }
            | Waiting::Leaders { deadline, .. }
            | Waiting::Command { deadline, .. } => *deadline <= io.now,
        };
        if overdue {
            match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
                // No answer: as if another replica led.
                Waiting::View { .. } => self.repairer.reset(),
                // The nodes that did not answer count as not leading.
                Waiting::Leaders { seen, led, .. } => self.decide(io, &seen, &led),
                // The command did not go through; tried again at a later step.
                Waiting::Command { .. } | Waiting::Nothing => {}
            }
        }
        if matches!(self.waiting, Waiting::Nothing) {
            let query = ControllerQuery { num: None };
            let id = io.request(self.node, Request::ControllerRead { query, asked_by: None });
            // The time of the step, which the repairer is told, as the server's runner tells
            // it the time its tick began.
            let step = Duration::from_millis(io.now);
            self.waiting = Waiting::View { id, deadline: io.now + REQUEST_TIMEOUT_MS, step };
        }
    }

    /// Handles the answer to request `id`.
    pub(crate) fn on_response(&mut self, io: &mut Io<'_>, id: RequestId, response: Response) {
        match (&mut self.waiting, response) {
            (Waiting::View { id: waited, step, .. }, Response::ControllerView(answer))
                if *waited == id =>
            {
                let step = *step;
                self.waiting = Waiting::Nothing;
                match answer {
                    Ok(Ok(answer)) => self.read_holding(io, answer, step),
                    // Not the leader (or a read refused): another replica repairs, or this
                    // one later with what it sees then.
                    Ok(Err(_)) | Err(_) => self.repairer.reset(),
                }
            }
            (Waiting::Leaders { asked, led, .. }, Response::Leaders(answer)) => {
                let Some(node) = asked.remove(&id) else { return };
                if let Ok(groups) = answer {
                    led.insert(node, groups);
                }
                if asked.is_empty()
                    && let Waiting::Leaders { seen, led, .. } =
                        std::mem::replace(&mut self.waiting, Waiting::Nothing)
                {
                    self.decide(io, &seen, &led);
                }
            }
            (Waiting::Command { id: waited, .. }, Response::ControllerOutcome(result))
                if *waited == id =>
            {
                let Waiting::Command { command, step, .. } =
                    std::mem::replace(&mut self.waiting, Waiting::Nothing)
                else {
                    unreachable!("matched above")
                };
                // A store error: the command did not go through; tried again later.
                let Ok(result) = result else { return };
                match &result {
                    Ok(Outcome::NodeDecommissioning { .. }) => self.decommissions += 1,
                    Ok(Outcome::NodeRetired { .. }) => self.retirements += 1,
                    _ => {}
                }
                tracing::debug!(node_id = %self.node, ?command, ?result, "automatic repair");
                self.repairer.answered(&command, &result, step);
            }
            // The answer to a request given up on.
            _ => {}
        }
    }

    /// As the leader that gave `answer`: asks the storage nodes which groups they lead if a
    /// node is decommissioning, else decides at once.
    fn read_holding(&mut self, io: &mut Io<'_>, answer: ControllerAnswer, step: Duration) {
        let ControllerAnswer { view, liveness } = answer;
        let reports = NodeReport::of_all(view.nodes.keys().copied(), &view.node_states, &liveness);
        let seen = Seen { config: view.config, reports, step };
        let asked: BTreeMap<RequestId, NodeId> = if Repairer::decommissioning(&seen.reports)
            .is_empty()
        {
            BTreeMap::new()
        } else {
            let members: std::collections::BTreeSet<NodeId> =
                seen.config.groups.values().flatten().copied().collect();
            members.into_iter().map(|node| (io.request(node, Request::ReadLeaders), node)).collect()
        };
        if asked.is_empty() {
            self.decide(io, &seen, &BTreeMap::new());
            return;
        }
        let deadline = io.now + REQUEST_TIMEOUT_MS;
        self.waiting = Waiting::Leaders { seen, asked, led: BTreeMap::new(), deadline };
    }

    /// Asks the repairer, given what the step saw (`seen`) and what the storage nodes that answered
    /// lead (`led`), and sends the command it returns.
    fn decide(
        &mut self,
        io: &mut Io<'_>,
        seen: &Seen,
        led: &BTreeMap<NodeId, BTreeMap<GroupId, LedOwnership>>,
    ) {
        let Seen { config, reports, step } = seen;
        let holding = Repairer::decommissioning(reports)
            .into_iter()
            .map(|node| {
                let groups = config
                    .groups
                    .iter()
                    .filter(|(group, members)| {
                        may_hold(config.num, leader_shows(**group, members, led, node))
                    })
                    .map(|(group, _)| *group)
                    .collect();
                (node, Some(groups))
            })
            .collect();
        match self.repairer.tick(*step, reports, &holding) {
            RepairStep::Idle => {}
            RepairStep::Waiting(why) => {
                tracing::debug!(node_id = %self.node, "automatic repair waits: {why}");
            }
            RepairStep::Send(command) => {
                self.seq += 1;
                let request =
                    mosaic_controller::Request { client: self.client, seq: self.seq, command };
                let command = request.command.clone();
                let id = io.request(self.node, Request::ControllerPropose(request));
                let deadline = io.now + REQUEST_TIMEOUT_MS;
                self.waiting = Waiting::Command { id, command, deadline, step: *step };
            }
        }
    }
}

/// What the leader of `group` shows of `node`, as the first of its listed `members` that
/// answered as its leader says: the configuration it applied and whether its membership
/// includes `node` (`None`: no member answered as leader with its ownership).
fn leader_shows(
    group: GroupId,
    members: &[NodeId],
    led: &BTreeMap<NodeId, BTreeMap<GroupId, LedOwnership>>,
    node: NodeId,
) -> Option<(ConfigNum, bool)> {
    members.iter().find_map(|member| {
        let read = led.get(member)?.get(&group)?;
        let ownership = read.output.as_ref().ok()?.as_ref()?;
        let conf = &read.conf_state;
        let member = conf.voters.contains(&node) || conf.learners.contains(&node);
        Some((ownership.num, still_counted(member, read.voters_applied_membership)))
    })
}
