//! A check before the search: every get needs a chain of writes that can leave what it read.
//! So does every compare-and-set that took effect, for the value it expected; one whose
//! condition failed wrote nothing and is left out, one of unknown outcome is a put or delete
//! that may turn out to change nothing.
//!
//! In a linearization, the value a get reads is left by the last write placed before it (or
//! is the initial absent value, if there is none). That write `w` must produce the value read
//! (a put of it, a delete for absent, an append whose bytes end it), must be called no later
//! than the get returned, and no other write `x` may sit between them in real time (`w`
//! returned before `x` was called, and `x` returned before the get was called), since `x`
//! would then come after `w` and before the get in every linearization. If `w` is an append,
//! the value before it is the value read without `w`'s bytes, and the same holds one level
//! down, with `w` in the place of the get, and with the write found there called no later than
//! every operation above it in the chain returned.
//!
//! A get with no such chain proves the history not linearizable, whatever the order of
//! everything else, and makes a report a person reads at a glance: stale reads, reads from the
//! future, reads of values never written, lost appends and appends out of order all fail here,
//! in about linear time, where the search could have to try every order of the operations
//! before them.
//!
//! Every relation is loosened where exactness would cost (an append of nothing, or one that
//! starts from absent or empty, ends the chain as explained; the constraints of the chains
//! that reach the same value are merged into the loosest), which keeps the check sound: it
//! may miss a violation, never invent one.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::bytes_index::ByBytes;
use super::fast_hash::FastBuildHasher;
use super::history::{Effect, OperationRecord};
use super::violation::{ExcludedWriter, Exclusion, UnexplainedRead};

/// The first get (or compare-and-set that took effect) of `operations` (all on one key; in call
/// order) that no write can explain.
pub(super) fn unexplained_read(operations: &[&OperationRecord]) -> Option<UnexplainedRead> {
    let index = WriteIndex::new(operations);
    let mut gets: Vec<&OperationRecord> =
        operations.iter().copied().filter(|record| record.required().is_some()).collect();
    gets.sort_by_key(|get| (get.call_time, get.id));
    gets.into_iter().find_map(|get| index.unexplained(get))
}

/// The writes of one key, indexed for [`WriteIndex::unexplained`].
struct WriteIndex<'a> {
    operations: &'a [&'a OperationRecord],
    puts: HashMap<&'a [u8], Vec<usize>, FastBuildHasher>,
    /// The distinct lengths of the values put, sorted: a prefix of another length is not
    /// looked up (it could be long).
    put_lengths: Vec<usize>,
    appends: ByBytes<'a>,
    deletes: Vec<usize>,
    /// The writes that can come between two operations (all but empty appends and
    /// compare-and-sets whose condition failed) by call time,
    /// with, for each position, the earliest-returning write from there on:
    /// `earliest_return_from[i]` is the minimum of `(return time, operation)` over
    /// `overwriters[i..]`. Writes of unknown outcome never return, so they come between
    /// nothing and are left out.
    overwriters: Vec<(u64, usize)>,
    earliest_return_from: Vec<(u64, usize)>,
}

impl<'a> WriteIndex<'a> {
    fn new(operations: &'a [&'a OperationRecord]) -> Self {
        let mut puts: HashMap<&[u8], Vec<usize>, FastBuildHasher> = HashMap::default();
        let mut deletes = Vec::new();
        let mut overwriters = Vec::new();
        let mut appends = Vec::new();
        for (index, record) in operations.iter().enumerate() {
            match record.effect() {
                None => continue,
                Some(Effect::Set(Some(value))) => puts.entry(&value[..]).or_default().push(index),
                Some(Effect::Set(None)) => deletes.push(index),
                Some(Effect::Append(bytes)) => {
                    appends.push((index, &bytes[..]));
                    if bytes.is_empty() {
                        continue;
                    }
                }
            }
            if record.return_time().is_some() {
                overwriters.push((record.call_time, index));
            }
        }
        let appends = ByBytes::new(appends.into_iter());
        overwriters.sort_unstable();
        let mut put_lengths: Vec<usize> = puts.keys().map(|value| value.len()).collect();
        put_lengths.sort_unstable();
        put_lengths.dedup();
        let mut earliest_return_from = vec![(u64::MAX, usize::MAX); overwriters.len()];
        let mut earliest = (u64::MAX, usize::MAX);
        for (position, &(_, index)) in overwriters.iter().enumerate().rev() {
            let returned = operations[index].return_time().expect("overwriters returned");
            earliest = earliest.min((returned, index));
            earliest_return_from[position] = earliest;
        }
        Self { operations, puts, put_lengths, appends, deletes, overwriters, earliest_return_from }
    }

    /// A write called after `time` that returned before `before`, if any.
    fn overwritten_after(&self, time: u64, before: u64) -> Option<usize> {
        let first_after = self.overwriters.partition_point(|(call, _)| *call <= time);
        let &(returned, index) = self.earliest_return_from.get(first_after)?;
        (returned < before).then_some(index)
    }

    /// Why `writer` cannot be the last write before an operation called at `next_call`, in a
    /// chain whose operations all return by `deadline`; `None` if it can be.
    fn exclusion(&self, writer: usize, deadline: u64, next_call: u64) -> Option<Exclusion> {
        let record = self.operations[writer];
        if record.call_time > deadline {
            return Some(Exclusion::CalledAfterTheGet);
        }
        let by = self.overwritten_after(record.return_time()?, next_call)?;
        Some(Exclusion::Overwritten { by: self.operations[by].clone() })
    }

    /// Why `get` cannot be explained, if it cannot.
    fn unexplained(&self, get: &OperationRecord) -> Option<UnexplainedRead> {
        let get_return = get.return_time().expect("a get that returned");
        let Some(value) = get.required().expect("a get that returned") else {
            return self.unexplained_absent(get);
        };
        // The chains of last writes, from the get down: `levels[k]` holds the constraints on
        // the write that leaves `value[..k]`, merged (loosened) over the chains that reach
        // it: it must be called by the deadline (no later than every operation above it in
        // the chain returned) and not be overwritten before the operation right above it is
        // called.
        let mut levels: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        levels.insert(value.len(), (get_return, get.call_time));
        let mut excluded = Vec::new();
        while let Some((length, (deadline, next_call))) = levels.pop_last() {
            let at_top = length == value.len();
            let prefix = &value[..length];
            let puts = if self.put_lengths.binary_search(&length).is_ok() {
                self.puts.get(prefix).map_or(&[][..], Vec::as_slice)
            } else {
                &[]
            };
            for &put in puts {
                match self.exclusion(put, deadline, next_call) {
                    None => return None,
                    Some(reason) if at_top => excluded.push((put, reason)),
                    Some(_) => {}
                }
            }
            for append in self.appends.matching(prefix, true) {
                let record = self.operations[append];
                let Some(Effect::Append(bytes)) = record.effect() else { unreachable!() };
                if let Some(reason) = self.exclusion(append, deadline, next_call) {
                    if at_top {
                        excluded.push((append, reason));
                    }
                    continue;
                }
                if bytes.is_empty() || bytes.len() == length {
                    // The value before is the same one, or absent or empty: not followed up.
                    return None;
                }
                let below = length - bytes.len();
                let deadline = deadline.min(record.return_time().unwrap_or(u64::MAX));
                let constraint = levels.entry(below).or_insert((deadline, record.call_time));
                *constraint = (constraint.0.max(deadline), constraint.1.min(record.call_time));
                if at_top {
                    let prior = Bytes::copy_from_slice(&value[..below]);
                    excluded.push((append, Exclusion::PriorValueUnexplained { prior }));
                }
            }
        }
        excluded.sort_by_key(|(writer, _)| *writer);
        let writers = excluded
            .into_iter()
            .map(|(writer, reason)| ExcludedWriter {
                writer: Some(self.operations[writer].clone()),
                reason,
            })
            .collect();
        Some(UnexplainedRead { get: get.clone(), writers })
    }

    /// Why `get`, which read absent, cannot be explained, if it cannot: absent is left by a
    /// delete or is the initial value.
    fn unexplained_absent(&self, get: &OperationRecord) -> Option<UnexplainedRead> {
        let get_return = get.return_time().expect("a get that returned");
        let mut writers = Vec::with_capacity(self.deletes.len() + 1);
        // The initial value, as if written before everything.
        let by = self.overwritten_before_everything(get)?;
        writers.push(ExcludedWriter {
            writer: None,
            reason: Exclusion::Overwritten { by: self.operations[by].clone() },
        });
        for &delete in &self.deletes {
            let reason = self.exclusion(delete, get_return, get.call_time)?;
            writers.push(ExcludedWriter { writer: Some(self.operations[delete].clone()), reason });
        }
        Some(UnexplainedRead { get: get.clone(), writers })
    }

    /// A write that returned before `get` was called: it comes after the initial value.
    fn overwritten_before_everything(&self, get: &OperationRecord) -> Option<usize> {
        let &(returned, index) = self.earliest_return_from.first()?;
        (returned < get.call_time).then_some(index)
    }
}
