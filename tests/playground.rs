//! The README's walk through, end to end, with the real binary: `mosaic playground` starts the
//! cluster and prints where it is; keys are written and read through the controller's
//! routing; a fourth node and a group on it join and the shards move (`admin wait`); a node is
//! killed and the cluster keeps working; the new group is removed, hands its shards back, is
//! retired and its replicas are destroyed; Ctrl-C's SIGTERM stops every process the
//! playground started.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the playground may take to start (three groups on three nodes, settled).
const START_MAX: Duration = Duration::from_secs(180);
/// How long one step of the story may take.
const STEP_MAX: Duration = Duration::from_secs(60);

fn mosaic() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Processes killed when the test ends, however it ends.
struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A first storage port whose three ports, and the controllers' three 100 below, are free,
/// with the HTTP ports 1000 above each.
fn free_ports() -> u16 {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = 20_000 + u16::try_from(std::process::id() % 4_000).unwrap();
    (0..2_000u16)
        .map(|step| 20_000 + (start - 20_000 + step * 7) % 9_000)
        .find(|port| {
            (0..3).all(|i| {
                [port + i, port - 100 + i].iter().all(|grpc| free(*grpc) && free(grpc + 1000))
            })
        })
        .expect("twelve free ports")
}

/// The running playground and what it printed.
struct Playground {
    guard: Guard,
    controllers: String,
    pids: BTreeMap<String, u32>,
    /// The metrics URL of every process.
    metrics: Vec<String>,
    /// The status page's URL.
    status_page: String,
}

impl Playground {
    fn start(dir: &Path, port: u16) -> Self {
        let log = std::fs::File::create(dir.join("playground.log")).unwrap();
        let mut child = mosaic()
            .args(["playground", "--port", &port.to_string(), "--dir"])
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = Guard(vec![child]);
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + START_MAX;
        let mut printed = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) if line.starts_with("Ctrl-C stops the cluster") => break,
                Ok(line) => printed.push(line),
                Err(error) => panic!(
                    "the playground did not finish starting ({error}); it printed {printed:#?}; \
                     its log: {}",
                    std::fs::read_to_string(dir.join("playground.log")).unwrap_or_default()
                ),
            }
        }
        let field = |name: &str| {
            printed
                .iter()
                .find_map(|line| line.trim().strip_prefix(name).map(|rest| rest.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} line in {printed:#?}"))
        };
        let controllers = field("controllers:");
        // "controller-1 pid 123, ..., node-3 pid 456"
        let pids = field("processes:")
            .split(", ")
            .map(|entry| {
                let (name, pid) = entry.split_once(" pid ").expect("NAME pid N");
                (name.to_string(), pid.parse().expect("a pid"))
            })
            .collect();
        // "http://127.0.0.1:8001/metrics ... (and /health)"
        let metrics = field("metrics:")
            .split_whitespace()
            .filter(|word| word.starts_with("http://"))
            .map(String::from)
            .collect();
        let status_page = field("status page:");
        Self { guard, controllers, pids, metrics, status_page }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = mosaic()
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn kv(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut all = vec!["kv", "--controllers", &self.controllers];
        all.extend_from_slice(args);
        let output = self.run(&all, stdin);
        assert!(output.status.success(), "kv {args:?}: {}", text(&output.stderr));
        text(&output.stdout)
    }

    fn admin(&self, args: &[&str]) -> Output {
        let mut all = vec!["admin", "--controllers", &self.controllers];
        all.extend_from_slice(args);
        self.run(&all, None)
    }

    fn must_admin(&self, args: &[&str]) -> String {
        let output = self.admin(args);
        assert!(output.status.success(), "admin {args:?}: {}", text(&output.stderr));
        text(&output.stdout)
    }
}

/// Retries `check` until it returns true, for at most [`STEP_MAX`].
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP_MAX;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {STEP_MAX:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn the_readme_walk_through_works_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports();
    let mut playground = Playground::start(dir.path(), port);
    assert_eq!(playground.pids.len(), 6, "{:?}", playground.pids);
    assert_eq!(playground.metrics.len(), 6, "{:?}", playground.metrics);
    for url in &playground.metrics {
        let page = ureq::get(url).call().unwrap().body_mut().read_to_string().unwrap();
        assert!(page.contains("mosaic_store_groups "), "{url}: {page}");
        let health = url.replace("/metrics", "/health");
        assert_eq!(
            ureq::get(&health).call().unwrap().body_mut().read_to_string().unwrap(),
            "SERVING\n"
        );
    }
    let status = ureq::get(format!("{}status.json", playground.status_page))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["groups"].as_array().map(Vec::len), Some(3), "{status:#}");

    // Put and get through the controller's routing.
    playground.kv(&["put", "greeting", "hello"], None);
    assert_eq!(playground.kv(&["get", "greeting"], None), "hello\n");
    playground.kv(&["append", "greeting"], Some(", world"));
    for i in 0..16 {
        playground.kv(&["put", &format!("key-{i}"), &format!("value-{i}")], None);
    }
    let status = playground.must_admin(&["status"]);
    for group in 1..=3 {
        let row = format!("{group} ");
        assert!(status.lines().any(|line| line.starts_with(&row)), "group {group}: {status}");
    }
    assert!(status.contains("no shard is moving"), "{status}");
    assert!(status.lines().any(|line| line.starts_with("leaders: node ")), "{status}");
    // Leaderships spread: each of the three nodes leads one of the three groups, the one that
    // prefers it (docs/raftstore.md "Leader balance": within leader-balance-ticks, 10 s).
    eventually("one leadership on each node", || {
        let status = playground.must_admin(&["--output", "json", "status"]);
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let leaders = status["leaders"].as_object().cloned().unwrap_or_default();
        leaders.len() == 3 && leaders.values().all(|led| led == 1)
    });

    // A fourth node joins; a group on it takes its share of the shards, with their data.
    let node4_port = (port + 3).to_string();
    let node4 = mosaic()
        .args(["server", "--id", "4", "--listen", &format!("127.0.0.1:{node4_port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data/node-4"))
        .args(["--controllers", &playground.controllers])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("node-4.log")).unwrap())
        .spawn()
        .unwrap();
    playground.guard.0.push(node4);
    eventually("node 4 registering", || {
        playground.must_admin(&["node", "list"]).lines().any(|line| line.contains(&node4_port))
    });
    playground.must_admin(&["group", "add", "4", "--members", "2,3,4"]);
    playground.must_admin(&["wait", "--max-wait", "60"]);
    let config = playground.must_admin(&["--output", "json", "config", "show"]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let owners = config["shards"].as_array().expect("shards").clone();
    assert!(owners.iter().any(|owner| owner == 4), "group 4 owns shards: {config}");
    assert_eq!(playground.kv(&["get", "greeting"], None), "hello, world\n");
    for i in 0..16 {
        assert_eq!(playground.kv(&["get", &format!("key-{i}")], None), format!("value-{i}\n"));
    }

    // A node is killed: every group keeps a majority, and the cluster keeps working.
    assert!(signal(playground.pids["node-1"], "KILL"), "kill node-1");
    playground.kv(&["put", "after-the-crash", "still-here"], None);
    assert_eq!(playground.kv(&["get", "after-the-crash"], None), "still-here\n");
    assert_eq!(playground.kv(&["get", "greeting"], None), "hello, world\n");

    // The new group is removed: it hands its shards back, retires, and its replicas go.
    playground.must_admin(&["group", "remove", "4"]);
    playground.must_admin(&["wait", "--max-wait", "60"]);
    for i in 0..16 {
        assert_eq!(playground.kv(&["get", &format!("key-{i}")], None), format!("value-{i}\n"));
    }
    let node4_flag = format!("4=127.0.0.1:{node4_port}");
    eventually("group 4's replica on node 4 being destroyed", || {
        let output =
            playground.run(&["admin", "--nodes", &node4_flag, "group", "status", "4"], None);
        text(&output.stdout).contains("not hosted") || text(&output.stderr).contains("not hosted")
    });
    let again = playground.admin(&["group", "add", "4", "--members", "2,3,4"]);
    assert_eq!(again.status.code(), Some(1), "a removed group's id is never reused");
    assert!(text(&again.stderr).contains("never reused"), "{}", text(&again.stderr));

    // SIGTERM (what Ctrl-C's SIGINT does too) stops the playground and every process it started.
    let playground_pid = playground.guard.0[0].id();
    assert!(signal(playground_pid, "TERM"));
    let status = playground.guard.0[0].wait().unwrap();
    assert!(status.success(), "the playground exits cleanly: {status}");
    for (name, pid) in &playground.pids {
        eventually(&format!("{name} stopping"), || !signal(*pid, "0"));
    }
}
