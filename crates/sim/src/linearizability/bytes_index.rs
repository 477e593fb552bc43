//! An index of operations by their bytes, for the questions the checker asks of every value a
//! get read: which puts' values start it, which appends' bytes start or end it.

use std::collections::HashMap;

use super::fast_hash::FastBuildHasher;

/// Operations indexed by a byte string each (a put's value, an append's bytes): finds those
/// whose bytes start or end a given value with one hash lookup per distinct length.
///
/// Invariant: `lengths` holds the distinct lengths of the keys of `operations`, sorted.
pub(super) struct ByBytes<'a> {
    operations: HashMap<&'a [u8], Vec<usize>, FastBuildHasher>,
    lengths: Vec<usize>,
}

impl<'a> ByBytes<'a> {
    pub(super) fn new(entries: impl Iterator<Item = (usize, &'a [u8])>) -> Self {
        let mut operations: HashMap<&[u8], Vec<usize>, FastBuildHasher> = HashMap::default();
        for (operation, bytes) in entries {
            operations.entry(bytes).or_default().push(operation);
        }
        let mut lengths: Vec<usize> = operations.keys().map(|bytes| bytes.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        Self { operations, lengths }
    }

    /// The operations whose bytes start `value` (or end it, if `at_end`).
    pub(super) fn matching(&self, value: &[u8], at_end: bool) -> impl Iterator<Item = usize> {
        self.lengths.iter().take_while(move |length| **length <= value.len()).flat_map(
            move |length| {
                let part = if at_end { &value[value.len() - length..] } else { &value[..*length] };
                self.operations.get(part).into_iter().flatten().copied()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::ByBytes;

    #[test]
    fn byte_strings_are_found_at_either_end_of_a_value() {
        let index = ByBytes::new(
            [(0, &b"ab"[..]), (1, &b"b"[..]), (2, &b"abc"[..]), (3, &b"b"[..])].into_iter(),
        );
        let starting: Vec<usize> = index.matching(b"abx", false).collect();
        assert_eq!(starting, [0]);
        let mut ending: Vec<usize> = index.matching(b"xab", true).collect();
        ending.sort_unstable();
        assert_eq!(ending, [0, 1, 3]);
        assert_eq!(index.matching(b"a", true).count(), 0);
    }
}
