//! Automatic repair (opt-in): the controller's leader moves the replicas of a storage node it
//! has held down for longer than a set time to other nodes, as `mosaic admin node decommission`
//! does, and marks the node retired once no group holds a replica on it.
//!
//! [`Repairer`] decides, without I/O or a clock of its own; a controller replica's repair
//! runner (`crates/server/src/repair_runner.rs`) calls [`Repairer::tick`] every second with
//! what the controller's leader answers (every registered node's state and liveness) and, while
//! a node is decommissioning, which groups may still hold a replica on it, and carries out the
//! command it returns. The rules:
//!
//! - **Down long enough.** An active node is repaired once the leader has held it down for
//!   the repair time: counted from when the leader last heard it, or, for a node this
//!   leader never heard, from when this repairer first saw it down (a new leader waits a whole
//!   period again). Seen up (or unknown) once, the count starts over.
//! - **Seen down by this repairer too**, for [`REPAIR_GRACE`] (or the repair time, if shorter), so
//!   that nodes reconnecting after a long cut are not repaired at the first tick that sees
//!   few enough of them down.
//! - **One node at a time.** Nothing is repaired while a node is decommissioning (its moves
//!   load the groups with snapshots), for a repair period at most (a decommission that cannot
//!   end, its group without a leader or its replacement dead too, does not hold the others
//!   back for ever); the node with the longest time down goes first, the lowest id on a tie.
//! - **Not when the leader may be the one cut off.** Nothing is repaired while half or more of
//!   the active nodes are down: a leader that hears so few is more likely cut off than they
//!   are all dead.
//! - **Where the replicas go.** `DecommissionNode` with every other down node to avoid: the
//!   controller gives each replica to the active, up node hosting fewest that the group does not
//!   list, never a second replica of a group to one node. The groups carry the moves out through
//!   learners (a new replica is added, catches up by snapshot and is promoted before the dead one
//!   is removed), so no group drops below the majority it had.
//! - **Retiring.** A decommissioning node (this repairer's or an operator's) is retired once no
//!   group holds it on two ticks in a row, as `mosaic admin node decommission` does
//!   ([`RetireWatch`]).
//! - **Refusals.** A refused `DecommissionNode` (no node can take a replica, say) is not asked
//!   again for that node for the repair time; a refused `RetireNode` (a removed group still
//!   lists the node) after [`RETIRE_RETRY`].

use std::collections::BTreeMap;
use std::time::Duration;

use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

use crate::command::{Command, Outcome};
use crate::configuration::ConfigNum;
use crate::decommission::NodeState;
use crate::error::Error;
use crate::liveness::NodeLiveness;

/// How often a repair runner looks: reads the controller and calls [`Repairer::tick`].
pub const REPAIR_TICK: Duration = Duration::from_secs(1);
/// How long after a refused `RetireNode` it is asked again (each ask is a log entry).
pub const RETIRE_RETRY: Duration = Duration::from_secs(5);
/// How long this repairer must itself have seen a node down (however long the leader has
/// not heard it) before it repairs it (the repair time, if shorter): nodes coming back from a
/// long cut reconnect over several seconds, and the first tick that sees few enough of them
/// down must not repair the slow ones.
pub const REPAIR_GRACE: Duration = Duration::from_secs(30);

/// Waits until no group holds a replica on a decommissioning node, on two observations in a
/// row, before it is retired; asks again [`RETIRE_RETRY`] after a refusal. Shared by
/// `mosaic admin node decommission` and the [`Repairer`].
#[derive(Clone, Debug, Default)]
pub struct RetireWatch {
    /// Observations in a row in which no group held the node.
    empty: u32,
    /// No `RetireNode` before this time.
    not_before: Duration,
}

impl RetireWatch {
    /// Whether to send `RetireNode` at `now`, given the groups that may still hold a replica on
    /// the node (`None` when the groups' status could not be read: counted as holding).
    pub fn observe(&mut self, holding: Option<&[GroupId]>, now: Duration) -> bool {
        self.empty = if holding.is_some_and(<[GroupId]>::is_empty) { self.empty + 1 } else { 0 };
        self.empty >= 2 && now >= self.not_before
    }

    /// The controller refused `RetireNode` at `now` (a removed group still lists the node).
    pub fn refused(&mut self, now: Duration) {
        self.not_before = now + RETIRE_RETRY;
    }
}

/// What the controller's leader says of one registered node, for [`Repairer::tick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// Its state.
    pub state: NodeState,
    /// Its liveness.
    pub liveness: NodeLiveness,
}

impl NodeReport {
    /// The report of each of `nodes` (the registered nodes), from the states the controller
    /// holds (a node absent is active) and what its leader says of liveness (a node absent is
    /// unknown).
    #[must_use]
    pub fn of_all(
        nodes: impl Iterator<Item = NodeId>,
        states: &BTreeMap<NodeId, NodeState>,
        liveness: &BTreeMap<NodeId, NodeLiveness>,
    ) -> BTreeMap<NodeId, Self> {
        nodes
            .map(|node| {
                let report = Self {
                    state: states.get(&node).copied().unwrap_or_default(),
                    liveness: liveness.get(&node).copied().unwrap_or(NodeLiveness::Unknown),
                };
                (node, report)
            })
            .collect()
    }
}

/// Whether a group's leader still counts a node: the node is a voter or a learner of the
/// leader's membership (`member`), or a voter has not applied that membership yet
/// (`voters_applied` false: that voter may still need the node's vote). What [`may_hold`]'s
/// `shown` says of the node.
#[must_use]
pub fn still_counted(member: bool, voters_applied: bool) -> bool {
    member || !voters_applied
}

/// Whether a group may still hold a replica on a node, the latest configuration being
/// `latest`: unless its leader answered (`shown`: the configuration the leader has applied,
/// and whether it still counts the node, [`still_counted`]), has applied `latest` and shows
/// the node out. What `mosaic admin node decommission` and the repair runners
/// (the server's and the simulator's) pass as `holding`.
#[must_use]
pub fn may_hold(latest: ConfigNum, shown: Option<(ConfigNum, bool)>) -> bool {
    shown.is_none_or(|(applied, member)| applied < latest || member)
}

/// What [`Repairer::tick`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairStep {
    /// Nothing to do.
    Idle,
    /// A node is down past the repair time, but is not repaired now: why, in words (the
    /// same words while nothing changes; the runner logs them when they change).
    Waiting(String),
    /// Send this command.
    Send(Command),
}

/// The automatic repair's decisions at one controller replica (see the module
/// documentation). Kept across ticks while the replica leads; [`Repairer::reset`] when it
/// does not.
#[derive(Clone, Debug)]
pub struct Repairer {
    after: Duration,
    /// When this repairer first saw each active node that is down down: how long a node
    /// this leader never heard has been down, and the grace of every node.
    seen_down: BTreeMap<NodeId, Duration>,
    /// When this repairer first saw each decommissioning node decommissioning.
    leaving_since: BTreeMap<NodeId, Duration>,
    /// Nodes whose `DecommissionNode` was refused, and when it may be asked again.
    refused_until: BTreeMap<NodeId, Duration>,
    /// The decommissioning nodes being watched for retirement.
    retiring: BTreeMap<NodeId, RetireWatch>,
}

impl Repairer {
    /// A repairer that repairs a node held down for `after`.
    #[must_use]
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            seen_down: BTreeMap::new(),
            leaving_since: BTreeMap::new(),
            refused_until: BTreeMap::new(),
            retiring: BTreeMap::new(),
        }
    }

    /// Forgets everything: the replica no longer leads (a later leadership counts afresh).
    pub fn reset(&mut self) {
        *self = Self::new(self.after);
    }

    /// The decommissioning nodes among `nodes`: the runner reads the groups' status for
    /// them (the `holding` of [`Repairer::tick`]).
    #[must_use]
    pub fn decommissioning(nodes: &BTreeMap<NodeId, NodeReport>) -> Vec<NodeId> {
        nodes
            .iter()
            .filter(|(_, report)| report.state == NodeState::Decommissioning)
            .map(|(node, _)| *node)
            .collect()
    }

    /// One step at `now`, given every registered node's report and, for each decommissioning
    /// node, the groups that may still hold a replica on it (`None`, or a node missing: the
    /// groups' status could not be read).
    pub fn tick(
        &mut self,
        now: Duration,
        nodes: &BTreeMap<NodeId, NodeReport>,
        holding: &BTreeMap<NodeId, Option<Vec<GroupId>>>,
    ) -> RepairStep {
        self.observe_down(now, nodes);
        let decommissioning = Self::decommissioning(nodes);
        self.retiring.retain(|node, _| decommissioning.contains(node));
        self.leaving_since.retain(|node, _| decommissioning.contains(node));
        for node in &decommissioning {
            self.leaving_since.entry(*node).or_insert(now);
        }
        for node in &decommissioning {
            let held = holding.get(node).and_then(Option::as_deref);
            if self.retiring.entry(*node).or_default().observe(held, now) {
                return RepairStep::Send(Command::RetireNode { node: *node });
            }
        }
        let active = nodes.values().filter(|report| report.state == NodeState::Active).count();
        // Each active node that is down, and for how long: since the leader last heard it,
        // or since this repairer first saw it down.
        let down: Vec<(NodeId, Duration, Duration)> = self
            .seen_down
            .iter()
            .map(|(node, seen)| {
                let seen_for = now.saturating_sub(*seen);
                let last_heard = match nodes[node].liveness {
                    NodeLiveness::Down { last_heard: Some(ago) } => ago,
                    _ => seen_for,
                };
                (*node, last_heard, seen_for)
            })
            .collect();
        let grace = self.after.min(REPAIR_GRACE);
        let Some((node, for_how_long)) = down
            .iter()
            .filter(|(node, _, _)| self.refused_until.get(node).is_none_or(|until| now >= *until))
            .filter(|(_, _, seen_for)| *seen_for >= grace)
            .map(|(node, for_how_long, _)| (*node, *for_how_long))
            .max_by_key(|(node, for_how_long)| (*for_how_long, std::cmp::Reverse(*node)))
        else {
            return RepairStep::Idle;
        };
        if for_how_long < self.after {
            return RepairStep::Idle;
        }
        // A decommission that has not ended within a repair period (a group without a
        // leader, a replacement that died too) no longer holds the others back.
        let blocking = self
            .leaving_since
            .iter()
            .find(|(_, since)| now.saturating_sub(**since) < self.after)
            .map(|(leaving, _)| *leaving);
        if let Some(leaving) = blocking {
            return RepairStep::Waiting(format!(
                "node {node} is down past the repair time; waiting until node {leaving} \
                 (decommissioning) is retired or has been decommissioning for the repair \
                 time: one node at a time"
            ));
        }
        if 2 * down.len() >= active {
            return RepairStep::Waiting(format!(
                "{} of {active} active nodes are down: this controller leader may be the one \
                 cut off, so nothing is repaired",
                down.len()
            ));
        }
        let avoid =
            down.iter().map(|(other, _, _)| *other).filter(|other| *other != node).collect();
        RepairStep::Send(Command::DecommissionNode { node, avoid })
    }

    /// What the controller answered to a command [`Repairer::tick`] returned, at `now`.
    pub fn answered(&mut self, command: &Command, result: &Result<Outcome, Error>, now: Duration) {
        match (command, result) {
            (Command::DecommissionNode { node, .. }, Err(_)) => {
                self.refused_until.insert(*node, now + self.after);
            }
            (Command::RetireNode { node }, Err(_)) => {
                self.retiring.entry(*node).or_default().refused(now);
            }
            _ => {}
        }
    }

    /// Notes when this repairer first saw each active node down; forgets a node seen up,
    /// unknown, no longer active or no longer registered.
    fn observe_down(&mut self, now: Duration, nodes: &BTreeMap<NodeId, NodeReport>) {
        for (node, report) in nodes {
            if report.state == NodeState::Active
                && matches!(report.liveness, NodeLiveness::Down { .. })
            {
                self.seen_down.entry(*node).or_insert(now);
            } else {
                self.seen_down.remove(node);
            }
        }
        self.seen_down.retain(|node, _| nodes.contains_key(node));
        self.refused_until.retain(|node, _| self.seen_down.contains_key(node));
    }
}
