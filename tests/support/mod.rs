//! Processes of the real `mosaic` binary for the end-to-end tests: storage nodes (with static
//! peers, or following the controller) and controller replicas, each with its own data
//! directory and log file under one temporary directory; every process is killed on drop
//! (and the tail of each log printed if the test failed). Every process also serves its
//! HTTP port (`--metrics-listen`, [`Processes::metrics_addresses`]; [`http_get`] reads it).
//!
//! With `MOSAIC_TEST_TLS=1` every process, `mosaic kv`/`admin` run and client of these tests
//! uses mutual TLS, with certificates `mosaic certs init` made once per test binary; without
//! it, plaintext (a test may also ask for TLS itself, [`Processes::start_tls`]).
// Each test crate uses part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mosaic_client::{
    Client, ClientOptions, ControllerClient, ControllerClientOptions, ControllerRouting, GroupId,
    NodeId, Routing, StaticRouting, Tls, TlsFiles,
};
use mosaic_proto::pb::{self, node_admin_client::NodeAdminClient};
use tempfile::TempDir;

pub const GROUP: u64 = 1;
pub const SHARDS: u32 = 8;
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a storage node may go unheard before the controller's leader holds it down, in
/// these tests' processes (`node-down-after-ms`).
pub const NODE_DOWN_AFTER_MS: u64 = 2_000;

/// What the processes of a [`Processes`] run.
#[derive(Clone, Debug)]
pub enum Role {
    /// Storage nodes that know each other as --peers.
    Servers,
    /// Storage nodes that follow the controller replicas at these addresses.
    Following(Vec<String>),
    /// Controller replicas of a cluster with this many shards.
    Controllers(u32),
}

pub fn mosaic() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
}

/// Whether the processes of these tests use TLS unless a test says otherwise.
fn tls_by_default() -> bool {
    std::env::var("MOSAIC_TEST_TLS").is_ok_and(|value| value == "1")
}

/// The certificates of this test binary's clusters (`mosaic certs init`, once), under cargo's
/// temporary directory for integration tests.
pub fn certs() -> &'static Path {
    static CERTS: OnceLock<PathBuf> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("certs-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let output = mosaic().args(["certs", "init"]).arg(&dir).output().unwrap();
        assert!(output.status.success(), "mosaic certs init: {}", stderr(&output));
        dir
    })
}

/// The files of certificate `name` (node, admin, client) in `dir`.
pub fn tls_files(dir: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    }
}

/// The `--tls-*` flags of `files`.
pub fn tls_flags(files: &TlsFiles) -> Vec<String> {
    [("--tls-cert", &files.cert), ("--tls-key", &files.key), ("--tls-ca", &files.ca)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
}

/// `size` processes of one role and their data directories.
pub struct Processes {
    role: Role,
    /// Every process, command and client uses mutual TLS.
    tls: bool,
    /// Top-level settings added to every process's configuration file, then optionally a
    /// `[raft]` line and settings of that section.
    settings: String,
    /// A controller replica's first start bootstraps the group (otherwise it waits for
    /// `mosaic admin init`).
    bootstrap: bool,
    root: TempDir,
    pub addresses: BTreeMap<u64, String>,
    /// Where each process serves plain HTTP (metrics and health).
    pub metrics_addresses: BTreeMap<u64, String>,
    pub children: BTreeMap<u64, Child>,
}

impl Processes {
    /// Storage nodes that know each other as peers.
    pub fn start(size: u64) -> Self {
        Self::start_as(Role::Servers, size)
    }

    /// Starts `size` processes of `role`, ids 1 to `size`, and waits until each listens; over
    /// TLS with `MOSAIC_TEST_TLS=1`.
    pub fn start_as(role: Role, size: u64) -> Self {
        Self::start_with(role, size, tls_by_default(), "")
    }

    /// As [`Processes::start_as`], over mutual TLS whatever the environment says.
    pub fn start_tls(role: Role, size: u64) -> Self {
        Self::start_with(role, size, true, "")
    }

    /// As [`Processes::start_as`], in plaintext whatever the environment says.
    pub fn start_plaintext(role: Role, size: u64) -> Self {
        Self::start_with(role, size, false, "")
    }

    /// As [`Processes::start_as`], with top-level `settings` (TOML lines, then optionally a
    /// `[raft]` line and settings of that section) in every process's
    /// configuration file.
    pub fn start_configured(role: Role, size: u64, settings: &str) -> Self {
        Self::start_with(role, size, tls_by_default(), settings)
    }

    /// `size` controller replicas of a cluster of `shards` shards started without
    /// `--bootstrap`: they wait for `mosaic admin init`.
    pub fn start_awaiting_init(shards: u32, size: u64) -> Self {
        let mut processes = Self::new_rooted(
            Role::Controllers(shards),
            size,
            tls_by_default(),
            "",
            tempfile::tempdir().unwrap(),
        );
        processes.bootstrap = false;
        processes.start_all();
        processes
    }

    /// As [`Processes::start_configured`], with the data directories and logs in `root`
    /// (a directory the test prepared, a small file system say).
    pub fn start_in(role: Role, size: u64, settings: &str, root: TempDir) -> Self {
        Self::start_rooted(role, size, tls_by_default(), settings, root)
    }

    fn start_with(role: Role, size: u64, tls: bool, settings: &str) -> Self {
        Self::start_rooted(role, size, tls, settings, tempfile::tempdir().unwrap())
    }

    fn start_rooted(role: Role, size: u64, tls: bool, settings: &str, root: TempDir) -> Self {
        let mut processes = Self::new_rooted(role, size, tls, settings, root);
        processes.start_all();
        processes
    }

    /// Processes not started yet, on free ports.
    fn new_rooted(role: Role, size: u64, tls: bool, settings: &str, root: TempDir) -> Self {
        let ports = free_ports(2 * size as usize);
        let (grpc, http) = ports.split_at(size as usize);
        let loopback = |ports: &[u16]| {
            (1..=size).zip(ports).map(|(id, port)| (id, format!("127.0.0.1:{port}"))).collect()
        };
        let (addresses, metrics_addresses) = (loopback(grpc), loopback(http));
        let settings = settings.to_string();
        let children = BTreeMap::new();
        Self { role, tls, settings, bootstrap: true, root, addresses, metrics_addresses, children }
    }

    /// Starts every process and waits until each listens.
    fn start_all(&mut self) {
        let ids: Vec<u64> = self.addresses.keys().copied().collect();
        for id in &ids {
            self.spawn(*id);
        }
        for id in &ids {
            self.wait_listening(*id);
        }
    }

    /// Waits until node `id` accepts connections on its gRPC and HTTP ports (it has opened
    /// its store and serves).
    pub fn wait_listening(&self, id: u64) {
        let deadline = Instant::now() + WAIT_MAX;
        for address in [&self.addresses[&id], &self.metrics_addresses[&id]] {
            while std::net::TcpStream::connect(address).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "node {id} never listened on {address}; see {:?}",
                    self.log(id)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    pub fn log(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}.log"))
    }

    fn peers(&self, except: u64) -> String {
        self.addresses
            .iter()
            .filter(|(id, _)| **id != except)
            .map(|(id, address)| format!("{id}={address}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn nodes_flag(&self) -> String {
        self.peers(0)
    }

    /// Starts process `id` (a controller replica whose data directory does not exist yet with
    /// `--bootstrap`, unless these wait for init: its first start creates the group, a restart
    /// recovers it).
    pub fn spawn(&mut self, id: u64) {
        let first_start = self.bootstrap && !self.data_dir(id).exists();
        self.spawn_bootstrapping(id, first_start);
    }

    /// Adds a process with the next id, on fresh ports, and starts it (a controller replica
    /// without `--bootstrap`, on an empty data directory: it waits outside the group, knowing
    /// the others from its `--peers`, while they do not know it); returns its id once it
    /// listens.
    pub fn add_process(&mut self) -> u64 {
        let id = self.addresses.keys().max().map_or(1, |last| last + 1);
        let ports = free_ports(2);
        self.addresses.insert(id, format!("127.0.0.1:{}", ports[0]));
        self.metrics_addresses.insert(id, format!("127.0.0.1:{}", ports[1]));
        self.spawn_bootstrapping(id, false);
        self.wait_listening(id);
        id
    }

    /// Starts process `id`, a controller replica with `--bootstrap` if `bootstrap`.
    pub fn spawn_bootstrapping(&mut self, id: u64, bootstrap: bool) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(id)).unwrap();
        let child = self
            .command(id, bootstrap)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosaic server");
        self.children.insert(id, child);
    }

    /// The command that starts process `id`, its configuration file written; `bootstrap` adds
    /// `--bootstrap` for a controller replica.
    pub fn command(&self, id: u64, bootstrap: bool) -> Command {
        // The file sets a fast tick and a small cache; identity and addresses come as flags.
        let config = self.root.path().join(format!("node-{id}.toml"));
        // A reserve smaller than the default, so that a machine with little free space still
        // runs the tests.
        let reserve = if self.settings.contains("disk-reserve-bytes") {
            ""
        } else {
            "disk-reserve-bytes = 16777216\n"
        };
        let (settings, raft) = self.settings.split_once("[raft]\n").unwrap_or((&self.settings, ""));
        let text = format!(
            "node-id = {id}\ndata-dir = {:?}\ntick-interval-ms = 20\n\
             node-down-after-ms = {NODE_DOWN_AFTER_MS}\n{reserve}{settings}\n\
             [raft]\ncompact-log-after-entries = 50\ncompact-log-keep-entries = 10\n{raft}\n\
             [storage]\nblock-cache-bytes = 16777216\n",
            self.data_dir(id).display(),
        );
        std::fs::write(&config, text).unwrap();
        let mut command = mosaic();
        match &self.role {
            Role::Servers => command.args(["server", "--peers", &self.peers(id)]),
            Role::Following(controllers) => {
                command.args(["server", "--controllers", &controllers.join(",")])
            }
            Role::Controllers(shards) => {
                command
                    .args(["controller", "--peers", &self.peers(id)])
                    .args(["--shard-count", &shards.to_string()]);
                if bootstrap {
                    command.arg("--bootstrap");
                }
                &mut command
            }
        };
        command.args(["--id", &id.to_string(), "--listen", &self.addresses[&id]]);
        command.args(["--metrics-listen", &self.metrics_addresses[&id], "--config"]);
        command.arg(&config);
        command.args(self.tls_flags_of("node"));
        command
    }

    /// The `--tls-*` flags of certificate `name`, when these processes use TLS.
    pub fn tls_flags_of(&self, name: &str) -> Vec<String> {
        if self.tls { tls_flags(&tls_files(certs(), name)) } else { Vec::new() }
    }

    /// The identity of certificate `name`, when these processes use TLS.
    pub fn tls_of(&self, name: &str) -> Option<Tls> {
        self.tls.then(|| Tls::load(&tls_files(certs(), name)).unwrap())
    }

    pub fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The addresses, comma-separated (the `--controllers` flag of these processes).
    pub fn addresses_flag(&self) -> String {
        self.addresses.values().cloned().collect::<Vec<_>>().join(",")
    }

    /// Runs `mosaic admin` against these processes (controllers or nodes) and asserts that
    /// it succeeded.
    pub fn admin(&self, args: &[&str]) -> Output {
        let output = self.try_admin(args);
        assert!(output.status.success(), "mosaic admin {args:?}: {}", stderr(&output));
        output
    }

    /// Waits until `count` storage nodes have registered with these controller replicas.
    pub fn wait_registered(&self, count: usize) {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let output = self.try_admin(&["--output", "json", "node", "list"]);
            let listed = serde_json::from_slice::<serde_json::Value>(&output.stdout)
                .ok()
                .and_then(|list| list["nodes"].as_array().map(Vec::len));
            if output.status.success() && listed == Some(count) {
                return;
            }
            assert!(Instant::now() < deadline, "nodes never registered: {}", stderr(&output));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `mosaic admin` against these processes.
    pub fn try_admin(&self, args: &[&str]) -> Output {
        self.admin_command(args).wait_with_output().unwrap()
    }

    /// Starts `mosaic admin` against these processes, without waiting for it.
    pub fn admin_command(&self, args: &[&str]) -> Child {
        let target = match self.role {
            Role::Controllers(_) => ["--controllers".to_string(), self.addresses_flag()],
            Role::Servers | Role::Following(_) => ["--nodes".to_string(), self.nodes_flag()],
        };
        mosaic()
            .arg("admin")
            .args(target)
            .args(self.tls_flags_of("admin"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Sends `signal` (STOP, CONT) to node `id`'s process.
    pub fn signal(&self, id: u64, signal: &str) {
        let pid = self.children[&id].id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        *self.children.keys().find(|id| **id != leader).expect("a follower")
    }

    /// Starts `mosaic kv ARGS` routed as [`Processes::kv`] routes, its stdin, stdout and
    /// stderr piped.
    pub fn kv_command(&self, args: &[&str]) -> Child {
        let mut command = mosaic();
        command.arg("kv").args(self.tls_flags_of("client"));
        match self.role {
            Role::Controllers(_) => command.args(["--controllers", &self.addresses_flag()]),
            _ => command
                .args(["--nodes", &self.nodes_flag(), "--group", &GROUP.to_string()])
                .args(["--shard-count", &SHARDS.to_string()]),
        };
        command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.spawn().unwrap()
    }

    pub fn kv(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = self.kv_command(args);
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().unwrap();
            if let Some(bytes) = stdin {
                input.write_all(bytes).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }

    /// Starts `mosaic kv ARGS` against node `id` of group [`GROUP`] alone (no other node to
    /// retry at), its output piped.
    pub fn kv_at(&self, id: u64, args: &[&str]) -> Child {
        mosaic()
            .arg("kv")
            .args(self.tls_flags_of("client"))
            .args(["--nodes", &format!("{id}={}", self.addresses[&id])])
            .args(["--group", &GROUP.to_string(), "--shard-count", &SHARDS.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A client routing by the configurations of these controller replicas.
    pub fn routed_client(&self) -> Client<ControllerRouting> {
        self.routed_client_within(WAIT_MAX)
    }

    /// A client routing by the configurations of these controller replicas, giving up on an
    /// operation after `timeout`.
    pub fn routed_client_within(&self, timeout: Duration) -> Client<ControllerRouting> {
        let addresses = self.addresses.values().cloned().collect();
        let controller_options =
            ControllerClientOptions { tls: self.tls_of("client"), ..Default::default() };
        let controller = ControllerClient::new(addresses, controller_options).unwrap();
        let options = ClientOptions { timeout, tls: self.tls_of("client"), ..Default::default() };
        Client::new(ControllerRouting::new(controller), options).unwrap()
    }

    /// A client routing every key to group [`GROUP`] on these nodes.
    pub fn client(&self) -> Client {
        self.group_client(GROUP)
    }

    /// A client routing every key to `group` on these nodes.
    pub fn group_client(&self, group: u64) -> Client {
        let nodes = self.addresses.iter().map(|(id, a)| (NodeId(*id), a.clone())).collect();
        let routing = Routing::single_group(GroupId(group), nodes, SHARDS).unwrap();
        let options = ClientOptions { tls: self.tls_of("client"), ..Default::default() };
        Client::new(StaticRouting::new(routing), options).unwrap()
    }

    /// An endpoint of process `id` that connects (within `connect_timeout`) with certificate
    /// `name` when these processes use TLS.
    pub fn endpoint(
        &self,
        id: u64,
        name: &str,
        connect_timeout: Duration,
    ) -> tonic::transport::Endpoint {
        let tls = self.tls_of(name);
        mosaic_client::endpoint(&self.addresses[&id], tls.as_ref(), connect_timeout).unwrap()
    }

    pub async fn status(&self, id: u64) -> Option<pb::GroupStatusResponse> {
        let channel = self
            .endpoint(id, "admin", Duration::from_millis(200))
            .timeout(Duration::from_millis(500))
            .connect()
            .await
            .ok()?;
        let request = pb::GroupStatusRequest { group_id: GROUP, confirm_leadership: false };
        NodeAdminClient::new(channel).group_status(request).await.ok().map(|r| r.into_inner())
    }

    pub async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            for id in self.children.keys() {
                if self.status(*id).await.is_some_and(|s| s.role == "leader") {
                    return *id;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader within {WAIT_MAX:?}; logs in {}", self.root.path().display());
    }

    /// Waits until every running node has applied what the leader has.
    pub async fn wait_caught_up(&self) {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let leader = self.leader().await;
            let target = self.status(leader).await.map_or(u64::MAX, |s| s.applied_index);
            let mut behind = Vec::new();
            for id in self.children.keys() {
                let applied = self.status(*id).await.map_or(0, |s| s.applied_index);
                if applied < target {
                    behind.push((*id, applied));
                }
            }
            if behind.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "nodes {behind:?} stay behind {target}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in self.addresses.keys() {
                let log = std::fs::read_to_string(self.log(*id)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- node {id} log (last lines) ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// `count` loopback ports free now and never handed out before in this test process. The
/// listeners are held until all are chosen, so the kernel cannot give one port twice (a port
/// listed twice made a test fail), and ports already given to a process that has not bound
/// them yet are skipped.
fn free_ports(count: usize) -> Vec<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if given.insert(port) {
            ports.push(port);
        }
        held.push(listener);
    }
    ports
}

/// Three controller replicas, and three storage nodes following them that serve groups 1 to
/// `groups` (each with a replica on every node), once every shard is served.
pub fn controlled_cluster(groups: u64) -> (Processes, Processes) {
    let controllers = Processes::start_as(Role::Controllers(SHARDS), 3);
    let nodes =
        Processes::start_as(Role::Following(controllers.addresses.values().cloned().collect()), 3);
    controllers.wait_registered(3);
    for group in 1..=groups {
        controllers.admin(&["group", "add", &group.to_string(), "--members", "1,2,3"]);
    }
    controllers.admin(&["wait"]);
    (controllers, nodes)
}

/// `GET path` from the plain HTTP server at `address`: the status code and the body.
pub fn http_get(address: &str, path: &str) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT_MAX))
        .build()
        .into();
    let mut response = agent.get(format!("http://{address}{path}")).call()?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

/// Waits until the file at `path` contains `text` after its first `from` bytes; returns the
/// file.
pub fn wait_for_text(path: &Path, text: &str, from: usize) -> String {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.get(from..).is_some_and(|tail| tail.contains(text)) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {text:?} in {}:\n{log}", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
