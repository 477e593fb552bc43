//! The record of what clients asked for and what came back: the input of the checker.
//!
//! Each operation is recorded twice: at its call ([`History::record_call`]) and at its
//! completion, either with the result ([`History::record_return`]) or as unknown
//! ([`History::record_unknown`]) when the client gave up without learning whether a write took
//! effect. An operation still pending when the history is checked counts as unknown.
//!
//! Invariants (asserted when recorded, in release builds too):
//! - a client is a sequential process: it calls an operation only once its previous one has
//!   completed (returned or been given up on), and not before that one's return time;
//! - an operation completes at most once, with an output of its kind (a value for a get, a
//!   plain acknowledgement for a write), and never before it was called.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use mosaic_engine::ClientId;

/// An operation's place in its [`History`], in the order the calls were recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u32);

impl OpId {
    /// The operation's index in [`History::operations`].
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a client asked for on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Reads the value (`None` if the key is absent).
    Get,
    /// Sets the value.
    Put(Bytes),
    /// Appends to the value; an absent key counts as empty (so the key then exists, even when
    /// the appended bytes are empty).
    Append(Bytes),
    /// Removes the key.
    Delete,
    /// Sets the value to `new` (`None`: removes the key) if it is `expected` (`None`: absent),
    /// and answers whether it did: [`Output::Written`] or [`Output::ConditionFailed`].
    CompareAndSet {
        /// The value the key must hold for the write to take effect.
        expected: Option<Bytes>,
        /// The value it then holds.
        new: Option<Bytes>,
    },
}

impl Operation {
    /// Whether the operation may change the value (everything but a get).
    #[must_use]
    pub fn is_write(&self) -> bool {
        !matches!(self, Self::Get)
    }
}

/// What an operation does to the value where it is placed, when it takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect<'a> {
    /// The value becomes this (`None`: absent): a put, a delete, a compare-and-set.
    Set(Option<&'a Bytes>),
    /// These bytes are appended.
    Append(&'a Bytes),
}

/// What came back to the client when an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A get's result: the value it read, `None` if the key was absent.
    Value(Option<Bytes>),
    /// A write took effect.
    Written,
    /// A compare-and-set found another value than the one it expected and changed nothing.
    ConditionFailed,
}

/// How (and whether) an operation completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Called, not yet completed. Checked as [`Completion::Unknown`].
    Pending,
    /// The client received `output` at `time`.
    Returned {
        /// The result.
        output: Output,
        /// When the client received it, on the clock of the calls.
        time: u64,
    },
    /// The client gave up (a timeout, a lost connection): a write may have taken effect at any
    /// moment after its call, or never; a get tells nothing and is left out of the check.
    Unknown,
    /// The client gave up on a write after refusals that each said it was not applied (and
    /// no attempt left that might still apply): it never takes effect, and the check leaves
    /// it out, so a get that reads what it wrote is unexplained.
    NotApplied,
}

/// One operation of a [`History`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationRecord {
    /// The operation's id.
    pub id: OpId,
    /// The client that called it.
    pub client: ClientId,
    /// The key it acts on.
    pub key: Bytes,
    /// What it asked for.
    pub operation: Operation,
    /// When it was called. Times are the caller's (logical ticks or virtual nanoseconds): only
    /// their order matters.
    pub call_time: u64,
    /// How it completed.
    pub completion: Completion,
}

impl OperationRecord {
    /// The time the operation returned, `None` if it has not (it may then take effect at any
    /// time after its call).
    #[must_use]
    pub fn return_time(&self) -> Option<u64> {
        match self.completion {
            Completion::Returned { time, .. } => Some(time),
            Completion::Pending | Completion::Unknown | Completion::NotApplied => None,
        }
    }

    /// Whether the check takes this operation into account: a write unless it was not
    /// applied, a get only if it returned.
    #[must_use]
    pub fn is_checked(&self) -> bool {
        match self.completion {
            Completion::Returned { .. } => true,
            Completion::NotApplied => false,
            Completion::Pending | Completion::Unknown => self.operation.is_write(),
        }
    }

    /// The value a get read: `Some(None)` for absent, `None` if this is not a get that
    /// returned.
    #[must_use]
    pub fn read(&self) -> Option<Option<&Bytes>> {
        match &self.completion {
            Completion::Returned { output: Output::Value(value), .. } => Some(value.as_ref()),
            Completion::Returned { output: Output::Written | Output::ConditionFailed, .. }
            | Completion::Pending
            | Completion::Unknown
            | Completion::NotApplied => None,
        }
    }

    /// The value the key must hold where the operation is placed: what a get read, or what a
    /// compare-and-set that took effect expected. `Some(None)` for absent; `None` for any other
    /// operation.
    #[must_use]
    pub fn required(&self) -> Option<Option<&Bytes>> {
        match (&self.operation, &self.completion) {
            (
                Operation::CompareAndSet { expected, .. },
                Completion::Returned { output: Output::Written, .. },
            ) => Some(expected.as_ref()),
            _ => self.read(),
        }
    }

    /// The value the operation compares the key's value with: what a get read, or what a
    /// compare-and-set expected, however it completed. A value compared with is one the
    /// checker must tell apart from every other.
    pub(super) fn compared(&self) -> Option<Option<&Bytes>> {
        match &self.operation {
            Operation::CompareAndSet { expected, .. } => Some(expected.as_ref()),
            Operation::Get | Operation::Put(_) | Operation::Append(_) | Operation::Delete => {
                self.read()
            }
        }
    }

    /// Whether this is a compare-and-set that returned [`Output::ConditionFailed`].
    pub(super) fn condition_failed(&self) -> bool {
        matches!(self.completion, Completion::Returned { output: Output::ConditionFailed, .. })
    }

    /// What the operation does to the value when it takes effect; `None` for a get, and for a
    /// compare-and-set whose condition failed.
    pub(super) fn effect(&self) -> Option<Effect<'_>> {
        match &self.operation {
            Operation::Get => None,
            Operation::Put(value) => Some(Effect::Set(Some(value))),
            Operation::Append(suffix) => Some(Effect::Append(suffix)),
            Operation::Delete => Some(Effect::Set(None)),
            Operation::CompareAndSet { new, .. } => {
                (!self.condition_failed()).then_some(Effect::Set(new.as_ref()))
            }
        }
    }

    /// Whether this operation returned before `other` was called, so that every linearization
    /// puts it first (Herlihy & Wing's real-time order). Equal times count as concurrent.
    #[must_use]
    pub fn precedes(&self, other: &Self) -> bool {
        self.return_time().is_some_and(|time| time < other.call_time)
    }
}

impl fmt::Display for OperationRecord {
    /// One line: `#7 client 3 [120, 180] get -> "ab"`; an unknown completion shows `[120, ?]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} client {} [{}, ", self.id, self.client, self.call_time)?;
        match &self.completion {
            Completion::Returned { time, .. } => write!(f, "{time}] ")?,
            Completion::Pending | Completion::Unknown | Completion::NotApplied => {
                f.write_str("?] ")?;
            }
        }
        match &self.operation {
            Operation::Get => f.write_str("get")?,
            Operation::Put(value) => write!(f, "put {}", ShowValue(Some(value)))?,
            Operation::Append(value) => write!(f, "append {}", ShowValue(Some(value)))?,
            Operation::Delete => f.write_str("delete")?,
            Operation::CompareAndSet { expected, new } => {
                write!(f, "cas {} to {}", ShowValue(expected.as_ref()), ShowValue(new.as_ref()))?
            }
        }
        match &self.completion {
            Completion::Returned { output: Output::Value(value), .. } => {
                write!(f, " -> {}", ShowValue(value.as_ref()))
            }
            Completion::Returned { output: Output::Written, .. } => Ok(()),
            Completion::Returned { output: Output::ConditionFailed, .. } => {
                f.write_str(" -> condition failed")
            }
            Completion::Pending | Completion::Unknown => f.write_str(" (outcome unknown)"),
            Completion::NotApplied => f.write_str(" (not applied)"),
        }
    }
}

/// Values longer than this many bytes are shown by their head, tail and length.
const SHOW_VALUE_BYTES_MAX: usize = 48;

/// Shows a value for a person: `absent`, or the bytes quoted with non-printable ones escaped,
/// long values shortened to their two ends.
pub(crate) struct ShowValue<'a>(pub(crate) Option<&'a Bytes>);

impl fmt::Display for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
            write!(f, "{}", bytes.escape_ascii())
        }
        let Some(value) = self.0 else { return f.write_str("absent") };
        f.write_str("\"")?;
        if value.len() <= SHOW_VALUE_BYTES_MAX {
            escaped(f, value)?;
            return f.write_str("\"");
        }
        let end = SHOW_VALUE_BYTES_MAX / 2;
        escaped(f, &value[..end])?;
        f.write_str("...")?;
        escaped(f, &value[value.len() - end..])?;
        write!(f, "\" ({} bytes)", value.len())
    }
}

/// The operations of a run, in the order their calls were recorded.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<OperationRecord>,
    /// Each client's latest operation.
    latest: BTreeMap<ClientId, OpId>,
}

impl History {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` called `operation` on `key` at `time`, and returns the id to
    /// complete it with.
    ///
    /// # Panics
    /// If the client's previous operation is still pending, or returned after `time` (a client
    /// is a sequential process; use one client id per concurrent caller), or if the history
    /// already holds `u32::MAX` operations.
    pub fn record_call(
        &mut self,
        client: ClientId,
        key: impl Into<Bytes>,
        operation: Operation,
        time: u64,
    ) -> OpId {
        if let Some(previous) = self.latest.get(&client).map(|id| &self.operations[id.index()]) {
            assert!(
                previous.completion != Completion::Pending,
                "client {client} calls at {time} while {previous} is still pending"
            );
            let previous_end = previous.return_time().unwrap_or(previous.call_time);
            assert!(
                previous_end <= time,
                "client {client} calls at {time}, before its previous operation ended: {previous}"
            );
        }
        let id = OpId(u32::try_from(self.operations.len()).expect("at most u32::MAX operations"));
        self.latest.insert(client, id);
        self.operations.push(OperationRecord {
            id,
            client,
            key: key.into(),
            operation,
            call_time: time,
            completion: Completion::Pending,
        });
        id
    }

    /// Records that operation `id` returned `output` at `time`.
    ///
    /// # Panics
    /// If `id` is not in this history or already completed, if `time` is before the call, or if
    /// the output is not of the operation's kind ([`Output::Value`] for a get,
    /// [`Output::Written`] for a write, [`Output::ConditionFailed`] too for a compare-and-set).
    pub fn record_return(&mut self, id: OpId, output: Output, time: u64) {
        let record = self.pending_mut(id);
        assert!(time >= record.call_time, "{record} returns at {time}, before its call");
        let kind_matches = match output {
            Output::Value(_) => !record.operation.is_write(),
            Output::Written => record.operation.is_write(),
            Output::ConditionFailed => {
                matches!(record.operation, Operation::CompareAndSet { .. })
            }
        };
        assert!(kind_matches, "{record} returns {output:?}, which is not an output of its kind");
        record.completion = Completion::Returned { output, time };
    }

    /// Records that the client gave up on write `id` knowing it was not applied.
    ///
    /// # Panics
    /// If `id` is not in this history, already completed, or a get.
    pub fn record_not_applied(&mut self, id: OpId) {
        let record = self.pending_mut(id);
        assert!(record.operation.is_write(), "{record} is a get: only a write is not applied");
        record.completion = Completion::NotApplied;
    }

    /// Records that the client gave up on operation `id` without learning its outcome.
    ///
    /// # Panics
    /// If `id` is not in this history or already completed.
    pub fn record_unknown(&mut self, id: OpId) {
        self.pending_mut(id).completion = Completion::Unknown;
    }

    /// Every operation recorded, indexed by [`OpId::index`].
    #[must_use]
    pub fn operations(&self) -> &[OperationRecord] {
        &self.operations
    }

    /// The operation `id`, if it is in this history.
    #[must_use]
    pub fn get(&self, id: OpId) -> Option<&OperationRecord> {
        self.operations.get(id.index())
    }

    /// The number of operations recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether no operation was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    fn pending_mut(&mut self, id: OpId) -> &mut OperationRecord {
        let count = self.operations.len();
        let record = self
            .operations
            .get_mut(id.index())
            .unwrap_or_else(|| panic!("{id} is not in this history of {count} operations"));
        assert!(record.completion == Completion::Pending, "{record} has already completed");
        record
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::ShowValue;

    #[test]
    fn values_are_quoted_escaped_and_shortened() {
        assert_eq!(ShowValue(None).to_string(), "absent");
        assert_eq!(ShowValue(Some(&Bytes::new())).to_string(), "\"\"");
        assert_eq!(
            ShowValue(Some(&Bytes::from_static(b"a\"\n\xff"))).to_string(),
            r#""a\"\n\xff""#
        );
        let long = Bytes::from(vec![b'x'; 100]);
        let shown = ShowValue(Some(&long)).to_string();
        assert_eq!(shown, format!("\"{}...{}\" (100 bytes)", "x".repeat(24), "x".repeat(24)));
    }
}
