//! The value encodings every engine stores: a small versioned binary format, big-endian.
//!
//! Invariants:
//! - Every encoded value starts with a one-byte format version ([`VALUE_VERSION`]); decoding any
//!   other version fails instead of guessing.
//! - Decoding never panics on any input: short, long or malformed bytes are a [`DecodeError`],
//!   which the engine reports as [`crate::Error::Corruption`] with the key it read.
//! - `decode(encode(x)) == x` for every value (tested below).

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use mosaic_raft::{
    ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, SnapshotMetadata, Term,
};

use crate::ids::{ClusterId, NodeIdentity};

/// The version byte every encoded value starts with.
pub const VALUE_VERSION: u8 = 1;

/// The store format version this build reads and writes (kept in the `meta` column family).
/// 2: shardkv's values carry the key's version and each shard keeps its revision under
/// client id 0 of the `sessions` column family (`mosaic_shardkv::version`), and session
/// records keep what their last write did. 3: a key with a hash tag (`{...}`) is in the shard
/// of its tag (`mosaic_types::shard_for_key`), so such keys stored under format 2 would be in
/// the wrong shard. A store of an earlier format is refused.
pub const FORMAT_VERSION: u32 = 3;

/// Bytes that do not decode as the value they should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What was being decoded and what was wrong.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Reads big-endian fields from a byte slice, failing instead of panicking when it runs out.
struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading a value of kind `what`, checking its version byte.
    fn versioned(what: &'static str, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut reader = Self { what, bytes, position: 0 };
        let version = reader.u8()?;
        if version != VALUE_VERSION {
            return Err(reader.error(format!("unknown value version {version}")));
        }
        Ok(reader)
    }

    fn error(&self, problem: String) -> DecodeError {
        DecodeError { reason: format!("{} ({} bytes): {problem}", self.what, self.bytes.len()) }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.position.checked_add(count).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error(format!("truncated at byte {}", self.position)));
        };
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(raw))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(raw))
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.position..];
        self.position = self.bytes.len();
        rest
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.position != self.bytes.len() {
            return Err(self.error(format!("{} trailing bytes", self.bytes.len() - self.position)));
        }
        Ok(())
    }
}

/// Encodes a log entry: `version ‖ index u64 ‖ term u64 ‖ kind u8 ‖ data`. The index is also in
/// the key; storing it again lets a read catch a value stored under the wrong key.
#[must_use]
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + entry.data.len());
    out.push(VALUE_VERSION);
    out.extend_from_slice(&entry.index.0.to_be_bytes());
    out.extend_from_slice(&entry.term.0.to_be_bytes());
    out.push(match entry.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    });
    out.extend_from_slice(&entry.data);
    out
}

/// Decodes what [`encode_entry`] produced. `value` is the whole stored value; the entry's data
/// is sliced out of it without copying.
///
/// # Errors
/// [`DecodeError`] when the bytes are not an encoded entry.
pub fn decode_entry(value: &Bytes) -> Result<Entry, DecodeError> {
    let mut reader = Reader::versioned("log entry", value)?;
    let index = LogIndex(reader.u64()?);
    let term = Term(reader.u64()?);
    let kind = match reader.u8()? {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        other => return Err(reader.error(format!("unknown entry kind {other}"))),
    };
    let start = reader.position;
    reader.rest();
    Ok(Entry { term, index, kind, data: value.slice(start..) })
}

/// Encodes a hard state: `version ‖ term u64 ‖ vote u64 (0: none) ‖ commit u64`.
#[must_use]
pub fn encode_hard_state(hard_state: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(VALUE_VERSION);
    out.extend_from_slice(&hard_state.term.0.to_be_bytes());
    out.extend_from_slice(&hard_state.vote.map_or(0, |vote| vote.0).to_be_bytes());
    out.extend_from_slice(&hard_state.commit.0.to_be_bytes());
    out
}

/// Decodes what [`encode_hard_state`] produced.
///
/// # Errors
/// [`DecodeError`] when the bytes are not an encoded hard state.
pub fn decode_hard_state(value: &[u8]) -> Result<HardState, DecodeError> {
    let mut reader = Reader::versioned("hard state", value)?;
    let term = Term(reader.u64()?);
    let vote = match reader.u64()? {
        0 => None,
        id => Some(NodeId(id)),
    };
    let commit = LogIndex(reader.u64()?);
    reader.finish()?;
    Ok(HardState { term, vote, commit })
}

fn put_node_set(out: &mut Vec<u8>, nodes: &BTreeSet<NodeId>) {
    let count = u32::try_from(nodes.len()).expect("a membership has fewer than 2^32 nodes");
    out.extend_from_slice(&count.to_be_bytes());
    for node in nodes {
        out.extend_from_slice(&node.0.to_be_bytes());
    }
}

fn read_node_set(reader: &mut Reader<'_>) -> Result<BTreeSet<NodeId>, DecodeError> {
    let count = reader.u32()?;
    let mut nodes = BTreeSet::new();
    let mut previous = 0u64;
    for _ in 0..count {
        let id = reader.u64()?;
        if id <= previous {
            return Err(reader.error(format!("node ids not increasing: {id} after {previous}")));
        }
        previous = id;
        nodes.insert(NodeId(id));
    }
    Ok(nodes)
}

fn put_conf_state(out: &mut Vec<u8>, conf_state: &ConfState) {
    put_node_set(out, &conf_state.voters);
    put_node_set(out, &conf_state.learners);
}

fn read_conf_state(reader: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    let voters = read_node_set(reader)?;
    let learners = read_node_set(reader)?;
    if let Some(both) = voters.intersection(&learners).next() {
        return Err(reader.error(format!("node {both} is both voter and learner")));
    }
    Ok(ConfState { voters, learners })
}

/// Encodes a membership: `version ‖ voters ‖ learners`, each set as `count u32 ‖ ids u64...` in
/// increasing order.
#[must_use]
pub fn encode_conf_state(conf_state: &ConfState) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    put_conf_state(&mut out, conf_state);
    out
}

/// Decodes what [`encode_conf_state`] produced.
///
/// # Errors
/// [`DecodeError`] when the bytes are not an encoded membership, or break its invariants
/// (sorted, disjoint, no node 0).
pub fn decode_conf_state(value: &[u8]) -> Result<ConfState, DecodeError> {
    let mut reader = Reader::versioned("conf state", value)?;
    let conf_state = read_conf_state(&mut reader)?;
    reader.finish()?;
    Ok(conf_state)
}

/// Encodes snapshot metadata: `version ‖ index u64 ‖ term u64 ‖ voters ‖ learners`.
#[must_use]
pub fn encode_snapshot_metadata(metadata: &SnapshotMetadata) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    out.extend_from_slice(&metadata.index.0.to_be_bytes());
    out.extend_from_slice(&metadata.term.0.to_be_bytes());
    put_conf_state(&mut out, &metadata.conf_state);
    out
}

/// Decodes what [`encode_snapshot_metadata`] produced.
///
/// # Errors
/// [`DecodeError`] when the bytes are not encoded snapshot metadata.
pub fn decode_snapshot_metadata(value: &[u8]) -> Result<SnapshotMetadata, DecodeError> {
    let mut reader = Reader::versioned("snapshot metadata", value)?;
    let index = LogIndex(reader.u64()?);
    let term = Term(reader.u64()?);
    let conf_state = read_conf_state(&mut reader)?;
    reader.finish()?;
    Ok(SnapshotMetadata { index, term, conf_state })
}

/// Encodes an applied index: `version ‖ index u64`.
#[must_use]
pub fn encode_applied_index(index: LogIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(VALUE_VERSION);
    out.extend_from_slice(&index.0.to_be_bytes());
    out
}

/// Decodes what [`encode_applied_index`] produced.
///
/// # Errors
/// [`DecodeError`] when the bytes are not an encoded index.
pub fn decode_applied_index(value: &[u8]) -> Result<LogIndex, DecodeError> {
    let mut reader = Reader::versioned("applied index", value)?;
    let index = LogIndex(reader.u64()?);
    reader.finish()?;
    Ok(index)
}

/// Encodes the store format version: 4 bytes big-endian, deliberately without a version byte of
/// its own (it is what says how to read everything else).
#[must_use]
pub fn encode_format_version(version: u32) -> Vec<u8> {
    version.to_be_bytes().to_vec()
}

/// Decodes what [`encode_format_version`] produced.
///
/// # Errors
/// [`DecodeError`] when the value is not 4 bytes.
pub fn decode_format_version(value: &[u8]) -> Result<u32, DecodeError> {
    let raw: [u8; 4] = value.try_into().map_err(|_| DecodeError {
        reason: format!("format version ({} bytes): expected 4 bytes", value.len()),
    })?;
    Ok(u32::from_be_bytes(raw))
}

/// Encodes a node identity: `version ‖ cluster id u64 ‖ node id u64`.
#[must_use]
pub fn encode_identity(identity: &NodeIdentity) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(VALUE_VERSION);
    out.extend_from_slice(&identity.cluster_id.0.to_be_bytes());
    out.extend_from_slice(&identity.node_id.0.to_be_bytes());
    out
}

/// Decodes what [`encode_identity`] produced.
///
/// # Errors
/// [`DecodeError`] when the bytes are not an encoded identity.
pub fn decode_identity(value: &[u8]) -> Result<NodeIdentity, DecodeError> {
    let mut reader = Reader::versioned("node identity", value)?;
    let cluster_id = ClusterId(reader.u64()?);
    let node_id = NodeId(reader.u64()?);
    reader.finish()?;
    Ok(NodeIdentity { cluster_id, node_id })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node_set() -> impl Strategy<Value = BTreeSet<NodeId>> {
        proptest::collection::btree_set(1u64..1000, 0..5)
            .prop_map(|ids| ids.into_iter().map(NodeId).collect())
    }

    fn conf_state() -> impl Strategy<Value = ConfState> {
        (node_set(), node_set()).prop_map(|(voters, learners)| ConfState {
            learners: learners.difference(&voters).copied().collect(),
            voters,
        })
    }

    proptest! {
        #[test]
        fn every_value_round_trips(
            index in any::<u64>(),
            term in any::<u64>(),
            vote in proptest::option::of(1u64..),
            data in proptest::collection::vec(any::<u8>(), 0..64),
            conf_change in any::<bool>(),
            conf in conf_state(),
        ) {
            let kind = if conf_change { EntryKind::ConfChange } else { EntryKind::Normal };
            let entry =
                Entry { term: Term(term), index: LogIndex(index), kind, data: Bytes::from(data) };
            prop_assert_eq!(decode_entry(&Bytes::from(encode_entry(&entry))).unwrap(), entry);
            let hard = HardState { term: Term(term), vote: vote.map(NodeId), commit: LogIndex(index) };
            prop_assert_eq!(decode_hard_state(&encode_hard_state(&hard)).unwrap(), hard);
            prop_assert_eq!(decode_conf_state(&encode_conf_state(&conf)).unwrap(), conf.clone());
            let metadata =
                SnapshotMetadata { index: LogIndex(index), term: Term(term), conf_state: conf };
            prop_assert_eq!(
                decode_snapshot_metadata(&encode_snapshot_metadata(&metadata)).unwrap(),
                metadata
            );
            let identity = NodeIdentity { cluster_id: ClusterId(term), node_id: NodeId(index) };
            prop_assert_eq!(decode_identity(&encode_identity(&identity)).unwrap(), identity);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_entry(&Bytes::from(bytes.clone()));
            let _ = decode_hard_state(&bytes);
            let _ = decode_conf_state(&bytes);
            let _ = decode_snapshot_metadata(&bytes);
            let _ = decode_applied_index(&bytes);
            let _ = decode_identity(&bytes);
            let _ = decode_format_version(&bytes);
        }
    }

    #[test]
    fn truncated_or_extended_values_are_refused() {
        let hard = encode_hard_state(&HardState::default());
        assert!(decode_hard_state(&hard[..hard.len() - 1]).is_err());
        let mut longer = hard.clone();
        longer.push(0);
        assert!(decode_hard_state(&longer).is_err());
        let mut other_version = hard;
        other_version[0] = 2;
        let error = decode_hard_state(&other_version).unwrap_err();
        assert!(error.reason.contains("unknown value version 2"), "{error}");
    }

    #[test]
    fn a_node_in_both_sets_is_refused() {
        let bad = ConfState::with_voters([1, 2]);
        let mut encoded = encode_conf_state(&bad);
        // Re-encode with learner 2 appended by hand: the set count and one id.
        encoded.truncate(encoded.len() - 4);
        encoded.extend_from_slice(&1u32.to_be_bytes());
        encoded.extend_from_slice(&2u64.to_be_bytes());
        let error = decode_conf_state(&encoded).unwrap_err();
        assert!(error.reason.contains("both voter and learner"), "{error}");
    }
}
