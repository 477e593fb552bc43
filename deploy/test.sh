#!/usr/bin/env bash
# Runs Mosaic's whole test suite: installs what is missing, then every crate's tests.
#
# Slow suites stay behind environment variables (see docs/testing.md), for example
#   MOSAIC_RAFT_SIM_SEEDS=5000 deploy/test.sh     # more randomized Raft simulation seeds
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
source deploy/env.sh
cargo test --workspace --all-targets "$@"
