//! The keys of one hash tag as one object of the checker, which clients change only through
//! atomic batches (`KvBatch`) and read only through scans of the tag's keys (`ShardScan`).
//!
//! Linearizability is local to an object, not to a key: a batch that writes two keys at once
//! is one operation on both. So the keys of tag `t` (`{t}:a`, `{t}:b`, in one shard by the hash
//! tag rule) are one register of the checker, named by the tag (`{t}`, a key no client writes),
//! whose value is the tag's keys and values in key order (`{t}:a=c0.4a;{t}:b=c1.7b;`), absent
//! when the tag holds no key. Then:
//! - a scan of the tag's keys is a get of the register: a scan that saw half a batch reads a
//!   value no operation wrote, and the checker says so;
//! - a batch without conditions writes every key of the tag (a fresh value, or a delete) and is
//!   a put of the register (a delete when it deletes every key);
//! - a batch with conditions names the version the client last heard for every key of the tag
//!   (0, absent, for a key it heard of none) and writes some of them; it is a compare-and-set
//!   of the register, from the value heard to that value with the writes applied. Versions
//!   and values are the same condition for the reason `client.rs` gives for single keys: every
//!   value written is a fresh token, and the versions clients hear are checked to name one
//!   value each (`versions.rs`).
//!
//! Invariant: a register value names every key the tag holds, each once, in key order, so two
//! states of the tag have the same value exactly when they hold the same keys and values.

use std::collections::BTreeMap;

use bytes::Bytes;
use mosaic_raft::SplitMix64;
use mosaic_shardkv::{BatchCondition, BatchWrite, ScanEntry, Version, WriteKind};

use crate::linearizability::Operation;

/// The keys of every tag, after its `{t}:` prefix.
const FIELDS: [&str; 2] = ["a", "b"];

/// What a client heard a tag hold: each present key's value and version.
pub(crate) type TagState = BTreeMap<Bytes, (Bytes, Version)>;

/// The register of tag `tag` in the history.
pub(crate) fn object_key(tag: u32) -> Bytes {
    Bytes::from(format!("{{t{tag}}}"))
}

/// Whether `key` is a tag's register in the history (no client key starts with `{`).
pub(crate) fn is_object_key(key: &[u8]) -> bool {
    key.starts_with(b"{t") && key.ends_with(b"}")
}

/// The first key of tag `tag`'s range (included) and the key after its range (excluded).
pub(crate) fn range(tag: u32) -> (Bytes, Bytes) {
    (Bytes::from(format!("{{t{tag}}}:")), Bytes::from(format!("{{t{tag}}};")))
}

fn field_keys(tag: u32) -> impl Iterator<Item = Bytes> {
    FIELDS.iter().map(move |field| Bytes::from(format!("{{t{tag}}}:{field}")))
}

/// The register value of a tag holding `values` (key to value; `None` when it holds none).
fn register_value<'a>(values: impl IntoIterator<Item = (&'a Bytes, &'a Bytes)>) -> Option<Bytes> {
    let mut encoded = Vec::new();
    for (key, value) in values {
        encoded.extend_from_slice(key);
        encoded.push(b'=');
        encoded.extend_from_slice(value);
        encoded.push(b';');
    }
    (!encoded.is_empty()).then(|| Bytes::from(encoded))
}

/// What a scan read of a tag: the state heard, and the register value read.
pub(crate) fn read(entries: &[ScanEntry]) -> (TagState, Option<Bytes>) {
    let state: TagState = entries
        .iter()
        .map(|entry| (entry.key.clone(), (entry.value.clone(), entry.version)))
        .collect();
    assert_eq!(state.len(), entries.len(), "a scan named a key twice: {entries:?}");
    let value = register_value(entries.iter().map(|entry| (&entry.key, &entry.value)));
    (state, value)
}

/// A batch a client is about to send, and what it means for the tag.
#[derive(Clone, Debug)]
pub(crate) struct PlannedBatch {
    /// The batch's conditions.
    pub(crate) conditions: Vec<BatchCondition>,
    /// The batch's writes.
    pub(crate) writes: Vec<BatchWrite>,
    /// The register operation it is.
    pub(crate) operation: Operation,
    /// What the tag holds once it took effect.
    pub(crate) effect: BatchEffect,
}

/// What a tag holds once a batch took effect.
#[derive(Clone, Debug)]
pub(crate) struct BatchEffect {
    /// The keys it left alone, at the versions heard.
    kept: TagState,
    /// The keys it puts, with their values (at the batch's revision).
    puts: BTreeMap<Bytes, Bytes>,
}

impl BatchEffect {
    /// What the tag holds once the batch took effect at `version`.
    pub(crate) fn state_after(&self, version: Version) -> TagState {
        let mut state = self.kept.clone();
        state.extend(self.puts.iter().map(|(key, value)| (key.clone(), (value.clone(), version))));
        state
    }
}

/// Draws a batch on tag `tag` whose fresh values start with `token`: with conditions on what
/// the client heard (`heard`; `None`: nothing, so every key is expected absent) half of the
/// time, without otherwise.
pub(crate) fn plan_batch(
    tag: u32,
    heard: Option<&TagState>,
    token: &str,
    rng: &mut SplitMix64,
) -> PlannedBatch {
    let conditional = rng.below(2) == 0;
    let expected = heard.cloned().unwrap_or_default();
    let (mut conditions, mut writes) = (Vec::new(), Vec::new());
    let (mut kept, mut puts) = (TagState::new(), BTreeMap::new());
    for (index, key) in field_keys(tag).enumerate() {
        if conditional {
            let version = expected.get(&key).map_or(Version::ABSENT, |(_, version)| *version);
            conditions.push(BatchCondition { key: key.clone(), version });
        }
        // A batch without conditions writes every key; one with conditions may leave one
        // alone, but writes the last if it left every other alone.
        let roll = rng.below(if conditional { 3 } else { 4 });
        let must_write = index + 1 == FIELDS.len() && writes.is_empty();
        match roll {
            2 if conditional && !must_write => {
                if let Some(held) = expected.get(&key) {
                    kept.insert(key, held.clone());
                }
            }
            1 => writes.push(BatchWrite { kind: WriteKind::Delete, key, value: Bytes::new() }),
            _ => {
                let value = Bytes::from(format!("{token}{}", FIELDS[index]));
                writes.push(BatchWrite {
                    kind: WriteKind::Put,
                    key: key.clone(),
                    value: value.clone(),
                });
                puts.insert(key, value);
            }
        }
    }
    let mut after: BTreeMap<&Bytes, &Bytes> =
        kept.iter().map(|(key, (value, _))| (key, value)).collect();
    after.extend(puts.iter());
    let new = register_value(after);
    let operation = if conditional {
        let expected = register_value(expected.iter().map(|(key, (value, _))| (key, value)));
        Operation::CompareAndSet { expected, new }
    } else {
        new.map_or(Operation::Delete, Operation::Put)
    };
    PlannedBatch { conditions, writes, operation, effect: BatchEffect { kept, puts } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, version: u64) -> ScanEntry {
        ScanEntry {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from(value.to_owned()),
            version: Version(version),
        }
    }

    #[test]
    fn a_tag_read_names_every_key_in_order_and_nothing_when_empty() {
        let (state, value) = read(&[entry("{t0}:a", "x", 4), entry("{t0}:b", "y", 6)]);
        assert_eq!(value.as_deref(), Some(&b"{t0}:a=x;{t0}:b=y;"[..]));
        assert_eq!(state[&Bytes::from_static(b"{t0}:b")], (Bytes::from_static(b"y"), Version(6)));
        assert_eq!(read(&[]), (TagState::new(), None));
        assert!(is_object_key(&object_key(3)) && !field_keys(3).any(|key| is_object_key(&key)));
        assert_eq!(range(3), (Bytes::from_static(b"{t3}:"), Bytes::from_static(b"{t3};")));
        assert!(field_keys(3).all(|key| key >= range(3).0 && key < range(3).1));
    }

    #[test]
    fn a_planned_batch_is_the_register_operation_its_writes_make() {
        let mut rng = SplitMix64::new(5);
        let heard: TagState =
            [(Bytes::from_static(b"{t1}:a"), (Bytes::from_static(b"old"), Version(9)))].into();
        let (mut conditional, mut unconditional) = (0, 0);
        for round in 0..200 {
            let token = format!("c0.{round}");
            let batch = plan_batch(1, Some(&heard), &token, &mut rng);
            assert!(!batch.writes.is_empty(), "{batch:?}");
            // The register value after it, from the writes applied to what was heard.
            let mut values: BTreeMap<Bytes, Bytes> =
                heard.iter().map(|(key, (value, _))| (key.clone(), value.clone())).collect();
            for write in &batch.writes {
                match write.kind {
                    WriteKind::Put => values.insert(write.key.clone(), write.value.clone()),
                    WriteKind::Delete => values.remove(&write.key),
                    WriteKind::Append => unreachable!("no append is planned"),
                };
            }
            let after = register_value(values.iter());
            let state = batch.effect.state_after(Version(20));
            let state_value = register_value(state.iter().map(|(key, (value, _))| (key, value)));
            match &batch.operation {
                Operation::CompareAndSet { expected, new } => {
                    conditional += 1;
                    assert_eq!(expected.as_deref(), Some(&b"{t1}:a=old;"[..]));
                    assert_eq!(new, &after);
                    assert_eq!(new, &state_value);
                    let versions: Vec<u64> =
                        batch.conditions.iter().map(|condition| condition.version.0).collect();
                    assert_eq!(versions, [9, 0]);
                }
                operation => {
                    unconditional += 1;
                    assert!(batch.conditions.is_empty());
                    assert_eq!(batch.writes.len(), FIELDS.len(), "every key written");
                    let expected = after.clone().map_or(Operation::Delete, Operation::Put);
                    assert_eq!(operation, &expected);
                    assert_eq!(state_value, after);
                }
            }
        }
        assert!(conditional > 50 && unconditional > 50, "{conditional} and {unconditional}");
    }
}
