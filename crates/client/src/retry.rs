//! After a failed attempt: where the next one goes, whether the client waits first, and
//! whether it asks for a newer placement, as one pure decision ([`Retry::after`]) over the
//! client's placement and the leaders it knows ([`Leaders`]). The routing client
//! ([`crate::Client`]) takes it, and so do the whole-cluster simulator's clients, so that a
//! seed tests the retry rules that ship. What a failure means is [`crate::classify`]'s.
//!
//! Invariant: [`Leaders`] holds, per group, only a member of the group in the placement it
//! was last given; the only retry without a pause is following a leader hint, never twice in
//! a row (two nodes naming each other cannot make a client spin).

use std::collections::BTreeMap;

use mosaic_engine::GroupId;
use mosaic_raft::NodeId;

use crate::classify::{Action, Failure, LeaderHint};
use crate::routing::Routing;

/// Whether an attempt of a write says it expects its session in the shard (the request's
/// `expects_session`): where a write of the same client id there was answered before
/// (`session_known`), and for a conditional write retried after an attempt that may have
/// applied. Applied again as new after its session was evicted, such a write would compare
/// against the version its own first attempt wrote and answer "failed" (found in review);
/// expecting its session, it is refused and ends unknown instead.
#[must_use]
pub fn expects_session(session_known: bool, conditional: bool, may_have_applied: bool) -> bool {
    session_known || (conditional && may_have_applied)
}

/// A node to send an attempt to, and the address to reach it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node.
    pub node: NodeId,
    /// Its address.
    pub address: String,
}

impl Target {
    /// `node`, a member of a group of `routing`.
    ///
    /// # Panics
    /// If `routing` has no address for `node` (every member of a [`Routing`]'s groups has one).
    #[must_use]
    pub fn member(routing: &Routing, node: NodeId) -> Self {
        let address =
            routing.address(node).expect("every group member of a Routing has an address");
        Self { node, address: address.to_string() }
    }
}

/// The node believed to lead each group: only ever a member of the group in the placement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaders {
    leaders: BTreeMap<GroupId, NodeId>,
}

impl Leaders {
    /// The node to try first for `group`: its known leader, else its first member.
    ///
    /// # Panics
    /// If `routing` lists no member for `group`.
    #[must_use]
    pub fn preferred(&self, routing: &Routing, group: GroupId) -> Target {
        let members = routing.members(group);
        let leader = self.leaders.get(&group).copied();
        let node = leader.filter(|leader| members.contains(leader)).unwrap_or(members[0]);
        Target::member(routing, node)
    }

    /// `node` leads `group`, if it is a member in `routing`.
    pub fn remember(&mut self, routing: &Routing, group: GroupId, node: NodeId) {
        if routing.members(group).contains(&node) {
            self.leaders.insert(group, node);
        }
    }

    /// `node` does not lead `group` (or cannot be reached).
    pub fn forget(&mut self, group: GroupId, node: NodeId) {
        if self.leaders.get(&group) == Some(&node) {
            self.leaders.remove(&group);
        }
    }

    /// Keeps only the leaders that are members of their group in `routing` (the placement
    /// routed by from now on).
    pub fn retain_members(&mut self, routing: &Routing) {
        self.leaders.retain(|group, leader| routing.members(*group).contains(leader));
    }

    /// The node a leader hint points to, if it can be tried: a member of the group
    /// (remembered), or a node outside the placement whose address the hint gives. Never the
    /// node that gave the hint.
    #[must_use]
    pub fn hinted(
        &mut self,
        routing: &Routing,
        group: GroupId,
        hint: &LeaderHint,
        from: NodeId,
    ) -> Option<Target> {
        if hint.node == from {
            return None;
        }
        if routing.members(group).contains(&hint.node) {
            self.remember(routing, group, hint.node);
            return Some(Target::member(routing, hint.node));
        }
        (!hint.address.is_empty())
            .then(|| Target { node: hint.node, address: hint.address.clone() })
    }
}

/// The member of `group` after `node` (cyclically); the first member if `node` is not one.
///
/// # Panics
/// If `routing` lists no member for `group`.
#[must_use]
pub fn next_member(routing: &Routing, group: GroupId, node: NodeId) -> Target {
    let members = routing.members(group);
    let index =
        members.iter().position(|member| *member == node).map_or(0, |i| (i + 1) % members.len());
    Target::member(routing, members[index])
}

/// Asking for a newer placement before the next attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// The placement must be of this configuration or later (a node has applied it, so
    /// every older placement is stale); 0 when any newer one will do.
    pub at_least: u64,
    /// The node not to retry first: the next attempt goes to the member after it.
    pub skip: Option<NodeId>,
}

/// What the client does after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Give up: retrying cannot help (or, for an expired session, a retry could apply the
    /// write twice).
    Fail,
    /// Try again.
    Retry {
        /// Where; `None`: where the placement and the known leaders point.
        target: Option<Target>,
        /// Wait the backoff's pause first.
        pause: bool,
        /// Ask for a newer placement first (after the pause).
        refresh: Option<Refresh>,
    },
}

/// The retries of one operation. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Retry {
    followed_leader_last: bool,
}

impl Retry {
    /// What to do after the attempt at `target` for `group` failed as `failure`;
    /// `may_have_applied` says whether this or an earlier attempt of the operation may have
    /// applied it. Forgets `target` as the group's leader unless the failure says it may lead.
    /// On [`Action::RenewSession`] the caller also forgets the lane's session in the shard.
    pub fn after(
        &mut self,
        failure: &Failure,
        routing: &Routing,
        leaders: &mut Leaders,
        group: GroupId,
        target: Target,
        may_have_applied: bool,
    ) -> Next {
        if !failure.node_may_lead() {
            leaders.forget(group, target.node);
        }
        let (target, pause, refresh) = match failure.action() {
            Action::Fail => return Next::Fail,
            Action::FollowLeader(hint) => {
                match leaders.hinted(routing, group, &hint, target.node) {
                    Some(leader) => (Some(leader), self.followed_leader_last, None),
                    None => (Some(next_member(routing, group, target.node)), true, None),
                }
            }
            Action::NextMember => (Some(next_member(routing, group, target.node)), true, None),
            Action::SameNode => (Some(target), true, None),
            Action::RefreshRouting | Action::RefreshRoutingNextMember => {
                let at_least = match failure {
                    Failure::WrongGroup { config_num } => *config_num,
                    _ => 0,
                };
                let skip =
                    (failure.action() == Action::RefreshRoutingNextMember).then_some(target.node);
                (None, true, Some(Refresh { at_least, skip }))
            }
            // Applied before the eviction, the write must not be applied again.
            Action::RenewSession if may_have_applied => return Next::Fail,
            Action::RenewSession => (Some(target), false, None),
        };
        self.followed_leader_last = !pause;
        Next::Retry { target, pause, refresh }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing_of(members: &[u64]) -> Routing {
        let nodes = members.iter().map(|id| (NodeId(*id), format!("h{id}:1"))).collect();
        Routing::single_group(GroupId(1), nodes, 1).unwrap()
    }

    const GROUP: GroupId = GroupId(1);

    fn at(routing: &Routing, node: u64) -> Target {
        Target::member(routing, NodeId(node))
    }

    fn hint(node: u64, address: &str) -> Failure {
        Failure::NotLeader {
            leader: Some(LeaderHint { node: NodeId(node), address: address.into() }),
        }
    }

    #[test]
    fn next_member_cycles_through_the_group() {
        let routing = routing_of(&[1, 2, 3]);
        let next = |node| next_member(&routing, GROUP, NodeId(node)).node;
        assert_eq!((next(1), next(2), next(3)), (NodeId(2), NodeId(3), NodeId(1)));
        // A node outside the group (a hinted leader) is followed by the first member.
        assert_eq!(next(9), NodeId(1));
    }

    #[test]
    fn leader_hints_are_remembered_only_for_members() {
        let routing = routing_of(&[1, 2, 3]);
        let mut leaders = Leaders::default();
        assert_eq!(leaders.preferred(&routing, GROUP).node, NodeId(1));

        let member = LeaderHint { node: NodeId(3), address: String::new() };
        let target = leaders.hinted(&routing, GROUP, &member, NodeId(1)).unwrap();
        assert_eq!((target.node, target.address.as_str()), (NodeId(3), "h3:1"));
        assert_eq!(leaders.preferred(&routing, GROUP).node, NodeId(3));

        // A leader outside the placement is tried at the address the hint gives, not cached.
        let outsider = LeaderHint { node: NodeId(7), address: "h7:1".into() };
        let target = leaders.hinted(&routing, GROUP, &outsider, NodeId(3)).unwrap();
        assert_eq!((target.node, target.address.as_str()), (NodeId(7), "h7:1"));
        assert_eq!(leaders.preferred(&routing, GROUP).node, NodeId(3));
        let no_address = LeaderHint { node: NodeId(7), address: String::new() };
        assert!(leaders.hinted(&routing, GROUP, &no_address, NodeId(3)).is_none());
        // A node naming itself is no hint.
        assert!(leaders.hinted(&routing, GROUP, &member, NodeId(3)).is_none());

        leaders.forget(GROUP, NodeId(2));
        assert_eq!(leaders.preferred(&routing, GROUP).node, NodeId(3));
        leaders.forget(GROUP, NodeId(3));
        assert_eq!(leaders.preferred(&routing, GROUP).node, NodeId(1));
        // A new placement without the remembered leader drops it.
        leaders.remember(&routing, GROUP, NodeId(2));
        leaders.retain_members(&routing_of(&[1, 3]));
        assert_eq!(leaders.preferred(&routing_of(&[1, 3]), GROUP).node, NodeId(1));
    }

    #[test]
    fn a_hint_is_followed_at_once_but_never_twice_in_a_row() {
        let routing = routing_of(&[1, 2, 3]);
        let (mut retry, mut leaders) = (Retry::default(), Leaders::default());
        let first =
            retry.after(&hint(2, ""), &routing, &mut leaders, GROUP, at(&routing, 1), false);
        assert_eq!(
            first,
            Next::Retry { target: Some(at(&routing, 2)), pause: false, refresh: None }
        );
        // Node 2 names node 1 back: followed, but after a pause.
        let second =
            retry.after(&hint(1, ""), &routing, &mut leaders, GROUP, at(&routing, 2), false);
        assert_eq!(
            second,
            Next::Retry { target: Some(at(&routing, 1)), pause: true, refresh: None }
        );
        // A hint to no usable node: the next member, after a pause.
        let nowhere =
            retry.after(&hint(9, ""), &routing, &mut leaders, GROUP, at(&routing, 1), false);
        assert_eq!(
            nowhere,
            Next::Retry { target: Some(at(&routing, 2)), pause: true, refresh: None }
        );
    }

    #[test]
    fn each_failure_retries_where_the_decision_table_says() {
        let routing = routing_of(&[1, 2, 3]);
        let mut leaders = Leaders::default();
        leaders.remember(&routing, GROUP, NodeId(2));
        let mut after = |failure: Failure, may_have_applied| {
            Retry::default().after(
                &failure,
                &routing,
                &mut leaders,
                GROUP,
                at(&routing, 2),
                may_have_applied,
            )
        };
        let same = Next::Retry { target: Some(at(&routing, 2)), pause: true, refresh: None };
        assert_eq!(after(Failure::ServerBusy, false), same);
        assert_eq!(after(Failure::ShardNotReady, false), same);
        let next = Next::Retry { target: Some(at(&routing, 3)), pause: true, refresh: None };
        assert_eq!(after(Failure::AttemptTimedOut, true), next);
        assert_eq!(
            after(Failure::WrongGroup { config_num: 7 }, false),
            Next::Retry {
                target: None,
                pause: true,
                refresh: Some(Refresh { at_least: 7, skip: None })
            }
        );
        assert_eq!(
            after(Failure::GroupNotHosted { group: GROUP }, false),
            Next::Retry {
                target: None,
                pause: true,
                refresh: Some(Refresh { at_least: 0, skip: Some(NodeId(2)) })
            }
        );
        assert_eq!(after(Failure::InvalidArgument { reason: "x".into() }, false), Next::Fail);
        // An expired session: sent again at once, unless an attempt may have applied it.
        let renew = Next::Retry { target: Some(at(&routing, 2)), pause: false, refresh: None };
        assert_eq!(after(Failure::SessionExpired, false), renew);
        assert_eq!(after(Failure::SessionExpired, true), Next::Fail);
    }

    #[test]
    fn a_node_that_cannot_lead_is_forgotten_as_the_leader() {
        let routing = routing_of(&[1, 2, 3]);
        let mut leaders = Leaders::default();
        leaders.remember(&routing, GROUP, NodeId(2));
        let _ = Retry::default().after(
            &Failure::ServerBusy,
            &routing,
            &mut leaders,
            GROUP,
            at(&routing, 2),
            false,
        );
        assert_eq!(leaders.preferred(&routing, GROUP).node, NodeId(2), "busy: it may still lead");
        let _ = Retry::default().after(
            &Failure::AttemptTimedOut,
            &routing,
            &mut leaders,
            GROUP,
            at(&routing, 2),
            true,
        );
        assert_eq!(leaders.preferred(&routing, GROUP).node, NodeId(1), "unreachable: forgotten");
    }
}
