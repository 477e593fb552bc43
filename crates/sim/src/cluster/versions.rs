//! What the versions clients hear must say (docs/api.md "Versions"): a key's version is the
//! shard's revision at its last write, 0 exactly when the key is absent, and the revision only
//! grows, wherever the shard moves. So in a run whose clients write every value once (fresh
//! tokens, never an empty append), a key's non-zero version names one value, and a value one
//! version, whoever heard them and when. That is what makes a compare-and-set on a version the
//! same condition as one on the value the checker models (`client.rs`); a version reused after a
//! shard moved, or a write applied twice, breaks it.
//!
//! Invariant: `by_version` and `by_value` hold the same pairs, each the first time heard.

use std::collections::BTreeMap;

use bytes::Bytes;
use mosaic_shardkv::Version;

/// Every (key, version, value) clients heard, and the first contradiction among them.
#[derive(Debug, Default)]
pub(crate) struct VersionLedger {
    /// `(key, version)` to the value and who heard it.
    by_version: BTreeMap<(Bytes, u64), (Bytes, String)>,
    /// `(key, value)` to the version and who heard it.
    by_value: BTreeMap<(Bytes, Bytes), (u64, String)>,
    violation: Option<String>,
}

impl VersionLedger {
    /// Records that `heard_by` (a client and an operation) heard `key` hold `value` at
    /// `version`. (An absent key has no version on the wire: 0 is implied.)
    pub(crate) fn heard(&mut self, key: &Bytes, value: &Bytes, version: Version, heard_by: &str) {
        if self.violation.is_some() {
            return;
        }
        if version == Version::ABSENT {
            self.violation =
                Some(format!("{heard_by} heard {key:?} hold {value:?} at version 0 (absent)"));
            return;
        }
        let (first_value, first_by) = self
            .by_version
            .entry((key.clone(), version.0))
            .or_insert_with(|| (value.clone(), heard_by.to_owned()));
        if first_value != value {
            self.violation = Some(format!(
                "version {} of {key:?} names two values: {first_value:?} ({first_by}) and \
                 {value:?} ({heard_by})",
                version.0
            ));
            return;
        }
        let (first_version, first_by) = self
            .by_value
            .entry((key.clone(), value.clone()))
            .or_insert_with(|| (version.0, heard_by.to_owned()));
        if *first_version != version.0 {
            self.violation = Some(format!(
                "{key:?} held {value:?} at two versions: {first_version} ({first_by}) and {} \
                 ({heard_by})",
                version.0
            ));
        }
    }

    /// Every value heard for a key in `[start, end)` at a version from `from` to `to`, as
    /// (key, version, value), in key and version order.
    pub(crate) fn heard_between<'a>(
        &'a self,
        start: &Bytes,
        end: &Bytes,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (&'a Bytes, u64, &'a Bytes)> + 'a {
        self.by_version
            .range((start.clone(), 0)..(end.clone(), 0))
            .filter(move |((_, version), _)| (from..=to).contains(version))
            .map(|((key, version), (value, _))| (key, *version, value))
    }

    /// The first contradiction heard, if any.
    pub(crate) fn take_violation(&mut self) -> Option<String> {
        self.violation.take()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mosaic_shardkv::Version;

    use super::VersionLedger;

    fn key() -> Bytes {
        Bytes::from_static(b"k")
    }

    #[test]
    fn the_same_pairs_heard_again_are_consistent() {
        let mut ledger = VersionLedger::default();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        ledger.heard(&key(), &a, Version(3), "get 1");
        ledger.heard(&key(), &a, Version(3), "get 2");
        ledger.heard(&key(), &b, Version(5), "put 4");
        // Another key counts apart.
        ledger.heard(&Bytes::from_static(b"other"), &a, Version(5), "get 5");
        assert_eq!(ledger.take_violation(), None);
    }

    #[test]
    fn a_version_naming_two_values_or_a_value_at_two_versions_is_reported() {
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        let mut ledger = VersionLedger::default();
        ledger.heard(&key(), &a, Version(3), "get 1");
        ledger.heard(&key(), &b, Version(3), "get 2");
        let violation = ledger.take_violation().expect("two values at version 3");
        assert!(violation.contains("version 3 of b\"k\" names two values"), "{violation}");

        let mut ledger = VersionLedger::default();
        ledger.heard(&key(), &a, Version(3), "get 1");
        ledger.heard(&key(), &a, Version(4), "get 2");
        let violation = ledger.take_violation().expect("a at two versions");
        assert!(violation.contains("at two versions: 3 (get 1) and 4 (get 2)"), "{violation}");
    }

    #[test]
    fn a_value_at_version_zero_is_reported() {
        let mut ledger = VersionLedger::default();
        ledger.heard(&key(), &Bytes::from_static(b"a"), Version::ABSENT, "get 2");
        assert!(ledger.take_violation().is_some());
    }
}
