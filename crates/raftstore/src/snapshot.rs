//! Group snapshots: a group's whole applied state (every session and data record of every
//! shard it holds), read chunk by chunk from a point-in-time engine snapshot on the leader,
//! streamed by the transport, and installed by the follower together with the Raft log reset in
//! one atomic write.
//!
//! The Raft message that carries a snapshot ([`mosaic_raft::MessageBody::InstallSnapshot`])
//! holds only its metadata (index, term, membership); the state travels beside it as chunks.
//! The sender reads every chunk from one engine snapshot whose applied index equals the
//! metadata's index, so the chunks are exactly the state as of that index.
//!
//! Chunk encoding (integers big-endian): `version u8 (1) ‖ count u32 ‖ records`, each record
//! `1 ‖ shard u32 ‖ client u64 ‖ length u32 ‖ session record` or
//! `2 ‖ shard u32 ‖ key length u32 ‖ key ‖ value length u32 ‖ value`.
//!
//! Memory: the sender holds one chunk at a time; the receiver holds the whole snapshot until
//! it is installed in one write (bounded by [`crate::StoreConfig::snapshot_bytes_max`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mosaic_engine::{ClientId, EngineSnapshot, GroupCursor, GroupId, KvRead, ShardId, ShardRecord};
use mosaic_raft::LogIndex;

use crate::error::{Error, Result};

/// The chunk encoding's version.
pub const SNAPSHOT_CHUNK_VERSION: u8 = 1;

const SESSION_TAG: u8 = 1;
const DATA_TAG: u8 = 2;

/// Reads a group's state from a point-in-time engine snapshot, one encoded chunk at a time.
pub struct SnapshotReader<S: KvRead> {
    group: GroupId,
    snapshot: EngineSnapshot<S>,
    /// Where the next chunk starts; `None` once the group has been read to its end.
    cursor: Option<GroupCursor>,
}

impl<S: KvRead> SnapshotReader<S> {
    /// A reader of `group` from its first record.
    #[must_use]
    pub fn new(group: GroupId, snapshot: EngineSnapshot<S>) -> Self {
        Self { group, snapshot, cursor: Some(GroupCursor::Start) }
    }

    /// The group.
    #[must_use]
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The applied index the state corresponds to.
    ///
    /// # Errors
    /// Engine errors.
    pub fn applied_index(&self) -> Result<LogIndex> {
        Ok(self.snapshot.applied_index(self.group)?)
    }

    /// Returns the next chunk (at most `max_bytes` of records, but at least one record when
    /// any is left), or `None` once every record was returned. A group with no records gives
    /// one empty chunk.
    ///
    /// # Errors
    /// Engine errors.
    pub fn next_chunk(&mut self, max_bytes: u64) -> Result<Option<Bytes>> {
        let Some(cursor) = self.cursor.take() else {
            return Ok(None);
        };
        let chunk = self.snapshot.scan_group_chunk(self.group, &cursor, max_bytes)?;
        self.cursor = chunk.next;
        Ok(Some(encode_chunk(&chunk.records)))
    }

    /// Every chunk that is left, in order (for transports that send a snapshot as one
    /// message: the whole snapshot is in memory).
    ///
    /// # Errors
    /// Engine errors.
    pub fn read_all(mut self, chunk_bytes_max: u64) -> Result<Vec<Bytes>> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next_chunk(chunk_bytes_max)? {
            chunks.push(chunk);
        }
        Ok(chunks)
    }
}

/// Encodes records as one snapshot chunk.
#[must_use]
pub fn encode_chunk(records: &[(ShardId, ShardRecord)]) -> Bytes {
    let bytes: usize = records.iter().map(|(_, r)| r.size_bytes() as usize + 21).sum();
    let mut out = BytesMut::with_capacity(5 + bytes);
    out.put_u8(SNAPSHOT_CHUNK_VERSION);
    out.put_u32(u32::try_from(records.len()).expect("a chunk holds far fewer than 4 G records"));
    for (shard, record) in records {
        match record {
            ShardRecord::Session { client, record } => {
                out.put_u8(SESSION_TAG);
                out.put_u32(shard.0);
                out.put_u64(client.0);
                put_bytes(&mut out, record);
            }
            ShardRecord::Data { key, value } => {
                out.put_u8(DATA_TAG);
                out.put_u32(shard.0);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
        }
    }
    out.freeze()
}

fn put_bytes(out: &mut BytesMut, bytes: &Bytes) {
    out.put_u32(u32::try_from(bytes.len()).expect("keys and values are far below 4 GiB"));
    out.put_slice(bytes);
}

/// Decodes a chunk; keys and values share `chunk`'s buffer.
///
/// # Errors
/// [`Error::InvalidArgument`] for any chunk that is not exactly a valid encoding.
pub fn decode_chunk(chunk: &Bytes) -> Result<Vec<(ShardId, ShardRecord)>> {
    let invalid = |what: &str| Error::InvalidArgument {
        reason: format!("snapshot chunk of {} bytes: {what}", chunk.len()),
    };
    let mut input = chunk.clone();
    if input.remaining() < 5 {
        return Err(invalid("shorter than its header"));
    }
    let version = input.get_u8();
    if version != SNAPSHOT_CHUNK_VERSION {
        return Err(invalid(&format!("unknown version {version}")));
    }
    let count = input.get_u32() as usize;
    let mut records = Vec::with_capacity(count.min(input.remaining() / 9));
    for _ in 0..count {
        if input.remaining() < 5 {
            return Err(invalid("a record is cut short"));
        }
        let tag = input.get_u8();
        let shard = ShardId(input.get_u32());
        let record = match tag {
            SESSION_TAG => {
                if input.remaining() < 8 {
                    return Err(invalid("a session is cut short"));
                }
                let client = ClientId(input.get_u64());
                let record =
                    take_bytes(&mut input).ok_or_else(|| invalid("a session is cut short"))?;
                ShardRecord::Session { client, record }
            }
            DATA_TAG => {
                let key = take_bytes(&mut input).ok_or_else(|| invalid("a key is cut short"))?;
                let value =
                    take_bytes(&mut input).ok_or_else(|| invalid("a value is cut short"))?;
                ShardRecord::Data { key, value }
            }
            other => return Err(invalid(&format!("unknown record tag {other}"))),
        };
        records.push((shard, record));
    }
    if input.has_remaining() {
        return Err(invalid("bytes after the last record"));
    }
    Ok(records)
}

fn take_bytes(input: &mut Bytes) -> Option<Bytes> {
    if input.remaining() < 4 {
        return None;
    }
    let length = input.get_u32() as usize;
    (input.remaining() >= length).then(|| input.split_to(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<(ShardId, ShardRecord)> {
        vec![
            (ShardId(0), ShardRecord::Session { client: ClientId(9), record: Bytes::from("s") }),
            (ShardId(3), ShardRecord::Data { key: Bytes::from("k"), value: Bytes::from("v") }),
            (ShardId(u32::MAX), ShardRecord::Data { key: Bytes::new(), value: Bytes::new() }),
        ]
    }

    #[test]
    fn chunks_round_trip() {
        assert_eq!(decode_chunk(&encode_chunk(&records())), Ok(records()));
        assert_eq!(decode_chunk(&encode_chunk(&[])), Ok(Vec::new()));
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let chunk = encode_chunk(&records());
        for length in 0..chunk.len() {
            assert!(decode_chunk(&chunk.slice(..length)).is_err(), "prefix of {length} bytes");
        }
        let mut longer = chunk.to_vec();
        longer.push(0);
        assert!(decode_chunk(&Bytes::from(longer)).is_err());
        let mut bad_tag = chunk.to_vec();
        bad_tag[5] = 7;
        assert!(decode_chunk(&Bytes::from(bad_tag)).is_err());
    }
}
