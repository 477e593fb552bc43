//! Watches in the simulation (`SimConfig::watches`): a client that has just scanned a tag's
//! keys at a replica asks the same replica to watch them from now on (`KvQuery::Watch`, the
//! state machine's own feed, which the node's watch stream serves in production), and takes
//! what the feed queues at each of its steps, beside its other operations, until the feed ends
//! or the session has run its course.
//!
//! What the feed promises is checked against what clients heard (docs/api.md "Watches"):
//! - while it runs: each event is one revision, after the one before and not before where the
//!   watch started, of keys of the tag only, and every value it puts goes into the version
//!   ledger (`versions.rs`), so a watched value must be at the version gets, scans and writes
//!   name for it;
//! - once the run is over ([`missed_changes`]): nothing is missing. Every version of a key of
//!   the tag that a client heard, from where the session started to the last revision it
//!   covers, must be among its changes (the feed gives every change of its range, whole
//!   revisions, in order, with no gap). A session covers the last revision it received, the
//!   feed's published revision when it read it before taking everything queued (the feed
//!   queues every change up to it by then), and the last revision a `Moved` or `Unowned` end
//!   names (every change up to it comes before the end).
//!
//! A client watches from the revision after the highest version its scan of the tag read (so
//! the feed's kept changes are read too), or from now when the tag held no key.
//!
//! A session is not resumed after its end: following a shard to its next replica is the
//! client library's work (`mosaic_client::watch`), which the simulation does not run.

use std::collections::BTreeMap;

use bytes::Bytes;
use mosaic_shardkv::Version;
use mosaic_shardkv::watch::{WatchEnd, WatchEvent, WatchReceiver};
use tokio::sync::mpsc::error::TryRecvError;

use crate::cluster::Time;
use crate::cluster::versions::VersionLedger;

/// A session ends after this many revisions...
const SESSION_REVISIONS_MAX: usize = 200;
/// ... or this long after it started.
const SESSION_MS_MAX: Time = 5_000;

/// What one session received.
#[derive(Clone, Debug)]
pub(crate) struct WatchedSpan {
    /// Who watched (a client), for a report.
    pub(crate) watcher: String,
    /// The keys watched: `[start, end)`.
    pub(crate) range: (Bytes, Bytes),
    /// The first revision it could receive.
    pub(crate) from: u64,
    /// Each revision received, with its changes (key, value; `None` for a delete).
    pub(crate) revisions: BTreeMap<u64, Vec<(Bytes, Option<Bytes>)>>,
    /// The last revision the feed promised every change up to (see the module
    /// documentation); 0 when it promised none.
    pub(crate) covered: u64,
}

impl WatchedSpan {
    /// The last revision received (`from - 1` when none was).
    fn last(&self) -> u64 {
        self.revisions.keys().next_back().copied().unwrap_or(self.from - 1)
    }

    /// The last revision whose changes the span must hold, all of them.
    fn covered(&self) -> u64 {
        self.last().max(self.covered)
    }
}

/// A session in progress.
#[derive(Debug)]
pub(crate) struct WatchSession {
    receiver: WatchReceiver,
    started: Time,
    span: WatchedSpan,
    /// Revisions received are left out of the span (`SimConfig::watches_lose_revisions`).
    loses_revisions: bool,
}

impl WatchSession {
    /// A session of `receiver`, registered by `watcher` at `now` for the keys of `range`;
    /// one that `loses_revisions` keeps every third revision it receives without its changes
    /// (a deliberate bug).
    pub(crate) fn new(
        watcher: String,
        range: (Bytes, Bytes),
        receiver: WatchReceiver,
        now: Time,
        loses_revisions: bool,
    ) -> Self {
        let from = receiver.from;
        let span = WatchedSpan { watcher, range, from, revisions: BTreeMap::new(), covered: 0 };
        Self { receiver, started: now, span, loses_revisions }
    }

    /// Takes what the feed queued; each put goes into `versions`. Returns the span once the
    /// session is over (its feed ended, or it ran its course at `now`), and the first broken
    /// promise of the feed, if any.
    pub(crate) fn drain(
        &mut self,
        versions: &mut VersionLedger,
        now: Time,
    ) -> (Option<WatchedSpan>, Option<String>) {
        // Every change up to it is queued by now.
        let published = self.receiver.published();
        loop {
            let revisions = self.span.revisions.len();
            if revisions >= SESSION_REVISIONS_MAX || now >= self.started + SESSION_MS_MAX {
                return (Some(self.span.clone()), None);
            }
            let changes = match self.receiver.try_recv() {
                Ok(WatchEvent::Changes(changes)) => changes,
                Ok(WatchEvent::End(
                    WatchEnd::Moved { revision } | WatchEnd::Unowned { revision },
                )) => {
                    self.span.covered = self.span.covered.max(revision);
                    return (Some(self.span.clone()), None);
                }
                Ok(WatchEvent::End(WatchEnd::Reset | WatchEnd::Lagged))
                | Err(TryRecvError::Disconnected) => {
                    return (Some(self.span.clone()), None);
                }
                Err(TryRecvError::Empty) => {
                    self.span.covered = self.span.covered.max(published);
                    return (None, None);
                }
            };
            let Some(revision) = changes.first().map(|change| change.revision) else {
                return (None, Some(format!("{}: an event without a change", self.span.watcher)));
            };
            let (start, end) = &self.span.range;
            let misfit = changes.iter().find(|change| {
                change.revision != revision || change.key < start || change.key >= end
            });
            if revision <= self.span.last() || misfit.is_some() {
                return (
                    None,
                    Some(format!(
                        "{} watching from revision {}: revision {revision} after {} ({changes:?})",
                        self.span.watcher,
                        self.span.from,
                        self.span.last()
                    )),
                );
            }
            let heard_by = format!("{}: watch", self.span.watcher);
            for change in &changes {
                if let Some(value) = &change.value {
                    versions.heard(&change.key, value, Version(revision), &heard_by);
                }
            }
            let lost = self.loses_revisions && self.span.revisions.len() % 3 == 2;
            let changes = if lost {
                Vec::new()
            } else {
                changes.into_iter().map(|change| (change.key, change.value)).collect()
            };
            self.span.revisions.insert(revision, changes);
        }
    }

    /// The span so far (for a session still open when the run ends).
    pub(crate) fn span(&self) -> WatchedSpan {
        self.span.clone()
    }
}

/// The first version a client heard that a span covering it does not hold: a key of its range
/// put at a revision from where it started to the last it covers, with no change of that key
/// at that revision among its changes.
pub(crate) fn missed_changes(spans: &[WatchedSpan], versions: &VersionLedger) -> Option<String> {
    for span in spans {
        let (start, end) = &span.range;
        for (key, revision, value) in versions.heard_between(start, end, span.from, span.covered())
        {
            let seen = span.revisions.get(&revision).is_some_and(|changes| {
                changes.iter().any(|(changed, new)| changed == key && new.as_ref() == Some(value))
            });
            if !seen {
                return Some(format!(
                    "{} watched revisions {} to {} of {start:?}..{end:?} and missed {key:?} put \
                     to {value:?} at revision {revision} (it received {:?})",
                    span.watcher,
                    span.from,
                    span.covered(),
                    span.revisions.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Bytes {
        Bytes::from(text.to_owned())
    }

    /// A version heard within a span's revisions must be among its changes; one before the
    /// span started, after its last revision, or of a key outside its range is not its
    /// business.
    #[test]
    fn a_change_heard_within_a_span_and_missing_from_it_is_reported() {
        let mut versions = VersionLedger::default();
        versions.heard(&bytes("{t0}:a"), &bytes("x"), Version(4), "put");
        versions.heard(&bytes("{t0}:b"), &bytes("y"), Version(6), "put");
        versions.heard(&bytes("{t0}:a"), &bytes("old"), Version(2), "put");
        versions.heard(&bytes("{t0}:a"), &bytes("later"), Version(9), "put");
        versions.heard(&bytes("key-1"), &bytes("z"), Version(5), "put");
        let mut span = WatchedSpan {
            watcher: "client 0".into(),
            range: (bytes("{t0}:"), bytes("{t0};")),
            from: 3,
            revisions: BTreeMap::new(),
            covered: 0,
        };
        span.revisions.insert(4, vec![(bytes("{t0}:a"), Some(bytes("x")))]);
        span.revisions.insert(7, vec![(bytes("{t0}:a"), None)]);
        let missed = missed_changes(&[span.clone()], &versions).expect("b at 6 missed");
        assert!(missed.contains("missed b\"{t0}:b\" put to b\"y\" at revision 6"), "{missed}");
        span.revisions.insert(6, vec![(bytes("{t0}:b"), Some(bytes("y")))]);
        assert_eq!(missed_changes(&[span.clone()], &versions), None);
        // A feed that promised every change up to 9 owes the put at 9 too.
        span.covered = 9;
        let missed = missed_changes(&[span.clone()], &versions).expect("a at 9 missed");
        assert!(missed.contains("at revision 9"), "{missed}");
        span.revisions.insert(9, vec![(bytes("{t0}:a"), Some(bytes("later")))]);
        assert_eq!(missed_changes(&[span], &versions), None);
    }
}
