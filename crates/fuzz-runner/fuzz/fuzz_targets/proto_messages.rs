//! The conversions of wire messages (crates/proto: `convert`, `controller`, `migration`): a
//! Raft message, a controller request, response, configuration, shard move or query answer,
//! a pulled shard chunk and resume position, as protobuf bytes from the network. The first
//! byte picks the message; the rest is its encoding. Any input decodes and converts or is
//! refused, never panics; what converts goes back to a wire message that converts to the
//! same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mosaic_proto::controller as convert;
use mosaic_proto::migration::{position_from_pb, position_to_pb, record_to_pb, records_from_pb};
use mosaic_proto::{message_from_pb, message_to_pb, pb};
use prost::Message;

/// Decodes `body` as wire message `W` and converts it with `from`; what converts goes back
/// with `to` to a wire message that converts to the same.
fn round_trip<
    W: Message + Default,
    T: PartialEq + std::fmt::Debug,
    E: PartialEq + std::fmt::Debug,
>(
    body: &[u8],
    from: fn(W) -> Result<T, E>,
    to: fn(&T) -> W,
) {
    let Ok(wire) = W::decode(body) else { return };
    if let Ok(value) = from(wire) {
        assert_eq!(from(to(&value)).as_ref(), Ok(&value));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 8 {
        0 => round_trip(body, message_from_pb, message_to_pb),
        1 => round_trip(body, convert::request_from_pb, convert::request_to_pb),
        2 => {
            let Ok(wire) = pb::ExecuteResponse::decode(body) else { return };
            if let Ok(Ok(outcome)) = convert::execute_response_from_pb(wire) {
                let again = convert::outcome_from_pb(convert::outcome_to_pb(&outcome));
                assert_eq!(again.as_ref(), Ok(&outcome));
            }
        }
        3 => round_trip(body, convert::configuration_from_pb, convert::configuration_to_pb),
        4 => {
            let Ok(wire) = pb::QueryResponse::decode(body) else { return };
            if let Ok(answer) = convert::query_response_from_pb(wire) {
                let again = convert::query_response_from_pb(answer.to_pb());
                assert_eq!(again.as_ref(), Ok(&answer));
            }
        }
        5 => round_trip(body, convert::shard_move_from_pb, convert::shard_move_to_pb),
        6 => {
            let Ok(wire) = pb::ShardChunk::decode(body) else { return };
            if let Ok(records) = records_from_pb(wire.records) {
                let again = records_from_pb(records.iter().cloned().map(record_to_pb).collect());
                assert_eq!(again.as_ref(), Ok(&records));
            }
        }
        _ => {
            let Ok(wire) = pb::PullShardRequest::decode(body) else { return };
            let position = position_from_pb(wire.resume);
            assert_eq!(position_from_pb(position_to_pb(&position)), position);
        }
    }
});
