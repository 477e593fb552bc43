//! The `first-reads` workload: how soon a cluster serves every shard, for example after its
//! nodes restart. One linearizable read of a key in each shard, `--concurrency` at a time, each
//! retried by the client until it succeeds or `--request-timeout-secs` passes; the line reports
//! when the reads succeeded, counted from `--since-unix-ms` (when the script started the
//! servers) or from the command's start. A read succeeds once its group has a leader that
//! confirmed its leadership with a quorum round and applied what was committed before it, so
//! the last one says when every group served again.
//!
//! The time of a shard's read is an upper bound of when its group could serve: a read waits
//! for a task to take it, and a retry waits out the client's backoff (at most
//! [`FIRST_READS_BACKOFF_MAX`] in this workload).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use mosaic_client::{Client, Consistency, RoutingSource, ShardId, shard_for_key};
use serde_json::json;

use super::{BenchArgs, key, percentile};

/// The longest pause between two tries of one read in this workload, so that a read succeeds
/// soon after its group can serve it (the client's default is 500 ms).
pub(super) const FIRST_READS_BACKOFF_MAX: Duration = Duration::from_millis(20);

/// Reads per shard tried while looking for one key of each shard: far above the
/// `ln(shards)` a uniform hash needs on average.
const KEY_CANDIDATES_PER_SHARD: u64 = 64;

/// Runs the workload and returns its JSON line.
pub(super) async fn run<S: RoutingSource>(
    clients: &Arc<Vec<Client<S>>>,
    args: &BenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let since = since_instant(args.since_unix_ms)?;
    let routing = clients[0].warm_up().await.context("reading the placement")?;
    let shard_count = routing.shard_count();
    let keys = Arc::new(key_per_shard(shard_count)?);
    let groups: std::collections::BTreeSet<_> =
        (0..shard_count).filter_map(|shard| routing.group_of(ShardId(shard))).collect();
    let concurrency = args.concurrency.unwrap_or(64);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let (clients, keys, next) = (Arc::clone(clients), Arc::clone(&keys), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let client = &clients[(task % clients.len() as u64) as usize];
            let mut served_us = Vec::new();
            let mut errors = 0u64;
            loop {
                let shard = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(shard) else { return (served_us, errors) };
                match client.get(key.clone(), Consistency::Linearizable).await {
                    Ok(_) => served_us.push(since.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
        }));
    }
    let mut served_us = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (served, failed) = task.await.context("a first-reads task panicked")?;
        served_us.extend(served);
        errors += failed;
    }
    served_us.sort_unstable();
    let line = json!({
        "backend": "mosaic",
        "workload": "first-reads",
        "concurrency": concurrency,
        "conns": args.conns,
        "shards": shard_count,
        "groups": groups.len(),
        "ops": served_us.len(),
        "errors": errors,
        "since_unix_ms": args.since_unix_ms,
        "p50_us": percentile(&served_us, 0.50),
        "p99_us": percentile(&served_us, 0.99),
        "max_us": served_us.last().copied().unwrap_or(0),
        "describe": args.describe,
    });
    eprintln!(
        "bench: first-reads: {} of {} shards ({} groups) read; all by {:.3} s, half by {:.3} s; \
         errors {}",
        served_us.len(),
        shard_count,
        groups.len(),
        line["max_us"].as_f64().unwrap_or_default() / 1e6,
        line["p50_us"].as_f64().unwrap_or_default() / 1e6,
        errors,
    );
    Ok(line)
}

/// The instant `since_unix_ms` stands for (the wall clock's milliseconds since the epoch), or
/// now.
///
/// # Errors
/// A time in the future, or before this clock can count back to.
fn since_instant(since_unix_ms: Option<u64>) -> anyhow::Result<Instant> {
    let now = Instant::now();
    let Some(since_unix_ms) = since_unix_ms else { return Ok(now) };
    let now_unix =
        SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
    let since = Duration::from_millis(since_unix_ms);
    let Some(ago) = now_unix.checked_sub(since) else {
        bail!("--since-unix-ms {since_unix_ms} is in the future (now {})", now_unix.as_millis());
    };
    now.checked_sub(ago)
        .with_context(|| format!("--since-unix-ms {since_unix_ms} is too far in the past"))
}

/// One benchmark key of each of `shard_count` shards, `keys[s]` in shard `s`.
///
/// # Errors
/// When some shard gets no key among the first [`KEY_CANDIDATES_PER_SHARD`] per shard.
fn key_per_shard(shard_count: u32) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut keys: Vec<Option<Vec<u8>>> = vec![None; shard_count as usize];
    let mut missing = keys.len();
    for index in 0..u64::from(shard_count) * KEY_CANDIDATES_PER_SHARD {
        let candidate = key(index);
        let slot = &mut keys[shard_for_key(&candidate, shard_count).0 as usize];
        if slot.is_none() {
            *slot = Some(candidate);
            missing -= 1;
            if missing == 0 {
                return Ok(keys.into_iter().flatten().collect());
            }
        }
    }
    bail!("{missing} of {shard_count} shards got none of the benchmark's keys")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_gets_a_key_of_its_own() {
        for shard_count in [1, 7, 64, 10_000] {
            let keys = key_per_shard(shard_count).unwrap();
            assert_eq!(keys.len(), shard_count as usize);
            for (shard, key) in keys.iter().enumerate() {
                assert_eq!(shard_for_key(key, shard_count), ShardId(shard as u32));
            }
        }
    }

    #[test]
    fn since_counts_back_from_now_and_refuses_the_future() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let since = since_instant(Some(now_ms - 1_500)).unwrap();
        let elapsed = since.elapsed();
        assert!(elapsed >= Duration::from_millis(1_400), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
        let error = since_instant(Some(now_ms + 3_600_000)).unwrap_err().to_string();
        assert!(error.contains("in the future"), "{error}");
        assert!(since_instant(None).unwrap().elapsed() < Duration::from_secs(60));
    }
}
