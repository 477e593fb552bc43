//! The commands a storage group replicates, and their encoding in log entries.
//!
//! Every entry starts with `version u8 (1) ‖ kind u8`. Kinds 1 put, 2 append and 3 delete are
//! client writes ([`KvWrite`]): `client u64 ‖ seq u64 ‖ shard u32 ‖ key length u32 ‖ key ‖
//! value`, the value (the rest of the entry) empty for a delete; kinds 9, 10 and 11 are the
//! same writes from a client that expects its session to exist ([`KvWrite::expects_session`]).
//! Kind 12 is a conditional write ([`KvWrite::condition`]): `op u8 (1 put, 2 append, 3
//! delete) ‖ expects session u8 (0 or 1) ‖ expected version u64 ‖ client u64 ‖ seq u64 ‖
//! shard u32 ‖ key length u32 ‖ key ‖ value`. Kind 13 is an atomic batch ([`KvBatch`],
//! encoded in [`crate::batch`]). Kinds 4 to 8 move shards between groups
//! ([`crate::migration`]). All integers are big-endian. The version byte lets a later format be told apart; a reader refuses what it
//! does not know instead of guessing.

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_engine::{ClientId, ShardId};

use crate::batch::{BATCH_KIND, KvBatch};
use crate::encoding::{COMMAND_VERSION, DecodeError};
use crate::migration::MigrationCommand;
use crate::version::Version;

/// What every write's header ends with: client, seq, shard, key length.
const FIELDS_BYTES: usize = 8 + 8 + 4 + 4;
const HEADER_BYTES: usize = 1 + 1 + FIELDS_BYTES;
/// What a conditional write's header adds: op, expects session, expected version.
const CONDITION_BYTES: usize = 1 + 1 + 8;
/// Added to a write's kind when it expects its session.
const EXPECTS_SESSION_KIND: u8 = 8;
const CONDITIONAL_WRITE_KIND: u8 = 12;

/// What a write does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Sets the value.
    Put,
    /// Appends to the value (an absent key counts as empty).
    Append,
    /// Removes the key.
    Delete,
}

/// A client's write to one key of one shard, with the session it is deduplicated by (6.824
/// Lab 3: a retried request is applied at most once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvWrite {
    /// What the write does.
    pub kind: WriteKind,
    /// The client session.
    pub client: ClientId,
    /// The client's sequence number: higher than every earlier write of this client.
    pub seq: u64,
    /// The shard the key hashes to.
    pub shard: ShardId,
    /// The user key.
    pub key: Bytes,
    /// The value (empty for a delete).
    pub value: Bytes,
    /// The client knows its session in this shard exists: an earlier write of this client to
    /// the shard was answered. If the group has no such session (evicted, [`crate::session`]),
    /// the write is refused ([`mosaic_raftstore::Error::SessionExpired`]) instead of applied:
    /// it may be the retry of a write applied before the eviction.
    pub expects_session: bool,
    /// The write takes effect only if the key's version is this one ([`Version::ABSENT`]:
    /// only if the key has no value); `None` for an unconditional write.
    pub condition: Option<Version>,
}

/// A command of a storage group's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// A client's write.
    Write(KvWrite),
    /// A client's atomic batch.
    Batch(KvBatch),
    /// A step of a shard migration.
    Migration(MigrationCommand),
}

impl From<KvWrite> for KvCommand {
    fn from(write: KvWrite) -> Self {
        Self::Write(write)
    }
}

impl From<KvBatch> for KvCommand {
    fn from(batch: KvBatch) -> Self {
        Self::Batch(batch)
    }
}

impl From<MigrationCommand> for KvCommand {
    fn from(command: MigrationCommand) -> Self {
        Self::Migration(command)
    }
}

impl KvCommand {
    /// Encodes the command as log entry data.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        match self {
            Self::Write(write) => write.encode(),
            Self::Batch(batch) => batch.encode(),
            Self::Migration(command) => command.encode(),
        }
    }

    /// Decodes log entry data.
    ///
    /// # Errors
    /// [`DecodeError`] for anything [`KvCommand::encode`] does not write.
    pub fn decode(data: &Bytes) -> Result<Self, DecodeError> {
        match data.get(1) {
            Some(&BATCH_KIND) => KvBatch::decode(data).map(Self::Batch),
            Some(kind) if *kind != CONDITIONAL_WRITE_KIND && write_kind(*kind).is_none() => {
                MigrationCommand::decode(data).map(Self::Migration)
            }
            _ => KvWrite::decode(data).map(Self::Write),
        }
    }
}

/// The write a kind byte stands for, and whether it expects its session; `None` for a kind
/// that is not an unconditional write's.
fn write_kind(byte: u8) -> Option<(WriteKind, bool)> {
    let (base, expects_session) = match byte.checked_sub(EXPECTS_SESSION_KIND) {
        Some(base) if base > 0 => (base, true),
        _ => (byte, false),
    };
    Some((op_kind(base)?, expects_session))
}

pub(crate) fn op_byte(kind: WriteKind) -> u8 {
    match kind {
        WriteKind::Put => 1,
        WriteKind::Append => 2,
        WriteKind::Delete => 3,
    }
}

pub(crate) fn op_kind(byte: u8) -> Option<WriteKind> {
    match byte {
        1 => Some(WriteKind::Put),
        2 => Some(WriteKind::Append),
        3 => Some(WriteKind::Delete),
        _ => None,
    }
}

impl KvWrite {
    /// Encodes the write as log entry data.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let size = HEADER_BYTES + CONDITION_BYTES + self.key.len() + self.value.len();
        let mut out = BytesMut::with_capacity(size);
        out.put_u8(COMMAND_VERSION);
        let op = op_byte(self.kind);
        match self.condition {
            None => {
                out.put_u8(if self.expects_session { op + EXPECTS_SESSION_KIND } else { op });
            }
            Some(expected) => {
                out.put_u8(CONDITIONAL_WRITE_KIND);
                out.put_u8(op);
                out.put_u8(u8::from(self.expects_session));
                out.put_u64(expected.0);
            }
        }
        out.put_u64(self.client.0);
        out.put_u64(self.seq);
        out.put_u32(self.shard.0);
        out.put_u32(u32::try_from(self.key.len()).expect("keys are limited far below 4 GiB"));
        out.put_slice(&self.key);
        out.put_slice(&self.value);
        out.freeze()
    }

    /// Decodes log entry data; the key and value share `data`'s buffer.
    ///
    /// # Errors
    /// [`DecodeError`] for an unknown version, kind or op, a short header, a key length past
    /// the end, or a delete that carries a value.
    pub fn decode(data: &Bytes) -> Result<Self, DecodeError> {
        let short = || DecodeError(format!("{} bytes is shorter than a header", data.len()));
        let Some(&[version, kind]) = data.get(..2) else { return Err(short()) };
        if version != COMMAND_VERSION {
            return Err(DecodeError(format!("unknown command version {version}")));
        }
        let (kind, expects_session, condition, header_bytes) = if kind == CONDITIONAL_WRITE_KIND {
            let condition: &[u8; CONDITION_BYTES] = data
                .get(2..2 + CONDITION_BYTES)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            let op = op_kind(condition[0])
                .ok_or_else(|| DecodeError(format!("unknown write op {}", condition[0])))?;
            let expects_session = match condition[1] {
                0 => false,
                1 => true,
                other => return Err(DecodeError(format!("expects-session byte {other}"))),
            };
            let expected = u64::from_be_bytes(condition[2..].try_into().expect("8 bytes"));
            (op, expects_session, Some(Version(expected)), HEADER_BYTES + CONDITION_BYTES)
        } else {
            let (op, expects_session) = write_kind(kind)
                .ok_or_else(|| DecodeError(format!("unknown write kind {kind}")))?;
            (op, expects_session, None, HEADER_BYTES)
        };
        // The fields every write has, after the kind (and the condition).
        let fields = data.get(header_bytes - FIELDS_BYTES..header_bytes).ok_or_else(short)?;
        let u64_at = |at: usize| u64::from_be_bytes(fields[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_be_bytes(fields[at..at + 4].try_into().expect("4"));
        let key_len = u32_at(20) as usize;
        let key_end = header_bytes
            .checked_add(key_len)
            .filter(|end| *end <= data.len())
            .ok_or_else(|| DecodeError(format!("key length {key_len} runs past the entry")))?;
        let value = data.slice(key_end..);
        if kind == WriteKind::Delete && !value.is_empty() {
            return Err(DecodeError("a delete carries a value".into()));
        }
        Ok(Self {
            kind,
            client: ClientId(u64_at(0)),
            seq: u64_at(8),
            shard: ShardId(u32_at(16)),
            key: data.slice(header_bytes..key_end),
            value,
            expects_session,
            condition,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn write(kind: WriteKind, key: &str, value: &str) -> KvWrite {
        KvWrite {
            kind,
            client: ClientId(u64::MAX - 3),
            seq: 42,
            shard: ShardId(63),
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            expects_session: false,
            condition: None,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for command in [
            write(WriteKind::Put, "k1", "v"),
            write(WriteKind::Append, "", "tail"),
            write(WriteKind::Delete, "gone", ""),
        ] {
            let expecting = KvWrite { expects_session: true, ..command.clone() };
            let conditional = KvWrite { condition: Some(Version(5)), ..expecting.clone() };
            let create_only = KvWrite { condition: Some(Version::ABSENT), ..command.clone() };
            assert_eq!(KvWrite::decode(&command.encode()), Ok(command));
            for write in [expecting, conditional, create_only] {
                assert_eq!(KvCommand::decode(&write.encode()), Ok(KvCommand::Write(write)));
            }
        }
    }

    #[test]
    fn malformed_entries_are_refused() {
        let good = write(WriteKind::Put, "key", "value").encode();
        let mut bad_version = good.to_vec();
        bad_version[0] = 2;
        let mut bad_kind = good.to_vec();
        bad_kind[1] = 14;
        let mut long_key = good.to_vec();
        long_key[22..26].copy_from_slice(&1000u32.to_be_bytes());
        let mut delete_with_value = good.to_vec();
        delete_with_value[1] = 3;
        let mut expecting_delete_with_value = good.to_vec();
        expecting_delete_with_value[1] = 11;
        let conditional =
            KvWrite { condition: Some(Version(3)), ..write(WriteKind::Put, "key", "v") }.encode();
        let mut bad_op = conditional.to_vec();
        bad_op[2] = 4;
        let mut bad_expects_session = conditional.to_vec();
        bad_expects_session[3] = 2;
        let mut conditional_delete_with_value = conditional.to_vec();
        conditional_delete_with_value[2] = 3;
        let mut conditional_long_key = conditional.to_vec();
        conditional_long_key[32..36].copy_from_slice(&1000u32.to_be_bytes());
        for bad in [
            bad_version,
            bad_kind,
            long_key,
            delete_with_value,
            expecting_delete_with_value,
            good[..10].to_vec(),
            bad_op,
            bad_expects_session,
            conditional_delete_with_value,
            conditional_long_key,
            conditional[..30].to_vec(),
        ] {
            assert!(KvWrite::decode(&Bytes::from(bad.clone())).is_err(), "{bad:02x?} decoded");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = KvWrite::decode(&Bytes::from(bytes));
        }

        #[test]
        fn arbitrary_writes_round_trip(
            kind in 0u8..3, client: u64, seq: u64, shard: u32,
            key in proptest::collection::vec(any::<u8>(), 0..40),
            value in proptest::collection::vec(any::<u8>(), 0..40),
            expects_session: bool, condition: Option<u64>,
        ) {
            let kind = [WriteKind::Put, WriteKind::Append, WriteKind::Delete][kind as usize];
            let value = if kind == WriteKind::Delete { Vec::new() } else { value };
            let command = KvWrite {
                kind, client: ClientId(client), seq, shard: ShardId(shard),
                key: Bytes::from(key), value: Bytes::from(value), expects_session,
                condition: condition.map(Version),
            };
            prop_assert_eq!(KvWrite::decode(&command.encode()), Ok(command));
        }
    }
}
