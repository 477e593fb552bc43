//! Spreading leaderships over the nodes, as a pure decision: every group has a preferred
//! leader, the voter its group id picks round-robin from its voters in id order, so groups on
//! the same nodes prefer different ones (Kafka's preferred replica, chosen without a
//! coordinator). A leader that has led for [`StoreConfig::leader_balance_ticks`] hands its
//! leadership to the preferred voter when the leader is replicating to it (not probing or
//! sending a snapshot), heard from it in its current CheckQuorum round, and its log is at most
//! [`HANDOVER_LAG_ENTRIES_MAX`] entries behind. After an ask it waits another
//! `leader_balance_ticks`, doubled for every ask since it last saw the preferred voter lead (up
//! to 32 intervals, [`HANDOVER_BACKOFF_DOUBLINGS_MAX`]). A node that restarts gets its groups'
//! leaderships back this way once it has caught up; a preferred voter that is down, lagging or
//! being added is left alone.
//!
//! The store asks [`LeaderBalance::on_tick`] on every tick of a leader and executes the answer
//! with `RawNode::transfer_leader` (Raft dissertation §3.10: the leader gives up its lease and
//! stops taking proposals until the transfer ends or an election timeout passes).
//!
//! An operator asks for a handover at once ([`crate::StoreMsg::TransferLeader`], `mosaic admin
//! leaders balance`): [`LeaderBalance::on_request`] applies the same readiness rules to the
//! preferred voter or a voter named, without the wait.
//!
//! [`StoreConfig::leader_balance_ticks`]: crate::StoreConfig::leader_balance_ticks

use std::collections::BTreeSet;

use mosaic_engine::GroupId;
use mosaic_raft::{LogIndex, NodeId, PeerStatus, ProgressState};

/// A preferred voter is handed leadership only while its log is at most this many entries
/// behind the leader's: the leader stops taking proposals until the voter has caught up and
/// won, so the rest must fit in about one append (a voter under steady writes is always a few
/// entries behind; one that must catch up further would stall the group's writes).
pub(crate) const HANDOVER_LAG_ENTRIES_MAX: u64 = 256;

/// The voter that leads `group` when every voter is well: the group id picks one round-robin
/// from `voters` in id order. `None` when there are no voters.
#[must_use]
pub fn preferred_leader(group: GroupId, voters: &BTreeSet<NodeId>) -> Option<NodeId> {
    let count = u64::try_from(voters.len()).ok().filter(|count| *count > 0)?;
    let position = usize::try_from(group.0 % count).ok()?;
    voters.iter().nth(position).copied()
}

/// What the decision needs of a leader's state.
pub(crate) struct LeaderView<'a> {
    /// The group.
    pub group: GroupId,
    /// The leader (this replica).
    pub leader: NodeId,
    /// The group's voters.
    pub voters: &'a BTreeSet<NodeId>,
    /// The leader's last log index.
    pub last_index: LogIndex,
    /// True while the leader has a membership change it has not applied.
    pub membership_change_pending: bool,
    /// The voter a pending transfer hands the leadership to.
    pub transferring_to: Option<NodeId>,
}

/// A handover asked for that did not end with the preferred voter leading doubles the wait
/// before the next one, up to `2^HANDOVER_BACKOFF_DOUBLINGS_MAX` intervals: a preferred voter
/// the leader hears but that cannot win (cut off from the other voters) costs the group an
/// election per ask (its transfer campaign makes the leader step down and vote for it, and the
/// leader is elected again only after an election timeout), so asks thin out instead of
/// recurring every interval. Found by review: in a group of five with the preferred voter cut
/// off from three of them, the group had no leader for 10-13% of the time (12% in
/// `tests/leader_balance.rs`).
pub(crate) const HANDOVER_BACKOFF_DOUBLINGS_MAX: u32 = 5;

/// When one replica began to lead or last asked for a handover, and how many of its asks
/// failed: its own clock of ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaderBalance {
    /// While this replica leads: the tick it began to, or last asked the preferred voter to
    /// take over.
    since: Option<u64>,
    /// Handovers this replica asked for since it last saw the preferred voter lead (across its
    /// leaderships: a failed handover usually costs the asker its leadership for an election).
    failed: u32,
}

impl LeaderBalance {
    /// Records a role change at tick `now`: whether this replica leads now, and whether the
    /// group's leader now is its preferred voter (another replica).
    pub(crate) fn on_role_change(&mut self, leading: bool, preferred_leads: bool, now: u64) {
        self.since = leading.then_some(now);
        if preferred_leads {
            self.failed = 0;
        }
    }

    /// At tick `now` of a leader: the voter to hand leadership to, when the wait since it began
    /// to lead or last asked has passed (`interval` ticks, doubled for every ask since the
    /// preferred voter last led, up to [`HANDOVER_BACKOFF_DOUBLINGS_MAX`] times; never when
    /// `interval` is 0), no membership change is pending, and the preferred voter is another
    /// one, replicated to, at most [`HANDOVER_LAG_ENTRIES_MAX`] entries behind and heard in the
    /// leader's current CheckQuorum round. An answer counts as asking. `progress` is the
    /// leader's view of a member.
    pub(crate) fn on_tick(
        &mut self,
        now: u64,
        interval: u64,
        view: &LeaderView<'_>,
        progress: impl Fn(NodeId) -> Option<PeerStatus>,
    ) -> Option<NodeId> {
        let since = self.since?;
        let wait = interval << self.failed.min(HANDOVER_BACKOFF_DOUBLINGS_MAX);
        if interval == 0
            || now.saturating_sub(since) < wait
            || view.membership_change_pending
            || view.transferring_to.is_some()
        {
            return None;
        }
        let preferred = preferred_leader(view.group, view.voters)?;
        if preferred == view.leader || not_ready(view, progress(preferred)).is_some() {
            return None;
        }
        self.since = Some(now);
        self.failed = self.failed.saturating_add(1);
        Some(preferred)
    }

    /// At tick `now` of a leader, an operator's request to hand the leadership to `to` (the
    /// preferred voter when `None`) at once: asked when the voter is ready as for
    /// [`LeaderBalance::on_tick`], whatever the wait, and no transfer is pending (one to `to`
    /// is answered as asked: it is underway; one to another voter makes `to` not ready, so
    /// that asks cannot keep the leader from taking proposals). Asking restarts the wait of
    /// the automatic handovers; it does not count toward their backoff.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `to` is not a voter of the group.
    pub(crate) fn on_request(
        &mut self,
        now: u64,
        view: &LeaderView<'_>,
        to: Option<NodeId>,
        progress: impl Fn(NodeId) -> Option<PeerStatus>,
    ) -> crate::Result<Handover> {
        let Some(to) = to.or_else(|| preferred_leader(view.group, view.voters)) else {
            return Err(crate::Error::InvalidArgument {
                reason: format!("group {} has no voters", view.group),
            });
        };
        if !view.voters.contains(&to) {
            return Err(crate::Error::InvalidArgument {
                reason: format!("node {to} is not a voter of group {}", view.group),
            });
        }
        if to == view.leader {
            return Ok(Handover::AlreadyLeads { to });
        }
        match view.transferring_to {
            Some(pending) if pending == to => return Ok(Handover::Asked { to }),
            Some(pending) => {
                let reason = format!("a handover to node {pending} is pending");
                return Ok(Handover::NotReady { to, reason });
            }
            None => {}
        }
        if let Some(reason) = not_ready(view, progress(to)) {
            return Ok(Handover::NotReady { to, reason });
        }
        self.since = Some(now);
        Ok(Handover::Asked { to })
    }
}

/// Why the voter whose progress `status` is (as the leader of `view` sees it) cannot take the
/// leadership now, or `None` when it can: it is replicated to, heard in the leader's current
/// CheckQuorum round, at most [`HANDOVER_LAG_ENTRIES_MAX`] entries behind, and no membership
/// change is pending.
fn not_ready(view: &LeaderView<'_>, status: Option<PeerStatus>) -> Option<String> {
    if view.membership_change_pending {
        return Some("a membership change is pending".into());
    }
    let Some(status) = status else { return Some("it is not a member".into()) };
    let lag = view.last_index.0.saturating_sub(status.match_index.0);
    if status.is_learner {
        Some("it is a learner".into())
    } else if !status.recent_active {
        Some("the leader has not heard from it in its current CheckQuorum round".into())
    } else if status.state != ProgressState::Replicate {
        Some(format!("the leader is not replicating to it ({:?})", status.state))
    } else if lag > HANDOVER_LAG_ENTRIES_MAX {
        Some(format!("its log is {lag} entries behind (at most {HANDOVER_LAG_ENTRIES_MAX})"))
    } else {
        None
    }
}

/// What a leader did with an operator's request to hand its leadership over
/// ([`crate::StoreMsg::TransferLeader`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handover {
    /// The leader asked `to` to take over (it sends it TimeoutNow once its log is caught up):
    /// `to` leads within about an election timeout unless it fails or cannot win.
    Asked {
        /// The voter asked.
        to: NodeId,
    },
    /// `to` is the leader that was asked: nothing to do.
    AlreadyLeads {
        /// The leader.
        to: NodeId,
    },
    /// `to` cannot take over now; asking again later may succeed.
    NotReady {
        /// The voter.
        to: NodeId,
        /// Why, for a person.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn voters(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn caught_up(last: u64) -> PeerStatus {
        PeerStatus {
            match_index: LogIndex(last),
            next_index: LogIndex(last + 1),
            state: ProgressState::Replicate,
            is_learner: false,
            recent_active: true,
        }
    }

    fn view(group: u64, leader: u64, voters: &BTreeSet<NodeId>) -> LeaderView<'_> {
        LeaderView {
            group: GroupId(group),
            leader: NodeId(leader),
            voters,
            last_index: LogIndex(40),
            membership_change_pending: false,
            transferring_to: None,
        }
    }

    #[test]
    fn a_request_asks_at_once_when_the_voter_is_ready_and_says_why_not_otherwise() {
        let nodes = voters(&[1, 2, 3]);
        let view = view(1, 1, &nodes);
        let mut balance = LeaderBalance::default();
        balance.on_role_change(true, false, 100);
        // Before the interval, the preferred voter (node 2) by default, or a voter named.
        let asked = balance.on_request(101, &view, None, |_| Some(caught_up(40)));
        assert_eq!(asked, Ok(Handover::Asked { to: NodeId(2) }));
        let asked = balance.on_request(101, &view, Some(NodeId(3)), |_| Some(caught_up(40)));
        assert_eq!(asked, Ok(Handover::Asked { to: NodeId(3) }));
        // Asking restarts the automatic wait but adds nothing to its backoff.
        assert_eq!(balance.on_tick(110, 10, &view, |_| Some(caught_up(40))), None);
        assert_eq!(balance.on_tick(111, 10, &view, |_| Some(caught_up(40))), Some(NodeId(2)));
        assert_eq!(balance.failed, 1);
        let leads = balance.on_request(120, &view, Some(NodeId(1)), |_| Some(caught_up(40)));
        assert_eq!(leads, Ok(Handover::AlreadyLeads { to: NodeId(1) }));
        let lagging = PeerStatus { match_index: LogIndex(1), ..caught_up(1) };
        let far_behind = LeaderView { last_index: LogIndex(1_000), ..view };
        let not_ready = balance.on_request(120, &far_behind, None, |_| Some(lagging));
        let Ok(Handover::NotReady { to, reason }) = not_ready else {
            panic!("a voter 999 entries behind is ready: {not_ready:?}");
        };
        assert_eq!(to, NodeId(2));
        assert!(reason.contains("999 entries behind"), "{reason}");
        let probing = PeerStatus { state: ProgressState::Probe, ..caught_up(40) };
        let not_ready = balance.on_request(120, &view, None, |_| Some(probing));
        assert!(matches!(not_ready, Ok(Handover::NotReady { .. })), "{not_ready:?}");
        // While a transfer is pending: the same voter is underway, another is not ready, and
        // the automatic handover waits.
        let pending = LeaderView { transferring_to: Some(NodeId(3)), ..view };
        let same = balance.on_request(200, &pending, Some(NodeId(3)), |_| Some(caught_up(40)));
        assert_eq!(same, Ok(Handover::Asked { to: NodeId(3) }));
        let other = balance.on_request(200, &pending, None, |_| Some(caught_up(40)));
        let Ok(Handover::NotReady { to: NodeId(2), reason }) = other else {
            panic!("a second voter asked while a transfer is pending: {other:?}");
        };
        assert!(reason.contains("a handover to node 3 is pending"), "{reason}");
        assert_eq!(balance.on_tick(10_000, 10, &pending, |_| Some(caught_up(40))), None);
        let refused = balance.on_request(120, &view, Some(NodeId(9)), |_| None);
        assert!(
            matches!(&refused, Err(crate::Error::InvalidArgument { reason })
                if reason.contains("node 9 is not a voter")),
            "{refused:?}"
        );
    }

    #[test]
    fn groups_on_the_same_nodes_prefer_each_node_equally() {
        let nodes = voters(&[4, 7, 9]);
        let mut led: BTreeMap<NodeId, u32> = BTreeMap::new();
        for group in 1..=24 {
            *led.entry(preferred_leader(GroupId(group), &nodes).unwrap()).or_default() += 1;
        }
        assert_eq!(led, BTreeMap::from([(NodeId(4), 8), (NodeId(7), 8), (NodeId(9), 8)]));
        assert_eq!(preferred_leader(GroupId(5), &BTreeSet::new()), None);
    }

    #[test]
    fn a_leader_asks_after_an_interval_and_twice_as_late_after_each_ask_until_the_voter_leads() {
        let nodes = voters(&[1, 2, 3]);
        // Group 1 prefers node 2 (position 1 % 3).
        let view = view(1, 1, &nodes);
        let mut balance = LeaderBalance::default();
        balance.on_role_change(true, false, 100);
        let asks: Vec<u64> = (100..=1_500)
            .filter(|now| balance.on_tick(*now, 10, &view, |_| Some(caught_up(40))).is_some())
            .collect();
        assert_eq!(asks, [110, 130, 170, 250, 410, 730, 1_050, 1_370]);
        // Leading again without the preferred voter having led: the wait stays long.
        balance.on_role_change(false, false, 1_400);
        balance.on_role_change(true, false, 1_412);
        assert_eq!(balance.on_tick(1_422, 10, &view, |_| Some(caught_up(40))), None);
        assert_eq!(balance.on_tick(1_732, 10, &view, |_| Some(caught_up(40))), Some(NodeId(2)));
        // Once the preferred voter led, a new leadership waits one interval again.
        balance.on_role_change(false, true, 1_740);
        balance.on_role_change(true, false, 1_800);
        assert_eq!(balance.on_tick(1_810, 10, &view, |_| Some(caught_up(40))), Some(NodeId(2)));
        // A voter not ready at the time is asked at the first tick it is.
        let mut balance = LeaderBalance::default();
        balance.on_role_change(true, false, 0);
        let ready_from = |now: u64| {
            let state = if now >= 13 { ProgressState::Replicate } else { ProgressState::Probe };
            PeerStatus { state, ..caught_up(40) }
        };
        let asks: Vec<u64> = (0..=40)
            .filter(|now| balance.on_tick(*now, 10, &view, |_| Some(ready_from(*now))).is_some())
            .collect();
        assert_eq!(asks, [13, 33]);
        balance.on_role_change(true, false, 0);
        assert_eq!(balance.on_tick(10, 0, &view, |_| Some(caught_up(40))), None, "0 is off");
        balance.on_role_change(false, false, 5);
        assert_eq!(balance.on_tick(10, 10, &view, |_| Some(caught_up(40))), None, "a follower");
    }

    #[test]
    fn only_a_preferred_voter_replicated_to_nearly_caught_up_and_heard_lately_takes_over() {
        let nodes = voters(&[1, 2, 3]);
        let ask = |view: &LeaderView<'_>, status: Option<PeerStatus>| {
            let mut balance = LeaderBalance::default();
            balance.on_role_change(true, false, 0);
            balance.on_tick(10, 10, view, |node| {
                assert_eq!(node, NodeId(2), "only the preferred voter is looked at");
                status
            })
        };
        assert_eq!(ask(&view(1, 1, &nodes), Some(caught_up(40))), Some(NodeId(2)));
        let behind =
            |entries: u64| PeerStatus { match_index: LogIndex(40 - entries), ..caught_up(40) };
        assert_eq!(ask(&view(1, 1, &nodes), Some(behind(1))), Some(NodeId(2)), "a little behind");
        let far = LeaderView { last_index: LogIndex(1_000), ..view(1, 1, &nodes) };
        let lagging = |matched: u64| PeerStatus { match_index: LogIndex(matched), ..caught_up(40) };
        let limit = 1_000 - HANDOVER_LAG_ENTRIES_MAX;
        assert_eq!(ask(&far, Some(lagging(limit))), Some(NodeId(2)), "at the limit");
        assert_eq!(ask(&far, Some(lagging(limit - 1))), None, "further behind");
        let probed = PeerStatus { state: ProgressState::Probe, ..caught_up(40) };
        assert_eq!(ask(&view(1, 1, &nodes), Some(probed)), None, "probed");
        let snapshot = ProgressState::Snapshot { pending: LogIndex(40) };
        let sent_snapshot = PeerStatus { state: snapshot, ..caught_up(40) };
        assert_eq!(ask(&view(1, 1, &nodes), Some(sent_snapshot)), None, "sent a snapshot");
        let quiet = PeerStatus { recent_active: false, ..caught_up(40) };
        assert_eq!(ask(&view(1, 1, &nodes), Some(quiet)), None, "not heard lately");
        let learner = PeerStatus { is_learner: true, ..caught_up(40) };
        assert_eq!(ask(&view(1, 1, &nodes), Some(learner)), None, "a learner");
        assert_eq!(ask(&view(1, 1, &nodes), None), None, "no progress");
        let changing = LeaderView { membership_change_pending: true, ..view(1, 1, &nodes) };
        assert_eq!(ask(&changing, Some(caught_up(40))), None, "a membership change pending");
        let mut balance = LeaderBalance::default();
        balance.on_role_change(true, false, 0);
        assert_eq!(
            balance.on_tick(10, 10, &view(1, 2, &nodes), |_| panic!("not asked")),
            None,
            "the preferred voter leads"
        );
    }
}
