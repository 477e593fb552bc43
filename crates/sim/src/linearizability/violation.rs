//! Why a key's operations are not linearizable, in the terms a person debugging a failed seed
//! needs: which operations, in which order, and which read could not be explained.

use std::fmt;

use bytes::Bytes;

use super::history::{OperationRecord, ShowValue};

/// Why a key's operations are not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A get that no write can explain, whatever the order of the others: found before any
    /// search, it is the most direct evidence.
    UnexplainedRead(UnexplainedRead),
    /// Every order the search tried got stuck; the deepest point it reached.
    DeadEnd(DeadEnd),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexplainedRead(read) => read.fmt(f),
            Self::DeadEnd(dead_end) => dead_end.fmt(f),
        }
    }
}

/// A get whose value no write can have left: every write that produces that value (or the
/// initial absent value) either is called after the get returned, or is followed in real time
/// by another write that returned before the get was called, so it cannot be the last write
/// before the get. A compare-and-set that took effect reads the value it expected, and is
/// reported the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnexplainedRead {
    /// The get (or compare-and-set that took effect).
    pub get: OperationRecord,
    /// Each write that could produce the value the get read, and why it cannot be the last
    /// write before the get. Empty when no write produces it.
    pub writers: Vec<ExcludedWriter>,
}

/// A write that produces the value an [`UnexplainedRead`] read, and why it cannot explain it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExcludedWriter {
    /// The write; `None` stands for the key's initial absent value.
    pub writer: Option<OperationRecord>,
    /// Why it cannot be the last write before the get.
    pub reason: Exclusion,
}

/// Why a write cannot be the last one before a get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusion {
    /// It was called after the get returned.
    CalledAfterTheGet,
    /// It returned before `by` was called, and `by` (another write) returned before the get
    /// was called: `by` comes between them in every linearization.
    Overwritten {
        /// The write that comes between.
        by: OperationRecord,
    },
    /// It is an append, so the value before it must have been `prior`, and no chain of writes
    /// that may go before it leaves that.
    PriorValueUnexplained {
        /// The value the append must have been applied to.
        prior: Bytes,
    },
}

/// At most this many writers of an [`UnexplainedRead`] are shown.
const SHOWN_WRITERS_MAX: usize = 10;

impl fmt::Display for UnexplainedRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = ShowValue(self.get.required().flatten());
        let reader = match self.get.read() {
            Some(_) => "this get read",
            None => "this compare-and-set took effect on",
        };
        write!(f, "  {reader} a value no write can have left:\n           {}", self.get)?;
        if self.writers.is_empty() {
            return write!(f, "\n  no operation writes {value}");
        }
        write!(f, "\n  no write of {value} can be the last one before it:")?;
        for excluded in self.writers.iter().take(SHOWN_WRITERS_MAX) {
            match &excluded.writer {
                Some(writer) => write!(f, "\n           {writer}")?,
                None => f.write_str("\n           (the initial absent value)")?,
            }
            match &excluded.reason {
                Exclusion::CalledAfterTheGet => {
                    f.write_str("  <- called after the get returned")?;
                }
                Exclusion::Overwritten { by } => write!(
                    f,
                    "  <- overwritten by a write that returned before the get was called: {by}"
                )?,
                Exclusion::PriorValueUnexplained { prior } => write!(
                    f,
                    "  <- it must have appended to {}, which no write that may go before it leaves",
                    ShowValue(Some(prior))
                )?,
            }
        }
        if self.writers.len() > SHOWN_WRITERS_MAX {
            write!(f, "\n           ... and {} more", self.writers.len() - SHOWN_WRITERS_MAX)?;
        }
        Ok(())
    }
}

/// The deepest point the search reached: the longest linearizable prefix it built, and the
/// operations that could not go after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadEnd {
    /// The longest prefix of a linearization the search built, in order. Every other
    /// extension of a prefix failed no later than this one.
    pub prefix: Vec<OperationRecord>,
    /// The key's value after `prefix` (`None`: absent).
    pub value_after_prefix: Option<Bytes>,
    /// The operations that could go next in real-time order, none of which fits: a get that
    /// read something other than `value_after_prefix`, or a write after which some get could
    /// no longer read its value. The first of them to return must be placed before anything
    /// called after that return, so the prefix cannot grow.
    pub stuck: Vec<Misfit>,
    /// The operations searched but neither in `prefix` nor in `stuck`. (Writes of unknown
    /// outcome that no get can have observed are not searched.)
    pub unplaced_count: usize,
}

/// An operation that cannot go after a [`DeadEnd::prefix`], and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misfit {
    /// The operation.
    pub operation: OperationRecord,
    /// For a write: a get not yet placed that could never be placed after it, because none of
    /// the writes left that may go before the get leads to the value it read (none produces
    /// it, or the current value is not a prefix of it and none is a put or delete that could
    /// start it). `None` for a get, which simply read another value.
    pub stranded_get: Option<OperationRecord>,
}

/// At most this many operations of a [`DeadEnd::prefix`] are shown, the last ones.
const SHOWN_PREFIX_OPERATIONS_MAX: usize = 20;

impl fmt::Display for DeadEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let skipped = self.prefix.len().saturating_sub(SHOWN_PREFIX_OPERATIONS_MAX);
        write!(f, "  longest linearizable prefix found: {} operations", self.prefix.len())?;
        if skipped > 0 {
            write!(f, " (the first {skipped} not shown)")?;
        }
        for (position, record) in self.prefix.iter().enumerate().skip(skipped) {
            write!(f, "\n    {:>5}. {record}", position + 1)?;
        }
        let value = ShowValue(self.value_after_prefix.as_ref());
        write!(f, "\n  after it the value is {value}, and no operation that may go next fits:")?;
        for misfit in &self.stuck {
            let record = &misfit.operation;
            write!(f, "\n           {record}")?;
            match (record.required(), &misfit.stranded_get) {
                (Some(read), _) if record.read().is_some() => {
                    write!(f, "  <- read {}, not {value}", ShowValue(read))?;
                }
                (Some(expected), _) if expected != self.value_after_prefix.as_ref() => {
                    write!(f, "  <- took effect on {}, not {value}", ShowValue(expected))?;
                }
                (None, _) if record.condition_failed() => {
                    f.write_str("  <- its condition failed, but the value is the one it expected")?;
                }
                (_, Some(get)) => write!(
                    f,
                    "  <- after it, no write that may still go before this get leads to what it \
                     read: {get}"
                )?,
                (_, None) => f.write_str("  <- every configuration it leads to was refuted")?,
            }
        }
        write!(f, "\n  operations not placed besides these: {}", self.unplaced_count)
    }
}
