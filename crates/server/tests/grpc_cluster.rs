//! Three storage nodes in one process, talking over real gRPC on loopback: group creation,
//! writes and reads through the KV service, leader loss and restart from disk, a follower
//! catching up by a streamed snapshot, and limits on bad input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mosaic_proto::pb::{self, kv_client::KvClient, node_admin_client::NodeAdminClient};
use mosaic_server::{Node, ServerConfig};
use prost::Message as _;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const GROUP: u64 = 1;
const WAIT_MAX: Duration = Duration::from_secs(20);

struct TestCluster {
    dirs: BTreeMap<u64, TempDir>,
    addresses: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Node>,
    tweak: fn(&mut ServerConfig),
}

impl TestCluster {
    async fn start(size: u64, tweak: fn(&mut ServerConfig)) -> Self {
        let mut listeners = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for id in 1..=size {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(id, listener.local_addr().unwrap().to_string());
            listeners.insert(id, listener);
        }
        let dirs = (1..=size).map(|id| (id, tempfile::tempdir().unwrap())).collect();
        let mut cluster = Self { dirs, addresses, nodes: BTreeMap::new(), tweak };
        for (id, listener) in listeners {
            cluster.start_node(id, listener).await;
        }
        cluster
    }

    fn config(&self, id: u64) -> ServerConfig {
        let mut config = ServerConfig::new(id, self.dirs[&id].path().join("data"));
        config.listen = self.addresses[&id].clone();
        config.peers = self.addresses.clone();
        config.peers.remove(&id);
        config.tick_interval_ms = 20;
        config.storage.block_cache_bytes = 8 << 20;
        config.storage.write_buffer_bytes = 4 << 20;
        (self.tweak)(&mut config);
        config
    }

    async fn start_node(&mut self, id: u64, listener: TcpListener) {
        let node = Node::start_with_listener(self.config(id), listener).await.unwrap();
        self.nodes.insert(id, node);
    }

    async fn restart(&mut self, id: u64) {
        let listener = TcpListener::bind(&self.addresses[&id]).await.unwrap();
        self.start_node(id, listener).await;
    }

    async fn stop(&mut self, id: u64) {
        self.nodes.remove(&id).unwrap().stop().await.unwrap();
    }

    async fn channel(&self, id: u64) -> Channel {
        Channel::from_shared(format!("http://{}", self.addresses[&id])).unwrap().connect_lazy()
    }

    async fn create_group(&self, members: &[u64]) {
        for id in members {
            let mut admin = NodeAdminClient::new(self.channel(*id).await);
            let request = pb::CreateGroupRequest { group_id: GROUP, members: members.to_vec() };
            admin.create_group(request).await.unwrap();
        }
    }

    async fn status(&self, id: u64) -> Option<pb::GroupStatusResponse> {
        let mut admin = NodeAdminClient::new(self.channel(id).await);
        let request = pb::GroupStatusRequest { group_id: GROUP, confirm_leadership: false };
        admin.group_status(request).await.ok().map(tonic::Response::into_inner)
    }

    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            for id in self.nodes.keys() {
                if self.status(*id).await.is_some_and(|status| status.role == "leader") {
                    return *id;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader within {WAIT_MAX:?}");
    }

    /// Writes through whichever node leads, retrying (same client id and seq) until applied.
    async fn must_put(&self, key: &str, value: &str, client_id: u64, seq: u64) {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let leader = self.leader().await;
            let mut kv = KvClient::new(self.channel(leader).await);
            let request = pb::WriteRequest {
                group_id: GROUP,
                shard_id: 0,
                config_num: 0,
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                client_id,
                seq,
                expects_session: false,
                expected_version: None,
            };
            match kv.put(request).await {
                Ok(_) => return,
                Err(status) if Instant::now() < deadline => {
                    tracing_hint(&status);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("put {key} never succeeded: {status}"),
            }
        }
    }

    async fn must_get(&self, key: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let leader = self.leader().await;
            let mut kv = KvClient::new(self.channel(leader).await);
            let request = pb::GetRequest {
                group_id: GROUP,
                shard_id: 0,
                config_num: 0,
                key: Bytes::copy_from_slice(key.as_bytes()),
                consistency: pb::Consistency::Linearizable.into(),
            };
            match kv.get(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    return response
                        .found
                        .then(|| String::from_utf8(response.value.to_vec()).unwrap());
                }
                Err(status) if Instant::now() < deadline => {
                    tracing_hint(&status);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("get {key} never succeeded: {status}"),
            }
        }
    }
}

/// Every refusal must carry a decodable detail, except transport failures.
fn tracing_hint(status: &tonic::Status) {
    if !status.details().is_empty() {
        pb::ErrorDetail::decode(status.details()).expect("a decodable error detail");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_the_loss_and_restart_of_the_leader() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    cluster.create_group(&[1, 2, 3]).await;
    for i in 0..20 {
        cluster.must_put(&format!("k{i}"), &format!("v{i}"), 7, i + 1).await;
    }
    let old_leader = cluster.leader().await;
    cluster.stop(old_leader).await;
    cluster.must_put("after", "failover", 7, 100).await;
    assert_ne!(cluster.leader().await, old_leader);
    cluster.restart(old_leader).await;
    for i in 0..20 {
        assert_eq!(cluster.must_get(&format!("k{i}")).await, Some(format!("v{i}")));
    }
    // The restarted node caught up from its disk and the new leader's log.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let leader_applied = cluster.status(cluster.leader().await).await.unwrap().applied_index;
        let restarted = cluster.status(old_leader).await.map_or(0, |s| s.applied_index);
        if restarted >= leader_applied {
            break;
        }
        assert!(Instant::now() < deadline, "node {old_leader} stayed at {restarted}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, node) in std::mem::take(&mut cluster.nodes) {
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_by_a_streamed_snapshot() {
    let mut cluster = TestCluster::start(3, |config| {
        config.raft.compact_log_after_entries = 20;
        config.raft.compact_log_keep_entries = 5;
        config.raft.snapshot_chunk_bytes_max = 256;
    })
    .await;
    cluster.create_group(&[1, 2, 3]).await;
    cluster.must_put("first", "1", 9, 1).await;
    let leader = cluster.leader().await;
    let lagging = if leader == 3 { 2 } else { 3 };
    cluster.stop(lagging).await;
    for i in 0..60 {
        cluster.must_put(&format!("key-{i}"), &"x".repeat(100), 9, i + 2).await;
    }
    let leader_status = cluster.status(cluster.leader().await).await.unwrap();
    assert!(leader_status.first_index > 2, "the leader compacted: {leader_status:?}");
    cluster.restart(lagging).await;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let status = cluster.status(lagging).await;
        if status.as_ref().is_some_and(|s| s.applied_index >= leader_status.applied_index) {
            let status = status.unwrap();
            assert!(
                status.first_index > 2,
                "the follower's log starts at the snapshot: {status:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "node {lagging} never caught up: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The follower can lead with the snapshot's data.
    let old_leader = cluster.leader().await;
    cluster.stop(old_leader).await;
    assert_eq!(cluster.must_get("key-59").await.as_deref(), Some(&*"x".repeat(100)));
    assert_eq!(cluster.must_get("first").await.as_deref(), Some("1"));
    for (_, node) in std::mem::take(&mut cluster.nodes) {
        node.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_reason_and_change_nothing() {
    let mut cluster = TestCluster::start(1, |config| config.value_bytes_max = 64).await;
    cluster.create_group(&[1]).await;
    cluster.must_put("k", "v", 1, 1).await;
    let mut kv = KvClient::new(cluster.channel(1).await);
    let put = |key: &str, value: Vec<u8>, group_id: u64| pb::WriteRequest {
        group_id,
        shard_id: 0,
        config_num: 0,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from(value),
        client_id: 1,
        seq: 2,
        expects_session: true,
        expected_version: None,
    };
    let too_big = kv.put(put("k", vec![0; 65], GROUP)).await.unwrap_err();
    assert_eq!(too_big.code(), tonic::Code::InvalidArgument);
    assert!(too_big.message().contains("value-bytes-max"), "{}", too_big.message());
    let empty_key = kv.put(put("", b"v".to_vec(), GROUP)).await.unwrap_err();
    assert_eq!(empty_key.code(), tonic::Code::InvalidArgument);
    let no_group = kv.put(put("k", b"v".to_vec(), 99)).await.unwrap_err();
    let detail = pb::ErrorDetail::decode(no_group.details()).unwrap().kind.unwrap();
    assert!(matches!(detail, pb::error_detail::Kind::GroupNotHosted(_)), "{detail:?}");
    assert_eq!(cluster.must_get("k").await.as_deref(), Some("v"));
    let mut admin = NodeAdminClient::new(cluster.channel(1).await);
    let refused = admin
        .create_group(pb::CreateGroupRequest { group_id: 5, members: vec![2, 3] })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    cluster.stop(1).await;
}
