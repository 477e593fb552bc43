//! [`GrpcTransport`]: the store's way out to other nodes. One long-lived client stream per
//! peer node (`RaftTransport.Send`) carries batches of Raft messages for every group; each
//! snapshot gets its own stream (`RaftTransport.SendSnapshot`), chunked, within the node's
//! bandwidth budget, at most `snapshot-sends-max` at once (one more is reported not delivered
//! at once, and Raft sends a fresh snapshot later, rather than queueing one that ages).
//!
//! The store calls it on its own thread and it never blocks there: a batch goes into the
//! peer's bounded queue or is dropped when the queue is full (Raft retries); a tokio task per
//! peer drains the queue into the stream, reconnecting with backoff. While a peer cannot be
//! reached its queue is drained and dropped, and the store is told (`Unreachable`) so that its
//! leaders stop pipelining to it. A peer's address is looked up in the [`Directory`] on every
//! send: when it changed, the peer gets a new stream at the new address and the old one ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mosaic_client::Tls;
use mosaic_engine::{ClusterId, GroupId, KvEngine};
use mosaic_proto::message_to_pb;
use mosaic_proto::pb::{self, raft_transport_client::RaftTransportClient};
use mosaic_raft::{Message, NodeId};
use mosaic_raftstore::{SnapshotReader, StateMachine, StoreMsg, Transport};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::limits::Slots;
use crate::metrics::TransferMetrics;
use crate::pacing::Budget;
use crate::runner::StoreHandle;
use crate::status::Directory;

/// Reconnect backoff: starts here, doubles, stops growing at `RECONNECT_BACKOFF_MAX`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Batches buffered between a peer's queue and its live stream.
const STREAM_BUFFER_BATCHES: usize = 64;
/// Largest message a node sends or accepts on the Raft transport.
pub const RAFT_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Settings of the transport.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// This node.
    pub node: NodeId,
    /// Where this node is reached (every batch says it, for a receiver that does not know).
    pub address: String,
    /// The cluster (every batch names it; a receiver of another cluster refuses it).
    pub cluster: ClusterId,
    /// This node's Raft timing (every batch carries it; a receiver with another refuses it).
    pub timing: pb::RaftTiming,
    /// Which start of this process it is (every batch carries it; a receiver whose quiescent
    /// groups this node led wakes them when it changes): [`process_incarnation`].
    pub incarnation: u64,
    /// Batches queued per peer, at most.
    pub peer_queue_batches: usize,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// The node's bandwidth budget, which snapshot streams share with shard streams.
    pub budget: Arc<Budget>,
    /// Snapshot streams sent at once.
    pub snapshot_sends: Slots,
    /// The identity connections to peers are made with (mutual TLS); `None`: plaintext.
    pub tls: Option<Tls>,
    /// Where the snapshot bytes sent are counted.
    pub transfers: TransferMetrics,
}

/// A number for this start of the process, different from any earlier start's: the wall
/// clock at start in nanoseconds (two starts of one node never share a nanosecond; should the
/// clock step back, a repeat only keeps a receiver from waking groups, which a request or
/// their leader's silence still does).
#[must_use]
pub fn process_incarnation() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

/// The gRPC transport of one node. See the module documentation.
pub struct GrpcTransport<K: KvEngine, SM: StateMachine<K>> {
    options: TransportOptions,
    directory: Directory,
    runtime: Handle,
    store: StoreHandle<K, SM>,
    /// Each peer's queue, and the address its stream reaches.
    peers: BTreeMap<NodeId, (String, mpsc::Sender<pb::RaftBatch>)>,
    dropped_batches: u64,
}

impl<K: KvEngine, SM: StateMachine<K>> GrpcTransport<K, SM> {
    /// A transport that reaches peers at the addresses in `directory`, runs its tasks on
    /// `runtime` and reports to `store`.
    #[must_use]
    pub fn new(
        options: TransportOptions,
        directory: Directory,
        runtime: Handle,
        store: StoreHandle<K, SM>,
    ) -> Self {
        Self { options, directory, runtime, store, peers: BTreeMap::new(), dropped_batches: 0 }
    }

    /// Batches dropped because a peer's queue was full or its address unknown.
    #[must_use]
    pub fn dropped_batches(&self) -> u64 {
        self.dropped_batches
    }

    /// The queue of `to`'s stream, started (or started afresh, at the new address) when the
    /// directory's address of `to` is not the stream's: every later batch goes to the new
    /// address, and the old stream ends once it has sent what it had queued.
    fn peer_queue(&mut self, to: NodeId) -> Option<&mpsc::Sender<pb::RaftBatch>> {
        if !self.peers.get(&to).is_some_and(|(streaming, _)| self.directory.is_at(to, streaming)) {
            let address = self.directory.address(to)?;
            let (sender, receiver) = mpsc::channel(self.options.peer_queue_batches);
            let store = self.store.clone();
            let tls = self.options.tls.clone();
            self.runtime.spawn(peer_stream(to, address.clone(), tls, receiver, store));
            self.peers.insert(to, (address, sender));
        }
        self.peers.get(&to).map(|(_, sender)| sender)
    }
}

impl<K: KvEngine, SM: StateMachine<K>> Transport<K> for GrpcTransport<K, SM> {
    fn send(&mut self, to: NodeId, messages: Vec<(GroupId, Message)>) {
        let batch = pb::RaftBatch {
            from_node: self.options.node.0,
            to_node: to.0,
            cluster_id: self.options.cluster.0,
            timing: Some(self.options.timing),
            from_incarnation: self.options.incarnation,
            from_address: self.options.address.clone(),
            messages: messages
                .iter()
                .map(|(group, message)| pb::GroupMessage {
                    group_id: group.0,
                    message: Some(message_to_pb(message)),
                })
                .collect(),
        };
        let Some(queue) = self.peer_queue(to) else {
            tracing::warn!(node_id = %self.options.node, peer = %to,
                "no address for a peer; dropping messages");
            self.dropped_batches += 1;
            return;
        };
        if queue.try_send(batch).is_err() {
            self.dropped_batches += 1;
        }
    }

    fn send_snapshot(
        &mut self,
        to: NodeId,
        group: GroupId,
        message: Message,
        reader: SnapshotReader<K::Snapshot>,
    ) {
        let store = self.store.clone();
        let Some(address) = self.directory.address(to) else {
            let status = StoreMsg::SnapshotStatus { group, to, delivered: false };
            self.runtime.spawn(async move { store.deliver(status).await });
            return;
        };
        let header = pb::SnapshotHeader {
            cluster_id: self.options.cluster.0,
            group_id: group.0,
            from_node: self.options.node.0,
            to_node: to.0,
            message: Some(message_to_pb(&message)),
        };
        let options = self.options.clone();
        self.runtime.spawn(async move {
            let delivered = match options.snapshot_sends.try_take() {
                Ok(slot) => {
                    let streamed = stream_snapshot(&address, header, reader, &options).await;
                    drop(slot);
                    match streamed {
                        Ok(()) => true,
                        // The receiver is busy or full: Raft sends again later.
                        Err(SendFailure::Refused(reason)) => {
                            tracing::debug!(node_id = %options.node, peer = %to, group_id = %group, %reason,
                                "snapshot refused by its receiver");
                            false
                        }
                        Err(SendFailure::Failed(error)) => {
                            tracing::warn!(node_id = %options.node, peer = %to, group_id = %group, %error,
                                "snapshot not delivered");
                            false
                        }
                    }
                }
                Err(_) => false,
            };
            // Never dropped: until the leader hears the outcome it sends this follower nothing.
            store.deliver(StoreMsg::SnapshotStatus { group, to, delivered }).await;
        });
    }
}

/// Opens a channel to a node (over TLS with `tls`, Nagle off).
pub(crate) async fn connect(address: &str, tls: Option<&Tls>) -> Result<Channel, String> {
    mosaic_client::endpoint(address, tls, CONNECT_TIMEOUT)?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|error| mosaic_client::classify::describe_transport_error(&error))
}

/// Drains one peer's queue into a `Send` stream for as long as the queue exists, reconnecting
/// with backoff.
async fn peer_stream<K: KvEngine, SM: StateMachine<K>>(
    to: NodeId,
    address: String,
    tls: Option<Tls>,
    mut queue: mpsc::Receiver<pb::RaftBatch>,
    store: StoreHandle<K, SM>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        let channel = match connect(&address, tls.as_ref()).await {
            Ok(channel) => channel,
            Err(error) => {
                tracing::debug!(peer = %to, %address, %error, "cannot connect to peer");
                store.send(StoreMsg::Unreachable { node: to });
                // Drop what queued up while the peer was away: Raft sends afresh.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        backoff = RECONNECT_BACKOFF_MIN;
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        let (stream_sender, stream_receiver) = mpsc::channel(STREAM_BUFFER_BATCHES);
        let call =
            tokio::spawn(async move { client.send(ReceiverStream::new(stream_receiver)).await });
        let mut queue_closed = true;
        while let Some(batch) = queue.recv().await {
            if stream_sender.send(batch).await.is_err() {
                queue_closed = false;
                break;
            }
        }
        drop(stream_sender);
        match call.await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => tracing::debug!(peer = %to, %status, "raft stream to peer ended"),
            Err(error) => tracing::debug!(peer = %to, %error, "raft stream task failed"),
        }
        if queue_closed {
            return;
        }
        store.send(StoreMsg::Unreachable { node: to });
    }
}

/// Why a snapshot was not delivered.
enum SendFailure {
    /// The receiver refused it (`ResourceExhausted`: no slot, or a full disk).
    Refused(String),
    /// Anything else: the connection, the engine, the receiver's checks.
    Failed(String),
}

/// Streams one snapshot: the header alone (a receiver that refuses answers before any of the
/// budget is taken), then every chunk, each sent when the node's budget has room for it;
/// given up as soon as the receiver has answered. The engine reads run on the blocking pool.
async fn stream_snapshot<S>(
    address: &str,
    header: pb::SnapshotHeader,
    mut reader: SnapshotReader<S>,
    options: &TransportOptions,
) -> Result<(), SendFailure>
where
    S: mosaic_engine::KvRead + Send + 'static,
{
    let channel = connect(address, options.tls.as_ref()).await.map_err(SendFailure::Failed)?;
    let mut client = RaftTransportClient::new(channel)
        .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
    let (sender, receiver) = mpsc::channel::<pb::SnapshotChunk>(2);
    let chunk_bytes = options.snapshot_chunk_bytes_max;
    let budget = Arc::clone(&options.budget);
    let sent_bytes = options.transfers.snapshot_bytes_sent.clone();
    let producer = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let closed = || Err("the snapshot stream closed".to_string());
        let first =
            pb::SnapshotChunk { header: Some(header), data: Default::default(), last: false };
        if sender.blocking_send(first).is_err() {
            return closed();
        }
        loop {
            let chunk = reader.next_chunk(chunk_bytes).map_err(|error| error.to_string())?;
            let last = chunk.is_none();
            let data = chunk.unwrap_or_default();
            if !budget.take(data.len() as u64, || sender.is_closed()) {
                return closed();
            }
            let bytes = data.len() as u64;
            let message = pb::SnapshotChunk { header: None, data, last };
            if sender.blocking_send(message).is_err() {
                return closed();
            }
            sent_bytes.inc_by(bytes);
            if last {
                return Ok(());
            }
        }
    });
    let call = client.send_snapshot(ReceiverStream::new(receiver)).await;
    let produced = producer.await.map_err(|error| SendFailure::Failed(error.to_string()))?;
    call.map_err(|status| match status.code() {
        tonic::Code::ResourceExhausted => SendFailure::Refused(status.message().to_string()),
        _ => SendFailure::Failed(status.to_string()),
    })?;
    produced.map_err(SendFailure::Failed)
}

#[cfg(test)]
mod tests {
    use mosaic_shardkv::KvStateMachine;

    use super::*;
    use crate::backend::NodeEngine;

    /// Found in review: a peer's stream kept the address it started with, so a replica whose
    /// address the directory changed was still reached at the old one (where another process
    /// could answer as it). The stream is started afresh at the new address, and the old one's
    /// queue dropped, which ends it.
    #[tokio::test]
    async fn a_peer_whose_address_changes_is_reached_at_its_new_address_only() {
        let peer = NodeId(2);
        let directory = Directory::new(BTreeMap::from([(peer, "127.0.0.1:1".to_string())]));
        let (store, _inbox) = crate::runner::channel::<NodeEngine, KvStateMachine>(16);
        let options = TransportOptions {
            node: NodeId(1),
            address: "127.0.0.1:3".to_string(),
            cluster: ClusterId(1),
            timing: pb::RaftTiming { tick_interval_ms: 20, election_ticks: 10 },
            incarnation: process_incarnation(),
            peer_queue_batches: 4,
            snapshot_chunk_bytes_max: 1 << 20,
            budget: Arc::new(Budget::new(1 << 20)),
            snapshot_sends: Slots::new(1, "snapshot-sends-max", "snapshots sent"),
            tls: None,
            transfers: TransferMetrics::default(),
        };
        let mut transport =
            GrpcTransport::new(options, directory.clone(), Handle::current(), store);
        transport.send(peer, Vec::new());
        let (streaming, queue) = &transport.peers[&peer];
        assert_eq!(streaming, "127.0.0.1:1");
        let old = queue.downgrade();
        transport.send(peer, Vec::new());
        assert!(old.upgrade().is_some(), "the same address keeps its stream");
        assert!(directory.set(peer, "127.0.0.1:2"));
        transport.send(peer, Vec::new());
        assert_eq!(transport.peers[&peer].0, "127.0.0.1:2");
        assert!(old.upgrade().is_none(), "the old stream's queue is dropped");
    }
}
