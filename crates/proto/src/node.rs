//! The requests of a storage node's `Kv` and `NodeAdmin` services as its store takes them:
//! each wire request is checked and becomes the parts of one store message, or is refused
//! with [`Error::InvalidArgument`] saying what is wrong, before anything reaches the store.
//!
//! These are the services' whole decisions about a request's content (the server adds only
//! what depends on the running node: its free space, the timeout, the answer's form), kept
//! apart from the server so that the fuzz target `node_requests` (docs/testing.md "Fuzzing")
//! drives a real store with exactly what the services would hand it.

use bytes::Bytes;
use mosaic_engine::{ClientId, GroupId, ShardId};
use mosaic_raft::{ConfChange, LogIndex, NodeId, Term};
use mosaic_raftstore::{Consistency, Error, Handover, LeaderTerm};
use mosaic_shardkv::version::REVISION_CLIENT;
use mosaic_shardkv::watch::{ShardWatch, WatchRange, watch_refusal};
use mosaic_shardkv::{
    BatchCondition, BatchWrite, KvBatch, KvGet, KvWrite, ShardScan, Version, WriteKind,
    batch_size_refusal, scan_refusal,
};

use crate::pb;

/// The most keys a scan's page may hold ([`mosaic_shardkv::SCAN_KEYS_MAX`]), for clients.
pub use mosaic_shardkv::SCAN_KEYS_MAX;

/// The largest key and value a node accepts (its `key-bytes-max` and `value-bytes-max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimits {
    /// Largest key, in bytes.
    pub key_bytes_max: usize,
    /// Largest value, in bytes.
    pub value_bytes_max: usize,
}

/// A write (`Put`, `Append` or `Delete`, as `kind` says) to propose to its group.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty key, a key or value over `limits`, a delete that
/// carries a value, or client id 0 (it holds each shard's revision, `mosaic_shardkv::version`).
pub fn write_from_pb(
    kind: WriteKind,
    request: pb::WriteRequest,
    limits: SizeLimits,
) -> Result<(GroupId, KvWrite), Error> {
    check_key(&request.key, limits)?;
    check_value(kind, &request.value, limits)?;
    check_client(request.client_id)?;
    let write = KvWrite {
        kind,
        client: ClientId(request.client_id),
        seq: request.seq,
        shard: ShardId(request.shard_id),
        key: request.key,
        value: request.value,
        expects_session: request.expects_session,
        condition: request.expected_version.map(Version),
    };
    Ok((GroupId(request.group_id), write))
}

/// An atomic batch to propose to its group.
///
/// # Errors
/// [`Error::InvalidArgument`] for a batch of a size [`batch_size_refusal`] refuses, a write
/// of no known op, any key or value that
/// [`write_from_pb`] would refuse, or client id 0. (That every key is in the shard is the
/// group's check, which knows the shard count.)
pub fn batch_from_pb(
    request: pb::BatchRequest,
    limits: SizeLimits,
) -> Result<(GroupId, KvBatch), Error> {
    if let Some(reason) = batch_size_refusal(request.conditions.len(), request.writes.len()) {
        return Err(invalid(reason));
    }
    check_client(request.client_id)?;
    let mut conditions = Vec::with_capacity(request.conditions.len());
    for condition in request.conditions {
        check_key(&condition.key, limits)?;
        conditions.push(BatchCondition { key: condition.key, version: Version(condition.version) });
    }
    let mut writes = Vec::with_capacity(request.writes.len());
    for write in request.writes {
        let kind = match pb::BatchOp::try_from(write.op) {
            Ok(pb::BatchOp::Put) => WriteKind::Put,
            Ok(pb::BatchOp::Append) => WriteKind::Append,
            Ok(pb::BatchOp::Delete) => WriteKind::Delete,
            Ok(pb::BatchOp::Unspecified) | Err(_) => {
                return Err(invalid(format!("unknown batch op {}", write.op)));
            }
        };
        check_key(&write.key, limits)?;
        check_value(kind, &write.value, limits)?;
        writes.push(BatchWrite { kind, key: write.key, value: write.value });
    }
    let batch = KvBatch {
        client: ClientId(request.client_id),
        seq: request.seq,
        shard: ShardId(request.shard_id),
        expects_session: request.expects_session,
        conditions,
        writes,
    };
    Ok((GroupId(request.group_id), batch))
}

/// A get, and how fresh its answer must be.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty key, a key over `limits`, or a consistency level
/// this build does not know.
pub fn get_from_pb(
    request: pb::GetRequest,
    limits: SizeLimits,
) -> Result<(GroupId, KvGet, Consistency), Error> {
    check_key(&request.key, limits)?;
    let consistency = consistency_from_pb(request.consistency)?;
    let get = KvGet { shard: ShardId(request.shard_id), key: request.key };
    Ok((GroupId(request.group_id), get, consistency))
}

fn consistency_from_pb(consistency: i32) -> Result<Consistency, Error> {
    match pb::Consistency::try_from(consistency) {
        Ok(pb::Consistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(pb::Consistency::Lease) => Ok(Consistency::Lease),
        Ok(pb::Consistency::Stale) => Ok(Consistency::Stale),
        Err(_) => Err(invalid(format!("unknown consistency level {consistency}"))),
    }
}

/// A scan of one shard, and how fresh its page must be. The byte limit is lowered to the
/// node's `key-bytes-max` plus `value-bytes-max`, so a page always fits in a message.
///
/// # Errors
/// [`Error::InvalidArgument`] for a start or end key over `key-bytes-max` + 1, a consistency
/// level this build does not know, or a scan [`scan_refusal`] refuses.
pub fn scan_from_pb(
    request: pb::ScanRequest,
    limits: SizeLimits,
) -> Result<(GroupId, ShardScan, Consistency), Error> {
    check_range_keys("a scan", &request.start, request.end.as_ref(), limits)?;
    let consistency = consistency_from_pb(request.consistency)?;
    let bytes_max = (limits.key_bytes_max + limits.value_bytes_max) as u64;
    let scan = ShardScan {
        shard: ShardId(request.shard_id),
        shard_count: request.shard_count,
        start: request.start,
        end: request.end,
        limit: request.limit,
        limit_bytes: request.limit_bytes.min(bytes_max),
        keys_only: request.keys_only,
    };
    if let Some(reason) = scan_refusal(&scan) {
        return Err(invalid(reason));
    }
    Ok((GroupId(request.group_id), scan, consistency))
}

/// Checks the start and end keys of `what`'s range: at most `key-bytes-max` + 1 bytes each
/// (the key just after a key of the longest length is one byte longer: where the next page
/// of a scan starts).
fn check_range_keys(
    what: &str,
    start: &Bytes,
    end: Option<&Bytes>,
    limits: SizeLimits,
) -> Result<(), Error> {
    for key in std::iter::once(start).chain(end) {
        if key.len() > limits.key_bytes_max + 1 {
            return Err(invalid(format!(
                "{what}'s start or end is {} bytes; at most {} are accepted (key-bytes-max + 1)",
                key.len(),
                limits.key_bytes_max + 1
            )));
        }
    }
    Ok(())
}

/// The group, watch and consistency level of a `Kv.Watch` request.
///
/// # Errors
/// [`Error::InvalidArgument`] for a start or end key over `key-bytes-max` + 1, a consistency
/// level this build does not know, or a watch [`watch_refusal`] refuses.
pub fn watch_from_pb(
    request: pb::WatchRequest,
    limits: SizeLimits,
) -> Result<(GroupId, ShardWatch, Consistency), Error> {
    check_range_keys("a watch", &request.start, request.end.as_ref(), limits)?;
    let consistency = consistency_from_pb(request.consistency)?;
    let watch = ShardWatch {
        shard: ShardId(request.shard_id),
        shard_count: request.shard_count,
        from: request.from_revision,
        range: WatchRange { start: request.start, end: request.end },
    };
    if let Some(reason) = watch_refusal(&watch) {
        return Err(invalid(reason));
    }
    Ok((GroupId(request.group_id), watch, consistency))
}

/// The group to create on this node, and its initial voters.
///
/// # Errors
/// [`Error::InvalidArgument`] for group id 0.
pub fn create_group_from_pb(
    request: pb::CreateGroupRequest,
) -> Result<(GroupId, Vec<NodeId>), Error> {
    let group = group_from_pb(request.group_id)?;
    Ok((group, request.members.into_iter().map(NodeId).collect()))
}

/// The group to join on this node, and the leader's term to start in, if given.
///
/// # Errors
/// [`Error::InvalidArgument`] for group id 0, a leader without a term (or the reverse), or
/// leader 0.
pub fn join_group_from_pb(
    request: pb::JoinGroupRequest,
) -> Result<(GroupId, Option<LeaderTerm>), Error> {
    let group = group_from_pb(request.group_id)?;
    let leader = match (request.leader, request.term) {
        (None, None) => None,
        (Some(leader), Some(term)) if leader != 0 => {
            Some(LeaderTerm { leader: NodeId(leader), term: Term(term) })
        }
        _ => {
            return Err(invalid("leader and term go together, and leader 0 is not valid".into()));
        }
    };
    Ok((group, leader))
}

/// A change of a group's membership by one node, and the applied index the plan was made
/// at, if given.
///
/// # Errors
/// [`Error::InvalidArgument`] for node id 0 or a change this build does not know.
pub fn change_membership_from_pb(
    request: pb::ChangeMembershipRequest,
) -> Result<(GroupId, ConfChange, Option<LogIndex>), Error> {
    if request.node_id == 0 {
        return Err(invalid("node id 0 is not valid".into()));
    }
    let node = NodeId(request.node_id);
    let change = match pb::MembershipChange::try_from(request.change) {
        Ok(pb::MembershipChange::AddLearner) => ConfChange::AddLearner(node),
        Ok(pb::MembershipChange::AddVoter) => ConfChange::AddVoter(node),
        Ok(pb::MembershipChange::Remove) => ConfChange::RemoveNode(node),
        Ok(pb::MembershipChange::Unspecified) | Err(_) => {
            return Err(invalid(format!(
                "membership change {} is not one of add-learner, add-voter, remove",
                request.change
            )));
        }
    };
    Ok((GroupId(request.group_id), change, request.unchanged_since.map(LogIndex)))
}

/// The group and target of a `TransferLeader` request (`None`: the preferred voter).
///
/// # Errors
/// [`Error::InvalidArgument`] for target node 0.
pub fn transfer_leader_from_pb(
    request: &pb::TransferLeaderRequest,
) -> Result<(GroupId, Option<NodeId>), Error> {
    if request.to == Some(0) {
        return Err(invalid("node id 0 is not valid".into()));
    }
    Ok((GroupId(request.group_id), request.to.map(NodeId)))
}

/// The answer to a `TransferLeader` request.
#[must_use]
pub fn handover_to_pb(handover: Handover) -> pb::TransferLeaderResponse {
    let (to, outcome, reason) = match handover {
        Handover::Asked { to } => (to, pb::TransferOutcome::Asked, String::new()),
        Handover::AlreadyLeads { to } => (to, pb::TransferOutcome::AlreadyLeads, String::new()),
        Handover::NotReady { to, reason } => (to, pb::TransferOutcome::NotReady, reason),
    };
    pb::TransferLeaderResponse { to: to.0, outcome: outcome.into(), reason }
}

/// What a leader answered to a `TransferLeader` request.
///
/// # Errors
/// An outcome this build does not know, or voter 0, in words.
pub fn handover_from_pb(response: pb::TransferLeaderResponse) -> Result<Handover, String> {
    if response.to == 0 {
        return Err("the answer names node 0".into());
    }
    let to = NodeId(response.to);
    match pb::TransferOutcome::try_from(response.outcome) {
        Ok(pb::TransferOutcome::Asked) => Ok(Handover::Asked { to }),
        Ok(pb::TransferOutcome::AlreadyLeads) => Ok(Handover::AlreadyLeads { to }),
        Ok(pb::TransferOutcome::NotReady) => Ok(Handover::NotReady { to, reason: response.reason }),
        Ok(pb::TransferOutcome::Unspecified) | Err(_) => {
            Err(format!("transfer outcome {} is not one this build knows", response.outcome))
        }
    }
}

fn check_key(key: &[u8], limits: SizeLimits) -> Result<(), Error> {
    if key.is_empty() {
        return Err(invalid("the key is empty".into()));
    }
    if key.len() > limits.key_bytes_max {
        return Err(invalid(format!(
            "the key is {} bytes; at most {} are accepted (key-bytes-max)",
            key.len(),
            limits.key_bytes_max
        )));
    }
    Ok(())
}

fn check_value(kind: WriteKind, value: &[u8], limits: SizeLimits) -> Result<(), Error> {
    if value.len() > limits.value_bytes_max {
        return Err(invalid(format!(
            "the value is {} bytes; at most {} are accepted (value-bytes-max)",
            value.len(),
            limits.value_bytes_max
        )));
    }
    if kind == WriteKind::Delete && !value.is_empty() {
        return Err(invalid("a delete carries no value".into()));
    }
    Ok(())
}

fn check_client(client: u64) -> Result<(), Error> {
    if ClientId(client) == REVISION_CLIENT {
        return Err(invalid("client id 0 is reserved".into()));
    }
    Ok(())
}

fn group_from_pb(id: u64) -> Result<GroupId, Error> {
    if id == 0 {
        return Err(invalid("group id 0 is not valid".into()));
    }
    Ok(GroupId(id))
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument { reason }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const LIMITS: SizeLimits = SizeLimits { key_bytes_max: 4, value_bytes_max: 8 };

    fn write(key: &'static [u8], value: &'static [u8]) -> pb::WriteRequest {
        pb::WriteRequest {
            group_id: 3,
            shard_id: 2,
            client_id: 9,
            seq: 5,
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
            expects_session: true,
            expected_version: Some(4),
            ..pb::WriteRequest::default()
        }
    }

    fn reason(error: Error) -> String {
        match error {
            Error::InvalidArgument { reason } => reason,
            other => panic!("not an invalid argument: {other}"),
        }
    }

    #[test]
    fn a_transfer_request_and_every_answer_round_trip() {
        let request = pb::TransferLeaderRequest { group_id: 4, to: Some(2) };
        assert_eq!(transfer_leader_from_pb(&request), Ok((GroupId(4), Some(NodeId(2)))));
        let preferred = pb::TransferLeaderRequest { group_id: 4, to: None };
        assert_eq!(transfer_leader_from_pb(&preferred), Ok((GroupId(4), None)));
        let zero = pb::TransferLeaderRequest { group_id: 4, to: Some(0) };
        assert!(reason(transfer_leader_from_pb(&zero).unwrap_err()).contains("node id 0"));
        for handover in [
            Handover::Asked { to: NodeId(2) },
            Handover::AlreadyLeads { to: NodeId(1) },
            Handover::NotReady { to: NodeId(3), reason: "its log is 900 entries behind".into() },
        ] {
            assert_eq!(handover_from_pb(handover_to_pb(handover.clone())), Ok(handover));
        }
        let unknown = pb::TransferLeaderResponse { to: 2, outcome: 9, reason: String::new() };
        assert!(handover_from_pb(unknown).unwrap_err().contains("outcome 9"));
        let nobody = pb::TransferLeaderResponse { to: 0, outcome: 1, reason: String::new() };
        assert!(handover_from_pb(nobody).is_err());
    }

    #[test]
    fn a_write_within_the_limits_becomes_its_group_and_command() {
        let (group, write) = write_from_pb(WriteKind::Append, write(b"abcd", b"12345678"), LIMITS)
            .expect("within the limits");
        assert_eq!(group, GroupId(3));
        let expected = KvWrite {
            kind: WriteKind::Append,
            client: ClientId(9),
            seq: 5,
            shard: ShardId(2),
            key: Bytes::from_static(b"abcd"),
            value: Bytes::from_static(b"12345678"),
            expects_session: true,
            condition: Some(Version(4)),
        };
        assert_eq!(write, expected);
    }

    #[test]
    fn a_write_past_a_limit_or_malformed_is_refused_with_the_reason() {
        let refused = |kind, request| reason(write_from_pb(kind, request, LIMITS).unwrap_err());
        assert_eq!(refused(WriteKind::Put, write(b"", b"v")), "the key is empty");
        assert_eq!(
            refused(WriteKind::Put, write(b"abcde", b"v")),
            "the key is 5 bytes; at most 4 are accepted (key-bytes-max)"
        );
        assert_eq!(
            refused(WriteKind::Put, write(b"k", b"123456789")),
            "the value is 9 bytes; at most 8 are accepted (value-bytes-max)"
        );
        assert_eq!(refused(WriteKind::Delete, write(b"k", b"v")), "a delete carries no value");
        let client_zero = pb::WriteRequest { client_id: 0, ..write(b"k", b"v") };
        assert_eq!(refused(WriteKind::Put, client_zero), "client id 0 is reserved");
        assert!(write_from_pb(WriteKind::Delete, write(b"k", b""), LIMITS).is_ok());
    }

    #[test]
    fn a_get_names_a_known_consistency_level() {
        let get = |consistency| pb::GetRequest {
            group_id: 1,
            shard_id: 0,
            key: Bytes::from_static(b"k"),
            consistency,
            ..pb::GetRequest::default()
        };
        let (_, _, level) = get_from_pb(get(pb::Consistency::Lease as i32), LIMITS).unwrap();
        assert_eq!(level, Consistency::Lease);
        assert_eq!(
            reason(get_from_pb(get(42), LIMITS).unwrap_err()),
            "unknown consistency level 42"
        );
    }

    #[test]
    fn a_scan_is_bounded_by_the_nodes_sizes_and_malformed_ones_are_refused() {
        let scan = |start: &'static [u8], end: Option<&'static [u8]>, limit, limit_bytes| {
            pb::ScanRequest {
                group_id: 3,
                shard_id: 2,
                start: Bytes::from_static(start),
                end: end.map(Bytes::from_static),
                limit,
                limit_bytes,
                keys_only: true,
                consistency: pb::Consistency::Stale as i32,
                shard_count: 8,
                ..pb::ScanRequest::default()
            }
        };
        let (group, shard_scan, level) =
            scan_from_pb(scan(b"", None, 10, 1 << 30), LIMITS).unwrap();
        assert_eq!((group, level), (GroupId(3), Consistency::Stale));
        let expected = ShardScan {
            shard: ShardId(2),
            shard_count: 8,
            start: Bytes::new(),
            end: None,
            limit: 10,
            limit_bytes: 12,
            keys_only: true,
        };
        assert_eq!(shard_scan, expected, "the byte limit lowered to one key and value's");
        let refused = |request| reason(scan_from_pb(request, LIMITS).unwrap_err());
        // A start one byte past the longest key is where a page after such a key starts.
        assert!(scan_from_pb(scan(b"abcd\0", None, 1, 1), LIMITS).is_ok());
        assert_eq!(
            refused(scan(b"abcdef", None, 1, 1)),
            "a scan's start or end is 6 bytes; at most 5 are accepted (key-bytes-max + 1)"
        );
        assert!(refused(scan(b"a", Some(b"abcdef"), 1, 1)).contains("key-bytes-max + 1"));
        let no_count = pb::ScanRequest { shard_count: 0, ..scan(b"a", None, 1, 1) };
        assert_eq!(refused(no_count), "a scan names the shard count it routes by");
        assert!(refused(scan(b"b", Some(b"a"), 1, 1)).contains("must end after it starts"));
        assert!(refused(scan(b"a", None, 0, 1)).contains("1 to 10000 keys"));
        assert!(refused(scan(b"a", None, 1, 0)).contains("byte limit"));
        let unknown = pb::ScanRequest { consistency: 42, ..scan(b"a", None, 1, 1) };
        assert_eq!(refused(unknown), "unknown consistency level 42");
    }

    #[test]
    fn a_watch_is_bounded_by_the_nodes_key_size_and_malformed_ones_are_refused() {
        let watch = |start: &'static [u8], end: Option<&'static [u8]>, from| pb::WatchRequest {
            group_id: 3,
            shard_id: 2,
            start: Bytes::from_static(start),
            end: end.map(Bytes::from_static),
            from_revision: from,
            consistency: pb::Consistency::Lease as i32,
            shard_count: 8,
            ..pb::WatchRequest::default()
        };
        let (group, shard_watch, level) =
            watch_from_pb(watch(b"a", Some(b"b"), Some(7)), LIMITS).unwrap();
        assert_eq!((group, level), (GroupId(3), Consistency::Lease));
        let range =
            WatchRange { start: Bytes::from_static(b"a"), end: Some(Bytes::from_static(b"b")) };
        let expected = ShardWatch { shard: ShardId(2), shard_count: 8, from: Some(7), range };
        assert_eq!(shard_watch, expected);
        assert_eq!(watch_from_pb(watch(b"", None, None), LIMITS).unwrap().1.from, None);
        let refused = |request| reason(watch_from_pb(request, LIMITS).unwrap_err());
        assert!(watch_from_pb(watch(b"abcd\0", None, None), LIMITS).is_ok());
        assert!(refused(watch(b"abcdef", None, None)).contains("key-bytes-max + 1"));
        assert!(refused(watch(b"b", Some(b"a"), None)).contains("must end after it starts"));
        assert!(refused(watch(b"a", None, Some(0))).contains("revisions start at 1"));
        let no_count = pb::WatchRequest { shard_count: 0, ..watch(b"a", None, None) };
        assert_eq!(refused(no_count), "a watch names the shard count it routes by");
        let past = pb::WatchRequest { shard_id: 8, ..watch(b"a", None, None) };
        assert_eq!(refused(past), "shard 8 is not one of the 8 shards the watch routes by");
        let unknown = pb::WatchRequest { consistency: 42, ..watch(b"a", None, None) };
        assert_eq!(refused(unknown), "unknown consistency level 42");
    }

    #[test]
    fn admin_requests_refuse_zero_ids_and_unknown_changes() {
        let create = pb::CreateGroupRequest { group_id: 0, members: vec![1] };
        assert_eq!(reason(create_group_from_pb(create).unwrap_err()), "group id 0 is not valid");
        let join = |leader, term| pb::JoinGroupRequest { group_id: 2, leader, term };
        assert_eq!(join_group_from_pb(join(None, None)).unwrap(), (GroupId(2), None));
        let leader = LeaderTerm { leader: NodeId(1), term: Term(4) };
        assert_eq!(join_group_from_pb(join(Some(1), Some(4))).unwrap(), (GroupId(2), Some(leader)));
        for (leader, term) in [(Some(1), None), (None, Some(4)), (Some(0), Some(4))] {
            assert!(join_group_from_pb(join(leader, term)).is_err());
        }
        let change = |node_id, change| pb::ChangeMembershipRequest {
            group_id: 2,
            node_id,
            change,
            unchanged_since: Some(7),
        };
        let add = pb::MembershipChange::AddVoter as i32;
        assert_eq!(
            change_membership_from_pb(change(3, add)).unwrap(),
            (GroupId(2), ConfChange::AddVoter(NodeId(3)), Some(LogIndex(7)))
        );
        assert_eq!(
            reason(change_membership_from_pb(change(0, add)).unwrap_err()),
            "node id 0 is not valid"
        );
        assert!(change_membership_from_pb(change(3, 0)).is_err());
        assert!(change_membership_from_pb(change(3, 99)).is_err());
    }
}
