//! `mosaic playground`: a whole cluster on loopback in one command (README, Quick start).
//!
//! Starts three controller replicas and three storage nodes, each a child process running
//! this same binary (`mosaic controller`, `mosaic server --controllers ...`) with its data and
//! log under one directory; once the nodes have registered, adds groups 1, 2 and 3 with a
//! replica on every node (so each node hosts three Raft groups), which balances the shards
//! over them, and waits until every shard is served. Then prints the addresses and commands
//! to try on stdout, and runs until Ctrl-C or SIGTERM. Ctrl-C in a terminal interrupts the
//! children too (they share its process group) and each shuts down cleanly; the playground
//! waits for them, up to [`STOP_GRACE`], then kills what is left. On SIGTERM (sent to the
//! playground alone) it kills its children at once: Mosaic processes are crash-safe, and the
//! next run recovers them from their data.
//!
//! With `--tls`, every connection is mutual TLS: the first such run makes a CA and node, admin
//! and client certificates in DIR/certs (`mosaic certs init`), and the printed commands carry
//! the flags that use them.
//!
//! A second run over the same directory restarts the same cluster with its data: the groups
//! exist already and nothing changes. A child that exits while the playground runs (a node
//! killed to see the others carry on, say) is reported on stderr; the others keep running.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use mosaic_client::{ControllerClient, ControllerClientOptions, GroupId, NodeId};
use mosaic_controller::{Command as ControllerCommand, Outcome as ControllerOutcome};

use crate::admin::wait_until_settled;
use crate::logging::LogFormat;
use crate::signals::{StopSignal, StopSignals};
use crate::tls::TlsArgs;

/// Replicas of the controller, and storage nodes.
const PROCESSES_PER_ROLE: u64 = 3;
/// How long a child may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to register, and the first shards to be served.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the children may take to stop by themselves after Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A process's HTTP port (metrics and health) is its gRPC port plus this.
const METRICS_PORT_OFFSET: u16 = 1000;
/// How long the certificates `--tls` makes are valid, in days.
const CERT_DAYS: u32 = 365;

/// Flags of `mosaic playground`.
#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Where each process keeps its data and log (a later run reuses them; remove the
    /// directory to start over).
    #[arg(long, default_value = "playground-data")]
    dir: PathBuf,
    /// The first storage node's port: the nodes listen on PORT, PORT+1 and PORT+2, the
    /// controller replicas on the three ports from PORT-100; each serves metrics and health
    /// over HTTP on its port plus 1000.
    #[arg(long, default_value_t = 7101, value_parser = clap::value_parser!(u16).range(101..=64533))]
    port: u16,
    /// How many groups to create, each with a replica on every node.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    groups: u64,
    /// Mutual TLS on every connection, with certificates made in DIR/certs on the first run.
    #[arg(long)]
    tls: bool,
}

/// One process the playground started.
struct Process {
    name: String,
    address: SocketAddr,
    /// Where it serves metrics and health over HTTP.
    metrics: SocketAddr,
    log: PathBuf,
    child: Child,
}

/// Every process the playground started; stopped when dropped, whatever happened.
struct Processes(Vec<Process>);

impl Processes {
    /// Stops every process and waits for them: first `grace` for them to exit by themselves,
    /// then a kill.
    async fn stop(&mut self, grace: Duration) {
        eprintln!("playground: stopping {} processes", self.0.len());
        let deadline = Instant::now() + grace;
        for mut process in self.0.drain(..) {
            while matches!(process.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for process in &mut self.0 {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// Runs `mosaic playground`.
pub async fn run(args: PlaygroundArgs, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let mut signals = StopSignals::listen()?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize().context("resolving the playground directory")?;
    let exe = std::env::current_exe().context("finding the mosaic binary")?;
    let mut processes = Processes(Vec::new());
    let controllers = addresses(args.port - 100);
    let nodes = addresses(args.port);
    let controllers_flag = join(&controllers);
    let certs = dir.join("certs");
    if args.tls && !certs.join(crate::certs::CA_CERT).exists() {
        crate::certs::init(&certs, &[], CERT_DAYS)?;
    }
    // The flags of a process with the certificate `name` (none without --tls).
    let tls_flags = |name: &str| {
        let tls = if args.tls { TlsArgs::in_dir(&certs, name) } else { TlsArgs::default() };
        tls.flags()
    };
    // The first run creates the controller group; a later one restarts it from its data. Only
    // when no replica's directory exists: a replica whose directory alone was removed must not
    // come back as a voter with an empty log (it waits outside the group).
    let first_start =
        (1..=PROCESSES_PER_ROLE).all(|id| !dir.join(format!("controller-{id}")).exists());
    for id in 1..=PROCESSES_PER_ROLE {
        let mut extra = tls_flags("node");
        if first_start {
            extra.push("--bootstrap".to_string());
        }
        processes.0.push(spawn(&exe, log_format, &dir, "controller", id, &controllers, &extra)?);
    }
    let mut extra = vec!["--controllers".to_string(), controllers_flag.clone()];
    extra.extend(tls_flags("node"));
    for id in 1..=PROCESSES_PER_ROLE {
        processes.0.push(spawn(&exe, log_format, &dir, "server", id, &nodes, &extra)?);
    }
    for process in &mut processes.0 {
        wait_listening(process).await?;
    }
    let controllers: Vec<String> = controllers.iter().map(ToString::to_string).collect();
    let admin = if args.tls { TlsArgs::in_dir(&certs, "admin").load()? } else { None };
    let options = ControllerClientOptions { tls: admin, ..Default::default() };
    let client = ControllerClient::new(controllers.clone(), options)?;
    wait_registered(&client).await?;
    add_groups(&client, args.groups).await?;
    if wait_until_settled(&client, Instant::now() + SETTLE_TIMEOUT).await?.is_none() {
        bail!(
            "the shards were not all served within {SETTLE_TIMEOUT:?}; see the logs in {}",
            dir.display()
        );
    }
    let flags = Flags {
        kv: format!("--controllers {controllers_flag}{}", spaced(&tls_flags("client"))),
        admin: format!("--controllers {controllers_flag}{}", spaced(&tls_flags("admin"))),
    };
    crate::admin::print_line(&instructions(
        &exe,
        &flags,
        &controllers_flag,
        &nodes,
        &processes,
        &dir,
    ))?;
    let grace = match run_until_stopped(&mut processes, &mut signals).await {
        StopSignal::Interrupt => STOP_GRACE,
        StopSignal::Terminate => Duration::ZERO,
    };
    processes.stop(grace).await;
    Ok(ExitCode::SUCCESS)
}

/// The loopback addresses of three processes from `first_port` on.
fn addresses(first_port: u16) -> Vec<SocketAddr> {
    (0..PROCESSES_PER_ROLE as u16)
        .map(|offset| SocketAddr::from(([127, 0, 0, 1], first_port + offset)))
        .collect()
}

fn join(addresses: &[SocketAddr]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Starts `mosaic ROLE` as process `id` of `addresses`, the others as its peers, logging to
/// DIR/NAME.log in `log_format`.
fn spawn(
    exe: &Path,
    log_format: LogFormat,
    dir: &Path,
    role: &str,
    id: u64,
    addresses: &[SocketAddr],
    extra: &[String],
) -> anyhow::Result<Process> {
    let name = format!("{}-{id}", if role == "server" { "node" } else { role });
    let peers: Vec<String> = (1..)
        .zip(addresses)
        .filter(|(other, _)| *other != id)
        .map(|(other, address)| format!("{other}={address}"))
        .collect();
    let address = addresses[usize::try_from(id - 1).expect("small ids")];
    let metrics = SocketAddr::from(([127, 0, 0, 1], address.port() + METRICS_PORT_OFFSET));
    let log = dir.join(format!("{name}.log"));
    let file = log_file(&log)?;
    let child = Command::new(exe)
        .env("MOSAIC_LOG_FORMAT", log_format.name())
        .arg(role)
        .args(["--id", &id.to_string(), "--listen", &address.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .arg("--data-dir")
        .arg(dir.join(&name))
        .args(["--peers", &peers.join(",")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("opening the log")?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Process { name, address, metrics, log, child })
}

fn log_file(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Waits until `process` accepts connections; fails with the end of its log if it exits or
/// takes too long.
async fn wait_listening(process: &mut Process) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(process.address).await.is_ok() {
            return Ok(());
        }
        let exited = process.child.try_wait().context("checking a child process")?;
        if exited.is_some() || Instant::now() >= deadline {
            let how = exited
                .map_or_else(|| "did not start listening".to_string(), |s| format!("exited ({s})"));
            bail!(
                "{} on {} {how}; its log ({}) ends with:\n{}",
                process.name,
                process.address,
                process.log.display(),
                log_tail(&process.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Waits until every storage node has registered with the controller.
async fn wait_registered(client: &ControllerClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let registered = client.query(None).await.map(|answer| answer.nodes.len()).unwrap_or(0);
        if registered as u64 >= PROCESSES_PER_ROLE {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("only {registered} of {PROCESSES_PER_ROLE} storage nodes registered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Adds groups 1..=`groups`, each with a replica on every node (nothing changes when they
/// exist already, as on a second run).
async fn add_groups(client: &ControllerClient, groups: u64) -> anyhow::Result<()> {
    let members: Vec<NodeId> = (1..=PROCESSES_PER_ROLE).map(NodeId).collect();
    let groups = (1..=groups).map(|group| (GroupId(group), members.clone())).collect();
    match client.execute(ControllerCommand::AddGroups { groups, max_moves: None }).await? {
        // One line, not every shard move of the configuration.
        Ok(ControllerOutcome::ConfigCreated { num, moves }) => {
            tracing::info!(config_num = %num, shards_moved = moves.len(), "groups added");
        }
        Ok(outcome) => tracing::info!(%outcome, "groups added"),
        // A group removed in an earlier run cannot come back; the others serve on.
        Err(refusal) => eprintln!("playground: groups not added: {refusal}"),
    }
    Ok(())
}

/// The flags of the printed `kv` and `admin` commands.
struct Flags {
    kv: String,
    admin: String,
}

/// `flags` joined by spaces, after a space (nothing for none).
fn spaced(flags: &[String]) -> String {
    flags.iter().map(|flag| format!(" {flag}")).collect()
}

/// What to try, for the person who started the playground.
fn instructions(
    exe: &Path,
    flags: &Flags,
    controllers: &str,
    nodes: &[SocketAddr],
    processes: &Processes,
    dir: &Path,
) -> String {
    let bin = exe.display();
    let nodes_flag: Vec<String> =
        (1..).zip(nodes).map(|(id, address)| format!("{id}={address}")).collect();
    let pids: Vec<String> =
        processes.0.iter().map(|p| format!("{} pid {}", p.name, p.child.id())).collect();
    let metrics: Vec<String> =
        processes.0.iter().map(|p| format!("http://{}/metrics", p.metrics)).collect();
    // Every controller replica serves the page; the first is started first.
    let status_page =
        processes.0.first().map_or(String::new(), |p| format!("http://{}/", p.metrics));
    format!(
        "\
Mosaic playground: 3 controller replicas, 3 storage nodes, groups 1-3 with a replica on every node.
  controllers: {controllers}
  nodes:       {nodes}
  processes:   {pids}
  status page: {status_page}
  metrics:     {metrics} (and /health)
  data, logs:  {dir}

Try, in another terminal:
  {bin} kv {kv} put greeting hello
  {bin} kv {kv} get greeting
  echo -n ', world' | {bin} kv {kv} append greeting
  {bin} admin {admin} status
  {bin} admin {admin} group add 4 --members 1,2,3 # shards move to group 4
  {bin} admin {admin} wait                       # until they have moved
  {bin} admin {admin} group remove 1             # group 1 hands its shards off
  {bin} admin {admin} config show
  kill <a node's pid>                            # the others carry on

Ctrl-C stops the cluster.",
        kv = flags.kv,
        admin = flags.admin,
        nodes = nodes_flag.join(","),
        pids = pids.join(", "),
        metrics = metrics.join(" "),
        dir = dir.display(),
    )
}

/// Runs until Ctrl-C or SIGTERM (which may have come while the playground started), reporting
/// children that exit meanwhile.
async fn run_until_stopped(processes: &mut Processes, signals: &mut StopSignals) -> StopSignal {
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            signal = signals.recv() => return signal,
            _ = watch.tick() => processes.0.retain_mut(|process| match process.child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!(
                        "playground: {} exited ({status}); see {}",
                        process.name,
                        process.log.display()
                    );
                    false
                }
                _ => true,
            }),
        }
    }
}
