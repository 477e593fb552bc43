//! Atomic batches: conditions on the versions of some keys of one shard and writes to keys of
//! the same shard, applied all together or not at all, in one log entry. Keys meant to change
//! together share a hash tag (`mosaic_types::shard_for_key`), which puts them in one shard.
//!
//! Encoding (log entry kind 13, after `version u8 (1) ‖ kind u8`): `expects session u8
//! (0, 1) ‖ client u64 ‖ seq u64 ‖ shard u32 ‖ condition count u32 ‖ (key length u32 ‖ key ‖
//! version u64)* ‖ write count u32 ‖ (op u8 (1 put, 2 append, 3 delete) ‖ key length u32 ‖
//! key ‖ value length u32 ‖ value)*`, integers big-endian.

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_controller::codec::Reader;
use mosaic_engine::{ClientId, ShardId};

use crate::command::{WriteKind, op_byte, op_kind};
use crate::encoding::{COMMAND_VERSION, DecodeError, put_bytes};
use crate::version::Version;

/// The log entry kind of a batch.
pub(crate) const BATCH_KIND: u8 = 13;

/// The most conditions and writes one batch holds, together: a batch is one log entry, applied
/// in one step of its group.
pub const BATCH_ITEMS_MAX: usize = 256;

/// A condition of a batch: the key's version is this one ([`Version::ABSENT`]: the key has no
/// value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchCondition {
    /// The key.
    pub key: Bytes,
    /// The version it must have.
    pub version: Version,
}

/// A write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchWrite {
    /// What it does.
    pub kind: WriteKind,
    /// The key.
    pub key: Bytes,
    /// The value (empty for a delete).
    pub value: Bytes,
}

/// A client's atomic batch on keys of one shard: if every condition holds, every write takes
/// effect, in order, at one new revision of the shard; otherwise nothing is written. Applied
/// at most once per `(client, seq)`, like a single write ([`crate::KvWrite`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvBatch {
    /// The client session.
    pub client: ClientId,
    /// The client's sequence number.
    pub seq: u64,
    /// The shard every key of the batch is in.
    pub shard: ShardId,
    /// The client knows its session in this shard exists ([`crate::KvWrite::expects_session`]).
    pub expects_session: bool,
    /// What must hold for the writes to take effect.
    pub conditions: Vec<BatchCondition>,
    /// The writes, applied in order (a later write of a key sees an earlier one).
    pub writes: Vec<BatchWrite>,
}

/// Why a batch of `conditions` conditions and `writes` writes is refused, if it is: it needs a
/// write, and holds at most [`BATCH_ITEMS_MAX`] conditions and writes in all.
#[must_use]
pub fn batch_size_refusal(conditions: usize, writes: usize) -> Option<String> {
    (writes == 0 || conditions + writes > BATCH_ITEMS_MAX).then(|| {
        format!(
            "a batch of {conditions} conditions and {writes} writes: it needs a write, and at \
             most {BATCH_ITEMS_MAX} conditions and writes in all"
        )
    })
}

impl KvBatch {
    /// Every key the batch names, conditions first.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        let conditions = self.conditions.iter().map(|condition| &condition.key);
        conditions.chain(self.writes.iter().map(|write| &write.key))
    }

    /// Encodes the batch as log entry data.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let keys: usize = self.keys().map(Bytes::len).sum();
        let values: usize = self.writes.iter().map(|write| write.value.len()).sum();
        let fixed = 2 + 1 + 8 + 8 + 4 + 4 + 4;
        let per_item = self.conditions.len() * (4 + 8) + self.writes.len() * (1 + 4 + 4);
        let mut out = BytesMut::with_capacity(fixed + per_item + keys + values);
        out.put_u8(COMMAND_VERSION);
        out.put_u8(BATCH_KIND);
        out.put_u8(u8::from(self.expects_session));
        out.put_u64(self.client.0);
        out.put_u64(self.seq);
        out.put_u32(self.shard.0);
        put_count(&mut out, self.conditions.len());
        for condition in &self.conditions {
            put_bytes(&mut out, &condition.key);
            out.put_u64(condition.version.0);
        }
        put_count(&mut out, self.writes.len());
        for write in &self.writes {
            out.put_u8(op_byte(write.kind));
            put_bytes(&mut out, &write.key);
            put_bytes(&mut out, &write.value);
        }
        out.freeze()
    }

    /// Decodes log entry data of kind [`BATCH_KIND`].
    ///
    /// # Errors
    /// [`DecodeError`] for another version or kind, a malformed or truncated field, a count
    /// the entry cannot hold, a delete that carries a value, or trailing bytes.
    pub fn decode(data: &Bytes) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(data, "batch");
        let malformed = |error: mosaic_controller::codec::DecodeError| DecodeError(error.0);
        let version = reader.u8().map_err(malformed)?;
        let kind = reader.u8().map_err(malformed)?;
        if version != COMMAND_VERSION || kind != BATCH_KIND {
            return Err(DecodeError(format!("version {version} kind {kind} is not a batch")));
        }
        let expects_session = match reader.u8().map_err(malformed)? {
            0 => false,
            1 => true,
            other => return Err(DecodeError(format!("expects-session byte {other}"))),
        };
        let client = ClientId(reader.u64().map_err(malformed)?);
        let seq = reader.u64().map_err(malformed)?;
        let shard = ShardId(reader.u32().map_err(malformed)?);
        let condition_count = reader.count(4 + 8).map_err(malformed)?;
        let mut conditions = Vec::with_capacity(condition_count);
        for _ in 0..condition_count {
            let key = read_bytes(&mut reader).map_err(malformed)?;
            let version = Version(reader.u64().map_err(malformed)?);
            conditions.push(BatchCondition { key, version });
        }
        let write_count = reader.count(1 + 4 + 4).map_err(malformed)?;
        let mut writes = Vec::with_capacity(write_count);
        for _ in 0..write_count {
            let op = reader.u8().map_err(malformed)?;
            let kind = op_kind(op).ok_or_else(|| DecodeError(format!("unknown write op {op}")))?;
            let key = read_bytes(&mut reader).map_err(malformed)?;
            let value = read_bytes(&mut reader).map_err(malformed)?;
            if kind == WriteKind::Delete && !value.is_empty() {
                return Err(DecodeError("a delete carries a value".into()));
            }
            writes.push(BatchWrite { kind, key, value });
        }
        reader.finish().map_err(malformed)?;
        Ok(Self { client, seq, shard, expects_session, conditions, writes })
    }
}

fn put_count(out: &mut BytesMut, count: usize) {
    out.put_u32(u32::try_from(count).expect("a batch's counts are limited far below 4 Gi"));
}

fn read_bytes(reader: &mut Reader<'_>) -> Result<Bytes, mosaic_controller::codec::DecodeError> {
    let len = reader.count(1)?;
    Ok(Bytes::copy_from_slice(reader.take(len)?))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn batch() -> KvBatch {
        KvBatch {
            client: ClientId(7),
            seq: 3,
            shard: ShardId(5),
            expects_session: true,
            conditions: vec![
                BatchCondition { key: Bytes::from_static(b"{u}:a"), version: Version(4) },
                BatchCondition { key: Bytes::from_static(b"{u}:b"), version: Version::ABSENT },
            ],
            writes: vec![
                BatchWrite {
                    kind: WriteKind::Put,
                    key: Bytes::from_static(b"{u}:a"),
                    value: Bytes::from_static(b"1"),
                },
                BatchWrite {
                    kind: WriteKind::Append,
                    key: Bytes::from_static(b"{u}:b"),
                    value: Bytes::new(),
                },
                BatchWrite {
                    kind: WriteKind::Delete,
                    key: Bytes::from_static(b"{u}:c"),
                    value: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn a_batch_round_trips_and_malformed_ones_are_refused() {
        let batch = batch();
        let encoded = batch.encode();
        assert_eq!(KvBatch::decode(&encoded), Ok(batch.clone()));
        let empty = KvBatch { conditions: Vec::new(), writes: Vec::new(), ..batch };
        assert_eq!(KvBatch::decode(&empty.encode()), Ok(empty));

        let mut bad_kind = encoded.to_vec();
        bad_kind[1] = 12;
        let mut bad_expects_session = encoded.to_vec();
        bad_expects_session[2] = 2;
        let mut huge_count = encoded.to_vec();
        huge_count[23..27].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut trailing = encoded.to_vec();
        trailing.push(0);
        let delete_at = encoded.len() - 4 - 4 - 5 - 1;
        assert_eq!(encoded[delete_at], 3, "the delete's op byte");
        let mut bad_op = encoded.to_vec();
        bad_op[delete_at] = 4;
        let mut delete_with_value = encoded.to_vec();
        delete_with_value.truncate(encoded.len() - 4);
        delete_with_value.extend_from_slice(&1u32.to_be_bytes());
        delete_with_value.push(b'x');
        for bad in [
            bad_kind,
            bad_expects_session,
            huge_count,
            trailing,
            bad_op,
            delete_with_value,
            encoded[..encoded.len() - 1].to_vec(),
        ] {
            assert!(KvBatch::decode(&Bytes::from(bad.clone())).is_err(), "{bad:02x?} decoded");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut bytes = bytes;
            if bytes.len() >= 2 {
                bytes[0] = COMMAND_VERSION;
                bytes[1] = BATCH_KIND;
            }
            let _ = KvBatch::decode(&Bytes::from(bytes));
        }
    }
}
