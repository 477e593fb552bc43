//! Conversions between a shard's records and positions ([`mosaic_engine::ShardRecord`],
//! [`mosaic_engine::ShardCursor`]) and their wire form in `ShardMigration.PullShard`.
//!
//! Outgoing cannot fail. Incoming, a record with no content is refused with a
//! [`ConvertError`]; an absent or empty position is the start of the shard.

use mosaic_engine::{ClientId, ShardCursor, ShardRecord};

use crate::convert::{ConvertError, Result};
use crate::pb;

/// A record of a shard, for the wire.
#[must_use]
pub fn record_to_pb(record: ShardRecord) -> pb::ShardRecord {
    use pb::shard_record::Record;
    let record = match record {
        ShardRecord::Session { client, record } => {
            Record::Session(pb::SessionRecord { client_id: client.0, record })
        }
        ShardRecord::Data { key, value } => Record::Data(pb::DataRecord { key, value }),
    };
    pb::ShardRecord { record: Some(record) }
}

/// The records of a chunk received from the wire.
///
/// # Errors
/// [`ConvertError::MissingField`] for a record with no content.
pub fn records_from_pb(records: Vec<pb::ShardRecord>) -> Result<Vec<ShardRecord>> {
    use pb::shard_record::Record;
    records
        .into_iter()
        .map(|record| match record.record {
            Some(Record::Session(session)) => Ok(ShardRecord::Session {
                client: ClientId(session.client_id),
                record: session.record,
            }),
            Some(Record::Data(data)) => Ok(ShardRecord::Data { key: data.key, value: data.value }),
            None => Err(ConvertError::MissingField { field: "ShardRecord.record" }),
        })
        .collect()
}

/// A position in a shard, for the wire (`None` for the start).
#[must_use]
pub fn position_to_pb(cursor: &ShardCursor) -> Option<pb::ShardPosition> {
    use pb::shard_position::After;
    let after = match cursor {
        ShardCursor::Start => return None,
        ShardCursor::AfterSession(client) => After::AfterSession(client.0),
        ShardCursor::AfterData(key) => After::AfterKey(key.clone()),
    };
    Some(pb::ShardPosition { after: Some(after) })
}

/// A position in a shard received from the wire; absent (or empty) is the start.
#[must_use]
pub fn position_from_pb(position: Option<pb::ShardPosition>) -> ShardCursor {
    use pb::shard_position::After;
    match position.and_then(|position| position.after) {
        None => ShardCursor::Start,
        Some(After::AfterSession(client)) => ShardCursor::AfterSession(ClientId(client)),
        Some(After::AfterKey(key)) => ShardCursor::AfterData(key),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn records_and_positions_round_trip() {
        let records = vec![
            ShardRecord::Session { client: ClientId(7), record: Bytes::from_static(b"s") },
            ShardRecord::Data { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") },
        ];
        let wire = records.iter().cloned().map(record_to_pb).collect();
        assert_eq!(records_from_pb(wire), Ok(records.clone()));
        for cursor in [ShardCursor::Start].into_iter().chain(records.iter().map(ShardCursor::after))
        {
            assert_eq!(position_from_pb(position_to_pb(&cursor)), cursor);
        }
        assert_eq!(position_from_pb(Some(pb::ShardPosition { after: None })), ShardCursor::Start);
    }

    #[test]
    fn a_record_with_no_content_is_refused() {
        let empty = vec![pb::ShardRecord { record: None }];
        assert_eq!(
            records_from_pb(empty),
            Err(ConvertError::MissingField { field: "ShardRecord.record" })
        );
    }
}
