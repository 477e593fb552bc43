//! Atomic batches ([`Batch`]): conditions on the versions of keys and writes to keys of one
//! shard, applied by the shard's group all together, in one log entry, or not at all
//! (docs/api.md "Batches"). Keys meant to change together share a hash tag
//! ([`crate::hash_tag`]), which puts them in one shard; a batch whose keys are in different
//! shards is refused before anything is sent.

use bytes::Bytes;
use mosaic_proto::pb;
use mosaic_types::shard_for_key;

/// An atomic batch, built by chaining: `Batch::new().expect_version("{u}:a", 3).put("{u}:a",
/// "x").delete("{u}:b")`. The conditions are checked first, all of them; the writes then take
/// effect in the order given (a later write of a key sees an earlier one), at one new
/// revision of the shard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub(crate) conditions: Vec<pb::BatchCondition>,
    pub(crate) writes: Vec<pb::BatchWrite>,
}

impl Batch {
    /// An empty batch (one needs a write before it is run).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition: `key`'s version must be `version` (0: `key` has no value).
    #[must_use]
    pub fn expect_version(mut self, key: impl Into<Bytes>, version: u64) -> Self {
        self.conditions.push(pb::BatchCondition { key: key.into(), version });
        self
    }

    /// Adds a write setting `key` to `value`.
    #[must_use]
    pub fn put(self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.write(pb::BatchOp::Put, key.into(), value.into())
    }

    /// Adds a write appending `value` to `key`'s value (an absent key counts as empty).
    #[must_use]
    pub fn append(self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.write(pb::BatchOp::Append, key.into(), value.into())
    }

    /// Adds a write removing `key`.
    #[must_use]
    pub fn delete(self, key: impl Into<Bytes>) -> Self {
        self.write(pb::BatchOp::Delete, key.into(), Bytes::new())
    }

    fn write(mut self, op: pb::BatchOp, key: Bytes, value: Bytes) -> Self {
        self.writes.push(pb::BatchWrite { op: op.into(), key, value });
        self
    }

    /// Checks that every key the batch names is in one shard of `shard_count`.
    pub(crate) fn check_one_shard(&self, shard_count: u32) -> Result<(), String> {
        let conditions = self.conditions.iter().map(|condition| &condition.key);
        let mut keys = conditions.chain(self.writes.iter().map(|write| &write.key));
        let Some(first) = keys.next() else { return Ok(()) };
        let shard = shard_for_key(first, shard_count);
        match keys.find(|key| shard_for_key(key, shard_count) != shard) {
            None => Ok(()),
            Some(other) => Err(format!(
                "a batch's keys must be in one shard: {first:?} is in shard {shard}, {other:?} \
                 in shard {}; keys with one hash tag ({{...}}) are",
                shard_for_key(other, shard_count)
            )),
        }
    }
}

/// What an atomic batch ([`crate::Client::batch`]) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every condition held and every write took effect; the shard's revision after them, the
    /// version of every key they changed.
    Written {
        /// The revision.
        revision: u64,
    },
    /// A condition did not hold: nothing changed.
    Failed {
        /// The first condition that did not hold, by its place among the batch's conditions
        /// (from 0).
        condition: usize,
        /// Its key's version when the batch was applied (0: absent).
        current: u64,
    },
}

impl BatchOutcome {
    pub(crate) fn of(response: &pb::BatchResponse) -> Self {
        match response.failed_condition {
            Some(condition) => Self::Failed {
                condition: usize::try_from(condition).expect("a u32 fits in a usize"),
                current: response.version,
            },
            None => Self::Written { revision: response.version },
        }
    }
}
