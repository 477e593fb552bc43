//! `mosaic server` runs one storage node, `mosaic controller` one replica of the controller
//! group; each until SIGTERM or Ctrl-C (listened for from the start, [`crate::signals`]), then
//! stops gracefully.
//!
//! Settings come from `--config FILE` (TOML, see `mosaic_server::ServerConfig`), and the
//! flags override the file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use mosaic_server::{Node, ServerConfig};

use crate::signals::StopSignals;
use crate::tls::TlsArgs;

/// Flags of `mosaic server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The controller replicas, as HOST:PORT,HOST:PORT: the node registers and creates the
    /// replicas the controller places on it.
    #[arg(long, value_delimiter = ',')]
    controllers: Vec<String>,
}

/// Flags of `mosaic controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// With --bootstrap: the number of shards of the new cluster, fixed once the controller
    /// group exists (every initial replica must be given the same number).
    #[arg(long, default_value_t = mosaic_controller::DEFAULT_SHARD_COUNT,
          value_parser = clap::value_parser!(u32).range(1..))]
    shard_count: u32,
    /// This is the first start of a new controller group: create it, with this replica and
    /// --peers as its members, in the empty data directory. Give it to every initial replica,
    /// once; a replica whose data directory holds the group refuses it. Without it, a replica
    /// on an empty data directory waits for `mosaic admin init`, which creates the group on
    /// every replica of a new cluster once (and never beside replicas that hold it: a replica
    /// that lost its data must not come back as a member with an empty log).
    #[arg(long)]
    bootstrap: bool,
}

/// The flags every node process takes.
#[derive(Args, Debug)]
struct NodeArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    id: Option<u64>,
    /// Address to listen on, ip:port.
    #[arg(long)]
    listen: Option<String>,
    /// Address other nodes and clients reach this node at, host:port (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Address to serve plain HTTP on, ip:port: Prometheus metrics at /metrics, a health
    /// probe at /health (default: not served).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Data directory (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The other nodes (for a controller: the other replicas; it may list itself), as
    /// ID=HOST:PORT,ID=HOST:PORT.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Cluster id (a data directory never opens in another cluster).
    #[arg(long)]
    cluster_id: Option<u64>,
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mutual TLS on every port this node serves and every connection it makes (overrides the
    /// file's [tls]).
    #[command(flatten)]
    tls: TlsArgs,
}

impl NodeArgs {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                ServerConfig::from_toml(&text)
                    .with_context(|| format!("in the config file {}", path.display()))?
            }
            None => ServerConfig::new(0, PathBuf::new()),
        };
        if let Some(id) = self.id {
            config.node_id = id;
        }
        if let Some(listen) = &self.listen {
            config.listen.clone_from(listen);
        }
        if let Some(advertise) = &self.advertise {
            config.advertise = Some(advertise.clone());
        }
        if let Some(metrics_listen) = &self.metrics_listen {
            config.metrics_listen = Some(metrics_listen.clone());
        }
        if let Some(data_dir) = &self.data_dir {
            config.data_dir.clone_from(data_dir);
        }
        if let Some(cluster_id) = self.cluster_id {
            config.cluster_id = cluster_id;
        }
        if let Some(files) = self.tls.files() {
            config.tls = Some(files);
        }
        for peer in &self.peers {
            let (id, address) = peer
                .split_once('=')
                .with_context(|| format!("--peers entry {peer:?} is not ID=HOST:PORT"))?;
            let id: u64 = id
                .parse()
                .with_context(|| format!("--peers entry {peer:?}: {id:?} is not a node id"))?;
            config.peers.insert(id, address.to_string());
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs a storage node until a signal asks it to stop.
pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.node.config()?;
    let signals = starting("storage node", &config)?;
    if !args.controllers.is_empty() {
        config.controllers = args.controllers;
        config.validate()?;
    }
    run_until_signal(Node::start(config).await?, signals).await
}

/// Runs a controller replica until a signal asks it to stop.
pub async fn run_controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let config = args.node.config()?;
    let signals = starting("controller replica", &config)?;
    let listener = Node::bind(&config).await?;
    let node = Node::start_controller(config, args.shard_count, args.bootstrap, listener).await?;
    run_until_signal(node, signals).await
}

/// Listens for the stop signals, then says that the process starts: a signal from then on
/// stops it gracefully, once it runs.
fn starting(role: &str, config: &ServerConfig) -> anyhow::Result<StopSignals> {
    let signals = StopSignals::listen()?;
    tracing::info!(node_id = %config.node_id, version = env!("CARGO_PKG_VERSION"), role,
        data_dir = %config.data_dir.display(), "mosaic starting");
    Ok(signals)
}

async fn run_until_signal(mut node: Node, mut signals: StopSignals) -> anyhow::Result<ExitCode> {
    let signalled = tokio::select! {
        _ = signals.recv() => true,
        // The node stops by itself only on an error (storage failure, server failure).
        result = node.wait() => {
            result?;
            false
        }
    };
    if !signalled {
        anyhow::bail!("the node stopped unexpectedly");
    }
    node.stop().await?;
    Ok(ExitCode::SUCCESS)
}
