#!/usr/bin/env bash
# Runs the benchmark workloads (shared/bench/README.md) against a fresh local cluster: three
# `mosaic server` processes on loopback with fsync on, group 1 replicated on all three, then
# `mosaic bench` with the servers' CPU measured. JSON lines go to OUTFILE (and stdout).
# Stops every process it started, by process id, and removes the cluster's data.
#
# Usage: deploy/bench-cluster.sh [OUTFILE (default bench-results.jsonl)] [bench flags...]
# Environment: MOSAIC_BIN (default: a release build, built first), MOSAIC_BENCH_PORT (first
# port, default 7301).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/env.sh
out="$(realpath -m "${1:-bench-results.jsonl}")"
shift || true
first_port="${MOSAIC_BENCH_PORT:-7301}"

source deploy/local-cluster.sh
mosaic_bin release
use_temp_cluster_dir
start_local_cluster "$bin" "$data" "$first_port"
"$bin" admin --nodes "$nodes" group create 1 >/dev/null

"$bin" bench --nodes "$nodes" --group 1 --server-pids "$(IFS=,; echo "${pids[*]}")" \
  --describe "3 nodes, 1 group, fsync on" --out "$out" "$@"
