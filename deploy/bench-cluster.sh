#!/usr/bin/env bash
# Runs the benchmark workloads (shared/bench/README.md) against fresh local clusters, one per
# layout: three controller replicas and three `mosaic server` processes on loopback with fsync
# on, the storage nodes following the controller, and N groups each replicated on all three
# nodes (the playground's layout is 3 groups); once every group is led by its preferred voter
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
# MOSAIC_BENCH_LEADER_WAIT (seconds to wait for the leaders to settle, default 60; 0: not).
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
  led="$(leaders_settled)"
  local describe="3 nodes, $groups group$( ((groups > 1)) && echo s), fsync on, routed by the controller, leaders $led"
  "$bin" bench --controllers "$controllers" \
    --server-pids "$(IFS=,; echo "${server_pids[*]}")" \
    --describe "$describe" --out "$out" "$@"
  stop_local_cluster
  rm -rf "$data"
}

# leaders_settled: waits up to $leader_wait seconds until every group is led by its preferred
# voter (its members in id order, position group % members: docs/raftstore.md "Leader
# balance"), so no handover falls inside the measurement; prints the groups each node leads
# then, as "1/1/1" (from `admin status`: "leaders: node 1 leads 1, node 2 leads 1, ...").
leaders_settled() {
  local status settled deadline=$((SECONDS + leader_wait))
  while :; do
    status="$("$bin" admin --controllers "$controllers" status 2>/dev/null || true)"
    # Group rows: group, nodes (a,b,c), leader, ...
    settled="$(awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9,]+$/ {
        n = split($2, members, ","); rows++
        for (i = 2; i <= n; i++) {  # id order (mawk has no asort)
          for (j = i; j > 1 && members[j] + 0 < members[j - 1] + 0; j--) {
            t = members[j]; members[j] = members[j - 1]; members[j - 1] = t
          }
        }
        if ($3 == members[$1 % n + 1]) preferred++
      } END { print (rows > 0 && rows == preferred) ? 1 : 0 }' <<<"$status")"
    if ((settled == 1 || SECONDS >= deadline)); then
      grep '^leaders: ' <<<"$status" | grep -o 'leads [0-9]*' | awk '{print $2}' | paste -sd/ - ||
        echo unknown
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
