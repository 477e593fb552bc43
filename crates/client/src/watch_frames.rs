//! A watch stream on the wire, the node's side: [`Frames`] turns what a watcher registered at
//! the store receives ([`mosaic_shardkv::watch`]) into the messages of a `Kv.Watch` stream,
//! each within the node's message limit. The node's stream task sends them
//! (`mosaic_server::watch_stream`); it lives beside its reader ([`crate::watch_follow`]), as
//! [`crate::refusal`] does, so that the two cannot drift apart and the whole-cluster simulator
//! frames a replica's feed exactly as a node does.
//!
//! The first message, with no change, says where the watch starts: the revision before the
//! first it may send, or the replica's revision if that is lower (the replica is behind, or
//! the shard's history here is shorter than the client thinks: a client that needs a later
//! one knows the changes in between are not here). Then each message carries the changes
//! queued so far, in revision order, as many as fit in the limit (at least one); a revision
//! too large for one message is split over several, and each message's `revision` is the
//! last revision it completes. Once nothing is queued, a message can say how far the watcher
//! is up to date (the feed's revision read before a check of the replica). The feed's end
//! (`MOVED`, `UNOWNED`, `RESET`, `LAGGED`) or a failed check (`NOT_SERVED`) is the last
//! message.

use std::collections::VecDeque;

use mosaic_proto::pb;
use mosaic_shardkv::watch::{Change, WatchEnd, WatchEvent};
use prost::Message as _;
use tonic::Status;

/// What a message carries beyond its changes (its revision and end), counted generously.
const MESSAGE_OVERHEAD_BYTES: usize = 256;

/// One message, and where the stream stands after it.
#[derive(Debug)]
pub struct Framed {
    /// The message.
    pub message: pb::WatchResponse,
    /// It ends the stream.
    pub ends: bool,
    /// Nothing queued is left to send after it.
    pub drained: bool,
}

/// The framing of one stream. See the module documentation.
#[derive(Debug)]
pub struct Frames {
    message_bytes_max: usize,
    /// Every change in the range up to this revision has been sent.
    sent: u64,
    /// Changes taken from the watcher and not sent yet (the rest of a revision a message
    /// could not hold), each with whether it is its revision's last.
    carried: VecDeque<(Change, bool)>,
}

impl Frames {
    /// The framing of a watcher registered from revision `from` at a feed whose revision is
    /// `published`, in messages of at most `message_bytes_max` bytes; with the stream's first
    /// message.
    #[must_use]
    pub fn new(from: u64, published: u64, message_bytes_max: usize) -> (Self, pb::WatchResponse) {
        let sent = from - 1;
        let first =
            pb::WatchResponse { changes: Vec::new(), revision: sent.min(published), end: None };
        (Self { message_bytes_max, sent, carried: VecDeque::new() }, first)
    }

    /// The next message of what is queued: what is carried, then the events `queued` gives
    /// (`None`: nothing more is queued now). With nothing left to send, `None`, unless
    /// `published` (the feed's revision read before a successful check) says how far the
    /// watcher is up to date: then one message with no change says so.
    pub fn next_message(
        &mut self,
        queued: &mut dyn FnMut() -> Option<WatchEvent>,
        published: Option<u64>,
    ) -> Option<Framed> {
        let mut message = pb::WatchResponse { changes: Vec::new(), revision: self.sent, end: None };
        let mut bytes = MESSAGE_OVERHEAD_BYTES;
        let drained = loop {
            if self.carried.is_empty() {
                let Some(event) = queued() else { break true };
                match event {
                    WatchEvent::Changes(changes) => {
                        let last = changes.len() - 1;
                        let marked = changes.into_iter().enumerate();
                        self.carried.extend(marked.map(|(at, change)| (change, at == last)));
                    }
                    WatchEvent::End(end) => {
                        message.end = Some(end_of(end));
                        break true;
                    }
                }
            }
            let (change, _) = self.carried.front().expect("carried");
            let change = pb::WatchChange {
                revision: change.revision,
                key: change.key.clone(),
                value: change.value.clone(),
            };
            let size = change.encoded_len() + 8;
            if !message.changes.is_empty() && bytes + size > self.message_bytes_max {
                break false;
            }
            bytes += size;
            let (done, completes) = self.carried.pop_front().expect("carried");
            if completes {
                message.revision = done.revision;
            }
            message.changes.push(change);
        };
        let ends = message.end.is_some();
        // Drained: nothing is carried either.
        if drained && !ends {
            match published {
                Some(published) => message.revision = message.revision.max(published),
                None if message.changes.is_empty() => return None,
                None => {}
            }
        }
        self.sent = message.revision;
        Some(Framed { message, ends, drained })
    }

    /// The last message of a stream whose check of the replica failed with `status` (the
    /// refusal the node would answer a request with).
    #[must_use]
    pub fn not_served(&self, status: &Status) -> pb::WatchResponse {
        let detail = pb::ErrorDetail::decode(status.details()).ok().filter(|d| d.kind.is_some());
        let reason = pb::watch_end::Reason::WatchEndNotServed as i32;
        let end = pb::WatchEnd { reason, revision: 0, detail };
        pb::WatchResponse { changes: Vec::new(), revision: self.sent, end: Some(end) }
    }
}

/// The wire form of the feed's `end`.
fn end_of(end: WatchEnd) -> pb::WatchEnd {
    use pb::watch_end::Reason;
    let (reason, revision) = match end {
        WatchEnd::Moved { revision } => (Reason::WatchEndMoved, revision),
        WatchEnd::Unowned { revision } => (Reason::WatchEndUnowned, revision),
        WatchEnd::Reset => (Reason::WatchEndReset, 0),
        WatchEnd::Lagged => (Reason::WatchEndLagged, 0),
    };
    pb::WatchEnd { reason: reason as i32, revision, detail: None }
}
