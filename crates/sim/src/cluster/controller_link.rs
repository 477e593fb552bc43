//! How a simulated process finds the controller's leader: ask the replica it believes
//! leads, follow a `NotLeader` hint, otherwise try the next replica in turn (what
//! `mosaic_client::ControllerClient` does over gRPC).
//!
//! Also the controller session of a process: commands carry `(client, seq)`, a retry of the
//! same command keeps its seq (the controller applies it once), a new command takes the next.

use mosaic_controller::{Command, Request};
use mosaic_engine::ClientId;
use mosaic_raft::NodeId;
use mosaic_raftstore::Error;

/// A process's view of the controller group. See the module documentation.
#[derive(Clone, Debug)]
pub(crate) struct ControllerLink {
    replicas: Vec<NodeId>,
    leader: Option<NodeId>,
    next: usize,
    client: ClientId,
    seq: u64,
}

impl ControllerLink {
    /// A link to `replicas` for the controller session `client`.
    pub(crate) fn new(replicas: Vec<NodeId>, client: ClientId) -> Self {
        assert!(!replicas.is_empty(), "a controller group has replicas");
        Self { replicas, leader: None, next: 0, client, seq: 0 }
    }

    /// The replica to ask now.
    pub(crate) fn target(&self) -> NodeId {
        self.leader.unwrap_or(self.replicas[self.next % self.replicas.len()])
    }

    /// True when `node` is a controller replica.
    pub(crate) fn is_replica(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
    }

    /// `target` answered: it leads (as far as anyone knows).
    pub(crate) fn answered(&mut self, target: NodeId) {
        self.leader = Some(target);
    }

    /// The request to `target` failed with `error` (`None`: no answer came): follow a hint
    /// to another replica, or move on to the next one.
    pub(crate) fn failed(&mut self, target: NodeId, error: Option<&Error>) {
        let hint = match error {
            Some(Error::NotLeader { leader, .. } | Error::ProposalAbandoned { leader, .. }) => {
                leader.filter(|leader| *leader != target && self.replicas.contains(leader))
            }
            _ => None,
        };
        if hint.is_none() {
            self.next =
                self.replicas.iter().position(|replica| *replica == target).unwrap_or(0) + 1;
        }
        self.leader = hint;
    }

    /// `command` as a new request of this session.
    pub(crate) fn new_request(&mut self, command: Command) -> Request {
        self.seq += 1;
        Request { client: self.client, seq: self.seq, command }
    }
}
