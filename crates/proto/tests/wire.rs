//! Properties of the generated KV messages that clients and servers rely on: defaults, field
//! presence, and error details carried through a `tonic::Status`.

use bytes::Bytes;
use mosaic_proto::pb::error_detail::Kind;
use mosaic_proto::{message_from_pb, message_to_pb, pb};
use mosaic_raft::{
    ConfState, LogIndex, Message, MessageBody, NodeId, Snapshot, SnapshotMetadata, Term,
};
use prost::Message as _;

fn round_trip<M: prost::Message + Default>(message: &M) -> M {
    M::decode(Bytes::from(message.encode_to_vec())).expect("what was encoded decodes")
}

#[test]
fn a_get_without_consistency_is_linearizable() {
    let request = pb::GetRequest {
        group_id: 3,
        shard_id: 7,
        config_num: 12,
        key: Bytes::from_static(b"k"),
        ..Default::default()
    };
    assert_eq!(request.consistency(), pb::Consistency::Linearizable);
    assert_eq!(round_trip(&request), request);
}

#[test]
fn kv_requests_round_trip_with_their_routing_fields() {
    let get = pb::GetRequest {
        group_id: 3,
        shard_id: u32::MAX,
        config_num: 12,
        key: Bytes::from_static(b"key"),
        consistency: pb::Consistency::Stale.into(),
    };
    assert_eq!(round_trip(&get), get);
    let write = pb::WriteRequest {
        group_id: 3,
        shard_id: 1,
        config_num: 12,
        key: Bytes::from_static(b"key"),
        value: Bytes::from_static(b"value"),
        client_id: 99,
        seq: 5,
        expects_session: true,
        expected_version: Some(0),
    };
    assert_eq!(round_trip(&write), write);
}

#[test]
fn not_leader_keeps_no_leader_and_leader_zero_apart() {
    let unknown = pb::NotLeader { leader_node: None, leader_address: String::new() };
    let zero = pb::NotLeader { leader_node: Some(0), leader_address: String::new() };
    assert_eq!(round_trip(&unknown).leader_node, None);
    assert_eq!(round_trip(&zero).leader_node, Some(0));
    assert_ne!(unknown.encode_to_vec(), zero.encode_to_vec());
}

#[test]
fn error_detail_travels_in_status_details() {
    let detail = pb::ErrorDetail {
        kind: Some(Kind::NotLeader(pb::NotLeader {
            leader_node: Some(2),
            leader_address: "10.0.0.2:7100".to_owned(),
        })),
    };
    let status = tonic::Status::with_details(
        tonic::Code::Unavailable,
        "not leader",
        Bytes::from(detail.encode_to_vec()),
    );
    let decoded = pb::ErrorDetail::decode(status.details()).expect("details decode");
    assert_eq!(decoded, detail);
}

#[test]
fn every_error_detail_kind_round_trips() {
    let kinds = [
        Kind::NotLeader(pb::NotLeader { leader_node: None, leader_address: String::new() }),
        Kind::WrongGroup(pb::WrongGroup { config_num: 0 }),
        Kind::WrongGroup(pb::WrongGroup { config_num: 41 }),
        Kind::ShardNotReady(pb::ShardNotReady {}),
        Kind::ServerBusy(pb::ServerBusy {}),
        Kind::InvalidArgument(pb::InvalidArgument { reason: "empty key".to_owned() }),
        Kind::Timeout(pb::Timeout {}),
    ];
    for kind in kinds {
        let detail = pb::ErrorDetail { kind: Some(kind) };
        assert_eq!(round_trip(&detail), detail);
    }
}

#[test]
fn stale_get_response_reports_the_applied_index() {
    let response =
        pb::GetResponse { found: false, value: Bytes::new(), applied_index: 1 << 40, version: 0 };
    assert_eq!(round_trip(&response), response);
}

#[test]
fn snapshot_header_carries_the_install_snapshot_message() {
    let install = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(4),
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                metadata: SnapshotMetadata {
                    index: LogIndex(80),
                    term: Term(4),
                    conf_state: ConfState::with_voters([1, 2, 3]),
                },
                data: Bytes::from_static(b"descriptor"),
            },
        },
    };
    let first = pb::SnapshotChunk {
        header: Some(pb::SnapshotHeader {
            cluster_id: 1,
            group_id: 9,
            from_node: 1,
            to_node: 2,
            message: Some(message_to_pb(&install)),
        }),
        data: Bytes::from_static(b"part 1"),
        last: false,
    };
    let last = pb::SnapshotChunk { header: None, data: Bytes::from_static(b"part 2"), last: true };
    let header = round_trip(&first).header.expect("the first chunk has a header");
    let message = header.message.expect("the header has the message");
    assert_eq!(message_from_pb(message), Ok(install));
    assert_eq!(round_trip(&last), last);
}
