//! One client operation and the wire requests its attempts send.
//!
//! Invariant: the [`Session`] of a write is fixed when the operation is prepared
//! ([`Prepared::new`]) and every attempt's request carries it unchanged, wherever the attempt is
//! routed; so a write retried after an unknown outcome is applied at most once.

use bytes::Bytes;
use mosaic_engine::{GroupId, ShardId};
use mosaic_proto::pb;
use mosaic_types::shard_for_key;

use crate::client::Consistency;
use crate::session::Session;

/// What a caller asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Read a key.
    Get { key: Bytes, consistency: Consistency },
    /// Set a key.
    Put { key: Bytes, value: Bytes, condition: Option<u64> },
    /// Append to a key's value.
    Append { key: Bytes, value: Bytes, condition: Option<u64> },
    /// Remove a key.
    Delete { key: Bytes, condition: Option<u64> },
    /// An atomic batch on keys of one shard (at least one write).
    Batch { conditions: Vec<pb::BatchCondition>, writes: Vec<pb::BatchWrite> },
    /// A page of one shard's keys in a range.
    Scan(ShardScan),
}

/// A page of one shard's keys, as [`pb::ScanRequest`] asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShardScan {
    pub(crate) shard: ShardId,
    pub(crate) shard_count: u32,
    pub(crate) start: Bytes,
    pub(crate) end: Option<Bytes>,
    pub(crate) limit: u32,
    pub(crate) limit_bytes: u64,
    pub(crate) keys_only: bool,
    pub(crate) consistency: Consistency,
}

impl Operation {
    /// The shard the operation routes to, of `shard_count`: its key's (a batch's first
    /// write's), or the one a scan names.
    pub(crate) fn shard(&self, shard_count: u32) -> ShardId {
        let key = match self {
            Self::Get { key, .. }
            | Self::Put { key, .. }
            | Self::Append { key, .. }
            | Self::Delete { key, .. } => key,
            Self::Batch { writes, .. } => &writes.first().expect("a batch has a write").key,
            Self::Scan(scan) => return scan.shard,
        };
        shard_for_key(key, shard_count)
    }

    /// Whether the operation changes data (and so needs a session).
    pub(crate) fn is_write(&self) -> bool {
        !matches!(self, Self::Get { .. } | Self::Scan(_))
    }

    /// Whether the operation is a write that names the version its key must have.
    pub(crate) fn is_conditional(&self) -> bool {
        match self {
            Self::Get { .. } | Self::Scan(_) => false,
            Self::Put { condition, .. }
            | Self::Append { condition, .. }
            | Self::Delete { condition, .. } => condition.is_some(),
            Self::Batch { conditions, .. } => !conditions.is_empty(),
        }
    }

    /// Whether any replica of the group serves the operation: true for stale reads alone.
    pub(crate) fn any_replica_serves(&self) -> bool {
        matches!(
            self,
            Self::Get { consistency: Consistency::Stale, .. }
                | Self::Scan(ShardScan { consistency: Consistency::Stale, .. })
        )
    }

    /// Whether a success proves that the node that served it leads its group: true for writes
    /// and for linearizable and lease reads, false for stale reads (any replica serves those).
    pub(crate) fn success_proves_leader(&self) -> bool {
        !self.any_replica_serves()
    }

    /// The operation's name, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::Put { .. } => "put",
            Self::Append { .. } => "append",
            Self::Delete { .. } => "delete",
            Self::Batch { .. } => "batch",
            Self::Scan(_) => "scan",
        }
    }
}

/// Where one attempt is routed: the request names them so that a node can tell a stale route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) group: GroupId,
    pub(crate) shard: ShardId,
    pub(crate) config_num: u64,
}

/// One attempt's request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum WireRequest {
    Get(pb::GetRequest),
    Put(pb::WriteRequest),
    Append(pb::WriteRequest),
    Delete(pb::WriteRequest),
    Batch(pb::BatchRequest),
    Scan(pb::ScanRequest),
}

/// An operation with the session all its attempts carry.
#[derive(Debug)]
pub(crate) struct Prepared {
    operation: Operation,
    /// `Some` exactly for writes.
    session: Option<Session>,
}

impl Prepared {
    /// Prepares `operation`; `session` is required for a write and ignored for a read.
    ///
    /// # Panics
    /// If `operation` is a write and `session` is `None`.
    pub(crate) fn new(operation: Operation, session: Option<Session>) -> Self {
        let session = if operation.is_write() { session } else { None };
        assert!(
            session.is_some() || !operation.is_write(),
            "a {} needs a session",
            operation.name()
        );
        Self { operation, session }
    }

    /// The operation.
    pub(crate) fn operation(&self) -> &Operation {
        &self.operation
    }

    /// The request of an attempt routed by `route`; a write says whether its client expects
    /// its session in the shard to exist ([`crate::session`]). Payloads are shared, not
    /// copied.
    pub(crate) fn request(&self, route: Route, expects_session: bool) -> WireRequest {
        let Route { group, shard, config_num } = route;
        let (group_id, shard_id) = (group.0, shard.0);
        let (client_id, seq) = self.session.map_or((0, 0), |s| (s.client_id.0, s.seq));
        let write = |key: &Bytes, value: &Bytes, condition: &Option<u64>| pb::WriteRequest {
            group_id,
            shard_id,
            config_num,
            key: key.clone(),
            value: value.clone(),
            client_id,
            seq,
            expects_session,
            expected_version: *condition,
        };
        match &self.operation {
            Operation::Get { key, consistency } => WireRequest::Get(pb::GetRequest {
                group_id,
                shard_id,
                config_num,
                key: key.clone(),
                consistency: pb::Consistency::from(*consistency).into(),
            }),
            Operation::Put { key, value, condition } => {
                WireRequest::Put(write(key, value, condition))
            }
            Operation::Append { key, value, condition } => {
                WireRequest::Append(write(key, value, condition))
            }
            Operation::Delete { key, condition } => {
                WireRequest::Delete(write(key, &Bytes::new(), condition))
            }
            Operation::Batch { conditions, writes } => WireRequest::Batch(pb::BatchRequest {
                group_id,
                shard_id,
                config_num,
                client_id,
                seq,
                expects_session,
                conditions: conditions.clone(),
                writes: writes.clone(),
            }),
            Operation::Scan(scan) => WireRequest::Scan(pb::ScanRequest {
                group_id,
                shard_id,
                config_num,
                start: scan.start.clone(),
                end: scan.end.clone(),
                limit: scan.limit,
                limit_bytes: scan.limit_bytes,
                keys_only: scan.keys_only,
                consistency: pb::Consistency::from(scan.consistency).into(),
                shard_count: scan.shard_count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use mosaic_engine::ClientId;

    use super::*;
    use crate::session::SessionPool;

    fn route(group: u64, config_num: u64) -> Route {
        Route { group: GroupId(group), shard: ShardId(3), config_num }
    }

    fn session_of(request: &WireRequest) -> (u64, u64) {
        match request {
            WireRequest::Put(r) | WireRequest::Append(r) | WireRequest::Delete(r) => {
                (r.client_id, r.seq)
            }
            WireRequest::Batch(r) => (r.client_id, r.seq),
            WireRequest::Get(_) | WireRequest::Scan(_) => panic!("a read carries no session"),
        }
    }

    #[test]
    fn every_attempt_of_a_write_carries_the_same_session() {
        let pool = SessionPool::default();
        let mut lease = pool.checkout().unwrap();
        let put =
            Operation::Put { key: Bytes::from("k"), value: Bytes::from("v"), condition: Some(3) };
        let prepared = Prepared::new(put, Some(lease.next_session()));
        // A retry may go to another group under a newer configuration; the session stays.
        let first = prepared.request(route(1, 1), false);
        let retry = prepared.request(route(2, 5), true);
        assert_eq!(session_of(&first), session_of(&retry));
        let WireRequest::Put(retry) = retry else { panic!("a put sends a WriteRequest") };
        assert_eq!((retry.group_id, retry.shard_id, retry.config_num), (2, 3, 5));
        assert_eq!(retry.expected_version, Some(3), "and so does the condition");
    }

    #[test]
    fn the_next_write_on_a_lane_carries_the_next_seq() {
        let pool = SessionPool::default();
        let mut sessions = Vec::new();
        for operation in [
            Operation::Put { key: Bytes::from("k"), value: Bytes::from("1"), condition: None },
            Operation::Append { key: Bytes::from("k"), value: Bytes::from("2"), condition: None },
            Operation::Delete { key: Bytes::from("k"), condition: Some(0) },
        ] {
            let mut lease = pool.checkout().unwrap();
            let prepared = Prepared::new(operation, Some(lease.next_session()));
            sessions.push(session_of(&prepared.request(route(1, 1), false)));
        }
        let client_id = sessions[0].0;
        assert_ne!(client_id, 0);
        assert_eq!(sessions, vec![(client_id, 1), (client_id, 2), (client_id, 3)]);
    }

    #[test]
    fn a_read_carries_its_consistency_and_no_session() {
        let get = Operation::Get { key: Bytes::from("k"), consistency: Consistency::Lease };
        let session = Session { client_id: ClientId(9), seq: 4 };
        let prepared = Prepared::new(get, Some(session));
        let WireRequest::Get(request) = prepared.request(route(1, 2), false) else {
            panic!("a get sends a GetRequest")
        };
        assert_eq!(request.consistency, i32::from(pb::Consistency::Lease));
        assert_eq!(request.key, Bytes::from("k"));
    }

    #[test]
    #[should_panic(expected = "a put needs a session")]
    fn a_write_without_a_session_is_refused() {
        let put = Operation::Put { key: Bytes::new(), value: Bytes::new(), condition: None };
        let _ = Prepared::new(put, None);
    }

    #[test]
    fn only_stale_reads_do_not_prove_leadership() {
        let get = |consistency| Operation::Get { key: Bytes::new(), consistency };
        assert!(get(Consistency::Linearizable).success_proves_leader());
        assert!(get(Consistency::Lease).success_proves_leader());
        assert!(!get(Consistency::Stale).success_proves_leader());
        assert!(Operation::Delete { key: Bytes::new(), condition: None }.success_proves_leader());
    }
}
