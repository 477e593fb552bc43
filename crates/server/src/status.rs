//! The one conversion from a refused request (`mosaic_raftstore::Error`) to a gRPC status:
//! a code for generic clients, and an [`pb::ErrorDetail`] in the status details with the hint
//! a Mosaic client acts on (DESIGN.md "Errors on the wire").

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use mosaic_engine::KvEngine;
use mosaic_proto::pb::{self, error_detail::Kind};
use mosaic_raft::NodeId;
use mosaic_raftstore::{Callback, Error, StateMachine, StoreMsg};
use prost::Message as _;
use tonic::{Code, Status};

use crate::runner::StoreHandle;

/// Node addresses: where the transport reaches a peer, and how a leader hint becomes an
/// address a client can dial. Shared by every clone; a node that follows the controller adds
/// the nodes it registers ([`Directory::set`]).
#[derive(Clone, Debug, Default)]
pub struct Directory {
    addresses: Arc<RwLock<BTreeMap<NodeId, String>>>,
}

impl Directory {
    /// A directory of `addresses`.
    #[must_use]
    pub fn new(addresses: BTreeMap<NodeId, String>) -> Self {
        Self { addresses: Arc::new(RwLock::new(addresses)) }
    }

    /// The address of `node`, if known.
    #[must_use]
    pub fn address(&self, node: NodeId) -> Option<String> {
        self.read().get(&node).cloned()
    }

    /// Every known node and its address.
    #[must_use]
    pub fn all(&self) -> BTreeMap<NodeId, String> {
        self.read().clone()
    }

    /// Records `node`'s address; returns true when it was unknown or different.
    pub fn set(&self, node: NodeId, address: &str) -> bool {
        let mut addresses = self.addresses.write().unwrap_or_else(PoisonError::into_inner);
        if addresses.get(&node).is_some_and(|known| known == address) {
            return false;
        }
        addresses.insert(node, address.to_string());
        true
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, String>> {
        self.addresses.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn leader_address(&self, leader: Option<NodeId>) -> String {
        leader.and_then(|node| self.address(node)).unwrap_or_default()
    }
}

/// Asks the store (see [`StoreHandle::ask`]), giving up after `timeout`; a refusal becomes
/// the status sent to the client.
///
/// # Errors
/// The status of the store's refusal, or of the timeout.
pub async fn ask_store<K: KvEngine, SM: StateMachine<K>, T: Send + 'static>(
    store: &StoreHandle<K, SM>,
    timeout: Duration,
    directory: &Directory,
    build: impl FnOnce(Callback<T>) -> StoreMsg<K, SM>,
) -> Result<T, Status> {
    store.ask_within(timeout, build).await.map_err(|error| to_status(&error, directory))
}

/// Converts a refusal into the status sent to the client.
#[must_use]
pub fn to_status(error: &Error, directory: &Directory) -> Status {
    let message = error.to_string();
    let (code, kind) = match error {
        Error::NotLeader { leader, .. } => (
            Code::FailedPrecondition,
            Kind::NotLeader(pb::NotLeader {
                leader_node: leader.map(|node| node.0),
                leader_address: directory.leader_address(*leader),
            }),
        ),
        Error::ProposalOverwritten { .. } => (
            Code::FailedPrecondition,
            Kind::NotLeader(pb::NotLeader { leader_node: None, leader_address: String::new() }),
        ),
        Error::ProposalAbandoned { leader, .. } => (
            Code::Unavailable,
            Kind::OutcomeUnknown(pb::OutcomeUnknown {
                leader_node: leader.map(|node| node.0),
                leader_address: directory.leader_address(*leader),
            }),
        ),
        Error::GroupNotFound { group } => (
            Code::FailedPrecondition,
            Kind::GroupNotHosted(pb::GroupNotHosted { group_id: group.0 }),
        ),
        Error::WrongGroup { config_num } => {
            (Code::FailedPrecondition, Kind::WrongGroup(pb::WrongGroup { config_num: *config_num }))
        }
        Error::ShardNotReady => (Code::Unavailable, Kind::ShardNotReady(pb::ShardNotReady {})),
        Error::SessionExpired { .. } => {
            (Code::FailedPrecondition, Kind::SessionExpired(pb::SessionExpired {}))
        }
        Error::ServerBusy { .. } => (Code::ResourceExhausted, Kind::ServerBusy(pb::ServerBusy {})),
        Error::InvalidArgument { reason } => (
            Code::InvalidArgument,
            Kind::InvalidArgument(pb::InvalidArgument { reason: reason.clone() }),
        ),
        Error::Timeout => (Code::DeadlineExceeded, Kind::Timeout(pb::Timeout {})),
        Error::Stopped => (
            Code::Unavailable,
            Kind::OutcomeUnknown(pb::OutcomeUnknown {
                leader_node: None,
                leader_address: String::new(),
            }),
        ),
        // A membership change the group cannot make now (another is pending, the learner
        // has not caught up): the message says which.
        Error::Raft(mosaic_raft::Error::ConfChangeRefused { .. }) => {
            return Status::failed_precondition(message);
        }
        Error::Engine(_) | Error::Raft(_) => return Status::internal(message),
    };
    let detail = pb::ErrorDetail { kind: Some(kind) };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

#[cfg(test)]
mod tests {
    use mosaic_engine::GroupId;

    use super::*;

    fn detail(status: &Status) -> Kind {
        pb::ErrorDetail::decode(status.details()).unwrap().kind.unwrap()
    }

    #[test]
    fn a_leader_hint_carries_the_leader_address() {
        let directory = Directory::new([(NodeId(2), "10.0.0.2:7100".to_string())].into());
        let status =
            to_status(&Error::NotLeader { group: GroupId(1), leader: Some(NodeId(2)) }, &directory);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            detail(&status),
            Kind::NotLeader(pb::NotLeader {
                leader_node: Some(2),
                leader_address: "10.0.0.2:7100".into()
            })
        );
    }

    #[test]
    fn an_abandoned_proposal_says_its_outcome_is_unknown() {
        let status = to_status(
            &Error::ProposalAbandoned { group: GroupId(1), leader: None },
            &Directory::default(),
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert!(matches!(detail(&status), Kind::OutcomeUnknown(_)));
    }

    #[test]
    fn every_refusal_a_client_acts_on_has_a_detail() {
        for error in [
            Error::ProposalOverwritten { group: GroupId(1) },
            Error::GroupNotFound { group: GroupId(1) },
            Error::WrongGroup { config_num: 3 },
            Error::ShardNotReady,
            Error::SessionExpired {
                shard: mosaic_engine::ShardId(2),
                client: mosaic_engine::ClientId(7),
            },
            Error::ServerBusy { reason: "x".into() },
            Error::InvalidArgument { reason: "x".into() },
            Error::Timeout,
            Error::Stopped,
        ] {
            let status = to_status(&error, &Directory::default());
            assert!(pb::ErrorDetail::decode(status.details()).unwrap().kind.is_some(), "{error}");
        }
    }
}
