//! The ids the storage layer keys its data by (defined in `mosaic_types`, the crate every
//! other one shares), and the identity a data directory belongs to.

use std::fmt;

use mosaic_raft::NodeId;
pub use mosaic_types::{ClientId, ClusterId, GroupId, ShardId};

/// Who a data directory belongs to: written when the directory is created, checked at every
/// open, so a directory copied or mounted onto the wrong node is refused instead of served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// The cluster the node is part of.
    pub cluster_id: ClusterId,
    /// The node itself.
    pub node_id: NodeId,
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} of cluster {}", self.node_id, self.cluster_id)
    }
}
