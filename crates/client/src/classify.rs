//! What a failed attempt means ([`Failure`]) and what the client does next ([`Action`]).
//!
//! A node answers every refusal with a `tonic::Status` whose details hold an encoded
//! [`pb::ErrorDetail`] (DESIGN.md "Errors on the wire"). The detail, not the status code, decides
//! the action: codes are for generic gRPC clients. A status without a decodable detail did not
//! come from a Mosaic node's refusal (a broken connection, an internal error): the node counts as
//! unreachable, and a write sent to it may have been applied, unless the connection was never
//! made.
//!
//! | failure | next | a write may have been applied |
//! |---|---|---|
//! | `NotLeader` with a leader | the leader | no |
//! | `NotLeader` without one | next member, after a backoff | no |
//! | `OutcomeUnknown` | the leader if named, else next member | yes |
//! | `WrongGroup` | refresh routing, after a backoff (again, with backoffs, while the routing is older than the node's configuration) | no |
//! | `GroupNotHosted` | refresh routing, next member, after a backoff | no |
//! | `ShardNotReady`, `ServerBusy` | same node, after a backoff | no |
//! | `SessionExpired` | if no earlier attempt may have been applied: the same node at once, starting a new session; otherwise fail, outcome unknown | no |
//! | `Timeout` (the node's) | same node, after a backoff | yes |
//! | `InvalidArgument` | fail at once | no |
//! | `WrongShard` (the key is not in the shard named: the client's shard count or hash is not the cluster's) | fail at once | no |
//! | `StorageFull` (the node's disk is nearly full; it takes writes again once space is freed) | fail at once | no |
//! | `Compacted` (a watch from a revision the replica no longer keeps) | fail at once | no |
//! | no detail, code `OutOfRange` (a message over a size limit) | fail at once | no |
//! | no detail, code `Unauthenticated` or `PermissionDenied` (a TLS node reached without TLS, or a certificate without the role) | fail at once | no |
//! | connect failed | next member, after a backoff | no |
//! | other transport error, no detail | next member, after a backoff | yes |
//! | the attempt's own timeout | next member, after a backoff | yes |
//!
//! A controller replica (the `Controller` service) refuses with the same details, and also
//! answers two statuses of its own without one ([`classify_controller_status`]):
//!
//! | failure | next | a command may have been applied |
//! |---|---|---|
//! | no detail, code `InvalidArgument` (the request does not decode) | fail at once | no |
//! | no detail, code `NotFound`, to a query for configuration `n` | fail at once ([`Failure::UnknownConfig`]) | no |
//!
//! `OutOfRange` cannot mean an unknown configuration: tonic itself answers it for a message
//! over a size limit, and for a connection that ended in the middle of a message.

use std::error::Error as _;
use std::fmt;

use mosaic_controller::ConfigNum;
use mosaic_engine::{GroupId, ShardId};
use mosaic_proto::pb;
use mosaic_proto::pb::error_detail::Kind;
use mosaic_raft::NodeId;
use prost::Message as _;
use tonic::{Code, Status};

/// A leader a node named, with the address it gave for it (empty when it gave none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader.
    pub node: NodeId,
    /// Its address as the node knows it; empty when unknown.
    pub address: String,
}

impl LeaderHint {
    /// The hint of a wire `leader_node` / `leader_address` pair; none without a leader, or for
    /// node 0 (never a valid node).
    fn from_pb(leader_node: Option<u64>, leader_address: String) -> Option<Self> {
        leader_node
            .filter(|node| *node != 0)
            .map(|node| Self { node: NodeId(node), address: leader_address })
    }
}

/// Why one attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The node does not lead the group; it may name the leader.
    NotLeader {
        /// The leader it named, if any.
        leader: Option<LeaderHint>,
    },
    /// The write entered the log but leadership changed before it was applied.
    OutcomeUnknown {
        /// The leader it named, if any.
        leader: Option<LeaderHint>,
    },
    /// The group does not own the shard in the configuration the node has applied.
    WrongGroup {
        /// The configuration the node has applied.
        config_num: u64,
    },
    /// The node hosts no replica of the group.
    GroupNotHosted {
        /// The group.
        group: GroupId,
    },
    /// The key is not in the shard the request named: this client's shard count (or hash) is
    /// not the cluster's. Nothing was read or written.
    WrongShard {
        /// The shard the request named.
        named: ShardId,
        /// The shard the node computed for the key.
        key_shard: ShardId,
        /// The cluster's shard count, as the node knows it.
        shard_count: u32,
    },
    /// The node's disk is nearly full: it takes no writes until space is freed. Not applied.
    StorageFull {
        /// Bytes free in its data directory.
        available_bytes: u64,
        /// The reserve it keeps free.
        reserve_bytes: u64,
    },
    /// A watch asked for changes the replica no longer keeps.
    Compacted {
        /// The oldest revision a watch can start from there.
        oldest_revision: u64,
    },
    /// The shard's data has not arrived yet.
    ShardNotReady,
    /// The node is overloaded and refused the request without queueing it.
    ServerBusy,
    /// A write that expected its session found none in the shard (evicted): not applied.
    SessionExpired,
    /// The node did not answer in time; a write may be in its log.
    ServerTimeout,
    /// The request is malformed.
    InvalidArgument {
        /// What is wrong with it.
        reason: String,
    },
    /// The controller has no configuration `num` (a query past the latest).
    UnknownConfig {
        /// The configuration asked for.
        num: ConfigNum,
        /// The controller's message.
        message: String,
    },
    /// A message exceeded a gRPC size limit (tonic answers `OutOfRange` without a detail): the
    /// request was never decoded by the node, or the answer was too large for this client.
    MessageTooLarge {
        /// The transport's message.
        message: String,
    },
    /// The node refused who the client is: no TLS to a TLS node (`Unauthenticated`), or a
    /// certificate without the role the request needs (`PermissionDenied`). Not applied.
    AccessDenied {
        /// The node's message, which says what is missing.
        message: String,
    },
    /// No connection to the node could be made: the request was never sent.
    ConnectFailed {
        /// The transport's message.
        message: String,
    },
    /// The node could not be reached or gave no usable answer; the request may have been sent.
    Unreachable {
        /// The transport's message.
        message: String,
    },
    /// The attempt's own timeout passed before any answer.
    AttemptTimedOut,
}

/// What the client does after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Retry at the named leader at once (the client backs off instead if it has just done
    /// so, so that two nodes naming each other cannot make it spin).
    FollowLeader(LeaderHint),
    /// Back off, then retry at the next member of the group.
    NextMember,
    /// Back off, then retry at the same node.
    SameNode,
    /// Back off, ask the routing source for a newer placement, then route again.
    RefreshRouting,
    /// As [`Action::RefreshRouting`], but skip the node that answered.
    RefreshRoutingNextMember,
    /// The write's session is gone: if no earlier attempt may have been applied, send it again
    /// at once to the same node without expecting the session (a new one starts); otherwise
    /// give up with an unknown outcome (the write may have been applied before the session
    /// was evicted, and nothing can tell).
    RenewSession,
    /// Give up: retrying cannot help.
    Fail,
}

impl Failure {
    /// A short name of the kind of failure, without its details (a metric's label value).
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotLeader { .. } => "not_leader",
            Self::OutcomeUnknown { .. } => "outcome_unknown",
            Self::WrongGroup { .. } => "wrong_group",
            Self::GroupNotHosted { .. } => "group_not_hosted",
            Self::WrongShard { .. } => "wrong_shard",
            Self::StorageFull { .. } => "storage_full",
            Self::Compacted { .. } => "compacted",
            Self::ShardNotReady => "shard_not_ready",
            Self::ServerBusy => "server_busy",
            Self::SessionExpired => "session_expired",
            Self::ServerTimeout => "server_timeout",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::UnknownConfig { .. } => "unknown_config",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::AccessDenied { .. } => "access_denied",
            Self::ConnectFailed { .. } => "connect_failed",
            Self::Unreachable { .. } => "unreachable",
            Self::AttemptTimedOut => "attempt_timed_out",
        }
    }

    /// Returns the next step after this failure.
    pub fn action(&self) -> Action {
        match self {
            Self::NotLeader { leader: Some(hint) }
            | Self::OutcomeUnknown { leader: Some(hint) } => Action::FollowLeader(hint.clone()),
            Self::NotLeader { leader: None }
            | Self::OutcomeUnknown { leader: None }
            | Self::ConnectFailed { .. }
            | Self::Unreachable { .. }
            | Self::AttemptTimedOut => Action::NextMember,
            Self::WrongGroup { .. } => Action::RefreshRouting,
            Self::GroupNotHosted { .. } => Action::RefreshRoutingNextMember,
            Self::ShardNotReady | Self::ServerBusy | Self::ServerTimeout => Action::SameNode,
            Self::SessionExpired => Action::RenewSession,
            Self::InvalidArgument { .. }
            | Self::WrongShard { .. }
            | Self::StorageFull { .. }
            | Self::Compacted { .. }
            | Self::AccessDenied { .. }
            | Self::UnknownConfig { .. }
            | Self::MessageTooLarge { .. } => Action::Fail,
        }
    }

    /// Whether a write that failed this way may have been applied.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::OutcomeUnknown { .. }
            | Self::ServerTimeout
            | Self::Unreachable { .. }
            | Self::AttemptTimedOut => true,
            Self::NotLeader { .. }
            | Self::WrongGroup { .. }
            | Self::GroupNotHosted { .. }
            | Self::ShardNotReady
            | Self::ServerBusy
            | Self::SessionExpired
            | Self::InvalidArgument { .. }
            | Self::WrongShard { .. }
            | Self::StorageFull { .. }
            | Self::Compacted { .. }
            | Self::AccessDenied { .. }
            | Self::UnknownConfig { .. }
            | Self::MessageTooLarge { .. }
            | Self::ConnectFailed { .. } => false,
        }
    }

    /// Whether the node that answered this way is still a good first choice for its group
    /// (false when it is unreachable or said it does not lead or host the group).
    pub fn node_may_lead(&self) -> bool {
        matches!(
            self,
            Self::ShardNotReady
                | Self::ServerBusy
                | Self::SessionExpired
                | Self::ServerTimeout
                | Self::WrongGroup { .. }
                | Self::UnknownConfig { .. }
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLeader { leader: Some(hint) } => {
                write!(f, "not the leader; it named node {}", hint.node)
            }
            Self::NotLeader { leader: None } => write!(f, "not the leader; it knows of none"),
            Self::OutcomeUnknown { .. } => {
                write!(f, "leadership changed while the write was in the log; outcome unknown")
            }
            Self::WrongGroup { config_num } => write!(
                f,
                "the group does not own the shard in configuration {config_num} (stale routing)"
            ),
            Self::GroupNotHosted { group } => write!(f, "it hosts no replica of group {group}"),
            Self::WrongShard { named, key_shard, shard_count } => write!(
                f,
                "the key is in shard {key_shard} of the cluster's {shard_count}, not in shard \
                 {named}: this client's shard count is not the cluster's"
            ),
            Self::StorageFull { available_bytes, reserve_bytes } => write!(
                f,
                "its disk is nearly full ({available_bytes} bytes free, below its reserve of \
                 {reserve_bytes}): it takes no writes until space is freed"
            ),
            Self::Compacted { oldest_revision } => write!(
                f,
                "the changes asked for are compacted (the oldest revision it can watch from is \
                 {oldest_revision})"
            ),
            Self::ShardNotReady => write!(f, "the shard's data has not arrived yet"),
            Self::ServerBusy => write!(f, "overloaded"),
            Self::SessionExpired => write!(f, "the client's session in the shard expired"),
            Self::ServerTimeout => write!(f, "it timed out"),
            Self::InvalidArgument { reason } => write!(f, "invalid request: {reason}"),
            Self::UnknownConfig { num, message } => {
                write!(f, "no configuration {num}: {message}")
            }
            Self::MessageTooLarge { message } => write!(f, "a message is too large: {message}"),
            Self::AccessDenied { message } => write!(f, "access denied: {message}"),
            Self::ConnectFailed { message } => write!(f, "cannot connect: {message}"),
            Self::Unreachable { message } => write!(f, "unreachable: {message}"),
            Self::AttemptTimedOut => write!(f, "no answer within the attempt timeout"),
        }
    }
}

/// Returns what a status returned by a `Kv` call means.
pub fn classify_status(status: &Status) -> Failure {
    match detail_kind(status) {
        Some(kind) => classify_detail(kind),
        // No detail (an empty details field decodes as an ErrorDetail without a kind): the
        // answer did not come from a node's refusal.
        None if status.code() == Code::OutOfRange => {
            Failure::MessageTooLarge { message: status.message().to_string() }
        }
        None if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) => {
            Failure::AccessDenied { message: status.message().to_string() }
        }
        None if is_connect_failure(status) => {
            Failure::ConnectFailed { message: describe_transport_status(status) }
        }
        None => Failure::Unreachable { message: describe_transport_status(status) },
    }
}

/// Returns what a status returned by a `Controller` call means: as [`classify_status`], and
/// also the statuses a controller replica answers without a detail (see the module
/// documentation). `queried` is the configuration a `Query` asked for: `None` for an
/// `Execute`, or a query of the latest configuration (which always exists).
pub fn classify_controller_status(status: &Status, queried: Option<ConfigNum>) -> Failure {
    if detail_kind(status).is_some() {
        return classify_status(status);
    }
    match (status.code(), queried) {
        (Code::InvalidArgument, _) => {
            Failure::InvalidArgument { reason: status.message().to_string() }
        }
        (Code::NotFound, Some(num)) => {
            Failure::UnknownConfig { num, message: status.message().to_string() }
        }
        _ => classify_status(status),
    }
}

/// The error detail a status carries, if it carries one this build can decode.
fn detail_kind(status: &Status) -> Option<Kind> {
    // An empty details field decodes as an ErrorDetail without a kind.
    pb::ErrorDetail::decode(status.details()).ok().and_then(|detail| detail.kind)
}

/// What a node's refusal detail means.
pub(crate) fn classify_detail(kind: Kind) -> Failure {
    match kind {
        Kind::NotLeader(pb::NotLeader { leader_node, leader_address }) => {
            Failure::NotLeader { leader: LeaderHint::from_pb(leader_node, leader_address) }
        }
        Kind::OutcomeUnknown(pb::OutcomeUnknown { leader_node, leader_address }) => {
            Failure::OutcomeUnknown { leader: LeaderHint::from_pb(leader_node, leader_address) }
        }
        Kind::WrongGroup(pb::WrongGroup { config_num }) => Failure::WrongGroup { config_num },
        Kind::GroupNotHosted(pb::GroupNotHosted { group_id }) => {
            Failure::GroupNotHosted { group: GroupId(group_id) }
        }
        Kind::WrongShard(pb::WrongShard { named_shard, key_shard, shard_count }) => {
            Failure::WrongShard {
                named: ShardId(named_shard),
                key_shard: ShardId(key_shard),
                shard_count,
            }
        }
        Kind::StorageFull(pb::StorageFull { available_bytes, reserve_bytes }) => {
            Failure::StorageFull { available_bytes, reserve_bytes }
        }
        Kind::Compacted(pb::Compacted { oldest_revision }) => {
            Failure::Compacted { oldest_revision }
        }
        Kind::ShardNotReady(pb::ShardNotReady {}) => Failure::ShardNotReady,
        Kind::ServerBusy(pb::ServerBusy {}) => Failure::ServerBusy,
        Kind::SessionExpired(pb::SessionExpired {}) => Failure::SessionExpired,
        Kind::Timeout(pb::Timeout {}) => Failure::ServerTimeout,
        Kind::InvalidArgument(pb::InvalidArgument { reason }) => {
            Failure::InvalidArgument { reason }
        }
    }
}

/// Whether the status reports that no connection could be made (so nothing was sent). tonic
/// keeps the transport error as the status's source; a failed connect is a
/// [`tonic::ConnectError`] somewhere in that chain.
fn is_connect_failure(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The last error of the chain that starts at `source`, if any: the one that usually says
/// what happened ("Connection refused", "invalid peer certificate: UnknownIssuer").
fn innermost<'a>(
    mut source: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let mut innermost = None;
    while let Some(error) = source {
        innermost = Some(error);
        source = error.source();
    }
    innermost
}

/// The status code and message, and the innermost transport error.
fn describe_transport_status(status: &Status) -> String {
    match innermost(status.source()) {
        Some(error) if !status.message().contains(&error.to_string()) => {
            format!("{:?}: {} ({error})", status.code(), status.message())
        }
        _ => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// A failed connection as a person can act on it: the error and its innermost source (tonic's
/// own message is only "transport error"; the source says "Connection refused", or which
/// certificate the TLS handshake refused).
#[must_use]
pub fn describe_transport_error(error: &(dyn std::error::Error + 'static)) -> String {
    let outer = error.to_string();
    match innermost(error.source()) {
        Some(inner) if !outer.contains(&inner.to_string()) => format!("{outer}: {inner}"),
        _ => outer,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn status_with(code: Code, kind: Kind) -> Status {
        let detail = pb::ErrorDetail { kind: Some(kind) };
        Status::with_details(code, "refused", Bytes::from(detail.encode_to_vec()))
    }

    fn hint(node: u64, address: &str) -> LeaderHint {
        LeaderHint { node: NodeId(node), address: address.to_string() }
    }

    #[test]
    fn not_leader_with_a_hint_follows_the_leader() {
        let status = status_with(
            Code::FailedPrecondition,
            Kind::NotLeader(pb::NotLeader { leader_node: Some(3), leader_address: "h3:7".into() }),
        );
        let failure = classify_status(&status);
        assert_eq!(failure, Failure::NotLeader { leader: Some(hint(3, "h3:7")) });
        assert_eq!(failure.action(), Action::FollowLeader(hint(3, "h3:7")));
        assert!(!failure.may_have_applied());
    }

    #[test]
    fn not_leader_without_a_hint_tries_the_next_member() {
        for leader_node in [None, Some(0)] {
            let status = status_with(
                Code::FailedPrecondition,
                Kind::NotLeader(pb::NotLeader { leader_node, leader_address: String::new() }),
            );
            let failure = classify_status(&status);
            assert_eq!(failure, Failure::NotLeader { leader: None }, "leader_node {leader_node:?}");
            assert_eq!(failure.action(), Action::NextMember);
            assert!(!failure.may_have_applied());
        }
    }

    #[test]
    fn outcome_unknown_retries_at_the_new_leader_and_may_have_applied() {
        let status = status_with(
            Code::Unavailable,
            Kind::OutcomeUnknown(pb::OutcomeUnknown {
                leader_node: Some(2),
                leader_address: "h2:7".into(),
            }),
        );
        let failure = classify_status(&status);
        assert_eq!(failure.action(), Action::FollowLeader(hint(2, "h2:7")));
        assert!(failure.may_have_applied());

        let status = status_with(
            Code::Unavailable,
            Kind::OutcomeUnknown(pb::OutcomeUnknown {
                leader_node: None,
                leader_address: "".into(),
            }),
        );
        let failure = classify_status(&status);
        assert_eq!(failure.action(), Action::NextMember);
        assert!(failure.may_have_applied());
    }

    #[test]
    fn wrong_group_refreshes_the_routing() {
        let status = status_with(
            Code::FailedPrecondition,
            Kind::WrongGroup(pb::WrongGroup { config_num: 4 }),
        );
        let failure = classify_status(&status);
        assert_eq!(failure, Failure::WrongGroup { config_num: 4 });
        assert_eq!(failure.action(), Action::RefreshRouting);
        assert!(!failure.may_have_applied());
    }

    #[test]
    fn group_not_hosted_refreshes_the_routing_and_skips_the_node() {
        let status = status_with(
            Code::FailedPrecondition,
            Kind::GroupNotHosted(pb::GroupNotHosted { group_id: 5 }),
        );
        let failure = classify_status(&status);
        assert_eq!(failure, Failure::GroupNotHosted { group: GroupId(5) });
        assert_eq!(failure.action(), Action::RefreshRoutingNextMember);
        assert!(!failure.may_have_applied());
    }

    #[test]
    fn shard_not_ready_and_server_busy_back_off_at_the_same_node() {
        for (code, kind) in [
            (Code::Unavailable, Kind::ShardNotReady(pb::ShardNotReady {})),
            (Code::ResourceExhausted, Kind::ServerBusy(pb::ServerBusy {})),
        ] {
            let failure = classify_status(&status_with(code, kind.clone()));
            assert_eq!(failure.action(), Action::SameNode, "{kind:?}");
            assert!(!failure.may_have_applied(), "{kind:?}");
        }
    }

    #[test]
    fn a_server_timeout_backs_off_and_may_have_applied() {
        let failure =
            classify_status(&status_with(Code::DeadlineExceeded, Kind::Timeout(pb::Timeout {})));
        assert_eq!(failure, Failure::ServerTimeout);
        assert_eq!(failure.action(), Action::SameNode);
        assert!(failure.may_have_applied());
    }

    #[test]
    fn invalid_argument_fails_at_once() {
        let status = status_with(
            Code::InvalidArgument,
            Kind::InvalidArgument(pb::InvalidArgument { reason: "the key is empty".into() }),
        );
        let failure = classify_status(&status);
        assert_eq!(failure, Failure::InvalidArgument { reason: "the key is empty".into() });
        assert_eq!(failure.action(), Action::Fail);
        assert!(!failure.may_have_applied());
    }

    #[test]
    fn a_refused_identity_fails_at_once_and_applied_nothing() {
        for code in [Code::Unauthenticated, Code::PermissionDenied] {
            let failure = classify_status(&Status::new(code, "requires mutual TLS"));
            assert_eq!(failure, Failure::AccessDenied { message: "requires mutual TLS".into() });
            assert_eq!(failure.action(), Action::Fail);
            assert!(!failure.may_have_applied());
        }
    }

    #[test]
    fn an_expired_session_renews_it_and_applied_nothing() {
        let status =
            status_with(Code::FailedPrecondition, Kind::SessionExpired(pb::SessionExpired {}));
        let failure = classify_status(&status);
        assert_eq!(failure, Failure::SessionExpired);
        assert_eq!(failure.action(), Action::RenewSession);
        assert!(!failure.may_have_applied());
    }

    #[test]
    fn the_detail_decides_not_the_code() {
        // A code that disagrees with the detail: the detail wins.
        let status = status_with(Code::Internal, Kind::ServerBusy(pb::ServerBusy {}));
        assert_eq!(classify_status(&status), Failure::ServerBusy);
    }

    #[test]
    fn a_status_without_a_decodable_detail_is_an_unreachable_node() {
        let garbage = Status::with_details(Code::Unavailable, "x", Bytes::from_static(&[0xff; 7]));
        let empty = Status::unavailable("connection reset");
        let internal = Status::internal("engine failed");
        let no_kind = Status::with_details(
            Code::Unavailable,
            "x",
            Bytes::from(pb::ErrorDetail { kind: None }.encode_to_vec()),
        );
        for status in [garbage, empty, internal, no_kind] {
            let failure = classify_status(&status);
            assert!(matches!(failure, Failure::Unreachable { .. }), "{status:?}: {failure:?}");
            assert_eq!(failure.action(), Action::NextMember);
            assert!(failure.may_have_applied(), "{status:?}");
        }
    }

    #[test]
    fn a_message_over_a_size_limit_fails_at_once_unapplied() {
        let status = Status::out_of_range("Error, decoded message length too large");
        let failure = classify_status(&status);
        assert!(matches!(failure, Failure::MessageTooLarge { .. }), "{failure:?}");
        assert_eq!(failure.action(), Action::Fail);
        assert!(!failure.may_have_applied());
    }

    #[test]
    fn a_controller_refuses_an_undecodable_request_for_good() {
        let status = Status::invalid_argument("ExecuteRequest.client_id is 0");
        for queried in [None, Some(ConfigNum(3))] {
            let failure = classify_controller_status(&status, queried);
            assert_eq!(
                failure,
                Failure::InvalidArgument { reason: "ExecuteRequest.client_id is 0".into() }
            );
            assert_eq!(failure.action(), Action::Fail);
            assert!(!failure.may_have_applied());
        }
    }

    #[test]
    fn not_found_for_a_queried_configuration_is_an_unknown_configuration() {
        let status = Status::not_found("configuration 9 does not exist (latest is 3)");
        let failure = classify_controller_status(&status, Some(ConfigNum(9)));
        assert_eq!(
            failure,
            Failure::UnknownConfig {
                num: ConfigNum(9),
                message: "configuration 9 does not exist (latest is 3)".into()
            }
        );
        assert_eq!(failure.action(), Action::Fail);
        assert!(failure.node_may_lead());
        // Without a configuration asked for, NotFound is no answer about one.
        let failure = classify_controller_status(&status, None);
        assert!(matches!(failure, Failure::Unreachable { .. }), "{failure:?}");
    }

    #[test]
    fn a_controller_detail_is_read_as_a_node_detail() {
        let status = status_with(
            Code::NotFound,
            Kind::NotLeader(pb::NotLeader { leader_node: Some(2), leader_address: "c2:7".into() }),
        );
        assert_eq!(
            classify_controller_status(&status, Some(ConfigNum(1))),
            Failure::NotLeader { leader: Some(hint(2, "c2:7")) }
        );
        // OutOfRange without a detail stays a size limit, even for a query.
        let status = Status::out_of_range("Error, decoded message length too large");
        let failure = classify_controller_status(&status, Some(ConfigNum(1)));
        assert!(matches!(failure, Failure::MessageTooLarge { .. }), "{failure:?}");
    }

    #[test]
    fn an_attempt_timeout_tries_the_next_member_and_may_have_applied() {
        assert_eq!(Failure::AttemptTimedOut.action(), Action::NextMember);
        assert!(Failure::AttemptTimedOut.may_have_applied());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure_that_sent_nothing() {
        let address = crate::testing::closed_port_address().await;
        let channel = crate::channel::endpoint_for(&address).unwrap().connect_lazy();
        let mut client = pb::kv_client::KvClient::new(channel);
        let status = client.get(pb::GetRequest::default()).await.unwrap_err();
        let failure = classify_status(&status);
        assert!(matches!(failure, Failure::ConnectFailed { .. }), "{status:?}: {failure:?}");
        assert_eq!(failure.action(), Action::NextMember);
        assert!(!failure.may_have_applied());
    }
}
