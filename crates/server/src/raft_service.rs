//! The receiving side of the Raft transport: batches of Raft messages from peers, and
//! snapshot streams, handed to the store thread.
//!
//! Everything from the network is checked before it reaches the store: the cluster id, the
//! destination node, the sender's Raft timing (it must equal this node's: leader leases rest
//! on every member ticking at the same rate with the same election timeout), every message's
//! conversion; a snapshot is bounded by the node's `snapshot_bytes_max` while it is received,
//! and at most `snapshot-receives-max` are received at once (one more is refused
//! `ResourceExhausted`, and its leader sends it again later).

use mosaic_engine::{ClusterId, GroupId, KvEngine};
use mosaic_proto::message_from_pb;
use mosaic_proto::pb::{self, raft_transport_server::RaftTransport};
use mosaic_raft::NodeId;
use mosaic_raftstore::{StateMachine, StoreMsg};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::disk::DiskGuard;
use crate::limits::Slots;
use crate::metrics::TransferMetrics;
use crate::runner::StoreHandle;
use crate::status::Directory;

/// What bounds the snapshots a node receives.
#[derive(Clone, Debug)]
pub struct SnapshotIntake {
    /// Largest snapshot, in bytes.
    pub bytes_max: u64,
    /// Snapshots received at once.
    pub receives: Slots,
    /// None is received while the disk is nearly full.
    pub disk: DiskGuard,
    /// Where the snapshots received are counted.
    pub transfers: TransferMetrics,
}

/// The `RaftTransport` service of one node.
pub struct RaftService<K: KvEngine, SM: StateMachine<K>> {
    node: NodeId,
    cluster: ClusterId,
    timing: pb::RaftTiming,
    intake: SnapshotIntake,
    store: StoreHandle<K, SM>,
    /// Where this node reaches its peers: a sender it knows no address for is learned from
    /// its batches.
    directory: Directory,
    /// Becomes true when the node shuts down: long-lived streams end then, so that peers
    /// reconnect (to this node's successor, if it restarts) instead of holding a dead stream.
    closing: watch::Receiver<bool>,
}

impl<K: KvEngine, SM: StateMachine<K>> RaftService<K, SM> {
    /// The service of `node` in `cluster`, whose Raft timing is `timing`, receiving
    /// snapshots within `intake`, feeding `store`, learning unknown senders' addresses into
    /// `directory`, until `closing` turns true.
    #[must_use]
    pub fn new(
        node: NodeId,
        cluster: ClusterId,
        timing: pb::RaftTiming,
        intake: SnapshotIntake,
        store: StoreHandle<K, SM>,
        directory: Directory,
        closing: watch::Receiver<bool>,
    ) -> Self {
        Self { node, cluster, timing, intake, store, directory, closing }
    }

    /// Learns where `from` is reached from its batch, when no address of it is known (one
    /// known is never replaced: the controller's records and the agent's registry say where
    /// a node is; this only lets a replica answer a peer it was never told of).
    fn learn_sender(&self, from: NodeId, address: &str) {
        if address.is_empty()
            || self.directory.knows(from)
            || mosaic_controller::validate_address(address).is_err()
        {
            return;
        }
        if self.directory.set(from, address) {
            tracing::info!(node_id = %self.node, peer = %from, %address,
                "learned a peer's address from its raft messages");
        }
    }

    fn check_route(&self, cluster: u64, to: u64) -> Result<(), Status> {
        if cluster != self.cluster.0 {
            return Err(Status::failed_precondition(format!(
                "node {} is in cluster {}, not {cluster}",
                self.node, self.cluster
            )));
        }
        if to != self.node.0 {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {to}",
                self.node
            )));
        }
        Ok(())
    }
}

/// Refuses the messages of `from` unless its Raft timing (`theirs`; none from a node that does
/// not send it) equals this node's (`ours`).
fn check_timing(
    ours: pb::RaftTiming,
    theirs: Option<pb::RaftTiming>,
    from: NodeId,
) -> Result<(), Status> {
    if theirs == Some(ours) {
        return Ok(());
    }
    let theirs = theirs.map_or_else(
        || "does not say its tick-interval-ms and election-ticks".to_string(),
        |theirs| {
            format!(
                "runs tick-interval-ms = {} and election-ticks = {}",
                theirs.tick_interval_ms, theirs.election_ticks
            )
        },
    );
    Err(Status::failed_precondition(format!(
        "node {from} {theirs}, this node {} and {}: every node of a cluster must run the same \
         (leader leases assume every member ticks at the same rate with the same election \
         timeout)",
        ours.tick_interval_ms, ours.election_ticks
    )))
}

#[tonic::async_trait]
impl<K: KvEngine, SM: StateMachine<K>> RaftTransport for RaftService<K, SM> {
    async fn send(
        &self,
        request: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<pb::SendAck>, Status> {
        let mut stream = request.into_inner();
        let mut closing = self.closing.clone();
        loop {
            let batch = tokio::select! {
                batch = stream.message() => batch?,
                _ = closing.wait_for(|closing| *closing) => {
                    return Err(Status::unavailable(format!("node {} is shutting down", self.node)));
                }
            };
            let Some(batch) = batch else { break };
            self.check_route(batch.cluster_id, batch.to_node)?;
            let from = NodeId(batch.from_node);
            if let Err(status) = check_timing(self.timing, batch.timing, from) {
                tracing::error!(node_id = %self.node, peer = %from, reason = status.message(),
                    "refusing raft messages from a node with another timing");
                return Err(status);
            }
            self.learn_sender(from, &batch.from_address);
            let mut messages = Vec::with_capacity(batch.messages.len());
            for group_message in batch.messages {
                let group = GroupId(group_message.group_id);
                let Some(message) = group_message.message else {
                    tracing::warn!(node_id = %self.node, peer = %from, group_id = %group,
                        "a batch entry without a message");
                    continue;
                };
                match message_from_pb(message) {
                    Ok(message) => messages.push((group, message)),
                    Err(error) => {
                        tracing::warn!(node_id = %self.node, peer = %from, group_id = %group, %error,
                            "dropping a malformed raft message");
                    }
                }
            }
            // An empty batch is the sender's node heartbeat: the store counts it as hearing
            // the node (docs/raftstore.md "Quiescence").
            let incarnation = batch.from_incarnation;
            self.store.send(StoreMsg::Raft { from, incarnation, messages });
        }
        Ok(Response::new(pb::SendAck {}))
    }

    async fn send_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotAck>, Status> {
        let intake = &self.intake;
        intake.disk.check_write().map_err(|error| Status::resource_exhausted(error.to_string()))?;
        let _slot = intake.receives.try_take()?;
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        let header = first
            .header
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first chunk has no header"))?;
        self.check_route(header.cluster_id, header.to_node)?;
        let message = header
            .message
            .ok_or_else(|| Status::invalid_argument("the snapshot header has no message"))
            .and_then(|message| {
                message_from_pb(message)
                    .map_err(|error| Status::invalid_argument(error.to_string()))
            })?;
        let group = GroupId(header.group_id);
        let mut chunks = Vec::new();
        let mut total_bytes = 0u64;
        let mut chunk = Some(first);
        while let Some(current) = chunk {
            total_bytes += current.data.len() as u64;
            if total_bytes > self.intake.bytes_max {
                return Err(Status::resource_exhausted(format!(
                    "group {group}: snapshot larger than snapshot-bytes-max ({} bytes)",
                    self.intake.bytes_max
                )));
            }
            let last = current.last;
            if !current.data.is_empty() {
                chunks.push(current.data);
            }
            if last {
                let snapshot =
                    StoreMsg::Snapshot { from: NodeId(header.from_node), group, message, chunks };
                // Found in review: a snapshot dropped here was acknowledged all the same, and
                // its leader took it as delivered.
                if !self.store.send(snapshot) {
                    return Err(Status::resource_exhausted(format!(
                        "group {group}: the store inbox is full; send the snapshot again later"
                    )));
                }
                intake.transfers.snapshots_received.inc();
                intake.transfers.snapshot_bytes_received.inc_by(total_bytes);
                return Ok(Response::new(pb::SnapshotAck {}));
            }
            chunk = stream.message().await?;
        }
        Err(Status::invalid_argument(format!("group {group}: the snapshot stream ended early")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_with_another_raft_timing_is_refused() {
        let ours = pb::RaftTiming { tick_interval_ms: 100, election_ticks: 10 };
        let from = NodeId(2);
        assert!(check_timing(ours, Some(ours), from).is_ok());
        let slower = pb::RaftTiming { tick_interval_ms: 200, ..ours };
        let refused = check_timing(ours, Some(slower), from).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("node 2 runs tick-interval-ms = 200"), "{refused:?}");
        let longer = pb::RaftTiming { election_ticks: 20, ..ours };
        assert!(check_timing(ours, Some(longer), from).is_err());
        let unsaid = check_timing(ours, None, from).unwrap_err();
        assert!(unsaid.message().contains("does not say"), "{unsaid:?}");
    }
}
