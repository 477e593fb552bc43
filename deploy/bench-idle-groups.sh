#!/usr/bin/env bash
# Measures what idle groups cost: starts three `mosaic server` processes on loopback, creates
# GROUPS groups with a replica on each node, waits for their elections to settle, then reports
# the CPU each server process used over SECS seconds with no client load (from /proc/PID/stat),
# as a percentage of one core. Then wakes them: `mosaic bench --workload first-reads`, one
# linearizable read of every group, all in flight at once, prints when they succeeded (a
# quiescent group serves once a request woke it). Stops every process it started, by process
# id.
#
# Usage: deploy/bench-idle-groups.sh [GROUPS (default 1000)] [SECS (default 30)]
# Environment: MOSAIC_BENCH_PORT (first port, default 7201), MOSAIC_BENCH_TICK_MS (default 100),
# MOSAIC_BENCH_SETTLE_SECS (the wait before measuring, default 30: leaderships move to their
# preferred voters after 10 s, and a leader quiesces its group 2 s after its last request),
# MOSAIC_BENCH_RAFT_TOML (lines added under [raft] of every node's config, such as
# "quiesce-ticks = 0"), MOSAIC_BIN (the binary to run; default: the debug build, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/env.sh
groups="${1:-1000}"
secs="${2:-30}"
first_port="${MOSAIC_BENCH_PORT:-7201}"
tick_ms="${MOSAIC_BENCH_TICK_MS:-100}"
settle_secs="${MOSAIC_BENCH_SETTLE_SECS:-30}"

source deploy/local-cluster.sh
mosaic_bin debug
use_temp_cluster_dir
start_cluster_of_groups "$bin" "$data" "$first_port" "$tick_ms" "$groups"
echo "letting elections and leader balance settle (${settle_secs} s)..." >&2
sleep "$settle_secs"
echo "the last group created:" >&2
"$bin" admin --nodes "$nodes" group status "$groups" >&2

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A before
for pid in "${pids[@]}"; do before[$pid]=$(ticks "$pid"); done
sleep "$secs"
total=0
for i in 0 1 2; do
  pid=${pids[$i]}
  used=$(( $(ticks "$pid") - before[$pid] ))
  percent=$(awk -v u="$used" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.1f", 100 * u / hz / s }')
  echo "node $((i + 1)) (pid $pid): ${percent}% of one core with $groups idle groups, tick ${tick_ms} ms"
  total=$((total + used))
done
awk -v u="$total" -v hz="$hz" -v s="$secs" 'BEGIN { printf "mean per node: %.1f%% of one core\n", 100 * u / hz / s / 3 }'
echo "one linearizable read of every group, all at once..." >&2
"$bin" bench --nodes "$nodes" --group 1 --groups "$groups" --shard-count "$groups" \
  --workload first-reads --concurrency "$groups" --request-timeout-secs 60 \
  --describe "3 nodes, $groups idle groups${MOSAIC_BENCH_RAFT_TOML:+, $MOSAIC_BENCH_RAFT_TOML}"
