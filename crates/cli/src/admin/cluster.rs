//! The commands against the controller group: each is one `Execute` (deduplicated, so the
//! client's retries apply it once) or one linearizable `Query`.
//!
//! A command the controller refused prints the reason on stderr (`--output json`: a
//! `{"refused": {"kind", "message"}}` document on stdout) and exits 1. A command that changed
//! nothing because it was already applied (the same `group add` run twice, say) says so and
//! exits 0.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use mosaic_client::cluster_status::{self, ClusterStatus, GroupStatus};
use mosaic_client::{
    ControllerClient, ControllerClientOptions, GroupId, NodeId, NodeLiveness, ShardId, Tls,
};
use mosaic_controller::rebalance::rebalance;
use mosaic_controller::{Command, ConfigNum, Configuration, Outcome, ShardMove, shard_moves};
use mosaic_proto::controller::{QueryAnswer, RefusalInfo};
use mosaic_proto::pb;
use serde_json::json;

use super::{CALL_TIMEOUT, Output, print_line};
use crate::progress::Progress;

/// How often `wait` looks again.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The controller, as the admin commands use it.
pub(super) struct Cluster {
    client: ControllerClient,
    output: Output,
}

impl Cluster {
    /// A client of the controller replicas `controllers`.
    pub(super) fn connect(
        controllers: &[String],
        tls: Option<Tls>,
        timeout: Duration,
        output: Output,
    ) -> anyhow::Result<Self> {
        if controllers.is_empty() {
            bail!(
                "this command talks to the controller: give its replicas as --controllers HOST:PORT,... (or set MOSAIC_CONTROLLERS)"
            );
        }
        let options =
            ControllerClientOptions { timeout, tls, ..ControllerClientOptions::default() };
        let client = ControllerClient::new(controllers.to_vec(), options)?;
        Ok(Self { client, output })
    }

    /// The controller client.
    pub(super) fn client(&self) -> &ControllerClient {
        &self.client
    }

    /// The output format.
    pub(super) fn output(&self) -> Output {
        self.output
    }

    pub(super) async fn add_group(
        &self,
        group: u64,
        members: &[u64],
        max_moves: Option<u32>,
    ) -> anyhow::Result<ExitCode> {
        let members = members.iter().map(|node| NodeId(*node)).collect();
        let groups = BTreeMap::from([(GroupId(group), members)]);
        self.execute(Command::AddGroups { groups, max_moves }).await
    }

    pub(super) async fn remove_group(
        &self,
        group: u64,
        max_moves: Option<u32>,
    ) -> anyhow::Result<ExitCode> {
        self.execute(Command::RemoveGroups { groups: vec![GroupId(group)], max_moves }).await
    }

    /// Replaces `node` by `with` in its groups (or in `group`), and says in which groups:
    /// those whose members differ between the configuration created and the one before.
    pub(super) async fn replace_node(
        &self,
        node: u64,
        with: u64,
        group: Option<u64>,
    ) -> anyhow::Result<ExitCode> {
        let (node, with) = (NodeId(node), NodeId(with));
        let command = Command::ReplaceNode { node, with, group: group.map(GroupId) };
        let Some(outcome) = self.execute_quietly(command).await? else {
            return Ok(ExitCode::FAILURE);
        };
        let Outcome::ConfigCreated { num, moves } = &outcome else {
            print_line(&self.outcome_text(&outcome))?;
            return Ok(ExitCode::SUCCESS);
        };
        // The command is applied whatever these reads answer: without them, the line only
        // leaves out the groups.
        let groups = match self.groups_changed(*num).await {
            Ok(groups) => Some(groups),
            Err(error) => {
                eprintln!("mosaic: could not read which groups changed: {error:#}");
                None
            }
        };
        let text = match self.output {
            Output::Human => {
                let place = match groups.as_deref() {
                    Some([group]) => format!(" in group {group}"),
                    Some([]) | None => String::new(),
                    Some(groups) => format!(" in groups {}", group_list(groups)),
                };
                format!(
                    "configuration {num} created: node {node} replaced by node {with}{place} (the \
                     groups move their replicas one at a time; `mosaic admin status` shows \
                     progress)"
                )
            }
            Output::Json => json!({
                "result": "config-created",
                "num": num.0,
                "moves": moves_json(moves),
                "replaced": {
                    "node": node.0,
                    "with": with.0,
                    "groups": groups.map(|groups| groups.iter().map(|g| g.0).collect::<Vec<_>>()),
                },
            })
            .to_string(),
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    /// The groups whose members differ between configuration `num` and the one before.
    async fn groups_changed(&self, num: ConfigNum) -> anyhow::Result<Vec<GroupId>> {
        let before = self.client.query(Some(ConfigNum(num.0.saturating_sub(1)))).await?.config;
        let after = self.client.query(Some(num)).await?.config;
        Ok(after
            .groups
            .iter()
            .filter(|(group, members)| before.groups.get(group) != Some(members))
            .map(|(group, _)| *group)
            .collect())
    }

    pub(super) async fn move_shard(&self, shard: u32, group: u64) -> anyhow::Result<ExitCode> {
        self.execute(Command::MoveShard { shard: ShardId(shard), group: GroupId(group) }).await
    }

    pub(super) async fn rebalance(
        &self,
        dry_run: bool,
        max_moves: Option<u32>,
    ) -> anyhow::Result<ExitCode> {
        if !dry_run {
            return self.execute(Command::Rebalance { max_moves }).await;
        }
        let answer = self.client.query(None).await?;
        let config = &answer.config;
        let groups: BTreeSet<GroupId> = config.groups.keys().copied().collect();
        let moves = shard_moves(&config.shards, &rebalance(&config.shards, &groups, max_moves));
        let text = match self.output {
            Output::Human => {
                let mut text = format!(
                    "dry run against configuration {}: {} shard(s) would move",
                    config.num,
                    moves.len()
                );
                push_moves(&mut text, &moves);
                text
            }
            Output::Json => json!({
                "dry_run": true,
                "num": config.num.0,
                "moves": moves_json(&moves),
            })
            .to_string(),
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    pub(super) async fn node_list(&self) -> anyhow::Result<ExitCode> {
        let answer = self.client.query(None).await?;
        let text = match self.output {
            Output::Human => {
                let mut text = format!(
                    "{:<6} {:<24} {:<8} {:<12} {}",
                    "node", "address", "liveness", "last heard", "state"
                );
                for (node, address) in &answer.nodes {
                    let liveness = answer.liveness_of(*node);
                    text.push_str(&format!(
                        "\n{:<6} {address:<24} {:<8} {:<12} {}",
                        node.0,
                        liveness.name(),
                        heard_text(liveness),
                        answer.state_of(*node)
                    ));
                }
                text
            }
            Output::Json => json!({
                "controller_leader": self.leader_json(&answer),
                "nodes": cluster_status::nodes_json(&answer),
            })
            .to_string(),
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    pub(super) async fn config_show(&self, num: Option<u64>) -> anyhow::Result<ExitCode> {
        let answer = self.client.query(num.map(ConfigNum)).await?;
        let config = &answer.config;
        let text = match self.output {
            Output::Human => {
                let mut text = format!(
                    "configuration {} (latest {}; {} shards); controller leader: {}",
                    config.num,
                    answer.latest,
                    config.shard_count(),
                    self.leader_text(&answer)
                );
                text.push_str(&format!("\n{:<7} {:<16} {}", "group", "nodes", "shards"));
                for (group, members) in &config.groups {
                    text.push_str(&format!(
                        "\n{:<7} {:<16} {}",
                        group.0,
                        ids(members),
                        shard_ranges(&config.shards_of(*group))
                    ));
                }
                let unassigned: Vec<ShardId> = (0..config.shard_count())
                    .map(ShardId)
                    .filter(|shard| config.owner(*shard).is_none())
                    .collect();
                if !unassigned.is_empty() {
                    text.push_str(&format!("\nunassigned shards: {}", shard_ranges(&unassigned)));
                }
                text
            }
            Output::Json => json!({
                "num": config.num.0,
                "latest": answer.latest.0,
                "controller_leader": self.leader_json(&answer),
                "shards": config.shards.iter().map(|owner| owner.map(|g| g.0)).collect::<Vec<_>>(),
                "groups": groups_json(config),
            })
            .to_string(),
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    /// The latest configuration's groups, with each group's leader as its members report it.
    pub(super) async fn status(&self) -> anyhow::Result<ExitCode> {
        let status = ClusterStatus::read(&self.client, CALL_TIMEOUT).await?;
        let (answer, rows) = (&status.answer, &status.groups);
        let config = &answer.config;
        let text = match self.output {
            Output::Human => {
                let mut text = format!(
                    "configuration {}; controller leader: {}",
                    config.num,
                    self.leader_text(answer)
                );
                text.push_str(&format!(
                    "\n{:<7} {:<16} {:<8} {:<8} {}",
                    "group", "nodes", "leader", "config", "shards"
                ));
                for row in rows {
                    text.push_str(&format!(
                        "\n{:<7} {:<16} {:<8} {:<8} {}",
                        row.group.0,
                        ids(&row.members),
                        row.leader.map_or("-".to_string(), |node| node.to_string()),
                        row.applied().map_or("-".to_string(), |num| num.to_string()),
                        shard_ranges(&row.shards)
                    ));
                    for moving in row.moving() {
                        text.push_str(&format!("\n        {}", moving_text(moving)));
                    }
                    if row.reshaping() {
                        text.push_str(&format!(
                            "\n        changing members: voters {}, learners {}; listed {}",
                            ids(&row.voters),
                            ids(&row.learners),
                            ids(&row.members)
                        ));
                    }
                }
                text.push_str(&leaders_summary(&status.leaders_by_node()));
                text.push_str(&nodes_summary(answer));
                let unsettled = status.unsettled();
                text.push_str(&if unsettled.is_settled() {
                    "\nno shard is moving".to_string()
                } else {
                    format!("\n{unsettled} (configuration {})", config.num)
                });
                text
            }
            Output::Json => {
                let groups: Vec<_> = rows.iter().map(GroupStatus::to_json).collect();
                json!({
                    "num": config.num.0,
                    "controller_leader": self.leader_json(answer),
                    "nodes": cluster_status::nodes_json(answer),
                    "groups": groups,
                    "leaders": status
                        .leaders_by_node()
                        .iter()
                        .map(|(node, led)| (node.0.to_string(), json!(led)))
                        .collect::<serde_json::Map<_, _>>(),
                    "settled": status.settled(),
                })
                .to_string()
            }
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    /// Waits until every group's leader has applied the latest configuration, holds no moving
    /// shard and has the members listed; progress on stderr.
    pub(super) async fn wait(&self, deadline: Instant) -> anyhow::Result<ExitCode> {
        let Some(num) = wait_until_settled(&self.client, deadline).await? else {
            return Ok(ExitCode::FAILURE);
        };
        let text = match self.output {
            Output::Human => format!("configuration {num}: every shard is served"),
            Output::Json => json!({ "num": num.0, "settled": true }).to_string(),
        };
        print_line(&text)?;
        Ok(ExitCode::SUCCESS)
    }

    /// Applies `command` and prints what it did, or why it was refused.
    async fn execute(&self, command: Command) -> anyhow::Result<ExitCode> {
        match self.execute_quietly(command).await? {
            Some(outcome) => {
                print_line(&self.outcome_text(&outcome))?;
                Ok(ExitCode::SUCCESS)
            }
            None => Ok(ExitCode::FAILURE),
        }
    }

    /// Applies `command` and returns what it did, or prints why it was refused and returns
    /// `None`.
    pub(super) async fn execute_quietly(
        &self,
        command: Command,
    ) -> anyhow::Result<Option<Outcome>> {
        match self.client.execute(command).await? {
            Ok(outcome) => Ok(Some(outcome)),
            Err(refusal) => {
                self.print_refusal(&refusal)?;
                Ok(None)
            }
        }
    }

    pub(super) fn outcome_text(&self, outcome: &Outcome) -> String {
        match (self.output, outcome) {
            (Output::Human, Outcome::NodeRegistered { node }) => format!("node {node} registered"),
            (Output::Human, Outcome::NodeAddressChanged { node, previous }) => {
                format!("node {node} registered at its new address (it was {previous})")
            }
            (Output::Human, Outcome::ConfigCreated { num, moves }) => {
                let mut text =
                    format!("configuration {num} created; {} shard(s) move", moves.len());
                push_moves(&mut text, moves);
                text
            }
            (Output::Human, Outcome::Unchanged { num, reason }) => {
                format!("nothing changed (the latest configuration is still {num}): {reason}")
            }
            (Output::Json, Outcome::NodeRegistered { node }) => {
                json!({ "result": "node-registered", "node": node.0 }).to_string()
            }
            (Output::Json, Outcome::NodeAddressChanged { node, previous }) => {
                json!({ "result": "node-address-changed", "node": node.0, "previous": previous })
                    .to_string()
            }
            (Output::Json, Outcome::ConfigCreated { num, moves }) => {
                json!({ "result": "config-created", "num": num.0, "moves": moves_json(moves) })
                    .to_string()
            }
            (Output::Json, Outcome::Unchanged { num, reason }) => {
                json!({ "result": "unchanged", "num": num.0, "reason": reason }).to_string()
            }
            // Storage groups send it; the admin commands never do.
            (Output::Human, Outcome::GroupRetired { group }) => format!("group {group} retired"),
            (Output::Json, Outcome::GroupRetired { group }) => {
                json!({ "result": "group-retired", "group": group.0 }).to_string()
            }
            (
                Output::Human,
                Outcome::NodeDecommissioning { .. }
                | Outcome::NodeRetired { .. }
                | Outcome::ControllerAddressRecorded { .. },
            ) => outcome.to_string(),
            (Output::Json, Outcome::ControllerAddressRecorded { replica }) => {
                json!({ "result": "controller-address-recorded", "replica": replica.0 }).to_string()
            }
            (Output::Json, Outcome::NodeDecommissioning { node, num, replacements }) => json!({
                "result": "node-decommissioning",
                "node": node.0,
                "num": num.0,
                "replacements": replacements
                    .iter()
                    .map(|(group, with)| json!({ "group": group.0, "with": with.0 }))
                    .collect::<Vec<_>>(),
            })
            .to_string(),
            (Output::Json, Outcome::NodeRetired { node }) => {
                json!({ "result": "node-retired", "node": node.0 }).to_string()
            }
        }
    }

    pub(super) fn print_refusal(&self, refusal: &RefusalInfo) -> anyhow::Result<()> {
        match self.output {
            Output::Human => {
                eprintln!("mosaic: the controller refused: {}", refusal.message);
                Ok(())
            }
            Output::Json => print_line(
                &json!({ "refused": { "kind": refusal.kind, "message": refusal.message } })
                    .to_string(),
            ),
        }
    }

    fn leader_text(&self, answer: &QueryAnswer) -> String {
        match self.client.leader() {
            Some(address) => format!("replica {} at {address}", answer.leader),
            None => format!("replica {}", answer.leader),
        }
    }

    fn leader_json(&self, answer: &QueryAnswer) -> serde_json::Value {
        json!({ "id": answer.leader.0, "address": self.client.leader() })
    }
}

/// Polls until every group has applied the latest configuration, no shard moves and every
/// group's members are those listed (a `node replace` carried out), with
/// progress on stderr ([`Progress`]: the shards served of all): the configuration then, or
/// `None` once `deadline` has passed.
pub(crate) async fn wait_until_settled(
    client: &ControllerClient,
    deadline: Instant,
) -> anyhow::Result<Option<ConfigNum>> {
    let mut progress = Progress::new("shards served");
    let settled = poll_until_settled(client, deadline, &mut progress).await;
    progress.finish();
    let (num, unsettled) = settled?;
    match unsettled {
        None => Ok(Some(num)),
        Some(what) => {
            eprintln!("still not settled: {what}; see `mosaic admin status`");
            Ok(None)
        }
    }
}

/// The loop of [`wait_until_settled`]: the configuration, and what is still moving if
/// `deadline` passed first.
async fn poll_until_settled(
    client: &ControllerClient,
    deadline: Instant,
    progress: &mut Progress,
) -> anyhow::Result<(ConfigNum, Option<String>)> {
    loop {
        let status = ClusterStatus::read(client, CALL_TIMEOUT).await?;
        let num = status.answer.config.num;
        let unsettled = status.unsettled();
        if unsettled.is_settled() {
            return Ok((num, None));
        }
        let what = format!("configuration {num}: {unsettled}");
        if Instant::now() >= deadline {
            return Ok((num, Some(what)));
        }
        let total = u64::from(status.answer.config.shard_count());
        progress.update(total.saturating_sub(unsettled.moving as u64), total, &what);
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

fn moving_text(shard: &pb::ShardStatus) -> String {
    let peer = shard.peer_group.map_or("no group".to_string(), |group| format!("group {group}"));
    match shard.state.as_str() {
        "pulling" => format!("shard {}: pulling from {peer}", shard.shard_id),
        "confirming" => {
            format!("shard {}: serving; {peer} has not deleted its copy yet", shard.shard_id)
        }
        "sending" => format!("shard {}: sending to {peer}", shard.shard_id),
        other => format!("shard {}: {other}", shard.shard_id),
    }
}

/// One line per (from, to) pair of groups, with the shards it moves as ranges.
fn push_moves(text: &mut String, moves: &[ShardMove]) {
    let owner =
        |group: Option<GroupId>| group.map_or("unassigned".to_string(), |g| format!("group {g}"));
    let mut by_pair: BTreeMap<(Option<GroupId>, Option<GroupId>), Vec<ShardId>> = BTreeMap::new();
    for shard_move in moves {
        by_pair.entry((shard_move.from, shard_move.to)).or_default().push(shard_move.shard);
    }
    for ((from, to), shards) in by_pair {
        let noun = if shards.len() == 1 { "shard" } else { "shards" };
        text.push_str(&format!(
            "\n  {noun} {}: {} -> {}",
            shard_ranges(&shards),
            owner(from),
            owner(to)
        ));
    }
}

fn moves_json(moves: &[ShardMove]) -> Vec<serde_json::Value> {
    moves
        .iter()
        .map(
            |m| json!({ "shard": m.shard.0, "from": m.from.map(|g| g.0), "to": m.to.map(|g| g.0) }),
        )
        .collect()
}

fn groups_json(config: &Configuration) -> serde_json::Value {
    let groups: serde_json::Map<String, serde_json::Value> = config
        .groups
        .iter()
        .map(|(group, members)| {
            (group.0.to_string(), json!(members.iter().map(|n| n.0).collect::<Vec<_>>()))
        })
        .collect();
    serde_json::Value::Object(groups)
}

/// `1.2 s ago`, `never` (since the leader leads), or `-` (unknown).
fn heard_text(liveness: NodeLiveness) -> String {
    match (liveness, liveness.last_heard()) {
        (_, Some(heard)) => format!("{:.1} s ago", heard.as_secs_f64()),
        (NodeLiveness::Down { .. }, None) => "never".to_string(),
        _ => "-".to_string(),
    }
}

/// `\nleaders: node 1 leads 2, node 2 leads 1`: how many groups each member node leads.
pub(super) fn leaders_summary(leaders: &BTreeMap<NodeId, usize>) -> String {
    let counts: Vec<String> =
        leaders.iter().map(|(node, led)| format!("node {} leads {led}", node.0)).collect();
    format!("\nleaders: {}", if counts.is_empty() { "-".into() } else { counts.join(", ") })
}

/// One line on the nodes for `admin status`: how many are up, each that is not, and each that
/// is being decommissioned or retired.
fn nodes_summary(answer: &QueryAnswer) -> String {
    let up = answer.nodes.keys().filter(|node| answer.liveness_of(**node).is_up()).count();
    let mut text = format!("\nnodes: {up} of {} up", answer.nodes.len());
    for node in answer.nodes.keys() {
        let liveness = answer.liveness_of(*node);
        if !liveness.is_up() {
            text.push_str(&format!(
                "; node {} {} (last heard {})",
                node.0,
                liveness.name(),
                heard_text(liveness)
            ));
        }
    }
    for (node, state) in &answer.node_states {
        text.push_str(&format!("; node {node} {state}"));
    }
    text
}

/// `1, 2, 5`.
pub(super) fn group_list(groups: &[GroupId]) -> String {
    groups.iter().map(|group| group.0.to_string()).collect::<Vec<_>>().join(", ")
}

fn ids(nodes: &[NodeId]) -> String {
    nodes.iter().map(|node| node.0.to_string()).collect::<Vec<_>>().join(",")
}

/// Shards as ranges: `0-3,7,9-10`; `-` for none.
fn shard_ranges(shards: &[ShardId]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = shards.iter().map(|shard| shard.0).peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    if parts.is_empty() { "-".to_string() } else { parts.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_join_consecutive_shards() {
        let shards = |ids: &[u32]| ids.iter().map(|id| ShardId(*id)).collect::<Vec<_>>();
        assert_eq!(shard_ranges(&shards(&[])), "-");
        assert_eq!(shard_ranges(&shards(&[4])), "4");
        assert_eq!(shard_ranges(&shards(&[0, 1, 2, 3, 7, 9, 10])), "0-3,7,9-10");
    }
}
