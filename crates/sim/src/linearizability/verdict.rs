//! What the checker concludes, key by key, and the limits on the work it does to get there.

use std::fmt;

use bytes::Bytes;

use super::history::{OpId, ShowValue};
use super::violation::Violation;

/// How much work the checker may do on one key before it gives up with
/// [`KeyOutcome::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// Operations the search may try to place, summed over the whole search of one key. Each
    /// costs about a microsecond with the test profile: the default (10 million) bounds a key
    /// to about ten seconds, where checking a linearizable history of thousands of operations
    /// takes thousands of steps.
    pub steps_max: u64,
    /// Memory for the table of configurations already explored, per key. When it is full the
    /// search goes on without remembering new ones: still sound, only slower.
    pub cache_bytes_max: u64,
}

impl Default for CheckLimits {
    fn default() -> Self {
        Self { steps_max: 10_000_000, cache_bytes_max: 256 << 20 }
    }
}

/// The checker's conclusion for a whole [`History`](super::History).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// One verdict per key the history touches, in key order.
    pub keys: Vec<KeyVerdict>,
}

impl Verdict {
    /// Whether every key's operations are linearizable (an empty history is).
    #[must_use]
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(|key| matches!(key.outcome, KeyOutcome::Linearizable { .. }))
    }

    /// Whether some key's operations are proven not linearizable.
    #[must_use]
    pub fn has_violation(&self) -> bool {
        self.violations().next().is_some()
    }

    /// The keys proven not linearizable, with their reports.
    pub fn violations(&self) -> impl Iterator<Item = (&Bytes, &Violation)> {
        self.keys.iter().filter_map(|key| match &key.outcome {
            KeyOutcome::NotLinearizable(violation) => Some((&key.key, violation.as_ref())),
            KeyOutcome::Linearizable { .. } | KeyOutcome::Unknown => None,
        })
    }

    /// The verdict for `key`, if the history touches it.
    #[must_use]
    pub fn key(&self, key: &[u8]) -> Option<&KeyVerdict> {
        self.keys.iter().find(|verdict| verdict.key == key)
    }
}

impl fmt::Display for Verdict {
    /// A summary line, then a report for every key that is not linearizable or was not decided.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |wanted: fn(&KeyOutcome) -> bool| {
            self.keys.iter().filter(|key| wanted(&key.outcome)).count()
        };
        write!(
            f,
            "linearizability: {} keys, {} linearizable, {} not linearizable, {} undecided",
            self.keys.len(),
            count(|outcome| matches!(outcome, KeyOutcome::Linearizable { .. })),
            count(|outcome| matches!(outcome, KeyOutcome::NotLinearizable(_))),
            count(|outcome| matches!(outcome, KeyOutcome::Unknown)),
        )?;
        for key in &self.keys {
            if !matches!(key.outcome, KeyOutcome::Linearizable { .. }) {
                write!(f, "\n{key}")?;
            }
        }
        Ok(())
    }
}

/// The checker's conclusion for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVerdict {
    /// The key.
    pub key: Bytes,
    /// The operations checked: all of the key's writes, and its gets that returned.
    pub operation_count: usize,
    /// Operations the search tried to place (see [`CheckLimits::steps_max`]).
    pub steps: u64,
    /// Configurations (placed set and value) the search remembered as explored.
    pub cached_configurations: u64,
    /// The conclusion.
    pub outcome: KeyOutcome,
}

impl fmt::Display for KeyVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = ShowValue(Some(&self.key));
        let count = self.operation_count;
        match &self.outcome {
            KeyOutcome::Linearizable { .. } => write!(f, "key {key}: linearizable ({count} ops)"),
            KeyOutcome::NotLinearizable(violation) => {
                write!(f, "key {key}: NOT linearizable ({count} ops)\n{violation}")
            }
            KeyOutcome::Unknown => write!(
                f,
                "key {key}: undecided ({count} ops): the search gave up after {} steps \
                 (CheckLimits::steps_max)",
                self.steps
            ),
        }
    }
}

/// Whether one key's operations are linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    /// They are.
    Linearizable {
        /// A witness: every checked operation in an order that respects real time and in which
        /// every get reads the value the writes before it leave. Writes of unknown outcome
        /// placed after every returned operation can be read as never having taken effect.
        order: Vec<OpId>,
    },
    /// They are not: no order explains them.
    NotLinearizable(Box<Violation>),
    /// The search reached [`CheckLimits::steps_max`] before deciding.
    Unknown,
}
