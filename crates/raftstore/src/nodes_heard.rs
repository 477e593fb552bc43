//! Which nodes a store hears from, so that a quiescent group notices that its leader's node
//! went silent although the group itself sends nothing (docs/raftstore.md "Quiescence").
//!
//! Every Raft batch from a node counts as hearing it, and every store sends each node of its
//! groups an empty batch every `heartbeat_ticks`: one message per pair of nodes, however many
//! groups they share. Time is the store's own ticks, so the rule is pure. A node that is heard
//! is not enough: it may have restarted, even on an empty disk, and no longer host the groups
//! it led; every batch carries the incarnation of the sender's process, so a restart shows.

use std::collections::BTreeMap;

use mosaic_raft::NodeId;

/// When each node was last heard, in ticks of this store.
#[derive(Debug, Default)]
pub(crate) struct NodesHeard {
    /// Ticks this store counted since it opened.
    ticks: u64,
    /// The store's tick count when each node was last heard (absent: not since it opened).
    last: BTreeMap<NodeId, u64>,
    /// The incarnation of each node's process, from its latest batch.
    incarnations: BTreeMap<NodeId, u64>,
}

impl NodesHeard {
    /// A batch from `node` arrived.
    pub(crate) fn heard(&mut self, node: NodeId) {
        self.last.insert(node, self.ticks);
    }

    /// A Raft batch from `node`'s process `incarnation` arrived; returns true if an earlier
    /// batch came from another incarnation (the node restarted since).
    pub(crate) fn heard_from_incarnation(&mut self, node: NodeId, incarnation: u64) -> bool {
        self.heard(node);
        self.incarnations.insert(node, incarnation).is_some_and(|before| before != incarnation)
    }

    /// Counts a tick; returns true when this store should send its empty batches now (every
    /// `heartbeat_ticks`).
    pub(crate) fn tick(&mut self, heartbeat_ticks: u32) -> bool {
        self.ticks += 1;
        self.ticks.is_multiple_of(u64::from(heartbeat_ticks.max(1)))
    }

    /// Returns true if `node` has not been heard for `ticks` ticks (counting from when the
    /// store opened, if never).
    pub(crate) fn silent_for(&self, node: NodeId, ticks: u32) -> bool {
        let last = self.last.get(&node).copied().unwrap_or(0);
        self.ticks.saturating_sub(last) >= u64::from(ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_silent_once_unheard_for_the_ticks_given() {
        let mut heard = NodesHeard::default();
        let pings: Vec<bool> = (0..4).map(|_| heard.tick(2)).collect();
        assert_eq!(pings, [false, true, false, true], "a ping every heartbeat_ticks");
        assert!(heard.silent_for(NodeId(2), 4), "never heard since the store opened 4 ticks ago");
        assert!(!heard.silent_for(NodeId(2), 5));
        heard.heard(NodeId(2));
        heard.tick(2);
        assert!(!heard.silent_for(NodeId(2), 2));
        heard.tick(2);
        assert!(heard.silent_for(NodeId(2), 2));
        assert!(heard.silent_for(NodeId(3), 6));
    }

    #[test]
    fn a_new_incarnation_of_a_node_is_a_restart() {
        let mut heard = NodesHeard::default();
        assert!(!heard.heard_from_incarnation(NodeId(2), 7), "the first heard");
        assert!(!heard.heard_from_incarnation(NodeId(2), 7));
        assert!(!heard.heard_from_incarnation(NodeId(3), 8), "another node");
        assert!(heard.heard_from_incarnation(NodeId(2), 9), "restarted");
        assert!(!heard.heard_from_incarnation(NodeId(2), 9));
    }
}
