//! The store thread: one OS thread owns the node's `Store`, fed through a bounded inbox.
//!
//! Loop: wait for a message or the next tick; take up to `INBOX_DRAIN_MAX` more messages
//! without waiting; tick when due; run `Store::process` (which persists every busy group in
//! one synced write). Everything that arrives while a write is in flight is batched into the
//! next pass: that is the group commit.
//!
//! The inbox is bounded: a request that does not fit is answered `ServerBusy` at once, a Raft
//! message that does not fit is dropped (Raft retries). Its depth and refusals are counted
//! ([`InboxMetrics`]). A storage error stops the thread and
//! is reported by [`StoreRunner::join`]; the node must then exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mosaic_engine::KvEngine;
use mosaic_raftstore::{Callback, Clock, Error, Result, StateMachine, Store, StoreMsg, Transport};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Messages handled per loop turn before the store runs a Ready pass.
const INBOX_DRAIN_MAX: usize = 4_096;
/// First pause of [`StoreHandle::deliver`] while the inbox is full; it doubles up to
/// [`DELIVER_RETRY_MAX`].
const DELIVER_RETRY_MIN: Duration = Duration::from_millis(1);
/// Longest pause of [`StoreHandle::deliver`] between two tries.
const DELIVER_RETRY_MAX: Duration = Duration::from_millis(100);

/// What the inbox counts (shared handles: they follow the inbox).
#[derive(Clone, Debug, Default)]
pub struct InboxMetrics {
    /// Messages queued and not yet taken by the store thread.
    pub depth: Gauge,
    /// Messages refused because the inbox was full (requests answered `ServerBusy`, Raft
    /// messages dropped).
    pub refused: Counter,
}

/// A cloneable way to reach the store thread.
pub struct StoreHandle<K: KvEngine, SM: StateMachine<K>> {
    sender: SyncSender<StoreMsg<K, SM>>,
    metrics: InboxMetrics,
}

impl<K: KvEngine, SM: StateMachine<K>> Clone for StoreHandle<K, SM> {
    fn clone(&self) -> Self {
        Self { sender: self.sender.clone(), metrics: self.metrics.clone() }
    }
}

impl<K: KvEngine, SM: StateMachine<K>> StoreHandle<K, SM> {
    /// What the inbox counts.
    #[must_use]
    pub fn inbox_metrics(&self) -> InboxMetrics {
        self.metrics.clone()
    }

    /// Queues `msg` if there is room, counting it in the inbox's depth.
    #[expect(clippy::result_large_err, reason = "the channel hands a refused message back whole")]
    fn try_send(
        &self,
        msg: StoreMsg<K, SM>,
    ) -> std::result::Result<(), TrySendError<StoreMsg<K, SM>>> {
        self.metrics.depth.inc();
        let sent = self.sender.try_send(msg);
        if sent.is_err() {
            self.metrics.depth.dec();
        }
        sent
    }

    /// Queues `msg` without waiting; true if it was queued. A request that cannot be queued
    /// is answered at once: `ServerBusy` when the inbox is full, `Stopped` when the store
    /// thread has ended (a message without an answer, such as a received snapshot, is
    /// dropped: its sender decides by the result).
    pub fn send(&self, msg: StoreMsg<K, SM>) -> bool {
        match self.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(msg)) => {
                self.metrics.refused.inc();
                msg.refuse(Error::ServerBusy { reason: "the store inbox is full".into() });
                false
            }
            Err(TrySendError::Disconnected(msg)) => {
                msg.refuse(Error::Stopped);
                false
            }
        }
    }

    /// Queues `msg`, waiting for room while the inbox is full: for a message that must not be
    /// dropped, such as a snapshot's outcome (until the leader hears it, it sends that follower
    /// nothing else). Their number is bounded by what produces them (one per snapshot sent).
    /// Gives up only when the store thread has ended.
    pub async fn deliver(&self, mut msg: StoreMsg<K, SM>) {
        let mut pause = DELIVER_RETRY_MIN;
        loop {
            match self.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(returned)) => {
                    msg = returned;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(DELIVER_RETRY_MAX);
                }
                Err(TrySendError::Disconnected(returned)) => {
                    returned.refuse(Error::Stopped);
                    return;
                }
            }
        }
    }

    /// Sends the request that `build` makes around a callback, and waits for its answer.
    ///
    /// # Errors
    /// The store's refusal; `Stopped` when the store thread ended first.
    pub async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(Callback<T>) -> StoreMsg<K, SM>,
    ) -> Result<T> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.send(build(Box::new(move |result| {
            // The asker may have given up waiting; nothing to do then.
            let _ = sender.send(result);
        })));
        receiver.await.unwrap_or(Err(Error::Stopped))
    }

    /// As [`StoreHandle::ask`], giving up with `Timeout` after `timeout` (the request may
    /// still be answered later, to no one).
    ///
    /// # Errors
    /// As [`StoreHandle::ask`]; `Timeout`.
    pub async fn ask_within<T: Send + 'static>(
        &self,
        timeout: Duration,
        build: impl FnOnce(Callback<T>) -> StoreMsg<K, SM>,
    ) -> Result<T> {
        tokio::time::timeout(timeout, self.ask(build)).await.unwrap_or(Err(Error::Timeout))
    }
}

/// The receiving end of the inbox, handed to [`spawn`].
pub struct Inbox<K: KvEngine, SM: StateMachine<K>> {
    receiver: Receiver<StoreMsg<K, SM>>,
    depth: Gauge,
}

impl<K: KvEngine, SM: StateMachine<K>> Drop for Inbox<K, SM> {
    /// The messages still queued are dropped with the inbox.
    fn drop(&mut self) {
        self.depth.set(0);
    }
}

impl<K: KvEngine, SM: StateMachine<K>> Inbox<K, SM> {
    /// The next message, waiting at most `wait` for it.
    fn recv_timeout(
        &self,
        wait: Duration,
    ) -> std::result::Result<StoreMsg<K, SM>, RecvTimeoutError> {
        let msg = self.receiver.recv_timeout(wait)?;
        self.depth.dec();
        Ok(msg)
    }

    /// The next message, if one is waiting.
    fn try_recv(&self) -> Option<StoreMsg<K, SM>> {
        let msg = self.receiver.try_recv().ok()?;
        self.depth.dec();
        Some(msg)
    }
}

/// Makes the bounded inbox of a store thread.
#[must_use]
pub fn channel<K: KvEngine, SM: StateMachine<K>>(
    capacity: usize,
) -> (StoreHandle<K, SM>, Inbox<K, SM>) {
    let (sender, receiver) = sync_channel(capacity);
    let metrics = InboxMetrics::default();
    let depth = metrics.depth.clone();
    (StoreHandle { sender, metrics }, Inbox { receiver, depth })
}

/// The store's clock in production: the monotonic `Instant`, as time since the clock was made.
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    #[must_use]
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// The running store thread.
pub struct StoreRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Starts the store thread. `open` runs on the thread and builds the store (so the store
/// itself never moves between threads).
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn<K, SM, T, F>(
    name: String,
    inbox: Inbox<K, SM>,
    tick_interval: Duration,
    open: F,
) -> std::io::Result<StoreRunner>
where
    K: KvEngine,
    SM: StateMachine<K>,
    T: Transport<K>,
    F: FnOnce() -> Result<Store<K, SM, T>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let mut store = open()?;
        // Every line the store thread logs names its node.
        let _node = store.span().clone().entered();
        let result = run(&mut store, &inbox, tick_interval, &stopping);
        if let Err(error) = &result {
            tracing::error!(%error, "store thread stopped by an error");
        }
        result
    })?;
    Ok(StoreRunner { stop, thread: Some(thread) })
}

fn run<K: KvEngine, SM: StateMachine<K>, T: Transport<K>>(
    store: &mut Store<K, SM, T>,
    inbox: &Inbox<K, SM>,
    tick_interval: Duration,
    stop: &AtomicBool,
) -> Result<()> {
    let mut next_tick = Instant::now() + tick_interval;
    while !stop.load(Ordering::Relaxed) {
        let wait = if store.has_work() {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(Instant::now())
        };
        match inbox.recv_timeout(wait) {
            Ok(msg) => store.handle(msg)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        for _ in 0..INBOX_DRAIN_MAX {
            match inbox.try_recv() {
                Some(msg) => store.handle(msg)?,
                None => break,
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            store.handle(StoreMsg::Tick)?;
            // The next tick is a whole interval after this one, never sooner: lease reads rest
            // on ticks never coming faster than `tick_interval` (`mosaic_raft::Config`), so a
            // late tick is not caught up on, and missed ones are not replayed after a stall.
            next_tick = now + tick_interval;
        }
        store.process()?;
    }
    Ok(())
}

impl StoreRunner {
    /// Asks the thread to stop after its current turn and waits for it. Requests still
    /// waiting are answered `Stopped`.
    ///
    /// # Errors
    /// The error that stopped the thread, if one did.
    pub fn join(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    /// Returns true once the thread has ended (by itself: an error).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn wait(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        }
    }
}

impl Drop for StoreRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(error) = self.wait() {
            tracing::error!(%error, "store thread ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use mosaic_engine::{GroupId, MemKv};
    use mosaic_raft::NodeId;
    use mosaic_shardkv::KvStateMachine;

    use super::*;

    #[tokio::test]
    async fn a_message_delivered_into_a_full_inbox_waits_for_room_instead_of_being_dropped() {
        let (handle, inbox) = channel::<MemKv, KvStateMachine>(1);
        assert!(handle.send(StoreMsg::Tick));
        assert!(!handle.send(StoreMsg::Tick), "a message sent into a full inbox is not queued");
        let status = StoreMsg::SnapshotStatus { group: GroupId(1), to: NodeId(2), delivered: true };
        let delivering = tokio::spawn({
            let handle = handle.clone();
            async move { handle.deliver(status).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!delivering.is_finished(), "delivered into a full inbox");
        assert_eq!(handle.inbox_metrics().depth.get(), 1, "the refused message is not counted");
        assert_eq!(handle.inbox_metrics().refused.get(), 1);
        assert!(matches!(inbox.try_recv(), Some(StoreMsg::Tick)));
        delivering.await.unwrap();
        assert_eq!(handle.inbox_metrics().depth.get(), 1);
        assert!(matches!(inbox.try_recv(), Some(StoreMsg::SnapshotStatus { delivered: true, .. })));
        assert_eq!(handle.inbox_metrics().depth.get(), 0);
    }
}
