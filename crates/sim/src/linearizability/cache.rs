//! The configurations the search already explored (Lowe's cache; Porcupine's `cache`), with
//! dominance for writes of unknown outcome.
//!
//! A configuration is the set of operations placed and the register's value: what can follow
//! depends only on it, so one seen again leads nowhere new. Entries are compared exactly (set
//! and value), so a hash collision costs time, never a wrong answer; and an entry not kept
//! (the cache is full) costs time too, since forgetting a configuration only means exploring
//! it again.
//!
//! Dominance: take two configurations with the same returned operations placed and the same
//! value, where the unknown-outcome writes placed in `a` are a subset of those placed in `b`.
//! Whatever completes `b` completes `a` too, followed by the writes `a` lacks, placed last (a
//! write of unknown outcome may go after everything). So once `a` is finished (refuted), `b`
//! is refuted as well. Only finished entries dominate: an entry still being explored proves
//! nothing yet.

use std::collections::HashMap;

use super::fast_hash::FastBuildHasher;
use super::model::StateId;

/// No entry: the end of a chain.
const NIL: u32 = u32::MAX;

/// The configurations explored, stored flat for memory: `heads` maps a configuration's hash
/// (of its returned operations and value) to its newest entry, each entry links to the
/// previous one with the same hash, and entry `i`'s placed sets are
/// `known_bits[i * known_words..]` (returned operations) and `unknown_bits[i * unknown_words..]`
/// (writes of unknown outcome).
///
/// Invariant: `entries.len() <= entries_max`, and each bits vector holds `entries.len()` sets.
pub(super) struct Cache {
    heads: HashMap<u64, u32, FastBuildHasher>,
    entries: Vec<CacheEntry>,
    known_bits: Vec<u64>,
    unknown_bits: Vec<u64>,
    known_words: usize,
    unknown_words: usize,
    entries_max: usize,
}

/// One configuration kept.
#[derive(Clone, Copy)]
struct CacheEntry {
    state: StateId,
    /// The previous entry with the same hash, or `NIL`.
    next: u32,
    /// Explored to the end without success.
    finished: bool,
}

/// What [`Cache::visit`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Visit {
    /// Seen before, or dominated by a refuted configuration: nothing new to explore.
    Seen,
    /// New; the entry to [`Cache::finish`] once refuted (`None`: the cache is full).
    New(Option<u32>),
}

impl Cache {
    /// An empty cache for placed sets of `known_words` and `unknown_words` words, within about
    /// `bytes_max` bytes.
    pub(super) fn new(known_words: usize, unknown_words: usize, bytes_max: u64) -> Self {
        // An entry costs its bits, itself, and about a slot and a half of the hash table.
        let entry_bytes = ((known_words + unknown_words) * 8 + size_of::<CacheEntry>() + 24) as u64;
        let entries_max = usize::try_from(bytes_max / entry_bytes)
            .unwrap_or(usize::MAX)
            .min(u32::MAX as usize - 1);
        Self {
            heads: HashMap::default(),
            entries: Vec::new(),
            known_bits: Vec::new(),
            unknown_bits: Vec::new(),
            known_words,
            unknown_words,
            entries_max,
        }
    }

    /// The number of configurations kept.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Looks up the configuration (`known` and `unknown` placed, value `state`), whose hash
    /// covers `known` and `state`, and remembers it if it is new.
    pub(super) fn visit(
        &mut self,
        hash: u64,
        known: &[u64],
        unknown: &[u64],
        state: StateId,
    ) -> Visit {
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut entry = head;
        while entry != NIL {
            let CacheEntry { state: entry_state, next, finished } = self.entries[entry as usize];
            let index = entry as usize;
            let entry_known = &self.known_bits[index * self.known_words..][..self.known_words];
            if entry_state == state && entry_known == known {
                let entry_unknown =
                    &self.unknown_bits[index * self.unknown_words..][..self.unknown_words];
                if entry_unknown == unknown {
                    return Visit::Seen;
                }
                let subset = entry_unknown.iter().zip(unknown).all(|(had, has)| had & !has == 0);
                if finished && subset {
                    return Visit::Seen;
                }
            }
            entry = next;
        }
        if self.entries.len() >= self.entries_max {
            return Visit::New(None);
        }
        let index = u32::try_from(self.entries.len()).expect("entries_max < u32::MAX");
        self.entries.push(CacheEntry { state, next: head, finished: false });
        self.known_bits.extend_from_slice(known);
        self.unknown_bits.extend_from_slice(unknown);
        self.heads.insert(hash, index);
        Visit::New(Some(index))
    }

    /// Records that the configuration of `entry` was explored without success.
    pub(super) fn finish(&mut self, entry: u32) {
        self.entries[entry as usize].finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::{Cache, Visit};
    use crate::linearizability::model::StateId;

    const UNLIMITED_BYTES: u64 = 1 << 30;

    #[test]
    fn a_configuration_is_new_once() {
        let mut cache = Cache::new(2, 1, UNLIMITED_BYTES);
        assert_eq!(cache.visit(7, &[1, 0], &[0], StateId(3)), Visit::New(Some(0)));
        assert_eq!(cache.visit(7, &[1, 0], &[0], StateId(3)), Visit::Seen);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn configurations_with_one_hash_are_told_apart_exactly() {
        let mut cache = Cache::new(2, 1, UNLIMITED_BYTES);
        // The same hash for all five: a collision must not make any of them look seen.
        let configurations =
            [([1, 0], 0, 3), ([1, 1], 0, 3), ([1, 0], 0, 4), ([0, 1], 0, 3), ([1, 0], 1, 3)];
        for (known, unknown, state) in configurations {
            assert!(matches!(cache.visit(7, &known, &[unknown], StateId(state)), Visit::New(_)));
        }
        assert_eq!(cache.len(), 5);
        for (known, unknown, state) in configurations {
            assert_eq!(cache.visit(7, &known, &[unknown], StateId(state)), Visit::Seen);
        }
    }

    #[test]
    fn a_refuted_configuration_dominates_those_with_more_unknown_writes_placed() {
        let mut cache = Cache::new(1, 1, UNLIMITED_BYTES);
        let Visit::New(Some(entry)) = cache.visit(1, &[0b11], &[0b01], StateId(2)) else {
            panic!("new")
        };
        // Still being explored: proves nothing about others.
        assert!(matches!(cache.visit(1, &[0b11], &[0b11], StateId(2)), Visit::New(_)));
        cache.finish(entry);
        assert_eq!(cache.visit(1, &[0b11], &[0b101], StateId(2)), Visit::Seen);
        // Fewer unknown writes placed, another value, or other returned operations: not
        // dominated.
        assert!(matches!(cache.visit(1, &[0b11], &[0b00], StateId(2)), Visit::New(_)));
        assert!(matches!(cache.visit(1, &[0b11], &[0b11], StateId(3)), Visit::New(_)));
        assert!(matches!(cache.visit(1, &[0b01], &[0b11], StateId(2)), Visit::New(_)));
    }

    #[test]
    fn a_full_cache_keeps_nothing_more_and_reports_everything_new() {
        // Room for exactly two entries of one word each (8 + 8 + 12 + 24 bytes each).
        let mut cache = Cache::new(1, 1, 104);
        assert_eq!(cache.visit(1, &[1], &[0], StateId(0)), Visit::New(Some(0)));
        assert_eq!(cache.visit(2, &[2], &[0], StateId(0)), Visit::New(Some(1)));
        assert_eq!(cache.visit(3, &[3], &[0], StateId(0)), Visit::New(None));
        assert_eq!(cache.visit(3, &[3], &[0], StateId(0)), Visit::New(None), "not kept");
        assert_eq!(cache.visit(1, &[1], &[0], StateId(0)), Visit::Seen, "kept before");
        assert_eq!(cache.len(), 2);
    }
}
