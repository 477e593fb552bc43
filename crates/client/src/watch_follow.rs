//! One shard's part of a watch as pure decisions: what each message of the shard's stream
//! gives the reader, how far the reader is then up to date, and what follows when a stream
//! ends. The routing client's watch tasks ([`crate::Client::watch`]) run a [`Follow`] over
//! gRPC streams; the whole-cluster simulator's clients run the same one over a replica's feed
//! framed by [`crate::watch_frames`], so that a seed tests the follow rules that ship.
//!
//! A stream's first message, with no change, says where the replica starts: a replica that
//! serves at the leader's level but is not at the revision before the one needed never had
//! the revisions in between (the shard started over, empty, at a new owner), and the watch
//! ends [`ClientError::Compacted`]. Then each message carries changes in revision order; a
//! revision is given once its last change arrived (the message's `revision` says which
//! revisions it completes), so a revision cut by a lost stream is given whole, once, by the
//! next stream. After each message every revision before [`Heard::resume_at`] has been given.
//!
//! How a stream ends decides what comes next ([`Then`]): a shard that moved is watched at
//! its next owner once the placement shows it, a feed that was reset or lagged is watched
//! again at the same replica from the next revision needed, a refusal or a lost stream is a
//! failed attempt (for [`crate::retry::Retry::after`]), and `Compacted` or a shard whose keys
//! are gone ends the watch.

use bytes::Bytes;
use mosaic_engine::ShardId;
use mosaic_proto::pb;

use crate::classify::{Failure, classify_detail};
use crate::client::Consistency;
use crate::error::ClientError;

/// One key's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedChange {
    /// The key.
    pub key: Bytes,
    /// Its new value; `None`: deleted.
    pub value: Option<Bytes>,
}

/// The changes one revision of a shard made to keys of the range (a batch's several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedRevision {
    /// The shard.
    pub shard: ShardId,
    /// Its revision: the changed keys' version, unless deleted.
    pub revision: u64,
    /// The changes, in the order they were made.
    pub changes: Vec<WatchedChange>,
}

/// What comes after a stream ended.
#[derive(Debug)]
pub enum Then {
    /// The shard left the group: read the latest placement, then watch at the shard's owner
    /// in it. (Not "a placement newer than the stream's": found by the simulator, a replica
    /// behind the stream's placement, which had the shard before and gives it away now,
    /// sends this end too, and the placement that shows the shard back at its group may be
    /// the newest there is; waiting for a newer one held the watch for the whole request
    /// timeout each time.)
    Refresh,
    /// Watch again at the same replica (its feed was reset, or the watcher lagged).
    Again,
    /// The attempt failed this way: [`crate::retry::Retry::after`] says where the next goes.
    Retry(Failure),
    /// The watch ends with this error.
    Fail(ClientError),
}

/// What one message gave.
#[derive(Debug, Default)]
pub struct Heard {
    /// The revisions the message completed, in order: the reader's.
    pub revisions: Vec<WatchedRevision>,
    /// True for the first message of a stream that serves: the watch is registered.
    pub registered: bool,
    /// Every revision before this one has been given, these included; `None` when the
    /// stream's first message refused it.
    pub resume_at: Option<u64>,
    /// The stream is over, and this comes next.
    pub then: Option<Then>,
}

/// One shard's follow. See the module documentation.
#[derive(Debug)]
pub struct Follow {
    shard: ShardId,
    shard_count: u32,
    start: Bytes,
    end: Option<Bytes>,
    consistency: Consistency,
    /// The next revision needed; `None` until the first stream says where "now" is.
    next: Option<u64>,
    /// The changes of a revision the current stream has not sent all of yet.
    partial: Option<WatchedRevision>,
    /// True until the current stream's first message.
    first: bool,
}

impl Follow {
    /// A follow of the keys in `[start, end)` of `shard` (of `shard_count`), served at
    /// `consistency`, from revision `from` (`None`: the changes after the first stream opens).
    #[must_use]
    pub fn new(
        shard: ShardId,
        shard_count: u32,
        (start, end): (Bytes, Option<Bytes>),
        consistency: Consistency,
        from: Option<u64>,
    ) -> Self {
        Self { shard, shard_count, start, end, consistency, next: from, partial: None, first: true }
    }

    /// The shard.
    #[must_use]
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The number of shards its shard is one of.
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The level its replicas serve at.
    #[must_use]
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// The revision the next stream starts from (`None`: now).
    #[must_use]
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// A new stream: what the stream before sent of a revision it did not complete is
    /// dropped. Returns the revision the stream starts from (`None`: now).
    pub fn open(&mut self) -> Option<u64> {
        self.partial = None;
        self.first = true;
        self.next
    }

    /// The request opening a new stream at `group` of the placement of configuration
    /// `config_num` ([`Follow::open`]).
    pub fn request(&mut self, group: mosaic_engine::GroupId, config_num: u64) -> pb::WatchRequest {
        pb::WatchRequest {
            group_id: group.0,
            shard_id: self.shard.0,
            config_num,
            start: self.start.clone(),
            end: self.end.clone(),
            from_revision: self.open(),
            consistency: pb::Consistency::from(self.consistency) as i32,
            shard_count: self.shard_count,
        }
    }

    /// What the current stream's next `message` gives.
    pub fn on_message(&mut self, message: pb::WatchResponse) -> Heard {
        let next = *self.next.get_or_insert(message.revision + 1);
        let mut heard = Heard::default();
        if std::mem::take(&mut self.first) {
            if self.consistency != Consistency::Stale && message.revision + 1 < next {
                let failure = Failure::Compacted { oldest_revision: next };
                heard.then = Some(self.on_failure(failure));
                return heard;
            }
            heard.registered = true;
        }
        for change in message.changes.into_iter().filter(|change| change.revision >= next) {
            let watched = WatchedChange { key: change.key, value: change.value };
            match &mut self.partial {
                Some(open) if open.revision == change.revision => open.changes.push(watched),
                _ => {
                    heard.revisions.extend(self.partial.take());
                    self.partial = Some(WatchedRevision {
                        shard: self.shard,
                        revision: change.revision,
                        changes: vec![watched],
                    });
                }
            }
        }
        if self.partial.as_ref().is_some_and(|open| open.revision <= message.revision) {
            heard.revisions.extend(self.partial.take());
        }
        let mut resume_at = next.max(message.revision + 1);
        if let Some(end) = &message.end
            && end.reason == pb::watch_end::Reason::WatchEndMoved as i32
        {
            resume_at = resume_at.max(end.revision + 1);
        }
        self.next = Some(resume_at);
        heard.resume_at = Some(resume_at);
        heard.then = message.end.map(|end| self.on_end(end));
        heard
    }

    /// What comes after a stream that ended with `end`.
    fn on_end(&self, end: pb::WatchEnd) -> Then {
        use pb::watch_end::Reason;
        match Reason::try_from(end.reason) {
            Ok(Reason::WatchEndMoved) => Then::Refresh,
            // The shard's keys are gone and its revisions start over elsewhere.
            Ok(Reason::WatchEndUnowned) => {
                self.on_failure(Failure::Compacted { oldest_revision: 1 })
            }
            Ok(Reason::WatchEndNotServed) => {
                let failure = end.detail.and_then(|detail| detail.kind).map_or_else(
                    || Failure::Unreachable { message: "the replica stopped serving".into() },
                    classify_detail,
                );
                self.on_failure(failure)
            }
            _ => Then::Again,
        }
    }

    /// What comes after a stream that could not be opened, or was lost, with `failure`.
    #[must_use]
    pub fn on_failure(&self, failure: Failure) -> Then {
        match failure {
            Failure::Compacted { oldest_revision } => {
                Then::Fail(ClientError::Compacted { shard: Some(self.shard), oldest_revision })
            }
            failure => Then::Retry(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(from: Option<u64>) -> Follow {
        let range = (Bytes::from_static(b"{t}"), Some(Bytes::from_static(b"{t}~")));
        Follow::new(ShardId(3), 8, range, Consistency::Linearizable, from)
    }

    fn message(revision: u64, changes: &[(u64, &str)]) -> pb::WatchResponse {
        let changes = changes
            .iter()
            .map(|(revision, key)| pb::WatchChange {
                revision: *revision,
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Some(Bytes::from_static(b"v")),
            })
            .collect();
        pb::WatchResponse { changes, revision, end: None }
    }

    fn ended(revision: u64, reason: pb::watch_end::Reason, end_revision: u64) -> pb::WatchResponse {
        let end = pb::WatchEnd { reason: reason as i32, revision: end_revision, detail: None };
        pb::WatchResponse { changes: Vec::new(), revision, end: Some(end) }
    }

    fn revisions(heard: &Heard) -> Vec<u64> {
        heard.revisions.iter().map(|revision| revision.revision).collect()
    }

    /// A watch from now starts after the first message's revision; changes before the one
    /// needed (kept by the replica, sent again by a new stream) are not given twice.
    #[test]
    fn a_watch_from_now_starts_after_the_first_message_and_skips_what_it_had() {
        let mut follow = follow(None);
        assert_eq!(follow.open(), None);
        let heard = follow.on_message(message(7, &[]));
        assert!(heard.registered);
        assert_eq!((heard.resume_at, follow.next()), (Some(8), Some(8)));
        let heard = follow.on_message(message(9, &[(8, "{t}a"), (9, "{t}b")]));
        assert_eq!((revisions(&heard), heard.resume_at), (vec![8, 9], Some(10)));
        // A new stream that sends 9 again gives it no second time.
        assert_eq!(follow.open(), Some(10));
        let heard = follow.on_message(message(9, &[]));
        assert!(heard.registered && heard.then.is_none());
        let heard = follow.on_message(message(10, &[(9, "{t}b"), (10, "{t}c")]));
        assert_eq!(revisions(&heard), vec![10]);
    }

    /// A replica behind the revision before the one needed, at the leader's level, never had
    /// the revisions in between: the watch ends `Compacted`. A stale watch waits for it.
    #[test]
    fn a_first_message_behind_the_revision_needed_ends_the_watch_unless_stale() {
        let mut follow = follow(Some(6));
        follow.open();
        let heard = follow.on_message(message(3, &[]));
        assert!(!heard.registered && heard.resume_at.is_none());
        assert!(matches!(
            heard.then,
            Some(Then::Fail(ClientError::Compacted {
                shard: Some(ShardId(3)),
                oldest_revision: 6
            }))
        ));
        let range = (Bytes::new(), None);
        let mut stale = Follow::new(ShardId(3), 8, range, Consistency::Stale, Some(6));
        stale.open();
        let heard = stale.on_message(message(3, &[]));
        assert!(heard.registered && heard.then.is_none());
        assert_eq!(heard.resume_at, Some(6));
    }

    /// A revision split over messages is given once its last part arrived; a stream lost in
    /// the middle of one drops its first part, and the next stream gives it whole.
    #[test]
    fn a_revision_is_given_whole_after_its_last_part_even_across_streams() {
        let mut follow = follow(Some(1));
        follow.open();
        follow.on_message(message(0, &[]));
        let heard = follow.on_message(message(0, &[(1, "{t}a")]));
        assert!(heard.revisions.is_empty());
        assert_eq!(heard.resume_at, Some(1));
        follow.open();
        follow.on_message(message(0, &[]));
        assert!(follow.on_message(message(0, &[(1, "{t}a")])).revisions.is_empty());
        let heard = follow.on_message(message(1, &[(1, "{t}b")]));
        let keys: Vec<_> = heard.revisions[0].changes.iter().map(|c| c.key.clone()).collect();
        assert_eq!(keys, vec![Bytes::from_static(b"{t}a"), Bytes::from_static(b"{t}b")]);
        assert_eq!(heard.resume_at, Some(2));
    }

    /// How a stream ends decides what comes next: a move reads the latest placement and
    /// resumes after the shard's last revision here; a reset watches again; a
    /// refusal is a failed attempt; a shard whose keys are gone ends the watch.
    #[test]
    fn each_end_says_what_comes_next() {
        use pb::watch_end::Reason;
        let mut follow = follow(Some(5));
        follow.open();
        follow.on_message(message(4, &[]));
        let heard = follow.on_message(ended(4, Reason::WatchEndMoved, 6));
        assert!(matches!(heard.then, Some(Then::Refresh)));
        assert_eq!(heard.resume_at, Some(7), "revisions 5 and 6 made nothing in the range");
        follow.open();
        follow.on_message(message(6, &[]));
        let heard = follow.on_message(ended(6, Reason::WatchEndReset, 0));
        assert!(matches!(heard.then, Some(Then::Again)));
        follow.open();
        follow.on_message(message(6, &[]));
        let not_leader = pb::ErrorDetail {
            kind: Some(pb::error_detail::Kind::NotLeader(pb::NotLeader {
                leader_node: Some(2),
                leader_address: "n2:7100".into(),
            })),
        };
        let mut refused = ended(6, Reason::WatchEndNotServed, 0);
        refused.end.as_mut().expect("an end").detail = Some(not_leader);
        let heard = follow.on_message(refused);
        assert!(matches!(heard.then, Some(Then::Retry(Failure::NotLeader { leader: Some(_) }))));
        follow.open();
        follow.on_message(message(6, &[]));
        let heard = follow.on_message(ended(6, Reason::WatchEndUnowned, 6));
        assert!(matches!(heard.then, Some(Then::Fail(ClientError::Compacted { .. }))));
    }
}
