//! Which storage nodes the controller hears from: every node's agent reads the latest
//! configuration from the controller's leader several times a second, naming itself, and the
//! leader holds a node that has not been heard for [`Liveness::down_after`] down.
//!
//! This is the leader's own view, not replicated state (a heartbeat through the log would
//! cost a write per node per poll): each replica keeps a [`Liveness`], fed by the reads it
//! answers as the leader. It is kept per leadership: a replica that answers in a later term
//! than the one its view was kept in starts a new view, so that what it heard while it led
//! before (maybe long ago) never counts; and until a new leader has watched for
//! [`Liveness::down_after`], a node it has not heard yet is [`NodeLiveness::Unknown`], not
//! down. Pure: the caller passes the time, as the time since an origin of its monotonic clock.

use std::collections::BTreeMap;
use std::time::Duration;

use mosaic_raft::{NodeId, Term};
use mosaic_raftstore::StoreConfig;

/// How long a node may go unheard before the controller holds it down, by default.
pub const DEFAULT_NODE_DOWN_AFTER: Duration = Duration::from_secs(10);

/// The store settings a controller replica runs with, from a node's: the controller group's
/// leadership is never handed over for balance (docs/raftstore.md "Leader balance"). Each of
/// its leaders watches the nodes afresh (see the module documentation), so a handover would
/// hide a node's failure for up to `node-down-after-ms` longer and delay its repair, and one
/// group has no load to spread. The server and the simulator both start controllers with it.
#[must_use]
pub fn controller_store_config(store: StoreConfig) -> StoreConfig {
    StoreConfig { leader_balance_ticks: 0, ..store }
}

/// What the controller's leader can say of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeLiveness {
    /// Heard within [`Liveness::down_after`]: this long ago.
    Up {
        /// Since the node was last heard.
        last_heard: Duration,
    },
    /// Not heard for longer than [`Liveness::down_after`]: this long ago, or not at all
    /// since this replica leads.
    Down {
        /// Since the node was last heard; `None` when this leader never heard it.
        last_heard: Option<Duration>,
    },
    /// Not heard yet by a leader that has not led long enough to hold it down.
    Unknown,
}

impl NodeLiveness {
    /// `up`, `down` or `unknown`, as tools show it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Up { .. } => "up",
            Self::Down { .. } => "down",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the node is up.
    #[must_use]
    pub fn is_up(self) -> bool {
        matches!(self, Self::Up { .. })
    }

    /// Since the node was last heard, when the leader heard it.
    #[must_use]
    pub fn last_heard(self) -> Option<Duration> {
        match self {
            Self::Up { last_heard } => Some(last_heard),
            Self::Down { last_heard } => last_heard,
            Self::Unknown => None,
        }
    }
}

/// One replica's view of the nodes it hears from as the leader. See the module
/// documentation.
#[derive(Clone, Debug)]
pub struct Liveness {
    down_after: Duration,
    /// The term this view is kept in and when the replica first answered in it.
    leading: Option<(Term, Duration)>,
    /// When each node was last heard in that term.
    heard: BTreeMap<NodeId, Duration>,
}

impl Liveness {
    /// An empty view that holds a node down once unheard for `down_after`.
    #[must_use]
    pub fn new(down_after: Duration) -> Self {
        Self { down_after, leading: None, heard: BTreeMap::new() }
    }

    /// How long a node may go unheard before it is held down.
    #[must_use]
    pub fn down_after(&self) -> Duration {
        self.down_after
    }

    /// The replica answered a read as the leader of `term` at `now`. A later term than the
    /// view's starts a new view; an earlier one (a read that raced with a new election) is
    /// ignored and answers false, so that nothing it heard is recorded.
    pub fn leads(&mut self, term: Term, now: Duration) -> bool {
        match self.leading {
            Some((kept, _)) if kept == term => true,
            Some((kept, _)) if kept > term => false,
            _ => {
                self.leading = Some((term, now));
                self.heard.clear();
                true
            }
        }
    }

    /// The replica, leading in `term`, heard `node` at `now`.
    pub fn heard(&mut self, node: NodeId, term: Term, now: Duration) {
        if self.leads(term, now) {
            let last = self.heard.entry(node).or_insert(now);
            *last = (*last).max(now);
        }
    }

    /// What a replica that answered a read of the configuration as the leader of `term` says
    /// of liveness, at `now`: a storage node's read (`asked_by`, which arrived at `arrived`)
    /// is a hearing of it and answers nothing (an agent reads several times a second and needs
    /// no liveness: its answers stay small); anyone else's read gets what the view says of
    /// each of `nodes`. The controller service and the simulator's controller replicas both
    /// answer with this.
    pub fn answer(
        &mut self,
        asked_by: Option<NodeId>,
        term: Term,
        arrived: Duration,
        now: Duration,
        nodes: impl Iterator<Item = NodeId>,
    ) -> BTreeMap<NodeId, NodeLiveness> {
        match asked_by {
            Some(node) => {
                self.heard(node, term, arrived);
                BTreeMap::new()
            }
            None => {
                self.leads(term, now);
                nodes.map(|node| (node, self.of(node, term, now))).collect()
            }
        }
    }

    /// What the view says of `node` at `now`, to a read answered in `term`.
    #[must_use]
    pub fn of(&self, node: NodeId, term: Term, now: Duration) -> NodeLiveness {
        let Some((_, since)) = self.leading.filter(|(kept, _)| *kept == term) else {
            return NodeLiveness::Unknown;
        };
        match self.heard.get(&node) {
            Some(at) => {
                let last_heard = now.saturating_sub(*at);
                if last_heard <= self.down_after {
                    NodeLiveness::Up { last_heard }
                } else {
                    NodeLiveness::Down { last_heard: Some(last_heard) }
                }
            }
            None if now.saturating_sub(since) > self.down_after => {
                NodeLiveness::Down { last_heard: None }
            }
            None => NodeLiveness::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN_AFTER: Duration = Duration::from_secs(10);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_node_heard_within_the_limit_is_up_and_down_after_it() {
        let start = secs(100);
        let mut view = Liveness::new(DOWN_AFTER);
        view.heard(NodeId(1), Term(3), start);
        assert_eq!(
            view.of(NodeId(1), Term(3), start + secs(4)),
            NodeLiveness::Up { last_heard: secs(4) }
        );
        assert_eq!(
            view.of(NodeId(1), Term(3), start + secs(10)),
            NodeLiveness::Up { last_heard: secs(10) }
        );
        assert_eq!(
            view.of(NodeId(1), Term(3), start + secs(11)),
            NodeLiveness::Down { last_heard: Some(secs(11)) }
        );
        view.heard(NodeId(1), Term(3), start + secs(12));
        assert_eq!(
            view.of(NodeId(1), Term(3), start + secs(12)),
            NodeLiveness::Up { last_heard: Duration::ZERO }
        );
    }

    #[test]
    fn a_new_leader_holds_no_one_down_before_it_watched_for_the_limit() {
        let start = secs(100);
        let mut view = Liveness::new(DOWN_AFTER);
        assert!(view.leads(Term(5), start));
        assert_eq!(view.of(NodeId(2), Term(5), start + secs(10)), NodeLiveness::Unknown);
        assert_eq!(
            view.of(NodeId(2), Term(5), start + secs(11)),
            NodeLiveness::Down { last_heard: None }
        );
    }

    #[test]
    fn what_a_replica_heard_while_it_led_before_never_counts_in_a_later_term() {
        let start = secs(100);
        let mut view = Liveness::new(DOWN_AFTER);
        view.heard(NodeId(1), Term(3), start);
        // Led again much later: node 1, heard in term 3 only, is not known in term 7 (and the
        // old hearing does not make it down either).
        let later = start + secs(3600);
        assert!(view.leads(Term(7), later));
        assert_eq!(view.of(NodeId(1), Term(7), later + secs(1)), NodeLiveness::Unknown);
        view.heard(NodeId(1), Term(7), later + secs(2));
        assert_eq!(
            view.of(NodeId(1), Term(7), later + secs(2)),
            NodeLiveness::Up { last_heard: Duration::ZERO }
        );
    }

    #[test]
    fn a_read_of_an_earlier_term_records_nothing_and_knows_nothing() {
        let start = secs(100);
        let mut view = Liveness::new(DOWN_AFTER);
        view.heard(NodeId(1), Term(4), start);
        assert!(!view.leads(Term(3), start + secs(1)));
        view.heard(NodeId(2), Term(3), start + secs(1));
        assert_eq!(view.of(NodeId(2), Term(4), start + secs(1)), NodeLiveness::Unknown);
        assert_eq!(view.of(NodeId(1), Term(3), start + secs(1)), NodeLiveness::Unknown);
        assert_eq!(
            view.of(NodeId(1), Term(4), start + secs(1)),
            NodeLiveness::Up { last_heard: secs(1) }
        );
    }

    #[test]
    fn a_nodes_read_is_heard_and_answered_nothing_and_anyone_elses_is_told_every_node() {
        let start = secs(100);
        let mut view = Liveness::new(DOWN_AFTER);
        let nodes = [NodeId(1), NodeId(2)];
        let told = view.answer(Some(NodeId(1)), Term(2), start, start + secs(1), nodes.into_iter());
        assert!(told.is_empty());
        let told = view.answer(None, Term(2), start + secs(3), start + secs(3), nodes.into_iter());
        assert_eq!(
            told,
            BTreeMap::from([
                (NodeId(1), NodeLiveness::Up { last_heard: secs(3) }),
                (NodeId(2), NodeLiveness::Unknown),
            ])
        );
        // A read answered in an earlier term is no hearing.
        view.answer(Some(NodeId(2)), Term(1), start + secs(4), start + secs(4), nodes.into_iter());
        assert_eq!(view.of(NodeId(2), Term(2), start + secs(4)), NodeLiveness::Unknown);
    }

    #[test]
    fn hearings_that_arrive_out_of_order_keep_the_latest() {
        let start = secs(100);
        let mut view = Liveness::new(DOWN_AFTER);
        view.heard(NodeId(1), Term(1), start + secs(5));
        view.heard(NodeId(1), Term(1), start + secs(2));
        assert_eq!(
            view.of(NodeId(1), Term(1), start + secs(6)),
            NodeLiveness::Up { last_heard: secs(1) }
        );
    }
}
