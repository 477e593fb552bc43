//! How a simulated process finds the controller's leader: the replica a call tries first and
//! the one after each failure are `mosaic_client::controller_retry`'s decisions (what
//! `mosaic_client::ControllerClient` takes over gRPC), the failure read from the replica's
//! refusal as a client reads the status a real replica answers. The pauses are the
//! process's own.
//!
//! Also the controller session of a process: commands carry `(client, seq)`, a retry of the
//! same command keeps its seq (the controller applies it once), a new command takes the next.

use std::collections::BTreeMap;

use mosaic_client::classify::{Failure, classify_controller_status};
use mosaic_client::controller_retry::{ControllerRetry, first_replica};
use mosaic_client::refusal::to_status;
use mosaic_controller::{Command, Request};
use mosaic_engine::ClientId;
use mosaic_raft::NodeId;
use mosaic_raftstore::Error;

use crate::cluster::client::{address_of, hint_address};

/// A process's view of the controller group. See the module documentation.
#[derive(Clone, Debug)]
pub(crate) struct ControllerLink {
    /// The replicas' addresses, in order, and the replica at each.
    addresses: Vec<String>,
    replicas: BTreeMap<String, NodeId>,
    /// The replica last seen answering as leader, if it has not failed since.
    leader: Option<NodeId>,
    /// The retries of the call in progress, and where its next attempt goes.
    retry: Option<ControllerRetry>,
    next: Option<NodeId>,
    client: ClientId,
    seq: u64,
}

impl ControllerLink {
    /// A link to `replicas` for the controller session `client`.
    pub(crate) fn new(replicas: Vec<NodeId>, client: ClientId) -> Self {
        assert!(!replicas.is_empty(), "a controller group has replicas");
        let addresses: Vec<String> = replicas.iter().map(|replica| address_of(*replica)).collect();
        let replicas = addresses.iter().cloned().zip(replicas).collect();
        Self { addresses, replicas, leader: None, retry: None, next: None, client, seq: 0 }
    }

    /// The replica to ask now: where the last failure said, else (a new call) the last leader
    /// seen or the first replica.
    pub(crate) fn target(&mut self) -> NodeId {
        if let Some(next) = self.next.take() {
            return next;
        }
        let leader = self.leader.map(address_of);
        let first = first_replica(&self.addresses, leader.as_deref());
        self.retry = Some(ControllerRetry::new(&self.addresses, &first));
        self.replicas[&first]
    }

    /// True when `node` is a controller replica.
    pub(crate) fn is_replica(&self, node: NodeId) -> bool {
        self.replicas.values().any(|replica| *replica == node)
    }

    /// `target` answered: it leads (as far as anyone knows), and the call is over.
    pub(crate) fn answered(&mut self, target: NodeId) {
        self.leader = Some(target);
        self.retry = None;
        self.next = None;
    }

    /// The request to `target` failed with `error` (`None`: no answer came): the replica the
    /// next attempt goes to, or a new call if this one must give up.
    pub(crate) fn failed(&mut self, target: NodeId, error: Option<&Error>) {
        let failure = match error {
            Some(error) => classify_controller_status(&to_status(error, hint_address), None),
            None => Failure::AttemptTimedOut,
        };
        if !failure.node_may_lead() && self.leader == Some(target) {
            self.leader = None;
        }
        let at = address_of(target);
        let retry = self.retry.get_or_insert_with(|| ControllerRetry::new(&self.addresses, &at));
        let next = retry.after(&self.addresses, &failure, &at);
        self.next = next.and_then(|(next, _pause)| self.replicas.get(&next).copied());
        if self.next.is_none() {
            self.retry = None;
        }
    }

    /// `command` as a new request of this session.
    pub(crate) fn new_request(&mut self, command: Command) -> Request {
        self.seq += 1;
        Request { client: self.client, seq: self.seq, command }
    }
}
