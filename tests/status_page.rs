//! The live status page of the controller replicas (`crates/server/src/status_page.rs`): its
//! data (`/status.json`) follows the cluster, a node that stops shows down, and the page itself
//! renders that data in a real browser (headless Chromium, behind `MOSAIC_TEST_CHROMIUM`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Processes, SHARDS, WAIT_MAX, controlled_cluster, http_get};

fn status(controllers: &Processes, id: u64) -> Value {
    let (code, body) = http_get(&controllers.metrics_addresses[&id], "/status.json").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the status of replica `id` satisfies `check`; returns it.
fn wait_for(controllers: &Processes, id: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let status = status(controllers, id);
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn every_node_up(status: &Value) -> bool {
    status["settled"] == true && liveness(status).iter().all(|(_, state)| state == "up")
}

/// What the controller's leader says of each node: `up`, `down` or `unknown`.
fn liveness(status: &Value) -> Vec<(u64, String)> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| (node["id"].as_u64().unwrap(), node["liveness"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_data_follows_the_cluster_and_a_stopped_node_shows_down() {
    let (mut controllers, mut nodes) = controlled_cluster(2);
    for id in [1, 2, 3] {
        let status = wait_for(&controllers, id, "settled, every node up", every_node_up);
        let up = |id: u64| (id, "up".to_string());
        assert_eq!(liveness(&status), [up(1), up(2), up(3)], "{status:#}");
        for node in status["nodes"].as_array().unwrap() {
            let heard = node["last_heard_ms"].as_u64().expect("heard");
            assert!(heard <= support::NODE_DOWN_AFTER_MS, "{status:#}");
        }
        let groups = status["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{status:#}");
        for group in groups {
            assert!(group["leader"].is_u64(), "a leader: {group}");
            assert_eq!(group["config_num"], status["num"], "{group}");
            assert_eq!(group["nodes"], serde_json::json!([1, 2, 3]));
        }
        let shards = status["shards"].as_array().unwrap();
        assert_eq!(shards.len(), SHARDS as usize);
        assert!(shards.iter().all(|owner| owner == 1 || owner == 2), "{status:#}");
        let history = status["history"].as_array().unwrap();
        assert_eq!(history[0]["num"], status["num"], "newest first: {status:#}");
        assert!(history.iter().any(|config| !config["moves"].as_array().unwrap().is_empty()));
    }
    let (code, page) = http_get(&controllers.metrics_addresses[&1], "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>Mosaic cluster status</title>"), "{page}");
    // A storage node serves no status page.
    assert_eq!(http_get(&nodes.metrics_addresses[&1], "/status.json").unwrap().0, 404);

    nodes.kill(3);
    let down = wait_for(&controllers, 1, "node 3 down", |s| {
        liveness(s).contains(&(3, "down".to_string()))
    });
    let node_3 = &down["nodes"][2];
    assert!(node_3["last_heard_ms"].as_u64().unwrap() >= support::NODE_DOWN_AFTER_MS, "{down:#}");

    // Without a quorum the replica serves the last status it built, marked stale.
    controllers.kill(2);
    controllers.kill(3);
    let stale = wait_for(&controllers, 1, "stale", |s| s["stale"] == true);
    assert!(stale["error"].as_str().is_some_and(|error| !error.is_empty()), "{stale:#}");
    assert_eq!(stale["groups"].as_array().map(Vec::len), Some(2), "the last status: {stale:#}");
}

/// Headless Chromium opens the page of a controller replica, the page reads its data and
/// renders it: the test checks the DOM and saves a screenshot. Needs Debian's `chromium`:
/// `apt-get install chromium`, then `MOSAIC_TEST_CHROMIUM=/usr/bin/chromium cargo test
/// --workspace --all-targets -- --ignored chromium_renders` (`.ci/run` runs it so). With
/// `MOSAIC_STATUS_SCREENSHOT=PATH` the screenshot is also copied to PATH (docs/images/ holds
/// one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MOSAIC_TEST_CHROMIUM, the path of a Chromium binary"]
async fn chromium_renders_the_status_page_from_its_data() {
    let chromium = std::env::var("MOSAIC_TEST_CHROMIUM")
        .expect("MOSAIC_TEST_CHROMIUM names a Chromium binary (Debian: /usr/bin/chromium)");
    let (controllers, _nodes) = controlled_cluster(2);
    wait_for(&controllers, 1, "settled, every node up", every_node_up);
    let url = format!("http://{}/", controllers.metrics_addresses[&1]);
    let dir = tempfile::tempdir().unwrap();
    let browser = |extra: &[String]| {
        let output = Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
            .arg("--virtual-time-budget=10000")
            .args(extra)
            .arg(&url)
            .output()
            .unwrap_or_else(|error| panic!("cannot start {chromium}: {error}"));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let dom = browser(&["--dump-dom".to_string()]);
    assert!(dom.contains("data-settled=\"true\""), "the page rendered its data: {dom}");
    assert!(dom.contains("data-stale=\"false\""), "{dom}");
    assert!(dom.contains("<div id=\"error\"></div>"), "no error shown: {dom}");
    assert!(dom.contains("<tr data-num=\"2\">") && dom.contains("<tr data-num=\"1\">"), "{dom}");
    for node in 1..=3 {
        assert!(dom.contains(&format!("<tr data-node=\"{node}\">")), "node {node}: {dom}");
    }
    assert_eq!(dom.matches("class=\"up\"").count(), 3, "{dom}");
    assert!(
        dom.contains("<tr data-group=\"1\">") && dom.contains("<tr data-group=\"2\">"),
        "{dom}"
    );
    let shards = dom.matches("class=\"shard\"").count();
    assert_eq!(shards, SHARDS as usize, "a cell per shard, each owned by a group: {dom}");
    assert!(dom.contains("every shard is served"), "{dom}");

    let screenshot = dir.path().join("status.png");
    browser(&[format!("--screenshot={}", screenshot.display()), "--window-size=1100,900".into()]);
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    if let Ok(path) = std::env::var("MOSAIC_STATUS_SCREENSHOT") {
        std::fs::copy(&screenshot, path).unwrap();
    }
}
