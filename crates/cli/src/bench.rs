//! `mosaic bench`: the closed-loop workloads of the project's benchmark definitions
//! (`shared/bench/README.md`) against a running cluster, printing one JSON line per workload
//! in the format defined there, so that Mosaic's and etcd's results fold into one table.
//!
//! Keys are routed as `mosaic kv` routes them: by the controller's latest configuration
//! (`--controllers`, or `$MOSAIC_CONTROLLERS`), so that every group of the cluster takes its
//! shards' load, or to one group that owns every shard (`--nodes` and `--group`).
//!
//! Closed loop: each of `--concurrency` tasks keeps one request in flight; the tasks share
//! `--conns` clients (each with its own gRPC connections and its own copy of the routing). Keys are `k` and a zero-padded
//! number, 16 bytes, drawn uniformly from `--keys`; values are `--value-size` random bytes.
//! Each workload runs `--warmup-secs` unmeasured, then `--secs` measured; only operations that
//! complete inside the measured window count. Writes return once committed by a majority with
//! the log fsynced; gets are linearizable.
//!
//! A JSON line goes to stdout (and is appended to `--out`), a human summary to stderr. With
//! `--server-pids`, the line also carries the CPU each server process used in the measured
//! window (Linux `/proc`), as cores and as microseconds per operation.
//!
//! One more workload is not among the definitions: `first-reads` ([`first_reads`]) measures
//! how soon every shard is served, for example after a restart.

mod first_reads;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use mosaic_client::{
    Client, ClientOptions, Consistency, LoadOptions, RoutingSource, StaticRouting,
};
use mosaic_raft::SplitMix64;
use serde_json::json;

use crate::nodes::{KeyRoute, KeySource};
use crate::tls::TlsArgs;

/// The key width of the benchmark definitions: `k` and 15 digits.
const KEY_BYTES: usize = 16;
/// The unit of the CPU times in `/proc/PID/stat`: USER_HZ, which Linux fixes at 100 ticks per
/// second in its user-space ABI.
const USER_HZ: f64 = 100.0;
/// Batches in flight while preloading every key.
const PRELOAD_BATCHES_IN_FLIGHT: usize = 16;

/// Flags of `mosaic bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    route: KeyRoute,
    #[command(flatten)]
    tls: TlsArgs,
    /// Which workload to run; `all` runs the four of the benchmark definitions in order,
    /// preloading once.
    #[arg(long, value_enum, default_value_t = Workload::All)]
    workload: Workload,
    /// Requests in flight (default: 1 for put-latency, 64 for the others).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: Option<u64>,
    /// Clients (each with its own connections) the tasks share.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Seconds measured per workload.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Seconds run unmeasured before each workload's measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Fraction of gets in `mixed`.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Deadline of one operation, retries included, in seconds.
    #[arg(long, default_value_t = 10.0)]
    request_timeout_secs: f64,
    /// Server process ids whose CPU use is reported (Linux).
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// first-reads: count from this time, in milliseconds since the Unix epoch (for example
    /// when the servers were started: `date +%s%3N`), instead of from the command's start.
    #[arg(long)]
    since_unix_ms: Option<u64>,
    /// Free text describing the setup, copied into the output (e.g. "3 nodes, 1 group").
    #[arg(long, default_value = "")]
    describe: String,
    /// Also append every JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The workloads of the benchmark definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// One put in flight.
    PutLatency,
    /// Puts, many in flight.
    PutThroughput,
    /// Linearizable gets of preloaded keys, many in flight.
    GetThroughput,
    /// Gets and puts, many in flight.
    Mixed,
    /// The four above, in that order.
    All,
    /// One linearizable read of every shard, each retried until it succeeds: when each
    /// shard was first served (not run by `all`).
    FirstReads,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::PutLatency => "put-latency",
            Self::PutThroughput => "put-throughput",
            Self::GetThroughput => "get-throughput",
            Self::Mixed => "mixed",
            Self::All => "all",
            Self::FirstReads => "first-reads",
        }
    }
}

/// What one task measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    get_misses: u64,
}

/// `length` pseudo-random bytes (for values).
fn random_bytes(rng: &mut SplitMix64, length: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(length + 8);
    while out.len() < length {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(length);
    out
}

fn key(index: u64) -> Vec<u8> {
    format!("k{index:0width$}", width = KEY_BYTES - 1).into_bytes()
}

/// Runs `mosaic bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1, not {}", args.read_ratio);
    }
    if args.secs <= 0.0 || args.warmup_secs < 0.0 || args.request_timeout_secs <= 0.0 {
        bail!("--secs and --request-timeout-secs must be positive, --warmup-secs not negative");
    }
    let mut options = ClientOptions {
        timeout: Duration::from_secs_f64(args.request_timeout_secs),
        tls: args.tls.load()?,
        ..ClientOptions::default()
    };
    if args.workload == Workload::FirstReads {
        options.backoff_max = first_reads::FIRST_READS_BACKOFF_MAX;
    }
    match args.route.source().map_err(anyhow::Error::msg)? {
        KeySource::Static(routing) => {
            let clients = (0..args.conns)
                .map(|_| Client::new(StaticRouting::new(routing.clone()), options.clone()))
                .collect::<Result<_, _>>()?;
            run_workloads(clients, &args).await
        }
        KeySource::Controllers(controllers) => {
            let clients = (0..args.conns)
                .map(|_| Client::connect(controllers.clone(), options.clone()))
                .collect::<Result<_, _>>()?;
            run_workloads(clients, &args).await
        }
    }
}

/// Runs the workloads `args` asks for with `clients`, each of which has read its placement
/// first.
async fn run_workloads<S: RoutingSource>(
    clients: Vec<Client<S>>,
    args: &BenchArgs,
) -> anyhow::Result<ExitCode> {
    let clients = Arc::new(clients);
    if args.workload == Workload::FirstReads {
        let line = first_reads::run(&clients, args).await?;
        write_line(&line, args)?;
        return Ok(ExitCode::SUCCESS);
    }
    for client in clients.iter() {
        client.warm_up().await.context("reading the placement")?;
    }
    let workloads = match args.workload {
        Workload::All => vec![
            Workload::PutLatency,
            Workload::PutThroughput,
            Workload::GetThroughput,
            Workload::Mixed,
        ],
        one => vec![one],
    };
    let mut preloaded = false;
    for workload in workloads {
        if matches!(workload, Workload::GetThroughput | Workload::Mixed) && !preloaded {
            preload(&clients, args).await?;
            preloaded = true;
        }
        let line = run_workload(workload, &clients, args).await?;
        report(&line, args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts every key once (untimed), so gets find values: in batches of one shard's keys
/// (`Client::put_all`), `PRELOAD_BATCHES_IN_FLIGHT` at once.
async fn preload<S: RoutingSource>(
    clients: &Arc<Vec<Client<S>>>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    eprintln!("bench: preloading {} keys", args.keys);
    let started = Instant::now();
    let mut rng = SplitMix64::new(0);
    let value_size = args.value_size;
    let entries = (0..args.keys).map(|index| (key(index), random_bytes(&mut rng, value_size)));
    let options = LoadOptions { parallel: PRELOAD_BATCHES_IN_FLIGHT, ..LoadOptions::default() };
    let summary = clients[0].put_all(entries, options).await.context("preloading")?;
    eprintln!(
        "bench: preloaded {} keys in {} batches in {:.1} s",
        summary.keys,
        summary.batches,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run_workload<S: RoutingSource>(
    workload: Workload,
    clients: &Arc<Vec<Client<S>>>,
    args: &BenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let concurrency =
        args.concurrency.unwrap_or(if workload == Workload::PutLatency { 1 } else { 64 });
    let read_ratio = match workload {
        Workload::GetThroughput => 1.0,
        Workload::Mixed => args.read_ratio,
        _ => 0.0,
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup_secs);
    let measure_until = measure_from + Duration::from_secs_f64(args.secs);
    let cpu_before = tokio::spawn(cpu_at(measure_from, args.server_pids.clone()));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let clients = Arc::clone(clients);
        let (keys, value_size) = (args.keys, args.value_size);
        tasks.push(tokio::spawn(async move {
            let client = &clients[(task % clients.len() as u64) as usize];
            let mut rng = SplitMix64::new(task.wrapping_mul(7919) ^ 0x5eed);
            let mut tally = Tally::default();
            loop {
                let began = Instant::now();
                if began >= measure_until {
                    return tally;
                }
                let index = rng.below(keys);
                let is_get = (rng.next_u64() as f64 / u64::MAX as f64) < read_ratio;
                let result = if is_get {
                    client.get(key(index), Consistency::Linearizable).await.map(|v| v.is_some())
                } else {
                    client.put(key(index), random_bytes(&mut rng, value_size)).await.map(|_| true)
                };
                let ended = Instant::now();
                if began < measure_from || ended > measure_until {
                    continue;
                }
                match result {
                    Ok(found) => {
                        tally.latencies_us.push((ended - began).as_micros() as u64);
                        if is_get && !found {
                            tally.get_misses += 1;
                        }
                    }
                    Err(_) => tally.errors += 1,
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut get_misses) = (0, 0);
    for task in tasks {
        let tally = task.await.context("a workload task panicked")?;
        latencies.extend(tally.latencies_us);
        errors += tally.errors;
        get_misses += tally.get_misses;
    }
    let cpu_before = cpu_before.await.context("the CPU probe panicked")??;
    let cpu_after = read_cpu(&args.server_pids)?;
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    let mean = if ops == 0 { 0.0 } else { latencies.iter().sum::<u64>() as f64 / ops as f64 };
    let mut line = json!({
        "backend": "mosaic",
        "workload": workload.name(),
        "concurrency": concurrency,
        "conns": args.conns,
        "target": "leader",
        "value_size": args.value_size,
        "key_size": KEY_BYTES,
        "keys": args.keys,
        "read_ratio": read_ratio,
        "ops": ops,
        "errors": errors,
        "get_misses": get_misses,
        "secs": args.secs,
        "ops_per_s": ops as f64 / args.secs,
        "p50_us": percentile(&latencies, 0.50),
        "p99_us": percentile(&latencies, 0.99),
        "p999_us": percentile(&latencies, 0.999),
        "max_us": latencies.last().copied().unwrap_or(0),
        "mean_us": mean,
        "describe": args.describe,
    });
    if !args.server_pids.is_empty() {
        let ticks_per_sec = USER_HZ;
        let cores: Vec<f64> = cpu_before
            .iter()
            .zip(&cpu_after)
            .map(|(before, after)| (after - before) as f64 / ticks_per_sec / args.secs)
            .collect();
        let total: f64 = cores.iter().sum();
        line["cpu"] = json!({
            "server_pids": args.server_pids,
            "server_cores": cores,
            "server_us_per_op": if ops == 0 { 0.0 } else { total * args.secs * 1e6 / ops as f64 },
        });
    }
    Ok(line)
}

/// The `p` quantile (0 to 1, nearest rank) of the ascending `sorted`, 0 when it is empty.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// The CPU ticks (user + system) each process has used, read at `at`.
async fn cpu_at(at: Instant, pids: Vec<u32>) -> anyhow::Result<Vec<u64>> {
    tokio::time::sleep_until(at.into()).await;
    read_cpu(&pids)
}

fn read_cpu(pids: &[u32]) -> anyhow::Result<Vec<u64>> {
    pids.iter()
        .map(|pid| {
            let path = format!("/proc/{pid}/stat");
            let stat = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {path} (is process {pid} running?)"))?;
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| -> anyhow::Result<u64> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .with_context(|| format!("{path} is not in the expected format"))
            };
            // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name and state.
            Ok(field(11)? + field(12)?)
        })
        .collect()
}

fn report(line: &serde_json::Value, args: &BenchArgs) -> anyhow::Result<()> {
    eprintln!(
        "bench: {:<15} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
        line["workload"].as_str().unwrap_or_default(),
        line["ops_per_s"].as_f64().unwrap_or_default(),
        line["p50_us"].as_f64().unwrap_or_default() / 1000.0,
        line["p99_us"].as_f64().unwrap_or_default() / 1000.0,
        line["errors"],
    );
    write_line(line, args)
}

/// Writes `line` to stdout, and appends it to `--out` if given.
fn write_line(line: &serde_json::Value, args: &BenchArgs) -> anyhow::Result<()> {
    let text = line.to_string();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).context("writing to stdout")?;
    if let Some(path) = &args.out {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sixteen_bytes_and_ordered_by_number() {
        assert_eq!(key(0), b"k000000000000000");
        assert_eq!(key(99_999).len(), KEY_BYTES);
        assert!(key(9) < key(10));
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert_eq!(percentile(&[7], 0.0), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn values_have_the_asked_length() {
        let mut rng = SplitMix64::new(1);
        assert_eq!(random_bytes(&mut rng, 256).len(), 256);
        assert_eq!(random_bytes(&mut rng, 3).len(), 3);
        assert_ne!(random_bytes(&mut rng, 16), random_bytes(&mut rng, 16));
    }
}
