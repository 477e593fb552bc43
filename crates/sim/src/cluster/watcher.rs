//! Watches in the simulation (`SimConfig::watches`): a client that has just scanned a tag's
//! keys at a replica watches them, one time in two when it watches nothing else, as
//! `mosaic_client::Client::watch` does: the replica's feed (`KvQuery::Watch`, the state
//! machine's own) is framed into stream messages by `mosaic_client::watch_frames` as a node
//! frames it, and read by `mosaic_client::watch_follow::Follow`, whose decisions say what
//! each message gives the reader and what follows a stream's end: watch the shard at its next
//! owner after a move, again at the same replica after a reset, elsewhere after a refusal or
//! a lost stream (`mosaic_client::retry`'s decision, as for any failed attempt). The first
//! stream opens at the replica that answered the scan; later ones where the follow says.
//!
//! As a node does, the watch's replica is checked at the watch's level every
//! [`CHECK_INTERVAL_MS`] (a shard read): a check that passes lets the stream say how far the
//! watcher is up to date, one refused ends it with the refusal, and one unanswered in time
//! (the node down, cut off or stalled) counts as the lost stream a client hears nothing on.
//! A feed dropped without an end (its node crashed) ends the stream as a reset, as at a node.
//!
//! What the watch promises is checked against what clients heard (docs/api.md "Watches"):
//! - while it runs: each revision given follows the one before and holds keys of the tag
//!   only, and every value it puts goes into the version ledger (`versions.rs`), so a watched
//!   value must be at the version gets, scans and writes name for it;
//! - once the run is over ([`missed_changes`]): nothing is missing. Every version of a key of
//!   the tag that a client heard, from where the watch started to the last revision it was up
//!   to date to (the follow's `resume_at`: every revision before it was given), must be among
//!   its changes, whichever replicas and groups served it.
//!
//! A client watches from the revision after the highest version its scan of the tag read (so
//! the feed's kept changes are read too), or from now when the tag held no key. A watch ends
//! when the follow ends it (`Compacted`, a refusal for good), after [`WATCH_REVISIONS_MAX`]
//! revisions, or [`WATCH_MS_MAX`] after it started.

use std::collections::BTreeMap;

use bytes::Bytes;
use mosaic_client::classify::Failure;
use mosaic_client::refusal::to_status;
use mosaic_client::retry::{Leaders, Next, Refresh, Retry, Target, next_member};
use mosaic_client::watch_follow::{Follow, Heard, Then};
use mosaic_client::watch_frames::Frames;
use mosaic_client::{ClientError, Consistency as ClientConsistency, Routing};
use mosaic_engine::{GroupId, ShardId};
use mosaic_proto::pb;
use mosaic_raftstore::{Consistency, Error};
use mosaic_shardkv::Version;
use mosaic_shardkv::watch::{ShardWatch, WatchEnd, WatchEvent, WatchRange, WatchReceiver};
use tokio::sync::mpsc::error::TryRecvError;

use crate::cluster::Time;
use crate::cluster::client::{failure_of, hint_address};
use crate::cluster::rpc::{Io, Request, RequestId, Response};
use crate::cluster::versions::VersionLedger;

/// A watch ends after this many revisions...
const WATCH_REVISIONS_MAX: usize = 200;
/// ... or this long after it started.
const WATCH_MS_MAX: Time = 8_000;
/// How often a stream's replica is checked (a node checks every 2 s).
const CHECK_INTERVAL_MS: Time = 300;
/// A request unanswered for this long failed (`AttemptTimedOut`).
const ANSWER_MS_MAX: Time = 500;
/// The pause before a retry that asks for one, at most (random below it).
const PAUSE_MS_MAX: Time = 40;
/// The node's message limit: small, so that a batch's revision is split over messages.
const MESSAGE_BYTES_MAX: usize = 320;
/// The level its replicas serve at, as the client names it...
const CONSISTENCY: ClientConsistency = ClientConsistency::Linearizable;
/// ... and as the store reads the registration and the checks at.
const STORE_CONSISTENCY: Consistency = Consistency::Linearizable;

/// What one watch received.
#[derive(Clone, Debug)]
pub(crate) struct WatchedSpan {
    /// Who watched (a client), for a report.
    pub(crate) watcher: String,
    /// The keys watched: `[start, end)`.
    pub(crate) range: (Bytes, Bytes),
    /// The first revision it could receive (0 until its first stream said).
    pub(crate) from: u64,
    /// Each revision received, with its changes (key, value; `None` for a delete).
    pub(crate) revisions: BTreeMap<u64, Vec<(Bytes, Option<Bytes>)>>,
    /// Every revision before this one was given (0 when none was known to be).
    pub(crate) resume_at: u64,
    /// The streams it opened.
    pub(crate) streams: u32,
    /// How it ended, if it did before the run.
    pub(crate) ended: Option<String>,
}

impl WatchedSpan {
    /// The last revision received (`from - 1` when none was).
    fn last(&self) -> u64 {
        self.revisions.keys().next_back().copied().unwrap_or(self.from.saturating_sub(1))
    }
}

/// Where the watch's stream stands.
#[derive(Debug)]
enum Stream {
    /// None open: the next opens at `target` (or where the placement and the known leaders
    /// point; at the member after `skip` when a refusal said so) once the client's placement
    /// is fresh, not before `not_before`.
    Closed { target: Option<Target>, skip: Option<mosaic_raft::NodeId>, not_before: Time },
    /// Asked `target` to register it for `group` of `routing` (the placement it was routed
    /// by, which a failure's retry decides over).
    Opening { id: RequestId, target: Target, group: GroupId, routing: Routing, deadline: Time },
    /// Open at `target`.
    Open {
        receiver: WatchReceiver,
        frames: Frames,
        target: Target,
        group: GroupId,
        routing: Routing,
        /// When the next check is due, or the check asked: its id, the feed's revision read
        /// before it, its deadline.
        check: Check,
    },
}

#[derive(Debug)]
enum Check {
    Due(Time),
    Asked { id: RequestId, published: u64, deadline: Time },
}

/// What the client around the watch lends it for a step.
pub(crate) struct Lent<'a, 'b> {
    pub(crate) io: &'a mut Io<'b>,
    /// The client's placement.
    pub(crate) routing: Option<&'a Routing>,
    pub(crate) leaders: &'a mut Leaders,
    /// The client's request for a newer placement (read before its next attempt).
    pub(crate) refresh: &'a mut Option<Refresh>,
    pub(crate) versions: &'a mut VersionLedger,
}

/// A watch in progress. See the module documentation.
#[derive(Debug)]
pub(crate) struct SimWatch {
    follow: Follow,
    stream: Stream,
    retry: Retry,
    started: Time,
    span: WatchedSpan,
    /// Revisions received are left out of the span (`SimConfig::watches_lose_revisions`).
    loses_revisions: bool,
    /// The first broken promise seen.
    violation: Option<String>,
    /// The current stream gave a cause to end the watch `Compacted`, as the watch itself
    /// reads what it got (a `Compacted` refusal, an `UNOWNED` end, a first message behind the
    /// revision needed): an end `Compacted` without one is a broken promise.
    compacted_seen: bool,
}

impl SimWatch {
    /// A watch by `watcher` of the keys of `range` (in `shard` of `shard_count`) from `from`
    /// (`None`: now), whose first stream opens at `target`; one that `loses_revisions` keeps
    /// every third revision it receives without its changes (a deliberate bug).
    pub(crate) fn new(
        watcher: String,
        (shard, shard_count): (ShardId, u32),
        range: (Bytes, Bytes),
        from: Option<u64>,
        target: Target,
        now: Time,
        loses_revisions: bool,
    ) -> Self {
        let follow_range = (range.0.clone(), Some(range.1.clone()));
        let follow = Follow::new(shard, shard_count, follow_range, CONSISTENCY, from);
        let span = WatchedSpan {
            watcher,
            range,
            from: 0,
            revisions: BTreeMap::new(),
            resume_at: 0,
            streams: 0,
            ended: None,
        };
        Self {
            follow,
            stream: Stream::Closed { target: Some(target), skip: None, not_before: now },
            retry: Retry::default(),
            started: now,
            span,
            loses_revisions,
            violation: None,
            compacted_seen: false,
        }
    }

    /// The watch so far, and the first broken promise it saw.
    pub(crate) fn span(&self) -> (WatchedSpan, Option<String>) {
        (self.span.clone(), self.violation.clone())
    }

    /// True once it is over: its follow ended it, or it ran its course.
    pub(crate) fn is_over(&self, now: Time) -> bool {
        self.span.ended.is_some()
            || self.violation.is_some()
            || self.span.revisions.len() >= WATCH_REVISIONS_MAX
            || now >= self.started + WATCH_MS_MAX
    }

    /// The periodic step: opens a stream when one is due, takes what the open one's feed
    /// queued, checks its replica when due, gives up on requests unanswered in time.
    pub(crate) fn poll(&mut self, lent: &mut Lent<'_, '_>) {
        let now = lent.io.now;
        match &mut self.stream {
            Stream::Closed { target, skip, not_before } => {
                if now < *not_before || lent.refresh.is_some() {
                    return;
                }
                let Some(routing) = lent.routing else { return };
                let shard = self.follow.shard();
                let Some(group) = routing.group_of(shard) else {
                    // No owner in this placement: read the latest (as a client's watch task
                    // does, after a pause).
                    *not_before = now + 1 + lent.io.rng.below(PAUSE_MS_MAX);
                    ask_refresh(lent.refresh, 0);
                    return;
                };
                let at = match (target.take(), skip.take()) {
                    (Some(target), _) => target,
                    (None, Some(node)) => next_member(routing, group, node),
                    (None, None) => lent.leaders.preferred(routing, group),
                };
                let from = self.follow.open();
                let (start, end) = self.span.range.clone();
                let watch = ShardWatch {
                    shard,
                    shard_count: self.follow.shard_count(),
                    from,
                    range: WatchRange { start, end: Some(end) },
                };
                let request = Request::KvWatch { group, watch, consistency: STORE_CONSISTENCY };
                let id = lent.io.request(at.node, request);
                self.span.streams += 1;
                let deadline = now + ANSWER_MS_MAX;
                let routing = routing.clone();
                self.stream = Stream::Opening { id, target: at, group, routing, deadline };
            }
            Stream::Opening { deadline, .. } => {
                if *deadline <= now {
                    let then = self.follow.on_failure(Failure::AttemptTimedOut);
                    self.then(lent, then);
                }
            }
            Stream::Open { .. } => {
                self.take_queued(lent, None);
                self.check(lent);
            }
        }
    }

    /// Handles the answer to request `id`; gives it back when it is not the watch's.
    pub(crate) fn on_response(
        &mut self,
        lent: &mut Lent<'_, '_>,
        id: RequestId,
        response: Response,
    ) -> Option<Response> {
        let ours = match &self.stream {
            Stream::Opening { id: asked, .. }
            | Stream::Open { check: Check::Asked { id: asked, .. }, .. } => *asked == id,
            Stream::Open { .. } | Stream::Closed { .. } => false,
        };
        if !ours {
            return Some(response);
        }
        match (&mut self.stream, response) {
            (Stream::Opening { target, group, routing, .. }, Response::KvWatching(result)) => {
                match result {
                    Ok(receiver) => {
                        let (target, group) = (target.clone(), *group);
                        let routing = routing.clone();
                        let (frames, first) =
                            Frames::new(receiver.from, receiver.published(), MESSAGE_BYTES_MAX);
                        // Where the watch starts, as the replica registered it: not as
                        // the follow under test says (a follow that starts late from now
                        // would otherwise set the start of its own check).
                        if self.span.from == 0 {
                            self.span.from = receiver.from;
                        }
                        let needed = self.follow.next().unwrap_or(0);
                        self.compacted_seen = first.revision + 1 < needed;
                        let check = Check::Due(lent.io.now + CHECK_INTERVAL_MS);
                        self.stream =
                            Stream::Open { receiver, frames, target, group, routing, check };
                        self.hear(lent, first);
                    }
                    Err(error) => {
                        self.compacted_seen = matches!(error, Error::Compacted { .. });
                        let then = self.follow.on_failure(failure_of(&error));
                        self.then(lent, then);
                    }
                }
            }
            (
                Stream::Open { check: Check::Asked { published, .. }, .. },
                Response::Done(result),
            ) => {
                let published = *published;
                match result {
                    Ok(()) => {
                        if let Stream::Open { check, .. } = &mut self.stream {
                            *check = Check::Due(lent.io.now + CHECK_INTERVAL_MS);
                        }
                        self.take_queued(lent, Some(published));
                    }
                    Err(error) => {
                        self.compacted_seen |= matches!(error, Error::Compacted { .. });
                        // What is queued first: an end among it is the stream's real end.
                        if self.take_queued(lent, None)
                            && let Stream::Open { frames, .. } = &self.stream
                        {
                            let last = frames.not_served(&to_status(&error, hint_address));
                            self.hear(lent, last);
                        }
                    }
                }
            }
            (_, other) => panic!("{}: the watch's request answered {other:?}", self.span.watcher),
        }
        None
    }

    /// Frames what the open stream's feed queued and hears each message, as a node's stream
    /// sends them; with `published`, the last says the watcher is up to date to it. False
    /// once the stream is over.
    fn take_queued(&mut self, lent: &mut Lent<'_, '_>, published: Option<u64>) -> bool {
        loop {
            let Stream::Open { receiver, frames, .. } = &mut self.stream else { return false };
            let mut queued = || match receiver.try_recv() {
                Ok(event) => Some(event),
                Err(TryRecvError::Empty) => None,
                // A feed dropped without an end (its node crashed): as a reset.
                Err(TryRecvError::Disconnected) => Some(WatchEvent::End(WatchEnd::Reset)),
            };
            let Some(framed) = frames.next_message(&mut queued, published) else { return true };
            self.hear(lent, framed.message);
            if framed.ends || !matches!(self.stream, Stream::Open { .. }) {
                return false;
            }
            if framed.drained {
                return true;
            }
        }
    }

    /// Asks for the check of the open stream's replica when due; a check unanswered in time
    /// loses the stream.
    fn check(&mut self, lent: &mut Lent<'_, '_>) {
        let now = lent.io.now;
        let Stream::Open { receiver, target, group, check, .. } = &mut self.stream else { return };
        match *check {
            Check::Due(due) if due <= now => {
                let published = receiver.published();
                let request = Request::WatchCheck {
                    group: *group,
                    shard: self.follow.shard(),
                    shard_count: self.follow.shard_count(),
                    consistency: STORE_CONSISTENCY,
                };
                let id = lent.io.request(target.node, request);
                *check = Check::Asked { id, published, deadline: now + ANSWER_MS_MAX };
            }
            Check::Asked { deadline, .. } if deadline <= now => {
                let then = self.follow.on_failure(Failure::AttemptTimedOut);
                self.then(lent, then);
            }
            Check::Due(_) | Check::Asked { .. } => {}
        }
    }

    /// Hears one message of the current stream.
    fn hear(&mut self, lent: &mut Lent<'_, '_>, message: pb::WatchResponse) {
        let unowned = pb::watch_end::Reason::WatchEndUnowned as i32;
        self.compacted_seen |= message.end.as_ref().is_some_and(|end| end.reason == unowned);
        let Heard { revisions, registered: _, resume_at, then } = self.follow.on_message(message);
        for revision in revisions {
            self.receive(lent.versions, revision);
        }
        if let Some(resume_at) = resume_at {
            self.span.resume_at = self.span.resume_at.max(resume_at);
        }
        if let Some(then) = then {
            self.then(lent, then);
        }
    }

    /// Checks and records a revision given.
    fn receive(&mut self, versions: &mut VersionLedger, revision: mosaic_client::WatchedRevision) {
        let (start, end) = &self.span.range;
        let misfit = revision.changes.iter().find(|change| change.key < start || change.key >= end);
        if revision.revision <= self.span.last() || misfit.is_some() || revision.changes.is_empty()
        {
            self.violation.get_or_insert_with(|| {
                format!(
                    "{} watching from revision {}: revision {} after {} ({:?})",
                    self.span.watcher,
                    self.span.from,
                    revision.revision,
                    self.span.last(),
                    revision.changes
                )
            });
            return;
        }
        let heard_by = format!("{}: watch", self.span.watcher);
        for change in &revision.changes {
            if let Some(value) = &change.value {
                versions.heard(&change.key, value, Version(revision.revision), &heard_by);
            }
        }
        let lost = self.loses_revisions && self.span.revisions.len() % 3 == 2;
        let changes = if lost {
            Vec::new()
        } else {
            revision.changes.into_iter().map(|change| (change.key, change.value)).collect()
        };
        self.span.revisions.insert(revision.revision, changes);
    }

    /// The current stream is over (or could not open): does what the follow says comes next.
    fn then(&mut self, lent: &mut Lent<'_, '_>, then: Then) {
        let now = lent.io.now;
        let closed = std::mem::replace(
            &mut self.stream,
            Stream::Closed { target: None, skip: None, not_before: now },
        );
        let (target, group, routing) = match closed {
            Stream::Opening { target, group, routing, .. }
            | Stream::Open { target, group, routing, .. } => (target, group, routing),
            Stream::Closed { .. } => unreachable!("a stream ends only once open or opening"),
        };
        let failure = match then {
            Then::Refresh => {
                ask_refresh(lent.refresh, 0);
                return;
            }
            Then::Again => {
                self.stream = Stream::Closed { target: Some(target), skip: None, not_before: now };
                return;
            }
            Then::Fail(error) => {
                if matches!(error, ClientError::Compacted { .. }) && !self.compacted_seen {
                    self.violation.get_or_insert_with(|| {
                        format!(
                            "{} watching from revision {}: the watch ended ({error}) with no \
                             refusal, end or first message that says so",
                            self.span.watcher, self.span.from
                        )
                    });
                }
                self.span.ended = Some(error.to_string());
                return;
            }
            Then::Retry(failure) => failure,
        };
        let next = self.retry.after(&failure, &routing, lent.leaders, group, target, false);
        let Next::Retry { target, pause, refresh } = next else {
            self.span.ended = Some(format!("refused for good: {failure}"));
            return;
        };
        let not_before = if pause { now + 1 + lent.io.rng.below(PAUSE_MS_MAX) } else { now };
        let skip = refresh.as_ref().and_then(|refresh| refresh.skip);
        if let Some(refresh) = refresh {
            ask_refresh(lent.refresh, refresh.at_least);
        }
        self.stream = Stream::Closed { target, skip, not_before };
    }
}

/// Asks the client to read the latest placement before it next routes anything, and to
/// wait for one of configuration `at_least` or later.
fn ask_refresh(refresh: &mut Option<Refresh>, at_least: u64) {
    let at_least = refresh.as_ref().map_or(at_least, |asked| asked.at_least.max(at_least));
    let skip = refresh.as_ref().and_then(|asked| asked.skip);
    *refresh = Some(Refresh { at_least, skip });
}

/// The first version a client heard that a watch up to date past it does not hold: a key of
/// its range put at a revision from where it started to the last before its `resume_at`, with
/// no change of that key at that revision among its changes.
pub(crate) fn missed_changes(spans: &[WatchedSpan], versions: &VersionLedger) -> Option<String> {
    for span in spans.iter().filter(|span| span.from > 0 && span.resume_at > span.from) {
        let (start, end) = &span.range;
        let last = span.resume_at - 1;
        for (key, revision, value) in versions.heard_between(start, end, span.from, last) {
            let seen = span.revisions.get(&revision).is_some_and(|changes| {
                changes.iter().any(|(changed, new)| changed == key && new.as_ref() == Some(value))
            });
            if !seen {
                return Some(format!(
                    "{} watched revisions {} to {last} of {start:?}..{end:?} over {} streams \
                     and missed {key:?} put to {value:?} at revision {revision} (it received \
                     {:?})",
                    span.watcher,
                    span.from,
                    span.streams,
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

    /// A version heard within what a watch was up to date to must be among its changes; one
    /// before the watch started, after it, or of a key outside its range is not its business.
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
            resume_at: 8,
            streams: 2,
            ended: None,
        };
        span.revisions.insert(4, vec![(bytes("{t0}:a"), Some(bytes("x")))]);
        span.revisions.insert(7, vec![(bytes("{t0}:a"), None)]);
        let missed = missed_changes(&[span.clone()], &versions).expect("b at 6 missed");
        assert!(missed.contains("missed b\"{t0}:b\" put to b\"y\" at revision 6"), "{missed}");
        span.revisions.insert(6, vec![(bytes("{t0}:b"), Some(bytes("y")))]);
        assert_eq!(missed_changes(&[span.clone()], &versions), None);
        // A watch up to date past 9 owes the put at 9 too.
        span.resume_at = 10;
        let missed = missed_changes(&[span.clone()], &versions).expect("a at 9 missed");
        assert!(missed.contains("at revision 9"), "{missed}");
        span.revisions.insert(9, vec![(bytes("{t0}:a"), Some(bytes("later")))]);
        assert_eq!(missed_changes(&[span], &versions), None);
    }
}
