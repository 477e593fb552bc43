//! The linearizability checker for key-value histories: records what clients called and what
//! came back, and decides whether the results could come from one copy of the data that every
//! operation read or changed atomically at some moment between its call and its return
//! (Herlihy & Wing, "Linearizability: a correctness condition for concurrent objects", 1990).
//!
//! # The model
//!
//! Each key is a register holding `Option<Bytes>`, absent at first: [`Operation::Get`] reads
//! it, [`Operation::Put`] sets it, [`Operation::Append`] appends to it (absent counts as
//! empty), [`Operation::Delete`] makes it absent, [`Operation::CompareAndSet`] sets it (or
//! makes it absent) only if it holds the value expected, and answers whether it did
//! ([`Output::Written`] or [`Output::ConditionFailed`]). One of unknown outcome took effect or
//! not, wherever it is placed, exactly as the value there says. Operations on different keys never
//! constrain each other, so linearizability holds for the history exactly when it holds for
//! each key's operations (Herlihy & Wing's locality): the checker partitions by key and checks
//! each part alone, which is what keeps it fast.
//!
//! Operation `a` precedes `b` in real time when `a` returned strictly before `b` was called;
//! a linearization must keep that order. An operation of unknown outcome
//! ([`History::record_unknown`], or still pending when checked) never returned: a write may
//! take effect at any moment after its call or never, and a get is left out, since it
//! constrains nothing. A write the client gave up on knowing it was not applied
//! ([`History::record_not_applied`]) is left out as never called: a get that reads its value
//! is unexplained.
//!
//! # The algorithm
//!
//! For each key, in this order:
//!
//! 1. Writes of unknown outcome that no get can have observed (their value or bytes appear in
//!    no value read or expected, and no compare-and-set that failed returned after their
//!    call) are set aside: they can always be placed last, as never taking effect.
//! 2. A check before any search (`last_write.rs`): every get needs a chain of writes that can
//!    leave the value it read, given real time. Stale reads, reads from the future, reads of
//!    values never written, lost appends and appends out of order fail here, in about linear
//!    time, with a report naming each candidate write and why it cannot be the one
//!    ([`Violation::UnexplainedRead`]).
//! 3. The search (`search.rs`): Wing & Gong's depth-first search for an order, with Lowe's
//!    improvements as in Porcupine: candidates are the operations called before the earliest
//!    return not yet placed, and a cache of configurations (placed set as a bitset, interned
//!    value) keeps any configuration from being explored twice. Added to it: gets that read
//!    the current value, and writes no get can observe while the value is unreadable, are
//!    placed without trying alternatives; a write is not placed if some get could then never
//!    read its value (`pruning.rs`); values no get can read collapse into one state; and a
//!    refuted configuration also refutes those with more writes of unknown outcome placed.
//!
//! A key with compare-and-sets that failed is searched twice at most: first without counting
//! what they may have observed (fewer orders, so only a linearization found counts), then, if
//! none was, exactly (see `check_key`).
//!
//! Histories written the way tests and simulations write them (unique values) are checked in
//! close to linear time: 2,000 operations from 10 concurrent clients in milliseconds. A
//! violation the check before the search misses can make the search try every order of the
//! operations before it that the pruning cannot rule out; [`CheckLimits::steps_max`] bounds
//! that work and turns it into an explicit [`KeyOutcome::Unknown`] instead of a hang.
//!
//! A key that is not linearizable comes with a [`Violation`] a person can read when a seed
//! fails: the read no write explains, or the longest linearizable prefix the search built and
//! why nothing could go after it ([`Violation::DeadEnd`]).
//!
//! Every verdict is deterministic: no clock, no randomness, no iteration order of a hash table
//! reaches it.

mod bytes_index;
mod cache;
mod fast_hash;
mod history;
mod last_write;
mod model;
mod pruning;
mod search;
mod verdict;
mod violation;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use bytes::Bytes;
use pruning::FailedConditions;

pub use history::{Completion, History, OpId, Operation, OperationRecord, Output};
pub use verdict::{CheckLimits, KeyOutcome, KeyVerdict, Verdict};
pub use violation::{DeadEnd, ExcludedWriter, Exclusion, Misfit, UnexplainedRead, Violation};

/// Checks every key of `history` with the default [`CheckLimits`].
#[must_use]
pub fn check(history: &History) -> Verdict {
    check_with_limits(history, &CheckLimits::default())
}

/// Checks every key of `history`, each within `limits`.
#[must_use]
pub fn check_with_limits(history: &History, limits: &CheckLimits) -> Verdict {
    let mut by_key: BTreeMap<&Bytes, Vec<&OperationRecord>> = BTreeMap::new();
    for record in history.operations() {
        // A get that never returned is still a key the history touches.
        let operations = by_key.entry(&record.key).or_default();
        if record.is_checked() {
            operations.push(record);
        }
    }
    let keys = by_key.into_iter().map(|(key, operations)| check_key(key, &operations, limits));
    Verdict { keys: keys.collect() }
}

/// Checks the operations of one key. A compare-and-set whose condition failed may have failed
/// because of a write no get observed, which keeps such writes in the search and off its free
/// placements (`pruning.rs`, `search.rs`): costly on long histories. So a relaxed pass that
/// ignores that comes first; a linearization it finds is one, and only its refutation is
/// checked again by the exact pass.
fn check_key(key: &Bytes, operations: &[&OperationRecord], limits: &CheckLimits) -> KeyVerdict {
    let relaxed = check_key_as(key, operations, limits, FailedConditions::Ignored);
    let refuted = !matches!(relaxed.outcome, KeyOutcome::Linearizable { .. });
    if !refuted || !operations.iter().any(|record| record.condition_failed()) {
        return relaxed;
    }
    let exact = check_key_as(key, operations, limits, FailedConditions::Counted);
    KeyVerdict { steps: relaxed.steps + exact.steps, ..exact }
}

/// Checks the operations of one key as `failed` says: sets aside the writes of unknown outcome
/// no get can have observed, looks for a read no write explains, searches, and puts the
/// writes set aside at the end of a linearization found.
fn check_key_as(
    key: &Bytes,
    operations: &[&OperationRecord],
    limits: &CheckLimits,
    failed: FailedConditions,
) -> KeyVerdict {
    let observability = pruning::Observability::new(operations, failed);
    let (left_out, searched): (Vec<&OperationRecord>, Vec<&OperationRecord>) =
        operations.iter().partition(|record| observability.is_unobservable_unknown_write(record));
    if let Some(read) = last_write::unexplained_read(&searched) {
        return KeyVerdict {
            key: key.clone(),
            operation_count: operations.len(),
            steps: 0,
            cached_configurations: 0,
            outcome: KeyOutcome::NotLinearizable(Box::new(Violation::UnexplainedRead(read))),
        };
    }
    let mut result = search::search(&searched, limits, failed);
    if let KeyOutcome::Linearizable { order } = &mut result.outcome {
        order.extend(left_out.iter().map(|record| record.id));
    }
    KeyVerdict {
        key: key.clone(),
        operation_count: operations.len(),
        steps: result.steps,
        cached_configurations: result.cached_configurations,
        outcome: result.outcome,
    }
}
