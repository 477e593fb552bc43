//! Watches: the changes a replica applies to a shard, kept for a while and sent, in revision
//! order, to the watchers registered on the shard (docs/api.md "Watches").
//!
//! Every replica of a group applies every write, so every replica keeps a [`ShardFeed`] for
//! each shard it has changed or been asked to watch: a bounded ring of the latest changes (at
//! most [`FEED_CHANGES_MAX`] changes and [`FEED_BYTES_MAX`] bytes; whole revisions leave it,
//! oldest first), and the watchers. A watcher starts at a revision: the ring's changes from
//! there on are queued for it at once, then the changes of each revision as it is published
//! (one [`WatchEvent::Changes`] per revision, never split), so it sees each change of its key
//! range exactly once and in order, with no gap between what was kept and what comes next. A watcher asking for a revision the ring no longer holds is refused
//! ([`WatchRefusal::Compacted`]): it must read afresh and watch from that read's revision.
//!
//! A watcher's queue is bounded ([`WATCHER_EVENTS_MAX`] revisions, [`WATCHER_BYTES_MAX`]
//! bytes); one that falls that far behind is ended ([`WatchEnd::Lagged`]) rather than let the
//! node's memory grow, and resumes from the last revision it saw. A feed ends, and every
//! watcher with it, when the shard stops being served here ([`WatchEnd::Moved`], at the
//! shard's last revision here: the new owner goes on from the next one; or
//! [`WatchEnd::Unowned`] when no group is given it: a group given it later starts it over
//! empty) or when the replica's
//! state is replaced or dropped ([`WatchEnd::Reset`]: a snapshot installed, the group
//! destroyed). The last place of every queue is kept for the end, so a watcher always learns
//! why its stream stopped.
//!
//! The feed lives with the state machine and is touched only on the store's thread (changes
//! published once their batch is written, watchers registered by a read); a watcher's queue is
//! the one thing another thread reads, through a [`WatchReceiver`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use mosaic_engine::ShardId;
use tokio::sync::mpsc;

/// The most changes a shard's feed keeps.
pub const FEED_CHANGES_MAX: usize = 1_024;
/// The most bytes of keys and values a shard's feed keeps.
pub const FEED_BYTES_MAX: u64 = 256 << 10;
/// The most revisions queued for one watcher before it is ended as lagging.
pub const WATCHER_EVENTS_MAX: usize = 1_024;
/// The most bytes of keys and values queued for one watcher before it is ended as lagging.
pub const WATCHER_BYTES_MAX: u64 = 4 << 20;
/// The most watchers of one shard at one replica.
pub const WATCHERS_PER_SHARD_MAX: usize = 1_024;

/// One key's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The shard's revision the change made (the key's version, unless deleted).
    pub revision: u64,
    /// The key.
    pub key: Bytes,
    /// Its new value; `None`: deleted.
    pub value: Option<Bytes>,
}

impl Change {
    /// What it counts for in the bounds: its key and value.
    fn bytes(&self) -> u64 {
        (self.key.len() + self.value.as_ref().map_or(0, Bytes::len)) as u64
    }
}

/// The keys a watcher follows: from `start` (included) to `end` (excluded; `None`: no end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRange {
    /// The first key.
    pub start: Bytes,
    /// The key to stop before, if any.
    pub end: Option<Bytes>,
}

impl WatchRange {
    /// Every key that starts with `prefix`.
    #[must_use]
    pub fn prefix(prefix: Bytes) -> Self {
        let end = mosaic_types::prefix_end(&prefix).map(Bytes::from);
        Self { start: prefix, end }
    }

    /// True when `key` is in the range.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && self.end.as_ref().is_none_or(|end| key < end.as_ref())
    }
}

/// A watch of one shard's keys in `range` from revision `from` (`None`: the changes after
/// the watch is registered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardWatch {
    /// The shard.
    pub shard: ShardId,
    /// The shard count the client routes by (a group placed by a controller refuses another).
    pub shard_count: u32,
    /// The first revision to send; `None`: the next.
    pub from: Option<u64>,
    /// The keys to follow.
    pub range: WatchRange,
}

/// Why `watch` is malformed, if it is: no shard count, a shard past it, revision 0 (revisions
/// start at 1), or a range that ends before it starts.
#[must_use]
pub fn watch_refusal(watch: &ShardWatch) -> Option<String> {
    if watch.shard_count == 0 {
        return Some("a watch names the shard count it routes by".into());
    }
    if watch.shard.0 >= watch.shard_count {
        return Some(format!(
            "shard {} is not one of the {} shards the watch routes by",
            watch.shard, watch.shard_count
        ));
    }
    if watch.from == Some(0) {
        return Some("a watch starts at revision 1 or later (revisions start at 1)".into());
    }
    match &watch.range.end {
        Some(end) if *end <= watch.range.start => {
            Some("a watch's range must end after it starts (the end is excluded)".into())
        }
        _ => None,
    }
}

/// Why a watcher's stream stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The shard is no longer served here; `revision` was its last revision here, and its new
    /// owner goes on from the next.
    Moved {
        /// The shard's last revision here.
        revision: u64,
    },
    /// The shard was given to no group at `revision` (its last here): its keys are gone, and a
    /// group given it later starts it over empty. Read afresh.
    Unowned {
        /// The shard's last revision here.
        revision: u64,
    },
    /// This replica's feed was reset (its state replaced by a snapshot, or the group gone
    /// from this node): resume after the last revision seen, at a replica that serves the
    /// shard.
    Reset,
    /// The watcher's queue filled up: resume after the last revision seen.
    Lagged,
}

/// What a watcher receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The changes of one revision to keys in its range (at least one), in the order they
    /// were made.
    Changes(Vec<Change>),
    /// The stream's end; nothing follows.
    End(WatchEnd),
}

/// Why a watcher was not registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchRefusal {
    /// The feed no longer holds the changes from the revision asked: read afresh and watch
    /// from that read's revision. `oldest` is the oldest revision it can start from.
    Compacted {
        /// The oldest revision a watcher can start from now.
        oldest: u64,
    },
    /// The shard has as many watchers at this replica as it may.
    TooManyWatchers,
}

impl std::fmt::Display for WatchRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Compacted { oldest } => write!(
                f,
                "the changes asked for are compacted: the oldest revision this replica can \
                 watch from is {oldest}; read afresh and watch from that read's revision"
            ),
            Self::TooManyWatchers => {
                write!(f, "the shard has {WATCHERS_PER_SHARD_MAX} watchers at this replica already")
            }
        }
    }
}

/// A registered watcher's end of its queue.
#[derive(Debug)]
pub struct WatchReceiver {
    /// The first revision it may receive: the revision asked, or the one after the shard's
    /// revision when it was registered (a watch from now).
    pub from: u64,
    events: mpsc::Receiver<WatchEvent>,
    queued_bytes: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
}

impl WatchReceiver {
    /// The revision of the feed's last published change: every change in the range up to it
    /// is queued (or was received) by the time this returns it.
    #[must_use]
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// The next event; `None` once the stream ended (after its [`WatchEvent::End`]) or the
    /// feed was dropped without one.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        let event = self.events.recv().await;
        self.received(event.as_ref());
        event
    }

    /// The next event if one is queued (`Err` when none is, or the stream is over).
    ///
    /// # Errors
    /// As [`mpsc::Receiver::try_recv`].
    pub fn try_recv(&mut self) -> Result<WatchEvent, mpsc::error::TryRecvError> {
        let event = self.events.try_recv()?;
        self.received(Some(&event));
        Ok(event)
    }

    fn received(&self, event: Option<&WatchEvent>) {
        if let Some(WatchEvent::Changes(changes)) = event {
            self.queued_bytes.fetch_sub(bytes_of(changes), Ordering::Relaxed);
        }
    }
}

/// What `changes` count for in the bounds.
fn bytes_of(changes: &[Change]) -> u64 {
    changes.iter().map(Change::bytes).sum()
}

/// A registered watcher, as its feed holds it.
#[derive(Debug)]
struct Watcher {
    range: WatchRange,
    from: u64,
    events: mpsc::Sender<WatchEvent>,
    queued_bytes: Arc<AtomicU64>,
}

impl Watcher {
    /// Queues those of `changes` (one revision's) the watcher follows; false once the watcher
    /// is over (it lagged, and was told so, or its receiver is gone).
    fn offer(&self, changes: &[Change]) -> bool {
        let followed: Vec<Change> = changes
            .iter()
            .filter(|change| change.revision >= self.from && self.range.contains(&change.key))
            .cloned()
            .collect();
        if followed.is_empty() {
            return !self.events.is_closed();
        }
        let bytes = bytes_of(&followed);
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        // The last place is the end's: a queue with one place left is full.
        if self.events.capacity() <= 1 || queued + bytes > WATCHER_BYTES_MAX {
            self.end(WatchEnd::Lagged);
            return false;
        }
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.events.try_send(WatchEvent::Changes(followed)).is_ok()
    }

    fn end(&self, end: WatchEnd) {
        // Fails only if the receiver is gone: no one to tell.
        let _ = self.events.try_send(WatchEvent::End(end));
    }
}

/// One shard's changes at one replica and its watchers. See the module documentation.
#[derive(Debug)]
pub struct ShardFeed {
    /// The changes after `floor`, in revision order.
    ring: VecDeque<Change>,
    /// The bytes of the changes in `ring`.
    ring_bytes: u64,
    /// Every change after this revision is in `ring`.
    floor: u64,
    /// The revision of the last change published (or `floor`).
    revision: u64,
    /// `revision`, for the watchers' receivers: stored once a revision's changes are queued.
    published: Arc<AtomicU64>,
    watchers: Vec<Watcher>,
}

impl ShardFeed {
    /// The feed of a shard at `revision`, which holds no change yet.
    #[must_use]
    pub fn new(revision: u64) -> Self {
        Self {
            ring: VecDeque::new(),
            ring_bytes: 0,
            floor: revision,
            revision,
            published: Arc::new(AtomicU64::new(revision)),
            watchers: Vec::new(),
        }
    }

    /// The shard's revision as the feed knows it: that of the last change published.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The oldest revision a watcher can start from.
    #[must_use]
    pub fn oldest(&self) -> u64 {
        self.floor + 1
    }

    /// How many watchers it has.
    #[must_use]
    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    /// True when it keeps no change and no watcher is still registered: it can go (a new
    /// feed made at the shard's revision would serve the same watches).
    #[must_use]
    pub fn is_idle(&mut self) -> bool {
        self.watchers.retain(|watcher| !watcher.events.is_closed());
        self.ring.is_empty() && self.watchers.is_empty()
    }

    /// Registers a watcher of `range` from revision `from` (`None`: the changes after now).
    /// The changes it keeps from there on are queued at once.
    ///
    /// # Errors
    /// [`WatchRefusal::Compacted`] when `from` is older than [`ShardFeed::oldest`],
    /// [`WatchRefusal::TooManyWatchers`] at [`WATCHERS_PER_SHARD_MAX`].
    pub fn subscribe(
        &mut self,
        from: Option<u64>,
        range: WatchRange,
    ) -> Result<WatchReceiver, WatchRefusal> {
        self.watchers.retain(|watcher| !watcher.events.is_closed());
        if self.watchers.len() >= WATCHERS_PER_SHARD_MAX {
            return Err(WatchRefusal::TooManyWatchers);
        }
        let from = from.unwrap_or(self.revision + 1);
        if from <= self.floor {
            return Err(WatchRefusal::Compacted { oldest: self.oldest() });
        }
        // The changes kept from `from` on, one event per revision.
        let mut kept: Vec<Vec<Change>> = Vec::new();
        for change in self.ring.iter().filter(|change| change.revision >= from) {
            if !range.contains(&change.key) {
                continue;
            }
            match kept.last_mut() {
                Some(last) if last[0].revision == change.revision => last.push(change.clone()),
                _ => kept.push(vec![change.clone()]),
            }
        }
        // Room for what is kept (whatever its size: the ring bounds it), then for the
        // revisions to come, then for the end.
        let (sender, events) = mpsc::channel(kept.len() + WATCHER_EVENTS_MAX + 1);
        let queued = kept.iter().map(|changes| bytes_of(changes)).sum();
        for changes in kept {
            sender.try_send(WatchEvent::Changes(changes)).expect("room for every change kept");
        }
        let queued_bytes = Arc::new(AtomicU64::new(queued));
        self.watchers.push(Watcher {
            range,
            from,
            events: sender,
            queued_bytes: Arc::clone(&queued_bytes),
        });
        let published = Arc::clone(&self.published);
        Ok(WatchReceiver { from, events, queued_bytes, published })
    }

    /// Publishes `changes`, every change of the next revision: keeps them, and queues those
    /// each watcher follows.
    ///
    /// # Panics
    /// If `changes` is empty, holds changes of several revisions, or of a revision not after
    /// the last one published.
    pub fn publish(&mut self, changes: Vec<Change>) {
        let revision = changes.first().expect("a revision changes something").revision;
        assert!(
            revision > self.revision && changes.iter().all(|change| change.revision == revision),
            "changes at revisions {:?} after revision {}",
            changes.iter().map(|change| change.revision).collect::<Vec<_>>(),
            self.revision
        );
        self.watchers.retain(|watcher| watcher.offer(&changes));
        self.revision = revision;
        self.published.store(revision, Ordering::Release);
        self.ring_bytes += bytes_of(&changes);
        self.ring.extend(changes);
        while self.ring.len() > FEED_CHANGES_MAX || self.ring_bytes > FEED_BYTES_MAX {
            // Whole revisions leave, so the floor is always a revision boundary; the newest
            // stays whatever its size, so a watcher that lost its stream just after it can
            // still resume.
            let Some(oldest) = self.ring.front().map(|change| change.revision) else { break };
            if oldest == revision {
                break;
            }
            while self.ring.front().is_some_and(|change| change.revision == oldest) {
                let change = self.ring.pop_front().expect("a front");
                self.ring_bytes -= change.bytes();
            }
            self.floor = oldest;
        }
    }

    /// Ends the feed: every watcher is told `end`.
    pub fn end(self, end: WatchEnd) {
        for watcher in &self.watchers {
            watcher.end(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64, key: &'static str, value: Option<&'static str>) -> Change {
        Change {
            revision,
            key: Bytes::from_static(key.as_bytes()),
            value: value.map(|value| Bytes::from_static(value.as_bytes())),
        }
    }

    /// A revision of one change to `key`.
    fn one(revision: u64, key: &'static str) -> Vec<Change> {
        vec![change(revision, key, Some("v"))]
    }

    fn all() -> WatchRange {
        WatchRange { start: Bytes::new(), end: None }
    }

    /// Every event queued for `receiver` now.
    fn drain(receiver: &mut WatchReceiver) -> Vec<WatchEvent> {
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    /// The revision of each change event among `events`.
    fn revisions(events: &[WatchEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|event| match event {
                WatchEvent::Changes(changes) => Some(changes[0].revision),
                WatchEvent::End(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_watcher_gets_the_revisions_kept_from_its_own_then_each_new_one_once_in_order() {
        let mut feed = ShardFeed::new(4);
        feed.publish(vec![change(5, "a", Some("1"))]);
        feed.publish(vec![change(6, "b", Some("2")), change(6, "c", None)]);
        let mut from_6 = feed.subscribe(Some(6), all()).unwrap();
        let mut from_now = feed.subscribe(None, all()).unwrap();
        assert_eq!((from_6.from, from_now.from, from_now.published()), (6, 7, 6));
        feed.publish(vec![change(7, "a", Some("3"))]);
        assert_eq!(from_now.published(), 7);
        assert_eq!(
            drain(&mut from_6),
            [
                WatchEvent::Changes(vec![change(6, "b", Some("2")), change(6, "c", None)]),
                WatchEvent::Changes(vec![change(7, "a", Some("3"))]),
            ]
        );
        assert_eq!(drain(&mut from_now), [WatchEvent::Changes(vec![change(7, "a", Some("3"))])]);
        // A watch from a revision still to come waits for it.
        let mut ahead = feed.subscribe(Some(9), all()).unwrap();
        feed.publish(one(8, "a"));
        feed.publish(one(9, "b"));
        assert_eq!(revisions(&drain(&mut ahead)), [9]);
    }

    #[test]
    fn a_watcher_gets_only_the_keys_of_its_range() {
        let mut feed = ShardFeed::new(0);
        let users = WatchRange::prefix(Bytes::from_static(b"user/"));
        let mut users = feed.subscribe(None, users).unwrap();
        let b =
            WatchRange { start: Bytes::from_static(b"b"), end: Some(Bytes::from_static(b"b\0")) };
        let mut b = feed.subscribe(None, b).unwrap();
        feed.publish(vec![change(1, "user/1", Some("x")), change(1, "b", Some("y"))]);
        feed.publish(one(2, "user0"));
        feed.publish(one(3, "ba"));
        feed.publish(vec![change(4, "user/", None)]);
        assert_eq!(
            drain(&mut users),
            [
                WatchEvent::Changes(vec![change(1, "user/1", Some("x"))]),
                WatchEvent::Changes(vec![change(4, "user/", None)]),
            ]
        );
        assert_eq!(drain(&mut b), [WatchEvent::Changes(vec![change(1, "b", Some("y"))])]);
    }

    #[test]
    fn prefix_ranges_end_after_the_last_key_of_the_prefix() {
        let range = WatchRange::prefix(Bytes::from_static(b"a\xff"));
        assert!(range.contains(b"a\xff\xff\xff") && !range.contains(b"b") && !range.contains(b"a"));
    }

    #[test]
    fn whole_revisions_leave_a_full_feed_and_a_watch_from_before_them_is_refused() {
        let mut feed = ShardFeed::new(0);
        for revision in 1..=FEED_CHANGES_MAX as u64 {
            feed.publish(one(revision, "k"));
        }
        assert_eq!(feed.oldest(), 1);
        feed.publish(one(FEED_CHANGES_MAX as u64 + 1, "k"));
        assert_eq!(feed.oldest(), 2);
        let mut first = feed.subscribe(Some(2), all()).unwrap();
        assert_eq!(drain(&mut first).len(), FEED_CHANGES_MAX);
        assert_eq!(
            feed.subscribe(Some(1), all()).unwrap_err(),
            WatchRefusal::Compacted { oldest: 2 }
        );

        let mut feed = ShardFeed::new(10);
        assert_eq!(
            feed.subscribe(Some(10), all()).unwrap_err(),
            WatchRefusal::Compacted { oldest: 11 }
        );
        feed.publish(vec![change(11, "a", Some("v")), change(11, "b", Some("v"))]);
        let big = Bytes::from(vec![0; FEED_BYTES_MAX as usize]);
        let key = Bytes::from_static(b"c");
        feed.publish(vec![Change { revision: 12, key: key.clone(), value: Some(big.clone()) }]);
        // Revision 11 left whole; 12, alone over the bound, stays: it is the newest.
        assert_eq!((feed.oldest(), feed.revision()), (12, 12));
        feed.publish(vec![Change { revision: 13, key, value: Some(big) }]);
        assert_eq!(feed.oldest(), 13);
    }

    #[test]
    fn a_watcher_that_falls_behind_is_ended_as_lagging_and_told_so() {
        let mut feed = ShardFeed::new(0);
        let mut slow = feed.subscribe(None, all()).unwrap();
        let mut keeping_up = feed.subscribe(None, all()).unwrap();
        for revision in 1..=WATCHER_EVENTS_MAX as u64 + 1 {
            feed.publish(one(revision, "k"));
            assert_eq!(revisions(&drain(&mut keeping_up)), [revision]);
        }
        let events = drain(&mut slow);
        assert_eq!(events.len(), WATCHER_EVENTS_MAX + 1);
        assert_eq!(events.last(), Some(&WatchEvent::End(WatchEnd::Lagged)));
        assert_eq!(revisions(&events), (1..=WATCHER_EVENTS_MAX as u64).collect::<Vec<_>>());
        assert_eq!(feed.watchers(), 1);
        // By bytes too.
        let mut feed = ShardFeed::new(0);
        let mut slow = feed.subscribe(None, all()).unwrap();
        let value = Bytes::from(vec![0; (WATCHER_BYTES_MAX / 3) as usize]);
        for revision in 1..=4 {
            let key = Bytes::from_static(b"k");
            feed.publish(vec![Change { revision, key, value: Some(value.clone()) }]);
        }
        let events = drain(&mut slow);
        assert_eq!(revisions(&events), [1, 2]);
        assert_eq!(events.last(), Some(&WatchEvent::End(WatchEnd::Lagged)));
    }

    #[test]
    fn a_watcher_that_reads_as_fast_as_changes_come_never_lags() {
        let mut feed = ShardFeed::new(0);
        let mut watcher = feed.subscribe(None, all()).unwrap();
        let value = Bytes::from(vec![0; (WATCHER_BYTES_MAX / 2) as usize]);
        for revision in 1..=10 * WATCHER_EVENTS_MAX as u64 {
            let key = Bytes::from_static(b"k");
            feed.publish(vec![Change { revision, key, value: Some(value.clone()) }]);
            assert_eq!(revisions(&drain(&mut watcher)), [revision]);
        }
    }

    #[test]
    fn an_ended_feed_tells_every_watcher_why_and_a_gone_watcher_is_forgotten() {
        let mut feed = ShardFeed::new(0);
        let mut watcher = feed.subscribe(None, all()).unwrap();
        let gone = feed.subscribe(None, all()).unwrap();
        drop(gone);
        feed.publish(one(1, "k"));
        assert_eq!(feed.watchers(), 1);
        feed.end(WatchEnd::Moved { revision: 1 });
        assert_eq!(
            drain(&mut watcher),
            [WatchEvent::Changes(one(1, "k")), WatchEvent::End(WatchEnd::Moved { revision: 1 })]
        );
        assert!(matches!(watcher.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }

    #[test]
    fn a_feed_that_keeps_nothing_and_has_no_watcher_left_is_idle() {
        let mut feed = ShardFeed::new(0);
        assert!(feed.is_idle());
        let watcher = feed.subscribe(None, all()).unwrap();
        assert!(!feed.is_idle());
        drop(watcher);
        assert!(feed.is_idle());
        feed.publish(one(1, "k"));
        assert!(!feed.is_idle(), "it keeps a change");
    }

    #[test]
    fn a_shard_has_a_bounded_number_of_watchers() {
        let mut feed = ShardFeed::new(0);
        let watchers: Vec<WatchReceiver> =
            (0..WATCHERS_PER_SHARD_MAX).map(|_| feed.subscribe(None, all()).unwrap()).collect();
        assert_eq!(feed.subscribe(None, all()).unwrap_err(), WatchRefusal::TooManyWatchers);
        drop(watchers);
        assert!(feed.subscribe(None, all()).is_ok());
    }
}
