//! A controller replica's automatic repair, when its configuration sets
//! `auto-repair-after-ms` (docs/controller.md "Automatic repair"): it carries out the decisions
//! of [`Repairer`].
//!
//! Every [`REPAIR_TICK`] it reads the controller as `mosaic admin` does (the latest configuration and
//! what the leader says of every registered node); unless this replica is the leader that
//! answered, it does nothing and forgets what it saw. As the leader it reads, for each
//! decommissioning node, which groups may still hold a replica on it (every group's leader,
//! [`ClusterStatus::holding`]), asks the repairer, and proposes the command it returns through
//! this replica's own store, under the client id of its controller client (which itself sends
//! no command). What it does is logged at INFO, a refusal and a reason to wait at WARN (once
//! per new reason).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mosaic_client::cluster_status::ClusterStatus;
use mosaic_client::{ControllerClient, ControllerClientOptions, QueryAnswer, Tls};
use mosaic_controller::{
    Command, ControllerMachine, NodeReport, Outcome, REPAIR_TICK, RepairStep, Repairer, Request,
};
use mosaic_engine::GroupId;
use mosaic_raft::NodeId;
use mosaic_raftstore::StoreMsg;
use mosaic_types::CONTROLLER_GROUP;
use tokio::sync::watch;

use crate::backend::NodeEngine;
use crate::runner::StoreHandle;

/// How long a call to a group's member may take when reading the groups' status.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// The automatic repair of one controller replica.
pub struct RepairRunner {
    node: NodeId,
    client: ControllerClient,
    store: StoreHandle<NodeEngine, ControllerMachine>,
    request_timeout: Duration,
    repairer: Repairer,
    /// The sequence number of the next command (under the client's id).
    next_seq: u64,
    /// The last reason to wait that was logged.
    waiting: Option<String>,
}

impl RepairRunner {
    /// The runner of replica `node` of the controller group whose replicas are at
    /// `controllers`, calling them and the storage nodes with `tls`; it repairs a node held
    /// down for `after`.
    ///
    /// # Errors
    /// An invalid controller address, or no client id from the operating system.
    pub fn new(
        node: NodeId,
        controllers: Vec<String>,
        tls: Option<Tls>,
        store: StoreHandle<NodeEngine, ControllerMachine>,
        request_timeout: Duration,
        after: Duration,
    ) -> mosaic_client::Result<Self> {
        let options =
            ControllerClientOptions { timeout: request_timeout, tls, ..Default::default() };
        Ok(Self {
            node,
            client: ControllerClient::new(controllers, options)?,
            store,
            request_timeout,
            repairer: Repairer::new(after),
            next_seq: 1,
            waiting: None,
        })
    }

    /// Runs until `closing` turns true.
    pub async fn run(mut self, mut closing: watch::Receiver<bool>) {
        let origin = Instant::now();
        let mut ticker = tokio::time::interval(REPAIR_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = closing.wait_for(|closing| *closing) => break,
                _ = ticker.tick() => {}
            }
            self.tick(origin.elapsed()).await;
        }
    }

    async fn tick(&mut self, now: Duration) {
        let answer = match self.client.query(None).await {
            Ok(answer) if answer.leader == self.node => answer,
            Ok(_) | Err(_) => {
                // Not the leader (or no answer): another replica repairs, or this one later
                // with what it sees then.
                self.repairer.reset();
                self.waiting = None;
                return;
            }
        };
        let reports =
            NodeReport::of_all(answer.nodes.keys().copied(), &answer.node_states, &answer.liveness);
        let holding = self.holding(&answer, &Repairer::decommissioning(&reports)).await;
        match self.repairer.tick(now, &reports, &holding) {
            RepairStep::Idle => self.waiting = None,
            RepairStep::Waiting(why) => {
                if self.waiting.as_ref() != Some(&why) {
                    tracing::warn!(node_id = %self.node, "automatic repair waits: {why}");
                    self.waiting = Some(why);
                }
            }
            RepairStep::Send(command) => self.send(command, &answer, now).await,
        }
    }

    /// For each of `nodes`, the groups of `answer`'s latest configuration that may still hold
    /// a replica on it (a group whose leader did not answer counts as holding).
    async fn holding(
        &self,
        answer: &QueryAnswer,
        nodes: &[NodeId],
    ) -> BTreeMap<NodeId, Option<Vec<GroupId>>> {
        if nodes.is_empty() {
            return BTreeMap::new();
        }
        let tls = self.client.options().tls.as_ref();
        let status = ClusterStatus::of_answer(answer.clone(), tls, MEMBER_TIMEOUT).await;
        nodes.iter().map(|node| (*node, Some(status.holding(*node)))).collect()
    }

    /// Proposes `command` through this replica's store and tells the repairer the answer.
    async fn send(&mut self, command: Command, answer: &QueryAnswer, now: Duration) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let proposal = Request { client: self.client.client_id(), seq, command: command.clone() };
        let asked = self
            .store
            .ask_within(self.request_timeout, |callback| StoreMsg::Propose {
                group: CONTROLLER_GROUP,
                proposal,
                callback,
            })
            .await;
        let result = match asked {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(node_id = %self.node, %error, ?command,
                    "automatic repair: the command did not go through; trying again later");
                return;
            }
        };
        match &result {
            Ok(outcome) => log_outcome(self.node, &command, outcome, answer),
            Err(refusal) => tracing::warn!(node_id = %self.node, %refusal, ?command,
                "automatic repair: the controller refused"),
        }
        self.repairer.answered(&command, &result, now);
    }
}

/// One INFO line for a command the controller applied.
fn log_outcome(replica: NodeId, command: &Command, outcome: &Outcome, answer: &QueryAnswer) {
    match (command, outcome) {
        (Command::DecommissionNode { node, avoid }, Outcome::NodeDecommissioning { .. }) => {
            let last_heard = answer.liveness_of(*node).last_heard();
            tracing::info!(node_id = %replica, repaired_node = %node, ?last_heard, ?avoid,
                "automatic repair: {outcome}");
        }
        _ => tracing::info!(node_id = %replica, "automatic repair: {outcome}"),
    }
}
