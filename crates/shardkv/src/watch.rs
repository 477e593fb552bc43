//! Watches: the changes a replica applies to a shard, kept for a while and sent, in revision
//! order, to the watchers registered on the shard (docs/api.md "Watches").
//!
//! Every replica of a group applies every write, so every replica keeps a [`ShardFeed`] for
//! each shard it has changed or been asked to watch: a bounded ring of the latest changes (at
//! most [`FEED_CHANGES_MAX`] changes and [`FEED_BYTES_MAX`] bytes; whole revisions leave it,
//! oldest first), and the watchers. A watcher starts at a revision: the ring's changes from
//! there on are queued for it at once, then every change as it is published, so it sees each
//! change of its key range exactly once and in order, with no gap between what was kept and
//! what comes next. A watcher asking for a revision the ring no longer holds is refused
//! ([`WatchRefusal::Compacted`]): it must read afresh and watch from that read's revision.
//!
//! A watcher's queue is bounded ([`WATCHER_EVENTS_MAX`] changes, [`WATCHER_BYTES_MAX`]
//! bytes); one that falls that far behind is ended ([`WatchEnd::Lagged`]) rather than let the
//! node's memory grow, and resumes from the last revision it saw. A feed ends, and every
//! watcher with it, when the shard stops being served here ([`WatchEnd::Moved`], at the
//! shard's last revision here: the new owner goes on from the next one) or when the replica's
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
use tokio::sync::mpsc;

/// The most changes a shard's feed keeps.
pub const FEED_CHANGES_MAX: usize = 1_024;
/// The most bytes of keys and values a shard's feed keeps.
pub const FEED_BYTES_MAX: u64 = 1 << 20;
/// The most changes queued for one watcher before it is ended as lagging.
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
        let end = prefix_end(&prefix);
        Self { start: prefix, end }
    }

    /// True when `key` is in the range.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && self.end.as_ref().is_none_or(|end| key < end.as_ref())
    }
}

/// The first key after every key that starts with `prefix` (`None`: no such key, the prefix
/// is empty or all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let last = prefix.iter().rposition(|byte| *byte != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(Bytes::from(end))
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
    /// A change of a key in its range.
    Change(Change),
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
}

impl WatchReceiver {
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
        if let Some(WatchEvent::Change(change)) = event {
            self.queued_bytes.fetch_sub(change.bytes(), Ordering::Relaxed);
        }
    }
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
    /// Queues `change` if the watcher follows it; false once the watcher is over (it lagged,
    /// and was told so, or its receiver is gone).
    fn offer(&self, change: &Change) -> bool {
        if change.revision < self.from || !self.range.contains(&change.key) {
            return !self.events.is_closed();
        }
        let bytes = self.queued_bytes.load(Ordering::Relaxed);
        // The last place is the end's: a queue with one place left is full.
        if self.events.capacity() <= 1 || bytes + change.bytes() > WATCHER_BYTES_MAX {
            self.end(WatchEnd::Lagged);
            return false;
        }
        self.queued_bytes.fetch_add(change.bytes(), Ordering::Relaxed);
        self.events.try_send(WatchEvent::Change(change.clone())).is_ok()
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
        let kept: Vec<&Change> = self
            .ring
            .iter()
            .filter(|change| change.revision >= from && range.contains(&change.key))
            .collect();
        // Room for what is kept (whatever its size: the ring bounds it), then for the
        // changes to come, then for the end.
        let (sender, events) = mpsc::channel(kept.len() + WATCHER_EVENTS_MAX + 1);
        let queued = kept.iter().map(|change| change.bytes()).sum();
        for change in kept {
            sender
                .try_send(WatchEvent::Change(change.clone()))
                .expect("room for every change kept");
        }
        let queued_bytes = Arc::new(AtomicU64::new(queued));
        self.watchers.push(Watcher {
            range,
            from,
            events: sender,
            queued_bytes: Arc::clone(&queued_bytes),
        });
        Ok(WatchReceiver { from, events, queued_bytes })
    }

    /// Publishes `change`, the next in revision order (several changes of one revision
    /// follow each other): keeps it, and queues it for every watcher that follows it.
    ///
    /// # Panics
    /// If `change` comes before the last change published.
    pub fn publish(&mut self, change: Change) {
        assert!(
            change.revision >= self.revision && change.revision > self.floor,
            "a change at revision {} after revision {}",
            change.revision,
            self.revision
        );
        self.watchers.retain(|watcher| watcher.offer(&change));
        self.revision = change.revision;
        self.ring_bytes += change.bytes();
        self.ring.push_back(change);
        while self.ring.len() > FEED_CHANGES_MAX || self.ring_bytes > FEED_BYTES_MAX {
            // Whole revisions leave, so the floor is always a revision boundary.
            let Some(oldest) = self.ring.front().map(|change| change.revision) else { break };
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

    fn all() -> WatchRange {
        WatchRange { start: Bytes::new(), end: None }
    }

    /// Every event queued for `receiver` now.
    fn drain(receiver: &mut WatchReceiver) -> Vec<WatchEvent> {
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    fn changes(events: &[WatchEvent]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|event| match event {
                WatchEvent::Change(change) => Some(change.revision),
                WatchEvent::End(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_watcher_gets_the_changes_kept_from_its_revision_then_each_new_one_once_in_order() {
        let mut feed = ShardFeed::new(4);
        feed.publish(change(5, "a", Some("1")));
        feed.publish(change(6, "b", Some("2")));
        feed.publish(change(6, "c", None));
        let mut from_6 = feed.subscribe(Some(6), all()).unwrap();
        let mut from_now = feed.subscribe(None, all()).unwrap();
        assert_eq!((from_6.from, from_now.from), (6, 7));
        feed.publish(change(7, "a", Some("3")));
        assert_eq!(
            drain(&mut from_6),
            [change(6, "b", Some("2")), change(6, "c", None), change(7, "a", Some("3"))]
                .map(WatchEvent::Change)
        );
        assert_eq!(drain(&mut from_now), [WatchEvent::Change(change(7, "a", Some("3")))]);
        // A watch from a revision still to come waits for it.
        let mut ahead = feed.subscribe(Some(9), all()).unwrap();
        feed.publish(change(8, "a", None));
        feed.publish(change(9, "b", None));
        assert_eq!(changes(&drain(&mut ahead)), [9]);
    }

    #[test]
    fn a_watcher_gets_only_the_keys_of_its_range() {
        let mut feed = ShardFeed::new(0);
        let mut users =
            feed.subscribe(None, WatchRange::prefix(Bytes::from_static(b"user/"))).unwrap();
        let mut key = feed
            .subscribe(
                None,
                WatchRange {
                    start: Bytes::from_static(b"b"),
                    end: Some(Bytes::from_static(b"b\0")),
                },
            )
            .unwrap();
        feed.publish(change(1, "user/1", Some("x")));
        feed.publish(change(2, "user0", Some("x")));
        feed.publish(change(3, "b", Some("x")));
        feed.publish(change(4, "ba", Some("x")));
        feed.publish(change(5, "user/", None));
        assert_eq!(changes(&drain(&mut users)), [1, 5]);
        assert_eq!(changes(&drain(&mut key)), [3]);
    }

    #[test]
    fn prefix_ranges_end_after_the_last_key_of_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(Bytes::from_static(b"ac")));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let range = WatchRange::prefix(Bytes::from_static(b"a\xff"));
        assert!(range.contains(b"a\xff\xff\xff") && !range.contains(b"b") && !range.contains(b"a"));
    }

    #[test]
    fn whole_revisions_leave_a_full_feed_and_a_watch_from_before_them_is_refused() {
        let mut feed = ShardFeed::new(0);
        for revision in 1..=FEED_CHANGES_MAX as u64 {
            feed.publish(change(revision, "k", Some("v")));
        }
        assert_eq!(feed.oldest(), 1);
        // A batch: two changes at one revision, both leave together.
        feed.publish(change(FEED_CHANGES_MAX as u64 + 1, "k", Some("v")));
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
        feed.publish(change(11, "a", Some("v")));
        feed.publish(change(11, "b", Some("v")));
        let big = Bytes::from(vec![0; FEED_BYTES_MAX as usize]);
        feed.publish(Change { revision: 12, key: Bytes::from_static(b"c"), value: Some(big) });
        // Revision 11 left whole; 12, alone over the bound, left too.
        assert_eq!(feed.oldest(), 13);
        assert_eq!(feed.revision(), 12);
    }

    #[test]
    fn a_watcher_that_falls_behind_is_ended_as_lagging_and_told_so() {
        let mut feed = ShardFeed::new(0);
        let mut slow = feed.subscribe(None, all()).unwrap();
        let mut keeping_up = feed.subscribe(None, all()).unwrap();
        for revision in 1..=WATCHER_EVENTS_MAX as u64 + 1 {
            feed.publish(change(revision, "k", Some("v")));
            assert_eq!(changes(&drain(&mut keeping_up)), [revision]);
        }
        let events = drain(&mut slow);
        assert_eq!(events.len(), WATCHER_EVENTS_MAX + 1);
        assert_eq!(events.last(), Some(&WatchEvent::End(WatchEnd::Lagged)));
        assert_eq!(changes(&events), (1..=WATCHER_EVENTS_MAX as u64).collect::<Vec<_>>());
        assert_eq!(feed.watchers(), 1);
        // By bytes too.
        let mut feed = ShardFeed::new(0);
        let mut slow = feed.subscribe(None, all()).unwrap();
        let value = Bytes::from(vec![0; (WATCHER_BYTES_MAX / 3) as usize]);
        for revision in 1..=4 {
            feed.publish(Change {
                revision,
                key: Bytes::from_static(b"k"),
                value: Some(value.clone()),
            });
        }
        let events = drain(&mut slow);
        assert_eq!(changes(&events), [1, 2]);
        assert_eq!(events.last(), Some(&WatchEvent::End(WatchEnd::Lagged)));
    }

    #[test]
    fn a_watcher_that_reads_as_fast_as_changes_come_never_lags() {
        let mut feed = ShardFeed::new(0);
        let mut watcher = feed.subscribe(None, all()).unwrap();
        let value = Bytes::from(vec![0; (WATCHER_BYTES_MAX / 2) as usize]);
        for revision in 1..=10 * WATCHER_EVENTS_MAX as u64 {
            feed.publish(Change {
                revision,
                key: Bytes::from_static(b"k"),
                value: Some(value.clone()),
            });
            assert_eq!(changes(&drain(&mut watcher)), [revision]);
        }
    }

    #[test]
    fn an_ended_feed_tells_every_watcher_why_and_a_gone_watcher_is_forgotten() {
        let mut feed = ShardFeed::new(0);
        let mut watcher = feed.subscribe(None, all()).unwrap();
        let gone = feed.subscribe(None, all()).unwrap();
        drop(gone);
        feed.publish(change(1, "k", Some("v")));
        assert_eq!(feed.watchers(), 1);
        feed.end(WatchEnd::Moved { revision: 1 });
        assert_eq!(
            drain(&mut watcher),
            [
                WatchEvent::Change(change(1, "k", Some("v"))),
                WatchEvent::End(WatchEnd::Moved { revision: 1 })
            ]
        );
        assert!(matches!(watcher.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
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
