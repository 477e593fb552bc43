#!/usr/bin/env bash
# Measures how soon a cluster serves again after its nodes restart: starts three `mosaic server`
# processes on loopback, creates GROUPS groups with a replica on each node (`admin group
# create`), writes to them for a few seconds, then RUNS times stops every node (SIGKILL: a
# crash, or SIGTERM with MOSAIC_BENCH_STOP=TERM), starts them again on the same data, and runs
# `mosaic bench --workload first-reads` at once: one linearizable read of every shard (GROUPS
# shards, shard s owned by group 1 + s % GROUPS, so one shard per group), all in flight at once,
# each retried until it succeeds, timed from the moment the script started the processes. Prints one JSON line per
# run (also appended to OUT if given), with `open_ms`: how long each node took from that
# moment to serve (opening RocksDB and recovering every group; from its log's "node serving"),
# `engine_ms`: how much of it passed before the first group was recovered (RocksDB's open,
# its write-ahead log replayed), and `stop_ms`: how long the three nodes took to stop.
# Stops every process it started, by process id.
#
# Usage: deploy/bench-restart.sh [GROUPS (default 1000)] [RUNS (default 3)] [OUT]
# Environment: MOSAIC_BENCH_PORT (first port, default 7301), MOSAIC_BENCH_TICK_MS (default
# 100), MOSAIC_BENCH_STOP (KILL or TERM, default KILL), MOSAIC_BENCH_WRITE_SECS (default 5),
# MOSAIC_BIN (the binary to run; default: the debug build, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/env.sh
groups="${1:-1000}"
runs="${2:-3}"
out="${3:-}"
first_port="${MOSAIC_BENCH_PORT:-7301}"
tick_ms="${MOSAIC_BENCH_TICK_MS:-100}"
stop_signal="${MOSAIC_BENCH_STOP:-KILL}"
write_secs="${MOSAIC_BENCH_WRITE_SECS:-5}"
case "$stop_signal" in KILL | TERM) ;; *)
  echo "MOSAIC_BENCH_STOP must be KILL or TERM, not $stop_signal" >&2
  exit 2
  ;;
esac

source deploy/local-cluster.sh
mosaic_bin debug
use_temp_cluster_dir
start_cluster_of_groups "$bin" "$data" "$first_port" "$tick_ms" "$groups"
route=(--nodes "$nodes" --group 1 --groups "$groups" --shard-count "$groups")
echo "writing for ${write_secs} s..." >&2
"$bin" bench "${route[@]}" --workload put-throughput --secs "$write_secs" --warmup-secs 0 \
  --request-timeout-secs 60 >/dev/null

# ms_of TIMESTAMP: an RFC 3339 time of the logs in milliseconds since the epoch.
ms_of() { date -d "$1" +%s%3N; }

for run in $(seq 1 "$runs"); do
  stopping_ms=$(date +%s%3N)
  kill "-$stop_signal" "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  stop_ms=$(($(date +%s%3N) - stopping_ms))
  pids=()
  for id in 1 2 3; do : >"$data/node-$id.log"; done
  started_ms=$(date +%s%3N)
  start_local_cluster "$bin" "$data" "$first_port" --config "$data/common.toml"
  line=$("$bin" bench "${route[@]}" --workload first-reads --since-unix-ms "$started_ms" \
    --concurrency "$groups" --request-timeout-secs 60 --describe "3 nodes, $groups groups, restart $run after SIG$stop_signal")
  open_ms=()
  engine_ms=()
  for id in 1 2 3; do
    serving=$(grep -m1 'node serving' "$data/node-$id.log" | awk '{print $1}')
    open_ms+=("$(($(ms_of "$serving") - started_ms))")
    recovered=$(grep -m1 'recovered group' "$data/node-$id.log" | awk '{print $1}')
    engine_ms+=("$(($(ms_of "$recovered") - started_ms))")
  done
  line=$(python3 -c 'import json, sys
line = json.loads(sys.argv[1])
line["open_ms"] = [int(ms) for ms in sys.argv[2:5]]
line["engine_ms"] = [int(ms) for ms in sys.argv[5:8]]
line["stop_ms"] = int(sys.argv[8])
print(json.dumps(line))' "$line" "${open_ms[@]}" "${engine_ms[@]}" "$stop_ms")
  echo "$line"
  if [[ -n "$out" ]]; then echo "$line" >>"$out"; fi
done
