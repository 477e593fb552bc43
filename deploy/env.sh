# Sourced by the deploy scripts and .ci/run: one cargo target directory outside the clone, so a
# second checkout (or CI's fresh clone) on the same machine reuses what was already built,
# RocksDB's C++ build above all.
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
  export CARGO_TARGET_DIR="${HOME:-/root}/.cache/mosaic/target"
fi
mkdir -p "$CARGO_TARGET_DIR"
if [[ -d "$HOME/.cargo/bin" ]]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
