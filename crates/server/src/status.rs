//! Node addresses ([`Directory`]), and asking the store with a refusal turned into the gRPC
//! status sent to the client ([`to_status`]: the one conversion, in
//! `mosaic_client::refusal`, with the leader's address from the directory; DESIGN.md "Errors
//! on the wire").

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use mosaic_engine::KvEngine;
use mosaic_raft::NodeId;
use mosaic_raftstore::{Callback, Error, StateMachine, StoreMsg};
use tonic::Status;

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

    /// Whether `node`'s address is `address` (no copy made: the transport asks on every send).
    #[must_use]
    pub fn is_at(&self, node: NodeId, address: &str) -> bool {
        self.read().get(&node).is_some_and(|known| known == address)
    }

    /// Whether an address of `node` is known.
    #[must_use]
    pub fn knows(&self, node: NodeId) -> bool {
        self.read().contains_key(&node)
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

/// Converts a refusal into the status sent to the client, with the leader's address from
/// `directory` ([`mosaic_client::refusal::to_status`]).
#[must_use]
pub fn to_status(error: &Error, directory: &Directory) -> Status {
    mosaic_client::refusal::to_status(error, |leader| directory.leader_address(leader))
}

#[cfg(test)]
mod tests {
    use mosaic_engine::GroupId;
    use mosaic_proto::pb::{self, error_detail::Kind};
    use prost::Message as _;
    use tonic::Code;

    use super::*;

    #[test]
    fn a_leader_hint_carries_the_leader_address() {
        let directory = Directory::new([(NodeId(2), "10.0.0.2:7100".to_string())].into());
        let status =
            to_status(&Error::NotLeader { group: GroupId(1), leader: Some(NodeId(2)) }, &directory);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            pb::ErrorDetail::decode(status.details()).unwrap().kind.unwrap(),
            Kind::NotLeader(pb::NotLeader {
                leader_node: Some(2),
                leader_address: "10.0.0.2:7100".into()
            })
        );
    }
}
