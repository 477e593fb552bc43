#!/usr/bin/env bash
# Runs the benchmark workloads (shared/bench/README.md) against fresh local clusters, one per
# layout: three controller replicas and three `mosaic server` processes on loopback with fsync
# on, the storage nodes following the controller, and N groups each replicated on all three
# nodes (the playground's layout is 3 groups); once the leaders have spread over the nodes
# (leader balance, docs/raftstore.md), `mosaic bench --controllers`, which routes
# every key by the controller's configuration, with the servers' CPU measured. JSON lines go
# to OUTFILE (and stdout), each described with its layout. Stops every process it started, by
# process id, and removes each cluster's data.
#
# Usage: deploy/bench-cluster.sh [OUTFILE (default bench-results.jsonl)] [bench flags...]
# Environment: MOSAIC_BENCH_GROUPS (the layouts, as group counts: default "3 1", the
# playground's layout, then a single group), MOSAIC_BIN (default: a release build, built
# first), MOSAIC_BENCH_PORT (first port, default 7301; the controllers take the three after
# the nodes'), MOSAIC_BENCH_SERVER_FLAGS (more `mosaic server` flags, e.g. `--config FILE`),
# MOSAIC_BENCH_LEADER_WAIT (seconds to wait for the leaders to spread, default 60; 0: not).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/env.sh
out="$(realpath -m "${1:-bench-results.jsonl}")"
shift || true
first_port="${MOSAIC_BENCH_PORT:-7301}"
layouts="${MOSAIC_BENCH_GROUPS:-3 1}"
leader_wait="${MOSAIC_BENCH_LEADER_WAIT:-60}"
read -r -a server_flags <<<"${MOSAIC_BENCH_SERVER_FLAGS:-}"

source deploy/local-cluster.sh
mosaic_bin release

# bench_layout GROUPS [bench flags...]: one fresh cluster of GROUPS groups, benchmarked.
bench_layout() {
  local groups="$1" group added
  shift
  data="$(mktemp -d)"
  start_local_controllers "$bin" "$data" "$((first_port + 3))"
  start_local_cluster "$bin" "$data" "$first_port" --controllers "$controllers" \
    "${server_flags[@]}"
  local server_pids=("${pids[@]:3}")
  # The nodes register themselves as they start; a group can name them once they have.
  for group in $(seq 1 "$groups"); do
    added=0
    for _ in $(seq 1 100); do
      if "$bin" admin --controllers "$controllers" group add "$group" --members 1,2,3 \
        >/dev/null 2>&1; then
        added=1
        break
      fi
      sleep 0.2
    done
    if ((added == 0)); then
      echo "bench-cluster: group $group could not be added:" >&2
      "$bin" admin --controllers "$controllers" group add "$group" --members 1,2,3 >&2 || true
      return 1
    fi
  done
  "$bin" admin --controllers "$controllers" wait --max-wait 120 >/dev/null
  local led
  led="$(leaders_spread)"
  local describe="3 nodes, $groups group$( ((groups > 1)) && echo s), fsync on, routed by the controller, leaders $led"
  "$bin" bench --controllers "$controllers" \
    --server-pids "$(IFS=,; echo "${server_pids[*]}")" \
    --describe "$describe" --out "$out" "$@"
  stop_local_cluster
  rm -rf "$data"
}

# leaders_spread: waits up to $leader_wait seconds until no node leads more than one group
# more than another (`admin status`: "leaders: node 1 leads 1, node 2 leads 1, ..."); prints
# the groups each node leads then, as "1/1/1".
leaders_spread() {
  local line counts spread deadline=$((SECONDS + leader_wait))
  while :; do
    line="$("$bin" admin --controllers "$controllers" status 2>/dev/null | grep '^leaders: ' || true)"
    counts="$(grep -o 'leads [0-9]*' <<<"$line" | awk '{print $2}' | paste -sd/ - || true)"
    spread="$(tr / '\n' <<<"${counts:-0}" | sort -n | sed -n '1p;$p' | paste -sd' ' - |
      awk 'NF == 1 {print 0} NF == 2 {print $2 - $1}')"
    if [[ -n "$counts" && $spread -le 1 ]] || ((SECONDS >= deadline)); then
      echo "${counts:-unknown}"
      return
    fi
    sleep 1
  done
}

cleanup() {
  stop_local_cluster
  [[ -n "${data:-}" ]] && rm -rf "$data"
}
trap cleanup EXIT

for groups in $layouts; do
  bench_layout "$groups" "$@"
done
