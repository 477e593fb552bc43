//! A refused request on the wire, the node's side: [`to_status`] is the one conversion from a
//! store's refusal (`mosaic_raftstore::Error`) to the gRPC status a node answers, a code for
//! generic clients and an [`pb::ErrorDetail`] in the status details with the hint a Mosaic
//! client acts on (DESIGN.md "Errors on the wire"). [`crate::classify`] reads it back on the
//! client's side. It lives beside the reader so that the two cannot drift apart, and so that
//! the whole-cluster simulator, whose stores refuse with `mosaic_raftstore::Error` and no
//! network, decides about a refusal exactly as a client of a real node does.

use mosaic_proto::pb::{self, error_detail::Kind};
use mosaic_raft::NodeId;
use mosaic_raftstore::Error;
use prost::Message as _;
use tonic::{Code, Status};

/// The status a node answers for `error`; `leader_address` gives the address of a leader it
/// names (empty when it knows none).
#[must_use]
pub fn to_status(error: &Error, leader_address: impl Fn(Option<NodeId>) -> String) -> Status {
    let message = error.to_string();
    let (code, kind) = match error {
        Error::NotLeader { leader, .. } => (
            Code::FailedPrecondition,
            Kind::NotLeader(pb::NotLeader {
                leader_node: leader.map(|node| node.0),
                leader_address: leader_address(*leader),
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
                leader_address: leader_address(*leader),
            }),
        ),
        Error::GroupNotFound { group } => (
            Code::FailedPrecondition,
            Kind::GroupNotHosted(pb::GroupNotHosted { group_id: group.0 }),
        ),
        Error::WrongGroup { config_num } => {
            (Code::FailedPrecondition, Kind::WrongGroup(pb::WrongGroup { config_num: *config_num }))
        }
        Error::WrongShard { named, key_shard, shard_count } => (
            Code::InvalidArgument,
            Kind::WrongShard(pb::WrongShard {
                named_shard: named.0,
                key_shard: key_shard.0,
                shard_count: *shard_count,
            }),
        ),
        Error::StorageFull { available_bytes, reserve_bytes } => (
            Code::ResourceExhausted,
            Kind::StorageFull(pb::StorageFull {
                available_bytes: *available_bytes,
                reserve_bytes: *reserve_bytes,
            }),
        ),
        Error::Compacted { oldest_revision } => {
            (Code::OutOfRange, Kind::Compacted(pb::Compacted { oldest_revision: *oldest_revision }))
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
    use crate::classify::{Action, Failure, LeaderHint, classify_status};

    fn no_address(_: Option<NodeId>) -> String {
        String::new()
    }

    fn detail(status: &Status) -> Kind {
        pb::ErrorDetail::decode(status.details()).unwrap().kind.unwrap()
    }

    #[test]
    fn an_abandoned_proposal_says_its_outcome_is_unknown() {
        let error = Error::ProposalAbandoned { group: GroupId(1), leader: None };
        let status = to_status(&error, no_address);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(matches!(detail(&status), Kind::OutcomeUnknown(_)));
    }

    #[test]
    fn every_refusal_a_client_acts_on_has_a_detail() {
        for error in [
            Error::ProposalOverwritten { group: GroupId(1) },
            Error::GroupNotFound { group: GroupId(1) },
            Error::WrongGroup { config_num: 3 },
            Error::WrongShard {
                named: mosaic_engine::ShardId(1),
                key_shard: mosaic_engine::ShardId(2),
                shard_count: 4,
            },
            Error::StorageFull { available_bytes: 10, reserve_bytes: 20 },
            Error::Compacted { oldest_revision: 5 },
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
            let status = to_status(&error, no_address);
            assert!(pb::ErrorDetail::decode(status.details()).unwrap().kind.is_some(), "{error}");
        }
    }

    #[test]
    fn a_refusal_reads_back_as_what_the_store_meant() {
        let leader = |_: Option<NodeId>| "10.0.0.2:7100".to_string();
        let hint = LeaderHint { node: NodeId(2), address: "10.0.0.2:7100".into() };
        let not_leader = Error::NotLeader { group: GroupId(1), leader: Some(NodeId(2)) };
        let failure = classify_status(&to_status(&not_leader, leader));
        assert_eq!(failure, Failure::NotLeader { leader: Some(hint.clone()) });
        assert_eq!(failure.action(), Action::FollowLeader(hint));
        assert!(!failure.may_have_applied());
        let busy = classify_status(&to_status(&Error::ServerBusy { reason: "x".into() }, leader));
        assert_eq!((busy.action(), busy.may_have_applied()), (Action::SameNode, false));
        let stopped = classify_status(&to_status(&Error::Stopped, leader));
        assert!(stopped.may_have_applied(), "a stopped store may have logged the write");
        let named = mosaic_engine::ShardId(1);
        let key_shard = mosaic_engine::ShardId(2);
        let wrong = Error::WrongShard { named, key_shard, shard_count: 4 };
        let failure = classify_status(&to_status(&wrong, leader));
        assert_eq!(failure, Failure::WrongShard { named, key_shard, shard_count: 4 });
        assert_eq!((failure.action(), failure.may_have_applied()), (Action::Fail, false));
        let compacted = Error::Compacted { oldest_revision: 5 };
        let failure = classify_status(&to_status(&compacted, leader));
        assert_eq!(failure, Failure::Compacted { oldest_revision: 5 });
        assert_eq!((failure.action(), failure.may_have_applied()), (Action::Fail, false));
    }
}
