//! Pruning by what gets read: rules that let the search drop a choice as soon as it makes some
//! get impossible to place, instead of finding out many placements later.
//!
//! A compare-and-set that took effect reads too: it can only be placed where the value is the
//! one it expected, so every rule counts it as a get of that value (and as the put it also
//! is). One whose condition failed changes nothing; one of unknown outcome is a put that may
//! turn out to change nothing.
//!
//! 1. Writes of unknown outcome that no get can have observed are left out of the search
//!    ([`Observability`]); a linearization without them stays one with them
//!    placed last, never taking effect.
//! 2. Stranded values ([`Pruning::dead_end`]): a get not yet placed read a value other than
//!    the current one, and no write left can produce it.
//! 3. Stranded gets ahead ([`Pruning::stranded_get_ahead`]): the same question for each get
//!    among the next [`LOOKAHEAD_NODES_MAX`] calls and returns, asked only of the writes that
//!    may go before that get (called no later than its return), and with a second condition:
//!    from the current value, only appends, or a put or delete first, can lead to the value it
//!    read. This catches appends placed in an order a later get contradicts.
//!
//! Why 2 and 3 are sound: in any extension of the configuration, each get is placed where the
//! value is what it read. The value there is the current one if no write left goes before it,
//! else the result of the last such write (a "producer": a put of that value, a delete for
//! absent, an append whose bytes end it, a compare-and-set not known to have failed that sets
//! it); and the writes before the get are all called no later than its return. If none of them
//! is a put or delete, the current value (absent counting as empty) is a prefix of what the get
//! read; otherwise the last put or delete before it leaves a prefix of it (a "reset": a put
//! whose value starts it, or a delete when it is absent or starts with some append's bytes; a
//! compare-and-set counts as the put or delete it may be). Every relation here
//! over-approximates, which keeps pruning sound.
//!
//! Invariants: with the placed operations counted out, `producers_left[v]` counts the writes
//! that can produce read value `v`, `gets_left[v]` the gets that read `v`, and `stranded_count`
//! the values with `gets_left > 0` and `producers_left == 0`. Read values are the interned ids
//! some get read; other ids have no entry (read by nothing, they strand nothing).

use bytes::Bytes;

use super::bytes_index::ByBytes;
use super::history::{Effect, OperationRecord};
use super::model::{Register, StateId, Step};

/// How many calls and returns from the front of the list [`Pruning::stranded_get_ahead`]
/// looks at. More catches wrong choices earlier but costs more on every placement.
pub(super) const LOOKAHEAD_NODES_MAX: usize = 32;

/// Rule 1: tells which writes of unknown outcome no get can have observed, so that leaving
/// them out changes no verdict.
///
/// Why: if such a write is placed somewhere in a linearization, every value from it up to the
/// next put or delete shows it: a put's value is a prefix of each, an append's bytes are
/// inside each, and after a delete each is absent or starts with the bytes of the first
/// append after it. No operation compares with such a value (no get read it, no
/// compare-and-set expected it), so no get and no compare-and-set that took effect sits in
/// that stretch, and one of unknown outcome there changed nothing; no compare-and-set that
/// failed sits there either, since every one returned before the write was called (the
/// condition that makes it unobservable). So removing the write, and moving the
/// compare-and-sets of unknown outcome of the stretch to the end, changes no get's value and
/// no outcome. Conversely, a linearization without the write stays one with the write placed
/// last, after every returned operation.
/// Whether [`Observability`] counts compare-and-sets whose condition failed as observing every
/// write called before they returned (as it must to refute soundly), or ignores them (a relaxed
/// pass: it explores fewer orders, so a linearization it finds is one, but its refutation
/// proves nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailedConditions {
    /// Exact: the verdict either way is the definition's.
    Counted,
    /// Relaxed: only a linearization found counts.
    Ignored,
}

pub(super) struct Observability<'a> {
    /// The present values the key's operations compare with, sorted.
    reads: Vec<&'a Bytes>,
    /// Those of `reads` that start no other: every part of a value read is part of one of
    /// them, and with appends they are few (one per stretch between puts and deletes).
    maximal_reads: Vec<&'a Bytes>,
    /// Whether some operation compares with absent or a value starting with some append's
    /// bytes.
    delete_observable: bool,
    /// The latest return of a compare-and-set whose condition failed: a write called no later
    /// may be what made it fail.
    last_failed_condition: Option<u64>,
}

impl<'a> Observability<'a> {
    /// The index for one key's `operations`.
    pub(super) fn new(operations: &[&'a OperationRecord], failed: FailedConditions) -> Self {
        let mut read_absent = false;
        let mut reads = Vec::new();
        let mut last_failed_condition = None;
        for record in operations {
            match record.compared() {
                Some(Some(bytes)) => reads.push(bytes),
                Some(None) => read_absent = true,
                None => {}
            }
            if record.condition_failed() && failed == FailedConditions::Counted {
                last_failed_condition = last_failed_condition.max(record.return_time());
            }
        }
        reads.sort_unstable();
        reads.dedup();
        let appends = ByBytes::new(appends(operations));
        let delete_observable =
            read_absent || reads.iter().any(|read| appends.matching(read, false).next().is_some());
        // In sorted order, a value that starts others is followed by one of them.
        let maximal_reads = reads
            .iter()
            .enumerate()
            .filter(|(index, read)| {
                !reads.get(index + 1).is_some_and(|next| next.starts_with(read))
            })
            .map(|(_, read)| *read)
            .collect();
        Self { reads, maximal_reads, delete_observable, last_failed_condition }
    }

    /// Whether `record` is a write of unknown outcome that no get can have observed.
    pub(super) fn is_unobservable_unknown_write(&self, record: &OperationRecord) -> bool {
        record.return_time().is_none() && self.is_unobservable_write(record)
    }

    /// Whether `record` is a write that no get can have observed (whatever its outcome): in a
    /// linearization, no get and no compare-and-set that failed or took effect sits between it
    /// and the next put or delete.
    pub(super) fn is_unobservable_write(&self, record: &OperationRecord) -> bool {
        if self.last_failed_condition.is_some_and(|time| time >= record.call_time) {
            return false;
        }
        match record.effect() {
            None => false,
            Some(Effect::Set(Some(value))) => {
                // In sorted order, the values `value` starts follow it directly.
                let first_not_below = self.reads.partition_point(|read| *read < value);
                !self.reads.get(first_not_below).is_some_and(|read| read.starts_with(value))
            }
            Some(Effect::Append(suffix)) => {
                !suffix.is_empty()
                    && !self
                        .maximal_reads
                        .iter()
                        .any(|read| read.windows(suffix.len()).any(|part| part == &suffix[..]))
            }
            Some(Effect::Set(None)) => !self.delete_observable,
        }
    }
}

/// A call or a return at the front of the search's list, by operation index.
#[derive(Clone, Copy, Debug)]
pub(super) enum Event {
    /// The operation may go next (nothing before it returned).
    Call(usize),
    /// The operation's return: it must be placed before anything called after this.
    Return(usize),
}

/// The appends of `operations`, by index, with their bytes.
fn appends<'a>(operations: &[&'a OperationRecord]) -> impl Iterator<Item = (usize, &'a [u8])> {
    operations.iter().enumerate().filter_map(|(index, record)| match record.effect() {
        Some(Effect::Append(bytes)) => Some((index, &bytes[..])),
        Some(Effect::Set(_)) | None => None,
    })
}

/// The tables behind the pruning rules, updated as operations are placed and taken back.
#[derive(Debug)]
pub(super) struct Pruning {
    /// For each operation: the value it read, for a get or a compare-and-set that took effect.
    reads: Vec<Option<StateId>>,
    /// For each operation: the read values it can produce (empty for a get).
    produces: Vec<Vec<StateId>>,
    /// For each put (or compare-and-set not known to have failed): the read values its value
    /// starts (a prefix of).
    resets: Vec<Vec<StateId>>,
    /// For each operation: whether it is a delete (or a compare-and-set to absent not known to
    /// have failed).
    is_delete: Vec<bool>,
    /// For each read value: whether it is absent or starts with some append's bytes, so that a
    /// delete can lead to it.
    reachable_after_delete: Vec<bool>,
    producers_left: Vec<u32>,
    gets_left: Vec<u32>,
    stranded_count: u32,
    /// Scratch of [`Self::stranded_get_ahead`]: a value is producible (resettable) in the
    /// current walk when its stamp equals `walk`.
    producible_stamp: Vec<u32>,
    resettable_stamp: Vec<u32>,
    walk: u32,
}

impl Pruning {
    /// The tables with nothing placed, for the operations compiled into `steps`.
    pub(super) fn new(
        steps: &[Step],
        operations: &[&OperationRecord],
        register: &Register,
    ) -> Self {
        let reads: Vec<Option<StateId>> = steps
            .iter()
            .map(|step| match step {
                Step::Get { observed } => Some(*observed),
                Step::SetIf { expected, took_effect: true, .. } => Some(*expected),
                Step::Differs { .. }
                | Step::Set { .. }
                | Step::SetIf { .. }
                | Step::Append { .. } => None,
            })
            .collect();
        let table_len = reads.iter().flatten().map(|value| value.0 as usize + 1).max().unwrap_or(0);
        let mut gets_left = vec![0_u32; table_len];
        for value in reads.iter().flatten() {
            gets_left[value.0 as usize] += 1;
        }
        let is_read = |value: StateId| gets_left.get(value.0 as usize).is_some_and(|n| *n > 0);
        let read_values: Vec<(StateId, Option<&Bytes>)> = (0..table_len)
            .map(|index| StateId(u32::try_from(index).expect("state ids are u32")))
            .filter(|value| is_read(*value))
            .map(|value| (value, register.value(value).expect("a value read is readable")))
            .collect();

        let appends = ByBytes::new(appends(operations));
        let puts = ByBytes::new(operations.iter().enumerate().filter_map(|(index, record)| {
            match record.effect() {
                Some(Effect::Set(Some(bytes))) => Some((index, &bytes[..])),
                Some(Effect::Set(None) | Effect::Append(_)) | None => None,
            }
        }));

        let mut produces: Vec<Vec<StateId>> = steps
            .iter()
            .map(|step| match step {
                Step::Set { value } | Step::SetIf { value, .. } if is_read(*value) => vec![*value],
                Step::Get { .. }
                | Step::Differs { .. }
                | Step::Set { .. }
                | Step::SetIf { .. }
                | Step::Append { .. } => Vec::new(),
            })
            .collect();
        let mut resets = vec![Vec::new(); steps.len()];
        let mut reachable_after_delete = vec![false; table_len];
        for (value, bytes) in &read_values {
            let Some(bytes) = bytes else {
                reachable_after_delete[value.0 as usize] = true;
                continue;
            };
            for append in appends.matching(bytes, true) {
                produces[append].push(*value);
            }
            for put in puts.matching(bytes, false) {
                resets[put].push(*value);
            }
            reachable_after_delete[value.0 as usize] =
                appends.matching(bytes, false).next().is_some();
        }
        let is_delete =
            operations.iter().map(|record| record.effect() == Some(Effect::Set(None))).collect();

        let mut producers_left = vec![0_u32; table_len];
        for value in produces.iter().flatten() {
            producers_left[value.0 as usize] += 1;
        }
        let stranded = (0..table_len).filter(|v| gets_left[*v] > 0 && producers_left[*v] == 0);
        let stranded_count = u32::try_from(stranded.count()).expect("state ids are u32");
        Self {
            reads,
            produces,
            resets,
            is_delete,
            reachable_after_delete,
            producers_left,
            gets_left,
            stranded_count,
            producible_stamp: vec![0; table_len],
            resettable_stamp: vec![0; table_len],
            walk: 0,
        }
    }

    /// Whether some get left reads a value that differs from `state` and that no write left
    /// can produce: if so, nothing placed from here on can succeed.
    pub(super) fn dead_end(&self, state: StateId) -> bool {
        self.stranded_count > u32::from(self.is_stranded(state))
    }

    /// Whether gets left read `value` and no write left can produce it.
    pub(super) fn is_stranded(&self, value: StateId) -> bool {
        let index = value.0 as usize;
        index < self.gets_left.len() && self.gets_left[index] > 0 && self.producers_left[index] == 0
    }

    /// The value get `operation` read (`None` for a write).
    pub(super) fn read_by(&self, operation: usize) -> Option<StateId> {
        self.reads[operation]
    }

    /// A get among `front` (the first calls and returns of the list, in order) that can no
    /// longer be placed from value `state`, by rule 3 of the module documentation. Looks at
    /// [`LOOKAHEAD_NODES_MAX`] events at most.
    pub(super) fn stranded_get_ahead(
        &mut self,
        state: StateId,
        front: impl Iterator<Item = Event>,
        register: &Register,
    ) -> Option<usize> {
        self.walk = self.walk.wrapping_add(1);
        if self.walk == 0 {
            // The stamps wrapped around: clear them so no old stamp matches.
            self.producible_stamp.fill(0);
            self.resettable_stamp.fill(0);
            self.walk = 1;
        }
        let walk = self.walk;
        let mut delete_seen = false;
        for event in front.take(LOOKAHEAD_NODES_MAX) {
            match event {
                Event::Call(operation) => {
                    for value in &self.produces[operation] {
                        self.producible_stamp[value.0 as usize] = walk;
                    }
                    for value in &self.resets[operation] {
                        self.resettable_stamp[value.0 as usize] = walk;
                    }
                    delete_seen |= self.is_delete[operation];
                }
                Event::Return(operation) => {
                    let Some(read) = self.reads[operation].filter(|read| *read != state) else {
                        continue;
                    };
                    let index = read.0 as usize;
                    let producible = self.producible_stamp[index] == walk;
                    let reachable = is_extended_by(register, state, read)
                        || self.resettable_stamp[index] == walk
                        || (delete_seen && self.reachable_after_delete[index]);
                    if !producible || !reachable {
                        return Some(operation);
                    }
                }
            }
        }
        None
    }

    /// Updates the counts for placing `operation`.
    pub(super) fn place(&mut self, operation: usize) {
        self.adjust(operation, false);
    }

    /// Updates the counts for taking back `operation`, undoing [`Self::place`].
    pub(super) fn unplace(&mut self, operation: usize) {
        self.adjust(operation, true);
    }

    fn adjust(&mut self, operation: usize, take_back: bool) {
        if let Some(value) = self.reads[operation] {
            self.count(value, true, take_back);
        }
        for index in 0..self.produces[operation].len() {
            self.count(self.produces[operation][index], false, take_back);
        }
    }

    /// Counts one get reading `value` (`is_read`) or one write producing it, as placed or as
    /// taken back, keeping `stranded_count` in step.
    fn count(&mut self, value: StateId, is_read: bool, take_back: bool) {
        let was_stranded = self.is_stranded(value);
        let counts = if is_read { &mut self.gets_left } else { &mut self.producers_left };
        let count = &mut counts[value.0 as usize];
        *count = if take_back { *count + 1 } else { *count - 1 };
        match (was_stranded, self.is_stranded(value)) {
            (false, true) => self.stranded_count += 1,
            (true, false) => self.stranded_count -= 1,
            (false, false) | (true, true) => {}
        }
    }
}

/// Whether appends alone can lead from `state` to `read`: `read` is present and `state`
/// (absent counting as empty) is a proper prefix of it.
fn is_extended_by(register: &Register, state: StateId, read: StateId) -> bool {
    let Ok(Some(read)) = register.value(read) else { return false };
    match register.value(state) {
        Ok(None) => true,
        Ok(Some(current)) => current.len() < read.len() && read.starts_with(current),
        Err(()) => false,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mosaic_engine::ClientId;

    use super::{FailedConditions, Observability};
    use crate::linearizability::OpId;
    use crate::linearizability::history::{Completion, Operation, OperationRecord, Output};

    fn record(index: u32, operation: Operation, completion: Completion) -> OperationRecord {
        OperationRecord {
            id: OpId(index),
            client: ClientId(1),
            key: Bytes::from_static(b"k"),
            operation,
            call_time: 0,
            completion,
        }
    }

    fn read(index: u32, value: Option<&'static str>) -> OperationRecord {
        let value = value.map(|text| Bytes::from_static(text.as_bytes()));
        record(
            index,
            Operation::Get,
            Completion::Returned { output: Output::Value(value), time: 1 },
        )
    }

    fn unknown(index: u32, operation: Operation) -> OperationRecord {
        record(index, operation, Completion::Unknown)
    }

    fn bytes(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn an_unknown_write_is_observable_when_some_read_can_show_it() {
        let operations = [
            read(0, Some("p1;a2;")),
            unknown(1, Operation::Put(bytes("p1;"))),
            unknown(2, Operation::Append(bytes("a2;"))),
            unknown(3, Operation::Put(bytes("p9;"))),
            unknown(4, Operation::Append(bytes("a9;"))),
            unknown(5, Operation::Append(Bytes::new())),
        ];
        let references: Vec<&OperationRecord> = operations.iter().collect();
        let observability = Observability::new(&references, FailedConditions::Counted);
        let unobservable: Vec<bool> =
            operations.iter().map(|op| observability.is_unobservable_unknown_write(op)).collect();
        // The read value starts with p1 and holds a2; nothing shows p9 or a9; an empty append
        // can turn absent into present, so it always counts as observable.
        assert_eq!(unobservable, [false, false, false, true, true, false]);
    }

    #[test]
    fn an_unknown_delete_is_observable_through_absent_or_a_fresh_append() {
        let delete = unknown(9, Operation::Delete);
        let absent = [read(0, None), delete.clone()];
        let fresh_append =
            [read(0, Some("a1;")), unknown(1, Operation::Append(bytes("a1;"))), delete.clone()];
        let after_put =
            [read(0, Some("p1;a1;")), unknown(1, Operation::Append(bytes("a1;"))), delete.clone()];
        for (operations, observable) in
            [(&absent[..], true), (&fresh_append[..], true), (&after_put[..], false)]
        {
            let references: Vec<&OperationRecord> = operations.iter().collect();
            let observability = Observability::new(&references, FailedConditions::Counted);
            assert_eq!(!observability.is_unobservable_unknown_write(&delete), observable);
        }
    }

    #[test]
    fn a_returned_write_is_never_left_out() {
        let put = record(
            1,
            Operation::Put(bytes("x")),
            Completion::Returned { output: Output::Written, time: 1 },
        );
        let operations = [&put];
        let observability = Observability::new(&operations, FailedConditions::Counted);
        assert!(!observability.is_unobservable_unknown_write(&put));
    }
}
