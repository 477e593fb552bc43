//! Conversions between `mosaic_raft::Message` and `pb::RaftMessage`: every kind of message
//! round-trips (directly and through protobuf bytes), payloads are not copied, and malformed wire
//! messages are rejected with an error that names what is wrong.

use std::collections::BTreeSet;

use bytes::Bytes;
use mosaic_proto::pb::raft_message::Body;
use mosaic_proto::{ConvertError, message_from_pb, message_to_pb, pb};
use mosaic_raft::{
    ConfChange, ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, RejectHint,
    Snapshot, SnapshotMetadata, Term,
};
use proptest::prelude::*;
use prost::Message as _;

// ---- Helpers -------------------------------------------------------------------------------

fn message(body: MessageBody) -> Message {
    Message { from: NodeId(1), to: NodeId(2), term: Term(7), body }
}

fn entry(index: u64, term: u64, kind: EntryKind, data: &'static [u8]) -> Entry {
    Entry { term: Term(term), index: LogIndex(index), kind, data: Bytes::from_static(data) }
}

fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState {
        voters: voters.iter().copied().map(NodeId).collect(),
        learners: learners.iter().copied().map(NodeId).collect(),
    }
}

fn snapshot(index: u64, term: u64, conf_state: ConfState, data: &'static [u8]) -> Snapshot {
    Snapshot {
        metadata: SnapshotMetadata { index: LogIndex(index), term: Term(term), conf_state },
        data: Bytes::from_static(data),
    }
}

/// Panics unless `message` survives both the direct conversion and a trip through protobuf
/// bytes unchanged.
fn assert_round_trips(message: &Message) {
    let wire = message_to_pb(message);
    assert_eq!(
        message_from_pb(wire.clone()).as_ref(),
        Ok(message),
        "direct round trip of {message:?} via {wire:?}"
    );
    let encoded = Bytes::from(wire.encode_to_vec());
    let decoded = pb::RaftMessage::decode(encoded.clone())
        .unwrap_or_else(|error| panic!("decoding {message:?} from {encoded:02x?}: {error}"));
    assert_eq!(decoded, wire, "protobuf round trip of {message:?}");
    assert_eq!(
        message_from_pb(decoded).as_ref(),
        Ok(message),
        "round trip of {message:?} through {encoded:02x?}"
    );
}

/// Converts a wire message that must be rejected, and returns the error.
fn must_reject(wire: pb::RaftMessage) -> ConvertError {
    match message_from_pb(wire.clone()) {
        Ok(message) => panic!("{wire:?} was accepted as {message:?}"),
        Err(error) => error,
    }
}

/// Returns the wire form of `message` after `edit` has changed it.
fn edited(message: &Message, edit: impl FnOnce(&mut pb::RaftMessage)) -> pb::RaftMessage {
    let mut wire = message_to_pb(message);
    edit(&mut wire);
    wire
}

fn append_with_entries() -> Message {
    message(MessageBody::Append {
        prev_index: LogIndex(4),
        prev_term: Term(3),
        entries: vec![
            entry(5, 6, EntryKind::Normal, b""),
            entry(6, 7, EntryKind::Normal, b"put k v"),
            entry(7, 7, EntryKind::ConfChange, &[2, 0, 0, 0, 0, 0, 0, 0, 4]),
        ],
        commit: LogIndex(5),
    })
}

fn install_snapshot() -> Message {
    message(MessageBody::InstallSnapshot {
        snapshot: snapshot(100, 6, conf_state(&[1, 2, 3], &[4, 5]), b"state machine image"),
    })
}

/// The entries of an append on the wire; panics if `wire` is not an append.
fn wire_entries(wire: &mut pb::RaftMessage) -> &mut Vec<pb::Entry> {
    match &mut wire.body {
        Some(Body::Append(append)) => &mut append.entries,
        other => panic!("not an append: {other:?}"),
    }
}

/// The membership of a snapshot on the wire; panics if `wire` does not carry one.
fn wire_conf_state(wire: &mut pb::RaftMessage) -> &mut pb::ConfState {
    match &mut wire.body {
        Some(Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot:
                Some(pb::Snapshot {
                    metadata: Some(pb::SnapshotMetadata { conf_state: Some(conf_state), .. }),
                    ..
                }),
        })) => conf_state,
        other => panic!("not a snapshot with a membership: {other:?}"),
    }
}

/// Names the kind of a message. Exhaustive on purpose: a new kind of message fails to compile
/// here until the tests below cover it.
fn kind_name(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::RequestVote { .. } => "RequestVote",
        MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
        MessageBody::Append { .. } => "Append",
        MessageBody::AppendResponse { .. } => "AppendResponse",
        MessageBody::Heartbeat { .. } => "Heartbeat",
        MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
        MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
        MessageBody::TimeoutNow => "TimeoutNow",
        MessageBody::ReadIndex { .. } => "ReadIndex",
        MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
    }
}

/// Representative messages of every kind, with the edge values of each field.
fn representative_messages() -> Vec<Message> {
    let hint = |index, term| Some(RejectHint { index: LogIndex(index), term: Term(term) });
    vec![
        message(MessageBody::RequestVote {
            pre_vote: false,
            last_index: LogIndex(10),
            last_term: Term(6),
            leader_transfer: false,
        }),
        message(MessageBody::RequestVote {
            pre_vote: true,
            last_index: LogIndex(0),
            last_term: Term(0),
            leader_transfer: true,
        }),
        message(MessageBody::RequestVoteResponse { pre_vote: true, granted: false }),
        message(MessageBody::RequestVoteResponse { pre_vote: false, granted: true }),
        message(MessageBody::Append {
            prev_index: LogIndex(0),
            prev_term: Term(0),
            entries: vec![],
            commit: LogIndex(0),
        }),
        append_with_entries(),
        message(MessageBody::AppendResponse { index: LogIndex(9), reject: None }),
        message(MessageBody::AppendResponse { index: LogIndex(9), reject: hint(0, 0) }),
        message(MessageBody::AppendResponse { index: LogIndex(9), reject: hint(7, 3) }),
        message(MessageBody::Heartbeat { commit: LogIndex(12), round: 3, quiesce: true }),
        message(MessageBody::HeartbeatResponse { round: 3, applied: LogIndex(2) }),
        install_snapshot(),
        message(MessageBody::InstallSnapshot {
            snapshot: snapshot(1, 1, conf_state(&[9], &[]), b""),
        }),
        message(MessageBody::TimeoutNow),
        message(MessageBody::ReadIndex { context: Bytes::new() }),
        message(MessageBody::ReadIndex { context: Bytes::from_static(b"read 42") }),
        message(MessageBody::ReadIndexResponse { index: None, context: Bytes::from_static(b"r") }),
        message(MessageBody::ReadIndexResponse { index: Some(LogIndex(0)), context: Bytes::new() }),
        message(MessageBody::ReadIndexResponse {
            index: Some(LogIndex(u64::MAX)),
            context: Bytes::from_static(b"read 43"),
        }),
        Message {
            from: NodeId(u64::MAX),
            to: NodeId(1),
            term: Term(u64::MAX),
            body: MessageBody::HeartbeatResponse { round: u64::MAX, applied: LogIndex(u64::MAX) },
        },
    ]
}

// ---- Round trips ---------------------------------------------------------------------------

#[test]
fn representative_messages_cover_every_kind() {
    let covered: BTreeSet<_> =
        representative_messages().iter().map(|m| kind_name(&m.body)).collect();
    assert_eq!(covered.len(), 10, "kinds covered: {covered:?}");
}

#[test]
fn every_kind_of_message_round_trips() {
    for message in representative_messages() {
        assert_round_trips(&message);
    }
}

#[test]
fn request_vote_and_pre_vote_round_trip() {
    for (pre_vote, leader_transfer) in [(false, false), (true, false), (false, true)] {
        assert_round_trips(&message(MessageBody::RequestVote {
            pre_vote,
            last_index: LogIndex(3),
            last_term: Term(2),
            leader_transfer,
        }));
        assert_round_trips(&message(MessageBody::RequestVoteResponse { pre_vote, granted: true }));
    }
}

#[test]
fn empty_append_round_trips() {
    assert_round_trips(&message(MessageBody::Append {
        prev_index: LogIndex(8),
        prev_term: Term(2),
        entries: vec![],
        commit: LogIndex(8),
    }));
}

#[test]
fn append_with_entries_round_trips() {
    assert_round_trips(&append_with_entries());
}

#[test]
fn conf_change_entries_round_trip() {
    let changes = [
        ConfChange::AddLearner(NodeId(4)),
        ConfChange::AddVoter(NodeId(4)),
        ConfChange::RemoveNode(NodeId(2)),
    ];
    let entries = (0..)
        .zip(changes)
        .map(|(offset, change)| Entry {
            term: Term(3),
            index: LogIndex(21 + offset),
            kind: EntryKind::ConfChange,
            data: change.encode(),
        })
        .collect();
    let message = message(MessageBody::Append {
        prev_index: LogIndex(20),
        prev_term: Term(3),
        entries,
        commit: LogIndex(20),
    });
    assert_round_trips(&message);
    let Ok(Message { body: MessageBody::Append { entries, .. }, .. }) =
        message_from_pb(message_to_pb(&message))
    else {
        panic!("append did not come back as an append");
    };
    let decoded: Vec<_> = entries
        .iter()
        .map(|entry| ConfChange::decode(&entry.data).expect("conf change decodes"))
        .collect();
    assert_eq!(decoded, changes);
}

#[test]
fn append_response_keeps_no_hint_and_a_zero_hint_apart() {
    let none = message(MessageBody::AppendResponse { index: LogIndex(5), reject: None });
    let zero = message(MessageBody::AppendResponse {
        index: LogIndex(5),
        reject: Some(RejectHint { index: LogIndex(0), term: Term(0) }),
    });
    assert_round_trips(&none);
    assert_round_trips(&zero);
    assert_ne!(message_to_pb(&none).encode_to_vec(), message_to_pb(&zero).encode_to_vec());
}

#[test]
fn read_index_response_keeps_no_index_and_index_zero_apart() {
    let none = message(MessageBody::ReadIndexResponse { index: None, context: Bytes::new() });
    let zero =
        message(MessageBody::ReadIndexResponse { index: Some(LogIndex(0)), context: Bytes::new() });
    assert_round_trips(&none);
    assert_round_trips(&zero);
    assert_ne!(message_to_pb(&none).encode_to_vec(), message_to_pb(&zero).encode_to_vec());
}

#[test]
fn snapshot_with_voters_and_learners_round_trips() {
    assert_round_trips(&install_snapshot());
}

#[test]
fn snapshot_without_learners_and_without_data_round_trips() {
    assert_round_trips(&message(MessageBody::InstallSnapshot {
        snapshot: snapshot(3, 2, conf_state(&[1], &[]), b""),
    }));
}

#[test]
fn timeout_now_round_trips() {
    assert_round_trips(&message(MessageBody::TimeoutNow));
}

#[test]
fn heartbeat_and_its_response_round_trip() {
    assert_round_trips(&message(MessageBody::Heartbeat {
        commit: LogIndex(0),
        round: 0,
        quiesce: false,
    }));
    assert_round_trips(&message(MessageBody::HeartbeatResponse {
        round: 17,
        applied: LogIndex(9),
    }));
}

#[test]
fn trait_conversions_agree_with_the_functions() {
    for message in representative_messages() {
        let wire = pb::RaftMessage::from(&message);
        assert_eq!(wire, message_to_pb(&message));
        assert_eq!(Message::try_from(wire), Ok(message));
    }
}

// ---- Payloads are not copied ---------------------------------------------------------------

#[test]
fn entry_payloads_move_into_the_raft_message_without_a_copy() {
    let payload = Bytes::from(vec![7u8; 1024]);
    let wire = pb::RaftMessage {
        from: 1,
        to: 2,
        term: 3,
        body: Some(Body::Append(pb::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![pb::Entry {
                term: 3,
                index: 1,
                kind: pb::EntryKind::Normal.into(),
                data: payload.clone(),
            }],
            commit: 0,
        })),
    };
    let Ok(Message { body: MessageBody::Append { entries, .. }, .. }) = message_from_pb(wire)
    else {
        panic!("append did not convert");
    };
    assert_eq!(entries[0].data.as_ptr(), payload.as_ptr(), "the payload was copied");
}

#[test]
fn entry_payloads_go_out_shared_not_copied() {
    let message = append_with_entries();
    let mut wire = message_to_pb(&message);
    let MessageBody::Append { entries, .. } = &message.body else { unreachable!() };
    for (entry, wire_entry) in entries.iter().zip(wire_entries(&mut wire).iter()) {
        assert_eq!(wire_entry.data.as_ptr(), entry.data.as_ptr(), "entry {entry:?} was copied");
    }
}

#[test]
fn payloads_decoded_from_a_bytes_buffer_share_it() {
    let message = message(MessageBody::Append {
        prev_index: LogIndex(0),
        prev_term: Term(0),
        entries: vec![entry(1, 1, EntryKind::Normal, &[5; 256])],
        commit: LogIndex(0),
    });
    let buffer = Bytes::from(message_to_pb(&message).encode_to_vec());
    let decoded = pb::RaftMessage::decode(buffer.clone()).expect("decodes");
    let Ok(Message { body: MessageBody::Append { entries, .. }, .. }) = message_from_pb(decoded)
    else {
        panic!("append did not convert");
    };
    let payload = entries[0].data.as_ptr_range();
    let buffer_range = buffer.as_ptr_range();
    assert!(
        buffer_range.start <= payload.start && payload.end <= buffer_range.end,
        "payload {payload:?} is not inside the received buffer {buffer_range:?}"
    );
}

// ---- Malformed input -----------------------------------------------------------------------

#[test]
fn message_without_body_is_rejected() {
    let wire = edited(&message(MessageBody::TimeoutNow), |wire| wire.body = None);
    assert_eq!(must_reject(wire), ConvertError::MissingField { field: "RaftMessage.body" });
}

#[test]
fn body_of_a_kind_this_build_does_not_know_is_rejected_as_missing() {
    let mut encoded = message_to_pb(&message(MessageBody::TimeoutNow)).encode_to_vec();
    // Replace the body (field 11, TimeoutNow) by an unknown field 99, as a newer peer might
    // send: tag 99 << 3 | 2 (length-delimited) as a varint, then an empty payload.
    let timeout_now = [11 << 3 | 2, 0];
    assert_eq!(encoded[encoded.len() - 2..], timeout_now, "{encoded:02x?}");
    encoded.truncate(encoded.len() - 2);
    encoded.extend_from_slice(&[0x9a, 0x06, 0]);
    let wire = pb::RaftMessage::decode(&encoded[..]).expect("unknown fields are skipped");
    assert_eq!(must_reject(wire), ConvertError::MissingField { field: "RaftMessage.body" });
}

#[test]
fn message_from_or_to_node_zero_is_rejected() {
    let heartbeat =
        message(MessageBody::Heartbeat { commit: LogIndex(1), round: 1, quiesce: false });
    assert_eq!(
        must_reject(edited(&heartbeat, |wire| wire.from = 0)),
        ConvertError::ZeroNodeId { field: "RaftMessage.from" }
    );
    assert_eq!(
        must_reject(edited(&heartbeat, |wire| wire.to = 0)),
        ConvertError::ZeroNodeId { field: "RaftMessage.to" }
    );
}

#[test]
fn install_snapshot_without_snapshot_is_rejected() {
    let wire = edited(&install_snapshot(), |wire| {
        wire.body = Some(Body::InstallSnapshot(pb::InstallSnapshot { snapshot: None }));
    });
    assert_eq!(must_reject(wire), ConvertError::MissingField { field: "InstallSnapshot.snapshot" });
}

#[test]
fn snapshot_without_metadata_or_membership_is_rejected() {
    let without_metadata = edited(&install_snapshot(), |wire| {
        if let Some(Body::InstallSnapshot(pb::InstallSnapshot { snapshot: Some(snapshot) })) =
            &mut wire.body
        {
            snapshot.metadata = None;
        }
    });
    assert_eq!(
        must_reject(without_metadata),
        ConvertError::MissingField { field: "Snapshot.metadata" }
    );
    let without_membership = pb::RaftMessage {
        body: Some(Body::InstallSnapshot(pb::InstallSnapshot {
            snapshot: Some(pb::Snapshot {
                metadata: Some(pb::SnapshotMetadata { index: 5, term: 2, conf_state: None }),
                data: Bytes::new(),
            }),
        })),
        ..message_to_pb(&install_snapshot())
    };
    assert_eq!(
        must_reject(without_membership),
        ConvertError::MissingField { field: "SnapshotMetadata.conf_state" }
    );
}

#[test]
fn entry_without_kind_is_rejected() {
    let wire = edited(&append_with_entries(), |wire| {
        wire_entries(wire)[1].kind = pb::EntryKind::Unspecified.into();
    });
    assert_eq!(must_reject(wire), ConvertError::MissingEntryKind { position: 1 });
}

#[test]
fn entry_of_unknown_kind_is_rejected_even_after_a_trip_through_bytes() {
    let wire = edited(&append_with_entries(), |wire| wire_entries(wire)[2].kind = 7);
    let decoded = pb::RaftMessage::decode(&wire.encode_to_vec()[..]).expect("decodes");
    assert_eq!(must_reject(decoded), ConvertError::UnknownEntryKind { position: 2, value: 7 });
    let negative = edited(&append_with_entries(), |wire| wire_entries(wire)[0].kind = -1);
    assert_eq!(must_reject(negative), ConvertError::UnknownEntryKind { position: 0, value: -1 });
}

#[test]
fn entry_without_index_is_rejected() {
    let wire = edited(&append_with_entries(), |wire| wire_entries(wire)[0].index = 0);
    assert_eq!(
        must_reject(wire),
        ConvertError::EntryIndexOutOfSequence { prev_index: 4, position: 0, index: 0 }
    );
}

#[test]
fn entries_with_a_gap_or_out_of_order_are_rejected() {
    let gap = edited(&append_with_entries(), |wire| wire_entries(wire)[2].index = 8);
    assert_eq!(
        must_reject(gap),
        ConvertError::EntryIndexOutOfSequence { prev_index: 4, position: 2, index: 8 }
    );
    let swapped = edited(&append_with_entries(), |wire| wire_entries(wire).swap(0, 1));
    assert_eq!(
        must_reject(swapped),
        ConvertError::EntryIndexOutOfSequence { prev_index: 4, position: 0, index: 6 }
    );
}

#[test]
fn entries_that_would_pass_the_largest_index_are_rejected() {
    let wire = pb::RaftMessage {
        body: Some(Body::Append(pb::Append {
            prev_index: u64::MAX,
            prev_term: 1,
            entries: vec![pb::Entry {
                term: 1,
                index: 0,
                kind: pb::EntryKind::Normal.into(),
                data: Bytes::new(),
            }],
            commit: 0,
        })),
        ..message_to_pb(&append_with_entries())
    };
    assert_eq!(
        must_reject(wire),
        ConvertError::EntryIndexOutOfSequence { prev_index: u64::MAX, position: 0, index: 0 }
    );
}

#[test]
fn membership_with_node_zero_is_rejected() {
    let voter = edited(&install_snapshot(), |wire| wire_conf_state(wire).voters.push(0));
    assert_eq!(must_reject(voter), ConvertError::ZeroNodeId { field: "ConfState.voters" });
    let learner = edited(&install_snapshot(), |wire| wire_conf_state(wire).learners.push(0));
    assert_eq!(must_reject(learner), ConvertError::ZeroNodeId { field: "ConfState.learners" });
}

#[test]
fn membership_naming_a_node_twice_is_rejected() {
    let duplicate = edited(&install_snapshot(), |wire| wire_conf_state(wire).voters.push(2));
    assert_eq!(
        must_reject(duplicate),
        ConvertError::DuplicateNode { field: "ConfState.voters", node: 2 }
    );
    let both = edited(&install_snapshot(), |wire| wire_conf_state(wire).learners.push(3));
    assert_eq!(must_reject(both), ConvertError::VoterAndLearner { node: 3 });
}

#[test]
fn errors_name_the_offending_field() {
    let error = ConvertError::MissingField { field: "InstallSnapshot.snapshot" };
    assert_eq!(error.to_string(), "missing field InstallSnapshot.snapshot");
    let error = ConvertError::UnknownEntryKind { position: 2, value: 7 };
    assert_eq!(error.to_string(), "entry 2 of the append has unknown kind 7");
}

// ---- Properties ----------------------------------------------------------------------------

fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

/// Indexes and terms, with 0 and the largest value often.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), 0..100u64, any::<u64>()]
}

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![1..10u64, 1..=u64::MAX].prop_map(NodeId)
}

fn entry_kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![Just(EntryKind::Normal), Just(EntryKind::ConfChange)]
}

/// A valid membership: members drawn from a small range, each either a voter or a learner.
fn conf_state_strategy() -> impl Strategy<Value = ConfState> {
    prop::collection::btree_map(1..20u64, any::<bool>(), 0..8).prop_map(|members| {
        let mut conf_state = ConfState::default();
        for (node, is_voter) in members {
            if is_voter {
                conf_state.voters.insert(NodeId(node));
            } else {
                conf_state.learners.insert(NodeId(node));
            }
        }
        conf_state
    })
}

fn append_strategy() -> impl Strategy<Value = MessageBody> {
    let entries = prop::collection::vec((number(), entry_kind(), payload()), 0..6);
    (0..u64::MAX - 8, number(), entries, number()).prop_map(
        |(prev_index, prev_term, entries, commit)| MessageBody::Append {
            prev_index: LogIndex(prev_index),
            prev_term: Term(prev_term),
            entries: (prev_index + 1..)
                .zip(entries)
                .map(|(index, (term, kind, data))| Entry {
                    term: Term(term),
                    index: LogIndex(index),
                    kind,
                    data,
                })
                .collect(),
            commit: LogIndex(commit),
        },
    )
}

fn body_strategy() -> impl Strategy<Value = MessageBody> {
    let reject_hint = prop::option::of((number(), number())).prop_map(|hint| {
        hint.map(|(index, term)| RejectHint { index: LogIndex(index), term: Term(term) })
    });
    let snapshot = (number(), number(), conf_state_strategy(), payload()).prop_map(
        |(index, term, conf_state, data)| Snapshot {
            metadata: SnapshotMetadata { index: LogIndex(index), term: Term(term), conf_state },
            data,
        },
    );
    prop_oneof![
        (any::<bool>(), number(), number(), any::<bool>()).prop_map(
            |(pre_vote, last_index, last_term, leader_transfer)| MessageBody::RequestVote {
                pre_vote,
                last_index: LogIndex(last_index),
                last_term: Term(last_term),
                leader_transfer,
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::RequestVoteResponse { pre_vote, granted }),
        append_strategy(),
        (number(), reject_hint).prop_map(|(index, reject)| MessageBody::AppendResponse {
            index: LogIndex(index),
            reject
        }),
        (number(), number(), any::<bool>()).prop_map(|(commit, round, quiesce)| {
            MessageBody::Heartbeat { commit: LogIndex(commit), round, quiesce }
        }),
        (number(), number()).prop_map(|(round, applied)| MessageBody::HeartbeatResponse {
            round,
            applied: LogIndex(applied),
        }),
        snapshot.prop_map(|snapshot| MessageBody::InstallSnapshot { snapshot }),
        Just(MessageBody::TimeoutNow),
        payload().prop_map(|context| MessageBody::ReadIndex { context }),
        (prop::option::of(number()), payload()).prop_map(|(index, context)| {
            MessageBody::ReadIndexResponse { index: index.map(LogIndex), context }
        }),
    ]
}

fn message_strategy() -> impl Strategy<Value = Message> {
    (node_id(), node_id(), number(), body_strategy()).prop_map(|(from, to, term, body)| Message {
        from,
        to,
        term: Term(term),
        body,
    })
}

proptest! {
    #[test]
    fn arbitrary_messages_round_trip(message in message_strategy()) {
        let wire = message_to_pb(&message);
        prop_assert_eq!(message_from_pb(wire.clone()), Ok(message.clone()));
        let decoded = pb::RaftMessage::decode(Bytes::from(wire.encode_to_vec()))
            .map_err(|error| TestCaseError::fail(format!("decoding {wire:?}: {error}")))?;
        prop_assert_eq!(&decoded, &wire);
        prop_assert_eq!(message_from_pb(decoded), Ok(message));
    }

    #[test]
    fn corrupted_messages_are_rejected_or_converted_but_never_panic(
        message in message_strategy(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut encoded = message_to_pb(&message).encode_to_vec();
        for (position, value) in flips {
            let position = position.index(encoded.len());
            encoded[position] ^= value;
        }
        encoded.truncate(cut.index(encoded.len() + 1));
        if let Ok(wire) = pb::RaftMessage::decode(Bytes::from(encoded)) {
            // Whatever converts must convert back to the same wire message.
            if let Ok(converted) = message_from_pb(wire) {
                prop_assert_eq!(message_from_pb(message_to_pb(&converted)), Ok(converted));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_rejected_or_converted_but_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(wire) = pb::RaftMessage::decode(&bytes[..]) {
            let _ = message_from_pb(wire);
        }
    }
}
