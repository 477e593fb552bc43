//! The flags shared by the commands that talk to storage nodes: `--nodes
//! ID=HOST:PORT,ID=HOST:PORT`, and for the commands that route keys ([`KeyRoute`]), `--group`
//! (with `--groups`) and `--shard-count`, or instead of those, `--controllers HOST:PORT,...`.

use std::collections::BTreeMap;

use clap::{ArgGroup, Args};
use mosaic_client::{GroupId, NodeId, Routing, STATIC_CONFIG_NUM};

/// The environment variable that names the controller replicas when no flag routes.
pub const CONTROLLERS_ENV: &str = "MOSAIC_CONTROLLERS";

/// How a key command finds the group of a key: by the controller's latest configuration
/// (`--controllers`, or [`CONTROLLERS_ENV`] when no flag routes), or without a controller,
/// by one group that owns every shard (`--nodes` and `--group`, with `--shard-count`), or by
/// `--groups` consecutive groups from `--group` on that own the shards in turn. clap refuses
/// both flags, `--nodes` without `--group` (or the reverse), and `--shard-count` or `--groups`
/// with `--controllers` (the controller knows the placement); [`KeyRoute::source`] refuses
/// neither flag without the variable, and more groups than shards.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("route").args(["controllers", "nodes"])))]
pub struct KeyRoute {
    /// The controller replicas, as HOST:PORT,HOST:PORT: route every key by the controller's
    /// latest configuration (instead of --nodes and --group). Default: $MOSAIC_CONTROLLERS.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with_all = ["nodes", "group", "groups", "shard_count"]
    )]
    pub controllers: Vec<String>,
    /// The storage nodes of the group, as ID=HOST:PORT,ID=HOST:PORT (with --group, instead of
    /// --controllers).
    #[arg(long, value_delimiter = ',', value_parser = parse_node, requires = "group")]
    pub nodes: Vec<NodeAddress>,
    /// The group that owns every shard, a positive integer (with --nodes).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), requires = "nodes")]
    pub group: Option<u64>,
    /// With --nodes and --group: this many groups, --group and the ids after it, each with a
    /// replica on every node, own the shards in turn (shard s: group --group + s % --groups),
    /// as groups made by `mosaic admin group create` serve any shard. At most --shard-count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub groups: u64,
    /// The cluster's number of shards (with --nodes); must match the one the cluster was
    /// created with.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub shard_count: u32,
}

/// Where a key command takes its placement from, as [`KeyRoute`]'s flags say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The controller replicas of `--controllers`, as given.
    Controllers(Vec<String>),
    /// The one-group placement of `--nodes`, `--group` and `--shard-count`.
    Static(Routing),
}

impl KeyRoute {
    /// The source the flags describe, or [`CONTROLLERS_ENV`] when none routes.
    ///
    /// # Errors
    /// As [`KeyRoute::source_from`].
    pub fn source(&self) -> Result<KeySource, String> {
        self.source_from(std::env::var(CONTROLLERS_ENV).ok())
    }

    /// The source the flags describe, or the controllers `env` names (comma-separated) when
    /// none routes: flags win over the environment.
    ///
    /// # Errors
    /// No way of routing; a node named twice, or a routing the client refuses, in words.
    /// (The controller addresses are checked when the controller client is built.)
    pub fn source_from(&self, env: Option<String>) -> Result<KeySource, String> {
        if !self.controllers.is_empty() {
            return Ok(KeySource::Controllers(self.controllers.clone()));
        }
        if !self.nodes.is_empty() {
            let group =
                self.group.ok_or("--nodes needs --group (or give --controllers instead)")?;
            return static_routing(&self.nodes, group, self.groups, self.shard_count)
                .map(KeySource::Static);
        }
        let controllers: Vec<String> = env
            .iter()
            .flat_map(|env| env.split(','))
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(String::from)
            .collect();
        if controllers.is_empty() {
            return Err(format!(
                "say where keys live: --controllers HOST:PORT,... (or set {CONTROLLERS_ENV}), \
                 or --nodes ID=HOST:PORT,... with --group"
            ));
        }
        Ok(KeySource::Controllers(controllers))
    }
}

/// The placement of `--nodes`, `--group`, `--groups` and `--shard-count`: shard `s` owned by
/// group `group + s % groups`, every group on every node.
fn static_routing(
    nodes: &[NodeAddress],
    group: u64,
    groups: u64,
    shard_count: u32,
) -> Result<Routing, String> {
    if groups > u64::from(shard_count) {
        return Err(format!(
            "--groups {groups} is more than --shard-count {shard_count}: a group would own no \
             shard"
        ));
    }
    let last = group
        .checked_add(groups - 1)
        .ok_or_else(|| format!("--group {group} with --groups {groups} runs past the group ids"))?;
    let nodes = node_map(nodes)?;
    let members: Vec<NodeId> = nodes.keys().copied().collect();
    let shards = (0..u64::from(shard_count)).map(|shard| GroupId(group + shard % groups)).collect();
    let placement = (group..=last).map(|id| (GroupId(id), members.clone())).collect();
    Routing::new(STATIC_CONFIG_NUM, shard_count, shards, placement, nodes)
        .map_err(|error| error.to_string())
}

/// One `--nodes` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// The node.
    pub node: NodeId,
    /// Where it listens, `host:port`.
    pub address: String,
}

/// Parses one `ID=HOST:PORT` entry (clap's value parser for `--nodes`).
///
/// # Errors
/// A message naming the malformed part of the entry.
pub fn parse_node(entry: &str) -> Result<NodeAddress, String> {
    let (id, address) =
        entry.split_once('=').ok_or_else(|| format!("{entry:?} is not ID=HOST:PORT"))?;
    let node = id
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("{id:?} in {entry:?} is not a node id (a positive integer)"))?;
    if !address.contains(':') {
        return Err(format!("{address:?} in {entry:?} is not HOST:PORT"));
    }
    Ok(NodeAddress { node: NodeId(node), address: address.to_string() })
}

/// The entries as a map from node to address.
///
/// # Errors
/// When a node is named twice.
pub fn node_map(entries: &[NodeAddress]) -> Result<BTreeMap<NodeId, String>, String> {
    let mut nodes = BTreeMap::new();
    for NodeAddress { node, address } in entries {
        if nodes.insert(*node, address.clone()).is_some() {
            return Err(format!("--nodes names node {node} twice"));
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_bad_ones_are_named() {
        let entry = parse_node("1=127.0.0.1:7101").unwrap();
        assert_eq!(entry, NodeAddress { node: NodeId(1), address: "127.0.0.1:7101".into() });
        for bad in ["1", "x=h:1", "0=h:1", "1=host"] {
            let error = parse_node(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
        let twice = [entry.clone(), entry];
        assert!(node_map(&twice).unwrap_err().contains("twice"));
    }
}
