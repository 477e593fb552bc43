#!/usr/bin/env bash
# Starts Mosaic locally. Until the `mosaic playground` command lands, this builds and runs the
# Raft core's example: a three-node group driven through the Ready loop in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
source deploy/env.sh
cargo run --release -p mosaic-raft --example three_node_group -- "$@"
