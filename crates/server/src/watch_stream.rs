//! The stream of one `Kv.Watch` call: what the watcher registered at the store receives
//! ([`mosaic_shardkv::watch`]), framed into messages within the node's message limit by
//! [`mosaic_client::watch_frames`] (which says what each message holds), and sent to the
//! client.
//!
//! Every [`WATCH_CHECK_INTERVAL`] the replica is checked at the watch's consistency level (a
//! shard read, as a scan's): a failure ends the stream (`NOT_SERVED`, with the refusal's
//! detail, say a `NotLeader` naming the leader); a success sends what is queued and, if
//! nothing is left, the feed's revision as of the check, so an idle watcher learns how far it
//! is up to date (and a client that hears nothing for several intervals knows the stream is
//! dead). The stream ends after the feed's end (`MOVED`, `UNOWNED`, `RESET`, `LAGGED`); a
//! client that goes away drops the watcher, and one that takes no message for
//! [`STALLED_AFTER`] has its stream dropped, so a reader that stopped holds no memory.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mosaic_client::watch_frames::Frames;
use mosaic_proto::pb;
use mosaic_raftstore::Error;
use mosaic_shardkv::watch::{WatchEnd, WatchEvent, WatchReceiver};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::status::{Directory, to_status};

/// How often a watch's replica is checked, and an idle watcher told how far it is up to date.
pub const WATCH_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How long a message may wait for a client that reads nothing before its stream is dropped.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);

/// The most watch streams a node serves at once (more are refused `ServerBusy`).
pub const WATCH_STREAMS_MAX: usize = 1_024;

/// Messages built ahead of a slow client (the watcher's own queue holds the rest).
const MESSAGES_AHEAD: usize = 2;

/// A check of the watch's replica at its consistency level.
pub type Check = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send>;

/// What a stream needs besides its watcher.
pub struct StreamParts {
    /// The check of the replica.
    pub check: Check,
    /// Where refusals find a leader's address.
    pub directory: Directory,
    /// The node's largest message.
    pub message_bytes_max: usize,
    /// The stream's place among the node's [`WATCH_STREAMS_MAX`], held until it ends.
    pub permit: OwnedSemaphorePermit,
}

/// The stream of `watcher`.
pub fn forward(
    watcher: WatchReceiver,
    parts: StreamParts,
) -> ReceiverStream<Result<pb::WatchResponse, Status>> {
    let (sender, receiver) = mpsc::channel(MESSAGES_AHEAD);
    tokio::spawn(run(watcher, parts, sender));
    ReceiverStream::new(receiver)
}

/// The watcher, its framing, and where its messages go.
struct Stream {
    watcher: WatchReceiver,
    frames: Frames,
    sender: mpsc::Sender<Result<pb::WatchResponse, Status>>,
}

async fn run(
    watcher: WatchReceiver,
    parts: StreamParts,
    sender: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    let StreamParts { check, directory, message_bytes_max, permit: _permit } = parts;
    let (frames, first) = Frames::new(watcher.from, watcher.published(), message_bytes_max);
    let mut stream = Stream { watcher, frames, sender };
    if !stream.deliver(first).await {
        return;
    }
    let mut checks = tokio::time::interval(WATCH_CHECK_INTERVAL);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    loop {
        tokio::select! {
            event = stream.watcher.recv() => {
                // A feed dropped without an end (the node stopping): as a reset.
                let event = event.unwrap_or(WatchEvent::End(WatchEnd::Reset));
                if !stream.send_queued(Some(event), None).await {
                    return;
                }
            }
            _ = checks.tick() => {
                let published = stream.watcher.published();
                match check().await {
                    Ok(()) => {
                        if !stream.send_queued(None, Some(published)).await {
                            return;
                        }
                    }
                    Err(error) => {
                        // What is queued first: an end among it (the shard moved, so the
                        // check failed) is the stream's real end.
                        if !stream.send_queued(None, None).await {
                            return;
                        }
                        let last = stream.frames.not_served(&to_status(&error, &directory));
                        stream.deliver(last).await;
                        return;
                    }
                }
            }
            () = stream.sender.closed() => return,
        }
    }
}

impl Stream {
    /// Sends `first` and what else is queued, message by message, until nothing is left or
    /// the stream ends; with `published` (the feed's revision read before a check) and
    /// nothing left, says the watcher is up to date to it. False once the stream is over.
    async fn send_queued(&mut self, first: Option<WatchEvent>, published: Option<u64>) -> bool {
        let mut first = first;
        loop {
            let watcher = &mut self.watcher;
            let mut queued = || first.take().or_else(|| watcher.try_recv().ok());
            let Some(framed) = self.frames.next_message(&mut queued, published) else {
                return true;
            };
            if !self.deliver(framed.message).await || framed.ends {
                return false;
            }
            if framed.drained {
                return true;
            }
        }
    }

    /// Sends `message`; false if the client is gone or has read nothing for
    /// [`STALLED_AFTER`] (its stream is dropped: it resumes from the last revision it has).
    async fn deliver(&mut self, message: pb::WatchResponse) -> bool {
        self.sender.send_timeout(Ok(message), STALLED_AFTER).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use mosaic_shardkv::watch::{Change, ShardFeed, WatchRange};
    use prost::Message as _;
    use tokio::sync::Semaphore;
    use tokio_stream::StreamExt as _;

    use super::*;

    fn change(revision: u64, key: &str, value_bytes: usize) -> Change {
        let key = Bytes::copy_from_slice(key.as_bytes());
        Change { revision, key, value: Some(Bytes::from(vec![b'v'; value_bytes])) }
    }

    /// A stream of `feed`'s watcher from `from`, its messages at most `message_bytes_max`,
    /// whose checks always pass.
    fn stream_of(
        feed: &mut ShardFeed,
        from: Option<u64>,
        message_bytes_max: usize,
    ) -> ReceiverStream<Result<pb::WatchResponse, Status>> {
        let all = WatchRange { start: Bytes::new(), end: None };
        let watcher = feed.subscribe(from, all).expect("registered");
        let check: Check = Box::new(|| Box::pin(async { Ok(()) }));
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a place");
        let directory = Directory::default();
        forward(watcher, StreamParts { check, directory, message_bytes_max, permit })
    }

    async fn next(
        stream: &mut ReceiverStream<Result<pb::WatchResponse, Status>>,
    ) -> pb::WatchResponse {
        stream.next().await.expect("a message").expect("not a status")
    }

    /// Found in review: messages of whole revisions went past the node's message limit, which
    /// ends a stream with an error the client does not retry. A revision larger than a message
    /// is split over several, and only the last says the revision is complete.
    #[tokio::test]
    async fn messages_fit_the_limit_and_say_which_revision_they_complete() {
        let mut feed = ShardFeed::new(0);
        let limit = 600;
        let mut stream = stream_of(&mut feed, Some(1), limit);
        assert_eq!(next(&mut stream).await.revision, 0, "where the watch starts");
        // Revision 1: five changes of about 100 bytes each, two messages' worth at most.
        feed.publish((0..5).map(|n| change(1, &format!("k{n}"), 100)).collect());
        feed.publish(vec![change(2, "k9", 10)]);
        let mut changes = Vec::new();
        let mut revisions = Vec::new();
        while changes.len() < 6 {
            let message = next(&mut stream).await;
            assert!(message.encoded_len() <= limit, "{} bytes", message.encoded_len());
            revisions.push(message.revision);
            changes.extend(message.changes.iter().map(|change| change.key.clone()));
        }
        let keys: Vec<Bytes> = ["k0", "k1", "k2", "k3", "k4", "k9"].map(Bytes::from).to_vec();
        assert_eq!(changes, keys, "every change once, in order");
        assert!(revisions.len() >= 2, "split: {revisions:?}");
        assert_eq!(revisions[0], 0, "the first part completes nothing");
        assert_eq!(revisions.last(), Some(&2));
    }

    /// Found in review: a watch resumed after its shard moved, at a new owner where the shard
    /// started over empty, waited for revisions the shard never reached there and missed its
    /// first ones. The first message names the replica's revision when it is lower than the
    /// one before the revision asked, so the client knows those revisions are not there.
    #[tokio::test]
    async fn the_first_message_names_the_replicas_revision_when_it_is_behind() {
        let mut feed = ShardFeed::new(2);
        let mut stream = stream_of(&mut feed, Some(9), 1 << 20);
        assert_eq!(next(&mut stream).await.revision, 2);
        let mut stream = stream_of(&mut feed, None, 1 << 20);
        assert_eq!(next(&mut stream).await.revision, 2);
    }

    /// A feed's end ends the stream after the changes before it, saying why and, for a move,
    /// the shard's last revision here.
    #[tokio::test]
    async fn the_feeds_end_is_the_streams_last_message() {
        let mut feed = ShardFeed::new(0);
        let mut stream = stream_of(&mut feed, None, 1 << 20);
        next(&mut stream).await;
        feed.publish(vec![change(1, "a", 1)]);
        feed.end(WatchEnd::Moved { revision: 1 });
        let mut messages = Vec::new();
        while let Some(message) = stream.next().await {
            messages.push(message.expect("not a status"));
        }
        let last = messages.last().expect("an end");
        let end = last.end.clone().expect("the end");
        assert_eq!((end.reason, end.revision), (pb::watch_end::Reason::WatchEndMoved as i32, 1));
        assert_eq!(last.revision, 1);
        let sent: usize = messages.iter().map(|message| message.changes.len()).sum();
        assert_eq!(sent, 1);
    }
}
