//! The stream of one `Kv.Watch` call: what the watcher registered at the store receives
//! ([`mosaic_shardkv::watch`]), sent to the client in messages of whole revisions.
//!
//! The first message, with no change, says where the watch starts (the revision before the
//! first it may send). Then each message carries the revisions queued so far (at least one,
//! at most [`MESSAGE_BYTES_MAX`] of keys and values beyond the first), and its `revision`
//! is the last one it carries. Every [`WATCH_CHECK_INTERVAL`] the replica is checked at the
//! watch's consistency level (a shard read, as a scan's): a failure ends the stream
//! (`NOT_SERVED`, with the refusal's detail, say a `NotLeader` naming the leader); a success
//! sends what is queued and, if nothing is left, the feed's revision as of the check, so an
//! idle watcher learns how far it is up to date. The stream ends after the feed's end
//! (`MOVED`, `RESET`, `LAGGED`); a client that goes away drops the watcher.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mosaic_proto::pb;
use mosaic_raftstore::Error;
use mosaic_shardkv::watch::{Change, WatchEnd, WatchEvent, WatchReceiver};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::status::{Directory, to_status};

/// How often a watch's replica is checked, and an idle watcher told how far it is up to date.
pub const WATCH_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The most bytes of keys and values one message carries beyond its first revision's.
pub const MESSAGE_BYTES_MAX: u64 = 1 << 20;

/// Messages built ahead of a slow client (the watcher's own queue holds the rest).
const MESSAGES_AHEAD: usize = 2;

/// A check of the watch's replica at its consistency level.
pub type Check = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send>;

/// The stream of `watcher`, checked with `check`; refusals name leaders from `directory`.
pub fn forward(
    watcher: WatchReceiver,
    check: Check,
    directory: Directory,
) -> ReceiverStream<Result<pb::WatchResponse, Status>> {
    let (sender, receiver) = mpsc::channel(MESSAGES_AHEAD);
    tokio::spawn(run(watcher, check, directory, sender));
    ReceiverStream::new(receiver)
}

/// What the stream has sent, and what it sends next.
struct Stream {
    watcher: WatchReceiver,
    sender: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    /// Every change in the range up to this revision has been sent.
    sent: u64,
}

async fn run(
    watcher: WatchReceiver,
    check: Check,
    directory: Directory,
    sender: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    let sent = watcher.from - 1;
    let mut stream = Stream { watcher, sender, sent };
    if !stream.send(Vec::new(), None).await {
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
                        let end = not_served(&error, &directory);
                        stream.send(Vec::new(), Some(end)).await;
                        return;
                    }
                }
            }
            () = stream.sender.closed() => return,
        }
    }
}

impl Stream {
    /// Sends `first` and what else is queued, up to the message's bound or the stream's end;
    /// with `published` (the feed's revision read before a check) and nothing left queued,
    /// says the watcher is up to date to it. False once the stream is over.
    async fn send_queued(&mut self, first: Option<WatchEvent>, published: Option<u64>) -> bool {
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut next = first;
        let mut drained = false;
        loop {
            let event = match next.take() {
                Some(event) => event,
                None if !changes.is_empty() && bytes >= MESSAGE_BYTES_MAX => break,
                None => match self.watcher.try_recv() {
                    Ok(event) => event,
                    Err(_) => {
                        drained = true;
                        break;
                    }
                },
            };
            match event {
                WatchEvent::Changes(revision) => {
                    bytes += revision.iter().map(change_bytes).sum::<u64>();
                    changes.extend(revision);
                }
                WatchEvent::End(end) => {
                    self.send(changes, Some(end_of(end))).await;
                    return false;
                }
            }
        }
        if changes.is_empty() && published.is_none() {
            return true;
        }
        if drained && let Some(published) = published {
            self.sent = self.sent.max(published);
        }
        self.send(changes, None).await
    }

    /// Sends a message of `changes`, ending the stream with `end` if given; false if the
    /// client is gone or the stream ended.
    async fn send(&mut self, changes: Vec<Change>, end: Option<pb::WatchEnd>) -> bool {
        if let Some(last) = changes.last() {
            self.sent = self.sent.max(last.revision);
        }
        let ends = end.is_some();
        let changes = changes
            .into_iter()
            .map(|change| pb::WatchChange {
                revision: change.revision,
                key: change.key,
                value: change.value,
            })
            .collect();
        let message = pb::WatchResponse { changes, revision: self.sent, end };
        self.sender.send(Ok(message)).await.is_ok() && !ends
    }
}

/// The wire form of the feed's `end`.
fn end_of(end: WatchEnd) -> pb::WatchEnd {
    use pb::watch_end::Reason;
    let (reason, revision) = match end {
        WatchEnd::Moved { revision } => (Reason::WatchEndMoved, revision),
        WatchEnd::Reset => (Reason::WatchEndReset, 0),
        WatchEnd::Lagged => (Reason::WatchEndLagged, 0),
    };
    pb::WatchEnd { reason: reason as i32, revision, detail: None }
}

/// What a key and value count for in a message's bound.
fn change_bytes(change: &Change) -> u64 {
    (change.key.len() + change.value.as_ref().map_or(0, |value| value.len())) as u64
}

/// The end of a stream whose check failed with `error`.
fn not_served(error: &Error, directory: &Directory) -> pb::WatchEnd {
    let status = to_status(error, directory);
    let detail = pb::ErrorDetail::decode(status.details()).ok().filter(|d| d.kind.is_some());
    pb::WatchEnd { reason: pb::watch_end::Reason::WatchEndNotServed as i32, revision: 0, detail }
}
