#!/usr/bin/env bash
# Profiles the storage nodes under one benchmark workload: starts a fresh local cluster (as
# deploy/bench-cluster.sh does), runs `mosaic bench --workload WORKLOAD`, and records every
# server with `perf record -g` for SECS seconds after the warm-up. Writes OUT_DIR/perf.data,
# OUT_DIR/bench.jsonl and OUT_DIR/report.txt (the hottest symbols over all servers, self
# time; the write path with children; then by thread). Needs `perf` (Debian: linux-perf). Stops what it started by pid.
#
# Usage: deploy/bench-profile.sh WORKLOAD [OUT_DIR (default: bench-profile)] [SECS (default 8)]
# Environment: MOSAIC_BIN (default: a release build, built first), MOSAIC_BENCH_PORT (first
# port, default 7301).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/env.sh
workload="${1:?usage: deploy/bench-profile.sh WORKLOAD [OUT_DIR] [SECS]}"
out="$(realpath -m "${2:-bench-profile}")"
secs="${3:-8}"
first_port="${MOSAIC_BENCH_PORT:-7301}"
command -v perf >/dev/null || { echo "bench-profile: perf is missing (apt-get install linux-perf)" >&2; exit 1; }

source deploy/local-cluster.sh
mosaic_bin release
mkdir -p "$out"
bench_pid=""
before_cluster_stop() {
  if [[ -n "$bench_pid" ]]; then kill "$bench_pid" 2>/dev/null || true; fi
}
use_temp_cluster_dir
start_local_cluster "$bin" "$data" "$first_port"
"$bin" admin --nodes "$nodes" group create 1 >/dev/null

warmup=2
"$bin" bench --nodes "$nodes" --group 1 --workload "$workload" --warmup-secs "$warmup" \
  --secs "$((secs + 2))" --server-pids "$(IFS=,; echo "${pids[*]}")" \
  --describe "3 nodes, 1 group, fsync on, under perf" --out "$out/bench.jsonl" >/dev/null &
bench_pid=$!
sleep "$((warmup + 1))"
perf record -F 499 -g -o "$out/perf.data" -p "$(IFS=,; echo "${pids[*]}")" -- sleep "$secs" \
  2>/dev/null
wait "$bench_pid"
bench_pid=""
{
  echo "# $workload: hottest symbols, self time, all servers"
  perf report -i "$out/perf.data" --no-children --sort symbol -g none --stdio 2>/dev/null \
    | grep -E "^ +[0-9]" | sed -n 1,30p | cut -c1-140
  echo
  echo "# time inside Mosaic's engine writes and RocksDB's write path (children included)"
  perf report -i "$out/perf.data" --children --sort symbol -g none --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | grep -E 'KvEngine>::write|DBImpl::Write|MemTable::Add|WriteToWAL|fdatasync' \
    | cut -c1-140
  echo
  echo "# by thread"
  perf report -i "$out/perf.data" --no-children --sort comm -g none --stdio 2>/dev/null \
    | grep -E "^ +[0-9]" | sed -n 1,20p
} >"$out/report.txt"
cat "$out/bench.jsonl"
echo "bench-profile: report in $out/report.txt" >&2
