#!/usr/bin/env bash
# Starts a local Mosaic cluster on loopback: installs what is missing, builds, then runs
# `mosaic playground` (three controller replicas, three storage nodes, groups 1-3 with a
# replica on every node), which prints the addresses and commands to try and runs until
# Ctrl-C. Data and logs stay in playground-data/ (remove it to start over); a second run
# reuses them. Extra arguments go to `mosaic playground` (see `mosaic playground --help`:
# --dir, --port, --groups).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
source deploy/env.sh

echo "playground: building (the first build compiles RocksDB: about 15 minutes on 2 cores)" >&2
# The same build as deploy/test.sh, so the two share every artifact.
cargo build --workspace --all-targets --locked --quiet
exec "$CARGO_TARGET_DIR/debug/mosaic" playground "$@"
