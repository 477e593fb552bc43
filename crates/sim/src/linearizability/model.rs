//! The sequential specification of one key: a register holding `Option<Bytes>`, starting
//! absent, that gets read, put, appended to, deleted and compared-and-set.
//!
//! The search compares and caches states millions of times, so states are interned: each
//! distinct value gets a [`StateId`], and equal values always get the same one.
//!
//! Values no operation compares with collapse into one state, [`StateId::UNREADABLE`]: a
//! present value that is not a prefix of any value a get read or a compare-and-set expected.
//! Until the next put or delete, appends only extend it, so no get can read it or anything it
//! becomes, and every compare-and-set finds it differs from what it expects; all such values
//! behave alike, and merging them lets the cache recognise the many orders of writes that were
//! overwritten unseen as one configuration.
//!
//! Invariants: `values[ids[v]] == v` for every interned value `v`; [`StateId::ABSENT`] is
//! `None`; every other interned value is a prefix of some value in `readable`.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::fast_hash::FastBuildHasher;
use super::history::{Completion, Effect, Operation, OperationRecord, Output};

/// An interned value of the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct StateId(pub(super) u32);

impl StateId {
    /// The absent value, the register's initial state.
    pub(super) const ABSENT: Self = Self(0);
    /// Any present value that no get can read, now or after appends.
    pub(super) const UNREADABLE: Self = Self(1);
}

/// One operation as the register applies it, with its values interned.
#[derive(Clone, Debug)]
pub(super) enum Step {
    /// A get that returned `observed`: it fits only a state equal to it.
    Get { observed: StateId },
    /// A compare-and-set whose condition failed: it fits only a state other than `from`, and
    /// changes nothing.
    Differs { from: StateId },
    /// A put or a delete: the state becomes `value` whatever it was.
    Set { value: StateId },
    /// A compare-and-set: the state becomes `value` if it is `expected`. One that took effect
    /// (`took_effect`) fits only `expected`; one of unknown outcome fits any state and changes
    /// nothing from another.
    SetIf { expected: StateId, value: StateId, took_effect: bool },
    /// An append of `suffix`; `memo_key` identifies the step in the append memo.
    Append { suffix: Bytes, memo_key: u32 },
}

/// The interned register: its values and the appends already computed.
#[derive(Debug)]
pub(super) struct Register {
    /// Indexed by `StateId`; the entry of `UNREADABLE` is a placeholder.
    values: Vec<Option<Bytes>>,
    ids: HashMap<Option<Bytes>, StateId, FastBuildHasher>,
    /// `(state, memo_key)` to the state the append leads to.
    appends: HashMap<(StateId, u32), StateId, FastBuildHasher>,
    /// Every present value some operation compares with (a get read it, a compare-and-set
    /// expected it), sorted.
    readable: Vec<Bytes>,
}

impl Register {
    /// A register for a key whose operations compare with `reads` (the values gets read and
    /// compare-and-sets expected: [`OperationRecord::compared`]).
    pub(super) fn new<'r>(reads: impl Iterator<Item = &'r Option<Bytes>>) -> Self {
        let mut readable: Vec<Bytes> = reads.flatten().cloned().collect();
        readable.sort_unstable();
        readable.dedup();
        let mut register = Self {
            values: Vec::new(),
            ids: HashMap::default(),
            appends: HashMap::default(),
            readable,
        };
        let absent = register.intern(None);
        assert_eq!(absent, StateId::ABSENT, "the absent value is interned first");
        // A placeholder that no lookup finds: `ids` never maps to UNREADABLE.
        register.values.push(None);
        register
    }

    /// The id of `value`, interning it if it is new: [`StateId::UNREADABLE`] for a present
    /// value that is not a prefix of any value compared with.
    ///
    /// # Panics
    /// If more than `u32::MAX` values are interned.
    pub(super) fn intern(&mut self, value: Option<Bytes>) -> StateId {
        if let Some(id) = self.ids.get(&value) {
            return *id;
        }
        if value.as_ref().is_some_and(|bytes| !self.is_readable_prefix(bytes)) {
            return StateId::UNREADABLE;
        }
        let id = StateId(u32::try_from(self.values.len()).expect("at most u32::MAX states"));
        self.values.push(value.clone());
        self.ids.insert(value, id);
        id
    }

    /// Whether `bytes` starts some value compared with: in sorted order, the values it starts
    /// follow it directly.
    fn is_readable_prefix(&self, bytes: &[u8]) -> bool {
        let first_not_below = self.readable.partition_point(|read| &read[..] < bytes);
        self.readable.get(first_not_below).is_some_and(|read| read.starts_with(bytes))
    }

    /// The value `state` stands for: `Ok(None)` for absent, `Err(())` for
    /// [`StateId::UNREADABLE`], which stands for many.
    pub(super) fn value(&self, state: StateId) -> Result<Option<&Bytes>, ()> {
        if state == StateId::UNREADABLE {
            return Err(());
        }
        Ok(self.values[state.0 as usize].as_ref())
    }

    /// How the register applies `record`; `memo_key` must differ between the appends of one
    /// search.
    ///
    /// # Panics
    /// If `record` is a get that did not return a value (the checker leaves those out).
    pub(super) fn compile(&mut self, record: &OperationRecord, memo_key: u32) -> Step {
        match &record.operation {
            Operation::Get => match &record.completion {
                Completion::Returned { output: Output::Value(value), .. } => {
                    Step::Get { observed: self.intern(value.clone()) }
                }
                other => panic!("{record}: a get without a value ({other:?}) cannot be checked"),
            },
            Operation::Put(value) => Step::Set { value: self.intern(Some(value.clone())) },
            Operation::Delete => Step::Set { value: StateId::ABSENT },
            Operation::Append(suffix) => Step::Append { suffix: suffix.clone(), memo_key },
            Operation::CompareAndSet { expected, new } => {
                let expected = self.intern(expected.clone());
                assert_ne!(expected, StateId::UNREADABLE, "{record}: expects a value not compared");
                if record.condition_failed() {
                    return Step::Differs { from: expected };
                }
                let value = self.intern(new.clone());
                let took_effect = record.return_time().is_some();
                Step::SetIf { expected, value, took_effect }
            }
        }
    }

    /// The state after `step` from `state`, or `None` if the step cannot happen there (a get
    /// that read something else).
    pub(super) fn apply(&mut self, state: StateId, step: &Step) -> Option<StateId> {
        match step {
            Step::Get { observed } => (*observed == state).then_some(state),
            Step::Differs { from } => (*from != state).then_some(state),
            Step::Set { value } => Some(*value),
            Step::SetIf { expected, value, took_effect } => {
                if state == *expected {
                    Some(*value)
                } else {
                    (!took_effect).then_some(state)
                }
            }
            Step::Append { suffix, memo_key } => {
                let Ok(current) = self.value(state) else { return Some(StateId::UNREADABLE) };
                if let Some(next) = self.appends.get(&(state, *memo_key)) {
                    return Some(*next);
                }
                let current = current.map_or(&[][..], |value| &value[..]);
                let mut joined = BytesMut::with_capacity(current.len() + suffix.len());
                joined.extend_from_slice(current);
                joined.extend_from_slice(suffix);
                let next = self.intern(Some(joined.freeze()));
                self.appends.insert((state, *memo_key), next);
                Some(next)
            }
        }
    }
}

/// The value after applying `operations` in order from absent, with no interning: for
/// reports, where the register may only know that a value is unreadable.
pub(super) fn replay<'r>(operations: impl Iterator<Item = &'r OperationRecord>) -> Option<Bytes> {
    let mut value: Option<Bytes> = None;
    for record in operations {
        if let Operation::CompareAndSet { expected, .. } = &record.operation
            && *expected != value
        {
            continue;
        }
        match record.effect() {
            None => {}
            Some(Effect::Set(new)) => value = new.cloned(),
            Some(Effect::Append(suffix)) => {
                let mut joined = BytesMut::from(value.as_deref().unwrap_or_default());
                joined.extend_from_slice(suffix);
                value = Some(joined.freeze());
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{Register, StateId, Step};

    fn register(reads: &[Option<&'static str>]) -> Register {
        let reads: Vec<Option<Bytes>> =
            reads.iter().map(|read| read.map(|text| Bytes::from_static(text.as_bytes()))).collect();
        Register::new(reads.iter())
    }

    fn append(suffix: &'static str, memo_key: u32) -> Step {
        Step::Append { suffix: Bytes::from_static(suffix.as_bytes()), memo_key }
    }

    #[test]
    fn equal_values_get_one_id_and_absent_is_not_empty() {
        let mut register = register(&[Some("ab"), Some("")]);
        let ab = register.intern(Some(Bytes::from_static(b"ab")));
        assert_eq!(register.intern(Some(Bytes::from_static(b"ab"))), ab);
        let empty = register.intern(Some(Bytes::new()));
        assert_ne!(empty, StateId::ABSENT);
        assert_eq!(register.intern(None), StateId::ABSENT);
        assert_eq!(register.value(ab), Ok(Some(&Bytes::from_static(b"ab"))));
    }

    #[test]
    fn appends_extend_and_start_from_empty_on_absent() {
        let mut register = register(&[Some("xy")]);
        let x = register.apply(StateId::ABSENT, &append("x", 0)).expect("applies");
        let xy = register.apply(x, &append("y", 1)).expect("applies");
        assert_eq!(register.value(xy), Ok(Some(&Bytes::from_static(b"xy"))));
        // The memo gives the same answer the second time.
        assert_eq!(register.apply(x, &append("y", 1)), Some(xy));
    }

    #[test]
    fn values_no_get_can_read_collapse_into_one_state() {
        let mut register = register(&[Some("ab"), Some("b")]);
        // "a" starts "ab": still readable; "ac" and "c" start nothing read.
        let a = register.apply(StateId::ABSENT, &append("a", 0)).expect("applies");
        assert_ne!(a, StateId::UNREADABLE);
        assert_eq!(register.apply(a, &append("c", 1)), Some(StateId::UNREADABLE));
        assert_eq!(register.intern(Some(Bytes::from_static(b"c"))), StateId::UNREADABLE);
        // Appending to an unreadable value keeps it unreadable; a put or delete resets it.
        assert_eq!(register.apply(StateId::UNREADABLE, &append("b", 2)), Some(StateId::UNREADABLE));
        assert!(register.value(StateId::UNREADABLE).is_err());
        let b = register.intern(Some(Bytes::from_static(b"b")));
        assert_eq!(register.apply(StateId::UNREADABLE, &Step::Set { value: b }), Some(b));
    }

    #[test]
    fn a_get_fits_only_the_value_it_read() {
        let mut register = register(&[Some("a")]);
        let a = register.intern(Some(Bytes::from_static(b"a")));
        let get = Step::Get { observed: a };
        assert_eq!(register.apply(a, &get), Some(a));
        assert_eq!(register.apply(StateId::ABSENT, &get), None);
        assert_eq!(register.apply(StateId::UNREADABLE, &get), None);
    }
}
