#!/usr/bin/env bash
# Starts a local Mosaic cluster on loopback: three `mosaic server` processes hosting group 1,
# with a replica on every node. Prints the commands to try, then runs until Ctrl-C, when it
# stops every process it started (by process id). Data stays in playground-data/ (remove it
# to start over); a second run reuses it.
#
# Environment: MOSAIC_PLAYGROUND_DIR (data and logs, default ./playground-data),
# MOSAIC_PLAYGROUND_PORT (first port, default 7101; the nodes use three in a row).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
source deploy/env.sh

echo "playground: building (the first build compiles RocksDB: about 15 minutes on 2 cores)" >&2
# The same build as deploy/test.sh, so the two share every artifact.
cargo build --workspace --all-targets --locked --quiet
bin="$CARGO_TARGET_DIR/debug/mosaic"

data="${MOSAIC_PLAYGROUND_DIR:-$PWD/playground-data}"
first_port="${MOSAIC_PLAYGROUND_PORT:-7101}"
mkdir -p "$data"

source deploy/local-cluster.sh
stop() {
  if ((${#pids[@]} > 0)); then echo "playground: stopping nodes (pids ${pids[*]})" >&2; fi
  stop_local_cluster
}
trap stop EXIT
trap 'exit 0' INT TERM
start_local_cluster "$bin" "$data" "$first_port"
"$bin" admin --nodes "$nodes" group create 1

cat <<EOF

Mosaic playground: 3 storage nodes, group 1 replicated on all of them.
  nodes: $nodes
  data and logs: $data

Try, in another terminal:
  $bin kv --nodes $nodes --group 1 put greeting hello
  $bin kv --nodes $nodes --group 1 get greeting
  echo -n ", world" | $bin kv --nodes $nodes --group 1 append greeting
  $bin admin --nodes $nodes group status 1
  kill -9 <pid of the leader's node>   # pids: ${pids[*]} (nodes 1 2 3); writes go on

Ctrl-C stops the cluster.
EOF
wait
