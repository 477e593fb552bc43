//! The live status page a controller replica serves on its HTTP port ([`crate::http`]): `/`
//! is a page ([`PAGE`]) that reads `/status.json` every two seconds and shows the storage
//! nodes (address, up, down or unknown, and when the controller last heard each), the groups (members, leader, the configuration each has
//! applied, its shards and the ones moving), every shard coloured by its group (moving ones
//! marked), and the latest configurations with the shards each moved.
//!
//! `/status.json` ([`StatusPage::json`]) is built from [`ClusterStatus`] (the controller's
//! latest configuration, what its leader hears of every node, and each group leader's view,
//! every group asked at once) and the latest configurations (kept once read: a configuration
//! never changes). It is built at most once a second, however many
//! readers there are, within [`BUILD_TIMEOUT`]; when a build fails (the controller has no
//! quorum, say) the last status built is served marked `"stale": true` with the `"error"`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use mosaic_client::cluster_status::{self, ClusterStatus, GroupStatus};
use mosaic_client::{ConfigNum, Configuration, ControllerClient, ControllerClientOptions, Tls};
use mosaic_controller::shard_moves;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The page: static, it reads `status.json` itself.
pub const PAGE: &str = include_str!("status_page.html");

/// How long a built status (or a failed build) is served before it is built anew.
const REBUILD_INTERVAL: Duration = Duration::from_secs(1);
/// How long a build may take in all.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call to a group's member may take.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);
/// How many configurations the page lists, the latest first.
const HISTORY: u64 = 5;

/// The status of the cluster, as a controller replica builds it for its page.
pub struct StatusPage {
    client: ControllerClient,
    /// The last build, and the last status built.
    built: Mutex<Built>,
    /// The configurations read for the history, by number (they never change).
    configs: std::sync::Mutex<BTreeMap<u64, Configuration>>,
}

/// What the last builds left.
#[derive(Default)]
struct Built {
    /// When the last build ended.
    at: Option<Instant>,
    /// The last status built.
    last: Option<Value>,
    /// What readers get until the next build: the last status (marked stale after a failed
    /// build), or why there is none. Set by the first build.
    served: Option<Result<Arc<String>, String>>,
}

impl StatusPage {
    /// The page of a replica of the controller group whose replicas are at `controllers`,
    /// calling them and the storage nodes with `tls` (the replica's own identity).
    ///
    /// # Errors
    /// An invalid controller address.
    pub fn new(
        controllers: Vec<String>,
        tls: Option<Tls>,
        timeout: Duration,
    ) -> mosaic_client::Result<Self> {
        let options = ControllerClientOptions { timeout, tls, ..Default::default() };
        Ok(Self {
            client: ControllerClient::new(controllers, options)?,
            built: Mutex::new(Built::default()),
            configs: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The status as JSON (see the module documentation), built anew if the last build is
    /// older than a second.
    ///
    /// # Errors
    /// No status could be built yet (the controller has had no quorum since the start, say).
    pub async fn json(&self) -> Result<Arc<String>, String> {
        let mut built = self.built.lock().await;
        if built.at.is_none_or(|at| at.elapsed() >= REBUILD_INTERVAL) {
            let result = tokio::time::timeout(BUILD_TIMEOUT, self.build())
                .await
                .unwrap_or_else(|_| Err(format!("no status within {BUILD_TIMEOUT:?}")));
            built.at = Some(Instant::now());
            let served = match result {
                Ok(status) => Ok(Arc::new(built.last.insert(status).to_string())),
                Err(error) => match &built.last {
                    Some(last) => {
                        let mut stale = last.clone();
                        stale["stale"] = json!(true);
                        stale["error"] = json!(error);
                        Ok(Arc::new(stale.to_string()))
                    }
                    None => Err(error),
                },
            };
            built.served = Some(served);
        }
        built.served.clone().expect("set by the build above")
    }

    async fn build(&self) -> Result<Value, String> {
        let status = ClusterStatus::read(&self.client, MEMBER_TIMEOUT)
            .await
            .map_err(|error| error.to_string())?;
        let answer = &status.answer;
        let config = &answer.config;
        let history = self.history(config).await;
        let nodes = cluster_status::nodes_json(answer);
        let groups: Vec<Value> = status.groups.iter().map(GroupStatus::to_json).collect();
        let unsettled = status.unsettled();
        Ok(json!({
            "num": config.num.0,
            "controller_leader": answer.leader.0,
            "settled": unsettled.is_settled(),
            "behind": unsettled.behind,
            "moving": unsettled.moving,
            "reshaping": unsettled.reshaping,
            "nodes": nodes,
            "groups": groups,
            "shards": config.shards.iter().map(|owner| owner.map(|group| group.0)).collect::<Vec<_>>(),
            "history": history,
        }))
    }

    /// The latest configurations (at most [`HISTORY`]), newest first, each with the shards
    /// it moved. Best effort: it stops at the first configuration it cannot read.
    async fn history(&self, latest: &Configuration) -> Vec<Value> {
        let first = latest.num.0.saturating_sub(HISTORY);
        let mut configs = BTreeMap::from([(latest.num.0, latest.clone())]);
        for num in (first..latest.num.0).rev() {
            let known = self.known_config(num);
            let config = match known {
                Some(config) => config,
                None => match self.client.query(Some(ConfigNum(num))).await {
                    Ok(answer) => answer.config,
                    Err(error) => {
                        tracing::debug!(config_num = %num, %error,
                            "cannot read a configuration for the status page");
                        break;
                    }
                },
            };
            configs.insert(num, config);
        }
        {
            let mut known = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
            known.clone_from(&configs);
        }
        configs
            .values()
            .zip(configs.values().skip(1))
            .rev()
            .map(|(before, after)| {
                let moves: Vec<Value> = shard_moves(&before.shards, &after.shards)
                    .iter()
                    .map(|m| json!({ "shard": m.shard.0, "from": m.from.map(|g| g.0), "to": m.to.map(|g| g.0) }))
                    .collect();
                json!({
                    "num": after.num.0,
                    "groups": after.groups.keys().map(|group| group.0).collect::<Vec<_>>(),
                    "moves": moves,
                })
            })
            .collect()
    }

    fn known_config(&self, num: u64) -> Option<Configuration> {
        self.configs.lock().unwrap_or_else(PoisonError::into_inner).get(&num).cloned()
    }
}
