#!/usr/bin/env bash
# Starts a local Mosaic cluster on loopback: three `mosaic controller` replicas, three
# `mosaic server` processes that register with them, and group 1 (a replica on every node,
# every shard) added through the controller. Prints the commands to try, then runs until
# Ctrl-C, when it stops every process it started (by process id). Data stays in
# playground-data/ (remove it to start over); a second run reuses it.
#
# Environment: MOSAIC_PLAYGROUND_DIR (data and logs, default ./playground-data),
# MOSAIC_PLAYGROUND_PORT (first storage node port, default 7101; the nodes use three in a
# row, the controllers the three from 100 below it).
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
start_local_controllers "$bin" "$data" "$((first_port - 100))"
start_local_cluster "$bin" "$data" "$first_port" --controllers "$controllers"
# Waits for the nodes to register, then places group 1 on them (a rerun finds it there).
for _ in $(seq 1 100); do
  if [[ $("$bin" admin --controllers "$controllers" node list | wc -l) -ge 4 ]]; then break; fi
  sleep 0.2
done
"$bin" admin --controllers "$controllers" group add 1 --nodes 1,2,3

cat <<EOF

Mosaic playground: 3 controller replicas, 3 storage nodes, group 1 replicated on all of them.
  controllers: $controllers
  nodes: $nodes
  data and logs: $data

Try, in another terminal:
  $bin kv --controllers $controllers put greeting hello
  $bin kv --controllers $controllers get greeting
  echo -n ", world" | $bin kv --controllers $controllers append greeting
  $bin admin --controllers $controllers group add 2 --nodes 1,2,3   # half the shards move
  $bin admin --controllers $controllers wait                       # until they have moved
  $bin admin --controllers $controllers status
  $bin admin --controllers $controllers config show
  $bin admin --nodes $nodes group status 1
  kill -9 <pid of the leader's node>   # pids: ${pids[*]} (controllers 1 2 3, nodes 1 2 3)

Ctrl-C stops the cluster.
EOF
wait
