//! The log entries that move shards between groups (DESIGN.md "Shard migration"), and what
//! applying one answers.
//!
//! Encoding, after `version u8 (1) ‖ kind u8`:
//! - kind 4 [`MigrationCommand::Reconfigure`]: the previous then the next configuration, each
//!   as its length (`u32`) and its controller encoding;
//! - kind 8 [`MigrationCommand::InstallChunk`]: `num u64 ‖ shard u32 ‖ from cursor ‖ last u8
//!   (0 or 1) ‖ count u32 ‖ records`, a cursor as [`crate::encoding`] writes it, a record being
//!   `1 ‖ client u64 ‖ length u32 ‖ session record` or `2 ‖ key length u32 ‖ key ‖ value
//!   length u32 ‖ value`. Kind 5, written by versions before pulls resumed, is the same
//!   without the cursor and decodes with `from: None`;
//! - kind 6 [`MigrationCommand::DeleteShard`] and kind 7 [`MigrationCommand::ConfirmHandoff`]:
//!   `num u64 ‖ shard u32`.
//!
//! Every command names the configuration it belongs to, so one that arrives late (a retry, a
//! deposed leader's proposal) changes nothing: a replica applies it only in the state it was
//! meant for.

use bytes::{BufMut, Bytes, BytesMut};
use mosaic_controller::codec::{self, Reader, put_len};
use mosaic_controller::{ConfigNum, Configuration};
use mosaic_engine::{ClientId, ShardCursor, ShardId, ShardRecord};

use crate::encoding::{COMMAND_VERSION, DecodeError, put_bytes, put_cursor, read_cursor};

const RECONFIGURE_KIND: u8 = 4;
const INSTALL_CHUNK_WITHOUT_POSITION_KIND: u8 = 5;
const DELETE_SHARD_KIND: u8 = 6;
const CONFIRM_HANDOFF_KIND: u8 = 7;
const INSTALL_CHUNK_KIND: u8 = 8;
const SESSION_RECORD_TAG: u8 = 1;
const DATA_RECORD_TAG: u8 = 2;

/// A step of a shard migration, replicated through a group's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationCommand {
    /// Switch from configuration `previous` to `next` (`next.num == previous.num + 1`).
    Reconfigure {
        /// The configuration the group is at (or, for a new group, the one before it
        /// appears).
        previous: Configuration,
        /// The configuration to switch to.
        next: Configuration,
    },
    /// Part of a shard being pulled in configuration `num`; `last` marks the final part.
    InstallChunk {
        /// The configuration that gave the shard to this group.
        num: ConfigNum,
        /// The shard.
        shard: ShardId,
        /// Where in the shard the chunk starts: it applies only where the chunks installed
        /// so far end ([`crate::Ownership::resume_point`]), so no part is ever skipped.
        /// `None` only in entries written before pulls resumed: applied wherever the pull is.
        from: Option<ShardCursor>,
        /// Its client sessions and data, as the previous owner's snapshot yields them.
        records: Vec<ShardRecord>,
        /// True on the final chunk: the shard serves once it is applied.
        last: bool,
    },
    /// At the previous owner: the new owner of `shard` in configuration `num` has it; delete
    /// the copy.
    DeleteShard {
        /// The configuration that moved the shard.
        num: ConfigNum,
        /// The shard.
        shard: ShardId,
    },
    /// At the new owner: the previous owner has deleted its copy of `shard`.
    ConfirmHandoff {
        /// The configuration that moved the shard.
        num: ConfigNum,
        /// The shard.
        shard: ShardId,
    },
}

/// What applying a migration command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// It changed the group's state.
    Done,
    /// It no longer applies (already applied, or the group has moved past it): the step it
    /// belongs to is over.
    Stale(String),
    /// It cannot apply yet (the group is behind); retry later.
    NotYet(String),
}

impl MigrationCommand {
    /// Encodes the command as log entry data (see the module documentation).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(COMMAND_VERSION);
        match self {
            Self::Reconfigure { previous, next } => {
                out.put_u8(RECONFIGURE_KIND);
                for config in [previous, next] {
                    let encoded = codec::encode_configuration(config);
                    put_len(&mut out, encoded.len());
                    out.put_slice(&encoded);
                }
            }
            Self::InstallChunk { num, shard, from, records, last } => {
                out.put_u8(if from.is_some() {
                    INSTALL_CHUNK_KIND
                } else {
                    INSTALL_CHUNK_WITHOUT_POSITION_KIND
                });
                out.put_u64(num.0);
                out.put_u32(shard.0);
                if let Some(from) = from {
                    put_cursor(&mut out, from);
                }
                out.put_u8(u8::from(*last));
                put_len(&mut out, records.len());
                for record in records {
                    match record {
                        ShardRecord::Session { client, record } => {
                            out.put_u8(SESSION_RECORD_TAG);
                            out.put_u64(client.0);
                            put_bytes(&mut out, record);
                        }
                        ShardRecord::Data { key, value } => {
                            out.put_u8(DATA_RECORD_TAG);
                            put_bytes(&mut out, key);
                            put_bytes(&mut out, value);
                        }
                    }
                }
            }
            Self::DeleteShard { num, shard } => {
                out.put_u8(DELETE_SHARD_KIND);
                out.put_u64(num.0);
                out.put_u32(shard.0);
            }
            Self::ConfirmHandoff { num, shard } => {
                out.put_u8(CONFIRM_HANDOFF_KIND);
                out.put_u64(num.0);
                out.put_u32(shard.0);
            }
        }
        out.freeze()
    }

    /// Decodes log entry data; keys and values share `data`'s buffer.
    ///
    /// # Errors
    /// [`DecodeError`] for anything [`MigrationCommand::encode`] does not write.
    pub fn decode(data: &Bytes) -> Result<Self, DecodeError> {
        let error = |error: codec::DecodeError| DecodeError(error.0);
        let mut reader = Reader::new(data, "migration command");
        let version = reader.u8().map_err(error)?;
        if version != COMMAND_VERSION {
            return Err(DecodeError(format!("unknown command version {version}")));
        }
        let command = match reader.u8().map_err(error)? {
            RECONFIGURE_KIND => {
                let mut config = || -> Result<Configuration, codec::DecodeError> {
                    let len = reader.count(1)?;
                    codec::decode_configuration(reader.take(len)?)
                };
                let previous = config().map_err(error)?;
                let next = config().map_err(error)?;
                Self::Reconfigure { previous, next }
            }
            kind @ (INSTALL_CHUNK_KIND | INSTALL_CHUNK_WITHOUT_POSITION_KIND) => {
                let num = ConfigNum(reader.u64().map_err(error)?);
                let shard = ShardId(reader.u32().map_err(error)?);
                let from = if kind == INSTALL_CHUNK_KIND {
                    Some(read_cursor(&mut reader).map_err(error)?)
                } else {
                    None
                };
                let last = match reader.u8().map_err(error)? {
                    0 => false,
                    1 => true,
                    other => return Err(DecodeError(format!("last flag {other}"))),
                };
                let count = reader.count(5).map_err(error)?;
                let mut records = Vec::with_capacity(count);
                for _ in 0..count {
                    let record = match reader.u8().map_err(error)? {
                        SESSION_RECORD_TAG => {
                            let client = ClientId(reader.u64().map_err(error)?);
                            let record = read_bytes(&mut reader, data).map_err(error)?;
                            ShardRecord::Session { client, record }
                        }
                        DATA_RECORD_TAG => {
                            let key = read_bytes(&mut reader, data).map_err(error)?;
                            let value = read_bytes(&mut reader, data).map_err(error)?;
                            ShardRecord::Data { key, value }
                        }
                        tag => return Err(DecodeError(format!("unknown record tag {tag}"))),
                    };
                    records.push(record);
                }
                Self::InstallChunk { num, shard, from, records, last }
            }
            kind @ (DELETE_SHARD_KIND | CONFIRM_HANDOFF_KIND) => {
                let num = ConfigNum(reader.u64().map_err(error)?);
                let shard = ShardId(reader.u32().map_err(error)?);
                if kind == DELETE_SHARD_KIND {
                    Self::DeleteShard { num, shard }
                } else {
                    Self::ConfirmHandoff { num, shard }
                }
            }
            kind => return Err(DecodeError(format!("unknown command kind {kind}"))),
        };
        reader.finish().map_err(error)?;
        Ok(command)
    }
}

/// Reads a length-prefixed byte string of `data` without copying it.
fn read_bytes(reader: &mut Reader<'_>, data: &Bytes) -> Result<Bytes, codec::DecodeError> {
    let len = reader.count(1)?;
    Ok(data.slice_ref(reader.take(len)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mosaic_engine::GroupId;
    use mosaic_raft::NodeId;
    use proptest::prelude::*;

    use super::*;
    use crate::command::KvCommand;
    use crate::ownership::{Ownership, ShardState};

    fn commands() -> Vec<MigrationCommand> {
        let previous = Configuration::initial(3);
        let next = Configuration {
            num: ConfigNum(1),
            shards: vec![Some(GroupId(4)), None, Some(GroupId(4))],
            groups: BTreeMap::from([(GroupId(4), vec![NodeId(1), NodeId(2)])]),
        };
        let records = vec![
            ShardRecord::Session { client: ClientId(9), record: Bytes::from_static(b"session") },
            ShardRecord::Data { key: Bytes::from_static(b""), value: Bytes::from_static(b"v") },
            ShardRecord::Data { key: Bytes::from_static(b"k"), value: Bytes::new() },
        ];
        vec![
            MigrationCommand::Reconfigure { previous, next },
            MigrationCommand::InstallChunk {
                num: ConfigNum(3),
                shard: ShardId(1),
                from: Some(ShardCursor::AfterData(Bytes::from_static(b"key"))),
                records: records.clone(),
                last: true,
            },
            MigrationCommand::InstallChunk {
                num: ConfigNum(3),
                shard: ShardId(1),
                from: Some(ShardCursor::AfterSession(ClientId(u64::MAX))),
                records: Vec::new(),
                last: false,
            },
            MigrationCommand::InstallChunk {
                num: ConfigNum(3),
                shard: ShardId(1),
                from: Some(ShardCursor::Start),
                records: records.clone(),
                last: false,
            },
            MigrationCommand::InstallChunk {
                num: ConfigNum(3),
                shard: ShardId(1),
                from: None,
                records,
                last: true,
            },
            MigrationCommand::DeleteShard { num: ConfigNum(u64::MAX), shard: ShardId(0) },
            MigrationCommand::ConfirmHandoff { num: ConfigNum(5), shard: ShardId(u32::MAX - 1) },
        ]
    }

    #[test]
    fn every_command_round_trips_through_the_log_encoding() {
        for command in commands() {
            let encoded = KvCommand::from(command.clone()).encode();
            assert_eq!(KvCommand::decode(&encoded), Ok(KvCommand::Migration(command)));
        }
    }

    #[test]
    fn truncated_or_extended_commands_are_refused() {
        for command in commands() {
            let encoded = command.encode();
            for len in 0..encoded.len() {
                assert!(
                    MigrationCommand::decode(&encoded.slice(..len)).is_err(),
                    "{command:?} cut at {len}"
                );
            }
            let mut longer = encoded.to_vec();
            longer.push(0);
            assert!(MigrationCommand::decode(&Bytes::from(longer)).is_err());
        }
    }

    #[test]
    fn ownership_records_round_trip() {
        let ownership = Ownership {
            num: ConfigNum(12),
            shards: BTreeMap::from([
                (ShardId(0), ShardState::Serving),
                (ShardId(1), ShardState::Pulling { from: GroupId(3) }),
                (ShardId(2), ShardState::Confirming { from: GroupId(3) }),
                (ShardId(3), ShardState::Sending { to: Some(GroupId(5)) }),
                (ShardId(4), ShardState::Sending { to: None }),
            ]),
            sources: BTreeMap::from([(GroupId(3), vec![NodeId(7)])]),
            resume: BTreeMap::from([(ShardId(1), ShardCursor::AfterData(Bytes::from("k")))]),
            shard_count: 8,
        };
        assert_eq!(Ownership::decode(&ownership.encode()), Ok(ownership.clone()));
        let encoded = ownership.encode();
        for len in 0..encoded.len() {
            assert!(Ownership::decode(&encoded[..len]).is_err(), "cut at {len}");
        }
        // Version 2 had no shard count: such a record reads with 0 (not known yet).
        let without_count = Ownership { shard_count: 0, ..ownership };
        let mut version_2 = without_count.encode().to_vec();
        version_2.truncate(version_2.len() - 4);
        version_2[0] = 2;
        assert_eq!(Ownership::decode(&version_2), Ok(without_count.clone()));
        // Version 1 had no resume positions either: such a record reads with none.
        let without_resume = Ownership { resume: BTreeMap::new(), ..without_count };
        let mut version_1 = without_resume.encode().to_vec();
        version_1.truncate(version_1.len() - 8);
        version_1[0] = 1;
        assert_eq!(Ownership::decode(&version_1), Ok(without_resume));
    }

    /// An ownership record of one shard in state `tag` (with `from`), no sources, and
    /// `resume` positions: what `Ownership::encode` refuses to write when it breaks an
    /// invariant.
    fn raw_ownership(tag: u8, from: Option<u64>, resume: &[(u32, ShardCursor)]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u8(2);
        out.put_u64(1);
        put_len(&mut out, 1);
        out.put_u32(0);
        out.put_u8(tag);
        if let Some(from) = from {
            out.put_u64(from);
        }
        codec::put_groups(&mut out, &BTreeMap::new());
        put_len(&mut out, resume.len());
        for (shard, cursor) in resume {
            out.put_u32(*shard);
            put_cursor(&mut out, cursor);
        }
        out.to_vec()
    }

    #[test]
    fn ownership_records_that_break_an_invariant_are_refused() {
        // A resume position for a shard that is not being pulled.
        let serving = raw_ownership(1, None, &[(0, ShardCursor::Start)]);
        let error = Ownership::decode(&serving).unwrap_err();
        assert!(error.0.contains("resumes but is not pulled"), "{error}");
        // A shard pulled from a group whose members are unknown.
        let pulling = raw_ownership(2, Some(3), &[]);
        let error = Ownership::decode(&pulling).unwrap_err();
        assert!(error.0.contains("has no members"), "{error}");
        // The same with the members is a valid record.
        let valid = Ownership {
            num: ConfigNum(1),
            shards: BTreeMap::from([(ShardId(2), ShardState::Pulling { from: GroupId(3) })]),
            sources: BTreeMap::from([(GroupId(3), vec![NodeId(7)])]),
            resume: BTreeMap::new(),
            shard_count: 3,
        };
        assert_eq!(Ownership::decode(&valid.encode()), Ok(valid.clone()));
        // A shard held beyond the cluster's shard count.
        let mut beyond = valid.encode().to_vec();
        let at = beyond.len() - 4;
        beyond[at..].copy_from_slice(&2u32.to_be_bytes());
        let error = Ownership::decode(&beyond).unwrap_err();
        assert!(error.0.contains("the cluster has 2 shards"), "{error}");
    }

    #[test]
    #[should_panic(expected = "never written")]
    fn an_ownership_that_breaks_an_invariant_is_never_encoded() {
        let confirming = Ownership {
            shards: BTreeMap::from([(ShardId(0), ShardState::Confirming { from: GroupId(3) })]),
            ..Ownership::default()
        };
        let _ = confirming.encode();
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(kind in 4u8..9, bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut data = vec![COMMAND_VERSION, kind];
            data.extend(bytes.iter().copied());
            let _ = KvCommand::decode(&Bytes::from(data));
            let _ = Ownership::decode(&bytes);
        }
    }
}
