//! Every process's plain HTTP port (`--metrics-listen`): Prometheus metrics at `/metrics`,
//! whose values follow what the cluster did, and a probe at `/health`. The ignored test
//! scrapes a cluster with a real Prometheus server and asks it for the series.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mosaic_client::{Consistency, shard_for_key};
use mosaic_proto::pb::{self, kv_client::KvClient};
use support::{Processes, Role, SHARDS, WAIT_MAX, controlled_cluster, http_get};

/// The samples of an OpenMetrics text page, by series (`name{labels}`). Panics on a line that
/// is neither a comment nor a sample, and when the page does not end with `# EOF`.
fn samples(page: &str) -> BTreeMap<String, f64> {
    assert!(page.ends_with("# EOF\n"), "an OpenMetrics page ends with # EOF:\n{page}");
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            let value = value.parse().unwrap_or_else(|_| panic!("a sample value: {line:?}"));
            (series.to_string(), value)
        })
        .collect()
}

fn scrape(processes: &Processes, id: u64) -> BTreeMap<String, f64> {
    let (status, page) = http_get(&processes.metrics_addresses[&id], "/metrics").unwrap();
    assert_eq!(status, 200, "{page}");
    samples(&page)
}

/// The sum of `series` over `processes`.
fn total(processes: &Processes, series: &str) -> f64 {
    processes
        .addresses
        .keys()
        .map(|id| scrape(processes, *id).get(series).copied().unwrap_or(0.0))
        .sum()
}

/// Waits until `check` holds.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !check() {
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `check` holds for the samples of process `id`.
fn wait_for(
    processes: &Processes,
    id: u64,
    what: &str,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let samples = scrape(processes, id);
        if check(&samples) {
            return;
        }
        assert!(Instant::now() < deadline, "process {id}: never {what}: {samples:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_what_the_cluster_did_and_health_answers_over_plain_http() {
    let (controllers, nodes) = controlled_cluster(1);

    for id in [1, 2, 3] {
        assert_eq!(
            http_get(&nodes.metrics_addresses[&id], "/health").unwrap(),
            (200, "SERVING\n".into())
        );
        assert_eq!(http_get(&controllers.metrics_addresses[&id], "/health").unwrap().0, 200);
        assert_eq!(http_get(&nodes.metrics_addresses[&id], "/nothing").unwrap().0, 404);
    }

    // A controller replica reads its applied state at each scrape.
    for id in [1, 2, 3] {
        wait_for(&controllers, id, "saw the group", |s| {
            s.get("mosaic_controller_groups") == Some(&1.0)
        });
        let s = scrape(&controllers, id);
        assert_eq!(s["mosaic_controller_nodes"], 3.0);
        assert_eq!(s["mosaic_controller_shards"], f64::from(SHARDS));
        assert_eq!(s["mosaic_controller_shards_unassigned"], 0.0);
        assert!(s["mosaic_controller_config_num"] >= 1.0);
        assert_eq!(s["mosaic_store_groups"], 1.0, "the controller group");
    }
    eventually("one replica leading the controller group", || {
        total(&controllers, "mosaic_store_groups_leading") == 1.0
    });

    // Writes and reads through the controller's routing are counted where they are served.
    let client = controllers.routed_client();
    let puts_before =
        total(&nodes, "mosaic_kv_request_seconds_count{kind=\"put\",consistency=\"\"}");
    let applied_before = total(&nodes, "mosaic_raft_applied_entries_total");
    for i in 0..20 {
        client.put(format!("key-{i}"), "v").await.unwrap();
    }
    for i in 0..10 {
        assert!(client.get(format!("key-{i}"), Consistency::Linearizable).await.unwrap().is_some());
    }
    let puts = total(&nodes, "mosaic_kv_request_seconds_count{kind=\"put\",consistency=\"\"}")
        - puts_before;
    assert!(puts >= 20.0, "{puts} puts counted");
    let gets =
        total(&nodes, "mosaic_kv_request_seconds_count{kind=\"get\",consistency=\"linearizable\"}");
    assert!(gets >= 10.0, "{gets} gets counted");
    eventually("every replica applying every put", || {
        total(&nodes, "mosaic_raft_applied_entries_total") - applied_before >= 60.0
    });
    assert!(total(&nodes, "mosaic_raft_proposals_total") >= 20.0);
    assert!(total(&nodes, "mosaic_store_sync_write_seconds_count") > 0.0);
    assert!(total(&nodes, "mosaic_store_sync_write_groups_count") > 0.0);
    eventually("one node leading group 1", || total(&nodes, "mosaic_store_groups_leading") == 1.0);
    for id in [1, 2, 3] {
        let s = scrape(&nodes, id);
        assert_eq!(s["mosaic_store_groups"], 1.0);
        assert_eq!(s["mosaic_store_inbox_capacity_messages"], 65_536.0);
        assert!(s["mosaic_raft_term_changes_total"] >= 1.0, "node {id} joined a term");
        assert!(s.contains_key(&format!(
            "mosaic_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )));
    }

    // A refusal is counted by its reason.
    let key = b"refused".to_vec();
    let request = pb::GetRequest {
        group_id: 99,
        shard_id: shard_for_key(&key, SHARDS).0,
        config_num: 0,
        key: key.into(),
        consistency: Consistency::Lease as i32,
    };
    let channel = nodes.endpoint(1, "client", WAIT_MAX).connect().await.unwrap();
    let refused = KvClient::new(channel).get(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let s = scrape(&nodes, 1);
    assert_eq!(
        s["mosaic_kv_refusals_total{kind=\"get\",reason=\"group_not_hosted\"}"], 1.0,
        "{s:#?}"
    );
    assert_eq!(s["mosaic_kv_request_seconds_count{kind=\"get\",consistency=\"lease\"}"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_unavailable_when_the_process_stops() {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let address = controllers.metrics_addresses[&1].clone();
    // The port listens a moment before the process serves (503 until then).
    eventually("SERVING", || http_get(&address, "/health").is_ok_and(|(status, _)| status == 200));
    controllers.signal(1, "TERM");
    let deadline = Instant::now() + WAIT_MAX;
    // SERVING until the signal is handled, then NOT_SERVING until the process has stopped,
    // then the port closes (`crates/server/src/http.rs` tests the 503 itself: here it may
    // last too short a time to be seen).
    let mut stopping = false;
    while let Ok((status, body)) = http_get(&address, "/health") {
        match status {
            200 => assert!(!stopping, "SERVING again after NOT_SERVING: {body}"),
            503 => stopping = true,
            other => panic!("{other}: {body}"),
        }
        assert!(Instant::now() < deadline, "the port stayed open after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A real Prometheus server scrapes every process of a cluster and answers queries over their
/// series. Needs Debian's `prometheus` package: `apt-get install prometheus`, then
/// `MOSAIC_TEST_PROMETHEUS=/usr/bin/prometheus cargo test --workspace --all-targets --
/// --ignored prometheus_scrapes` (`.ci/run` runs it so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MOSAIC_TEST_PROMETHEUS, the path of a Prometheus server binary"]
async fn prometheus_scrapes_every_process_and_answers_queries_over_its_series() {
    let binary = std::env::var("MOSAIC_TEST_PROMETHEUS").expect(
        "MOSAIC_TEST_PROMETHEUS names a Prometheus server binary (Debian: /usr/bin/prometheus)",
    );
    let (controllers, nodes) = controlled_cluster(1);
    let client = controllers.routed_client();

    let dir = tempfile::tempdir().unwrap();
    let targets = |processes: &Processes| {
        let list: Vec<String> =
            processes.metrics_addresses.values().map(|a| format!("'{a}'")).collect();
        list.join(", ")
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
         - job_name: controller\n  static_configs:\n  - targets: [{}]\n\
         - job_name: storage\n  static_configs:\n  - targets: [{}]\n",
        targets(&controllers),
        targets(&nodes)
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web = listener.local_addr().unwrap().to_string();
    drop(listener);
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let server = Command::new(&binary)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"));
    let server = KillOnDrop(server);

    // Every target is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = query(&web, "sum(up)");
        if up == [6.0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw all six targets up (sum(up) = {up:?}); its log: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Its queries see Mosaic's series, with the values the processes export.
    let mut written = 0;
    loop {
        // Puts go on while Prometheus scrapes, so that the rates it computes are not zero.
        client.put(format!("key-{written}"), "v").await.unwrap();
        written += 1;
        let groups = query(&web, "sum(mosaic_store_groups{job=\"storage\"})");
        let leaders = query(&web, "sum(mosaic_store_groups_leading{job=\"storage\"})");
        let puts = query(&web, "sum(mosaic_kv_request_seconds_count{kind=\"put\"})");
        let nodes_registered = query(&web, "max(mosaic_controller_nodes)");
        let fsync = query(
            &web,
            "histogram_quantile(0.5, sum by (le) (rate(mosaic_store_sync_write_seconds_bucket[1m])))",
        );
        let fsync_measured = fsync.first().is_some_and(|seconds| seconds.is_finite());
        if fsync_measured
            && groups == [3.0]
            && leaders == [1.0]
            && puts.first().is_some_and(|n| *n >= 10.0)
            && nodes_registered == [3.0]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "groups {groups:?}, leaders {leaders:?}, puts {puts:?}, nodes {nodes_registered:?}, \
             median fsync {fsync:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(server);
}

/// The values of an instant query's result vector.
fn query(web: &str, expression: &str) -> Vec<f64> {
    let mut encoded = String::new();
    for byte in expression.bytes() {
        if byte.is_ascii_alphanumeric() {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let Ok((200, body)) = http_get(web, &format!("/api/v1/query?query={encoded}")) else {
        return Vec::new();
    };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sample| sample["value"][1].as_str()?.parse().ok())
        .collect()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
