//! `mosaic admin init`: creates the controller group of a new cluster on every replica, once
//! each replica has answered that it holds nothing ([`mosaic_client::init`]). Waits (up to
//! `--timeout`) for every replica to answer, showing which it still waits for. Run again on
//! an initialized cluster, it changes nothing and exits 0, so a deployment may run it on
//! every start (the compose file's and Kubernetes' init jobs do).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use mosaic_client::Tls;
use mosaic_client::init::{InitPlan, ReplicaHolding, bootstrap, may_answer_later, plan};
use serde_json::json;

use super::{CALL_TIMEOUT, Output, print_line};
use crate::progress::Progress;

/// How often the replicas that did not answer are asked again.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Initializes the cluster whose controller replicas are `controllers`, with `shard_count`
/// shards.
pub(super) async fn init(
    controllers: &[String],
    tls: Option<&Tls>,
    shard_count: u32,
    deadline: Instant,
    output: Output,
) -> anyhow::Result<ExitCode> {
    if controllers.is_empty() {
        bail!(
            "init talks to every controller replica: give them as --controllers HOST:PORT,... \
             (or set MOSAIC_CONTROLLERS)"
        );
    }
    let mut holdings = every_answer(controllers, tls, deadline).await?;
    let refuse = |reason: &str| -> anyhow::Result<ExitCode> {
        match output {
            Output::Human => eprintln!("mosaic: init refused: {reason}"),
            Output::Json => print_line(&json!({ "refused": { "message": reason } }).to_string())?,
        }
        Ok(ExitCode::FAILURE)
    };
    match plan(&holdings) {
        InitPlan::Refuse(reason) => refuse(&reason),
        InitPlan::Initialized { shard_count: held } if held != shard_count => refuse(&format!(
            "the cluster is initialized with {held} shards, not {shard_count}: the shard count \
             is fixed when the cluster is created"
        )),
        InitPlan::Initialized { .. } => {
            let message = "the cluster is initialized already: every controller replica holds \
                           the controller group; nothing changed";
            match output {
                Output::Human => print_line(message)?,
                Output::Json => {
                    print_line(&json!({ "initialized": true, "created": [] }).to_string())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        InitPlan::Create => {
            // In node-id order, so that two inits running at once meet at the first replica:
            // the second finds it held (with another shard count: refused) and stops there.
            holdings.sort_by_key(|holding| holding.node);
            let mut created = Vec::new();
            for holding in &holdings {
                if !create(holding, tls, shard_count, deadline).await? {
                    return refuse(&format!(
                        "replica {} held the controller group already when init came to create \
                         it: another init ran at the same time. Run init again to see what \
                         every replica holds",
                        holding.node
                    ));
                }
                created.push(holding.node.0);
            }
            match output {
                Output::Human => print_line(&format!(
                    "initialized a cluster of {shard_count} shards: the controller group \
                     (replicas {}) is created; add storage nodes and groups next",
                    created.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                ))?,
                Output::Json => print_line(
                    &json!({ "initialized": true, "created": created, "shard_count": shard_count })
                        .to_string(),
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Creates the group on the replica of `holding`, asking again while it may answer later,
/// until `deadline`: true once this call created it, false if the replica held it already.
async fn create(
    holding: &ReplicaHolding,
    tls: Option<&Tls>,
    shard_count: u32,
    deadline: Instant,
) -> anyhow::Result<bool> {
    loop {
        match bootstrap(&holding.address, tls, CALL_TIMEOUT, shard_count, false).await {
            Ok(answer) => return Ok(answer.created),
            Err(status)
                if may_answer_later(&status) && Instant::now() + RETRY_INTERVAL < deadline =>
            {
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
            Err(status) => bail!(
                "replica {} ({}) did not create the controller group: {}. The replicas before it \
                 hold the group and it does not: if it never answers, this new cluster must be \
                 started again from empty data directories (docs/controller.md \"Starting a new \
                 cluster\")",
                holding.node,
                holding.address,
                status.message()
            ),
        }
    }
}

/// Every replica's answer to a dry run, asking again those that do not answer until all do
/// or `deadline` passes.
async fn every_answer(
    controllers: &[String],
    tls: Option<&Tls>,
    deadline: Instant,
) -> anyhow::Result<Vec<ReplicaHolding>> {
    let mut progress = Progress::new("controller replicas answered");
    let total = controllers.len() as u64;
    loop {
        // Every round asks every replica: the plan is made from one round's answers only, never
        // from an answer an earlier round cached while another init may have run since.
        let asks = controllers.iter().map(|address| async move {
            bootstrap(address, tls, CALL_TIMEOUT, 0, true)
                .await
                .map(|answer| ReplicaHolding::from_pb(address, &answer))
        });
        let results = futures_util::future::join_all(asks).await;
        let mut answers = Vec::new();
        let mut missing = Vec::new();
        for (result, address) in results.into_iter().zip(controllers) {
            match result {
                Ok(answer) => answers.push(answer),
                Err(status) if may_answer_later(&status) => {
                    missing.push(format!("{address}: {}", status.message()));
                }
                Err(status) => {
                    progress.finish();
                    bail!("controller replica {address} refused: {}", status.message());
                }
            }
        }
        if missing.is_empty() {
            progress.finish();
            return Ok(answers);
        }
        let done = total - missing.len() as u64;
        if Instant::now() + RETRY_INTERVAL >= deadline {
            progress.finish();
            bail!(
                "not every controller replica answered (every initial replica must be running \
                 to initialize): {}",
                missing.join("; ")
            );
        }
        progress.update(done, total, &format!("waiting for {}", missing.join("; ")));
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}
