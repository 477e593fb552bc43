//! Which controller replica the attempts of one call go to, as one pure decision
//! ([`ControllerRetry::after`]) that [`crate::ControllerClient`] takes, and so do the
//! whole-cluster simulator's processes, so that a seed tests the rules that ship (they are
//! listed in [`crate::ControllerClient`]'s documentation, "Finding the leader"). What a
//! failure means is [`crate::classify`]'s.
//!
//! Invariant: `failures_unpaused` stays below the number of replicas between two calls of
//! [`ControllerRetry::after`]: a full round of failures, or two replicas naming each other,
//! always ends in a pause.

use crate::classify::{Action, Failure};

/// The replica a call tries first: the last one seen answering as leader, else the first
/// listed.
///
/// # Panics
/// If `replicas` is empty.
#[must_use]
pub fn first_replica(replicas: &[String], leader: Option<&str>) -> String {
    leader.map_or_else(|| replicas[0].clone(), str::to_string)
}

/// The retries of one call. See the module documentation.
#[derive(Clone, Debug)]
pub struct ControllerRetry {
    /// The listed replica the next round-robin step goes to.
    round_robin: usize,
    /// Failed attempts since the last pause.
    failures_unpaused: usize,
}

impl ControllerRetry {
    /// The retries of a call to `replicas` whose first attempt goes to `first`.
    #[must_use]
    pub fn new(replicas: &[String], first: &str) -> Self {
        let round_robin = replicas
            .iter()
            .position(|listed| listed == first)
            .map_or(0, |index| (index + 1) % replicas.len());
        Self { round_robin, failures_unpaused: 0 }
    }

    /// After the attempt at `target` failed as `failure`: the replica to try next, and
    /// whether to pause first; `None` when the call must give up.
    pub fn after(
        &mut self,
        replicas: &[String],
        failure: &Failure,
        target: &str,
    ) -> Option<(String, bool)> {
        let (next, pause) = match failure.action() {
            // Storage nodes answer `RenewSession`; a controller replica that did would be of
            // another kind: nothing here can renew its session.
            Action::Fail | Action::RenewSession => return None,
            Action::FollowLeader(hint) if !hint.address.is_empty() && hint.address != target => {
                (hint.address, false)
            }
            Action::SameNode => (target.to_string(), true),
            // No routing to refresh here: a replica that names no leader, or says it hosts no
            // controller group, is left for the next one. Following a hint does not move the
            // round-robin, so a stale hint to a dead replica cannot hide the others.
            Action::FollowLeader(_)
            | Action::NextMember
            | Action::RefreshRouting
            | Action::RefreshRoutingNextMember => {
                let next = replicas[self.round_robin].clone();
                self.round_robin = (self.round_robin + 1) % replicas.len();
                (next, false)
            }
        };
        self.failures_unpaused += 1;
        let pause = pause || self.failures_unpaused >= replicas.len();
        if pause {
            self.failures_unpaused = 0;
        }
        Some((next, pause))
    }
}

#[cfg(test)]
mod tests {
    use mosaic_raft::NodeId;

    use super::*;
    use crate::classify::LeaderHint;

    fn replicas() -> Vec<String> {
        ["c1:1", "c2:1", "c3:1"].map(str::to_string).to_vec()
    }

    fn named(address: &str) -> Failure {
        let hint = LeaderHint { node: NodeId(9), address: address.into() };
        Failure::NotLeader { leader: Some(hint) }
    }

    #[test]
    fn a_call_starts_at_the_last_leader_and_goes_round_robin_after_it() {
        let replicas = replicas();
        assert_eq!(first_replica(&replicas, None), "c1:1");
        assert_eq!(first_replica(&replicas, Some("c2:1")), "c2:1");
        let mut retry = ControllerRetry::new(&replicas, "c2:1");
        let down = Failure::AttemptTimedOut;
        assert_eq!(retry.after(&replicas, &down, "c2:1"), Some(("c3:1".into(), false)));
        assert_eq!(retry.after(&replicas, &down, "c3:1"), Some(("c1:1".into(), false)));
        // A full round of failures: a pause before the next.
        assert_eq!(retry.after(&replicas, &down, "c1:1"), Some(("c2:1".into(), true)));
    }

    #[test]
    fn a_hint_is_followed_at_once_without_moving_the_round_robin() {
        let replicas = replicas();
        let mut retry = ControllerRetry::new(&replicas, "c1:1");
        // Even to an address outside the list.
        assert_eq!(retry.after(&replicas, &named("c9:1"), "c1:1"), Some(("c9:1".into(), false)));
        assert_eq!(
            retry.after(&replicas, &Failure::AttemptTimedOut, "c9:1"),
            Some(("c2:1".into(), false))
        );
        // A hint naming the replica that gave it is no hint.
        assert_eq!(retry.after(&replicas, &named("c2:1"), "c2:1"), Some(("c3:1".into(), true)));
    }

    #[test]
    fn busy_replicas_are_retried_after_a_pause_and_final_answers_end_the_call() {
        let replicas = replicas();
        let mut retry = ControllerRetry::new(&replicas, "c1:1");
        assert_eq!(
            retry.after(&replicas, &Failure::ServerBusy, "c1:1"),
            Some(("c1:1".into(), true))
        );
        let invalid = Failure::InvalidArgument { reason: "x".into() };
        assert_eq!(retry.after(&replicas, &invalid, "c1:1"), None);
        assert_eq!(retry.after(&replicas, &Failure::SessionExpired, "c1:1"), None);
    }
}
