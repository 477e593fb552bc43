#!/usr/bin/env bash
# Installs what building and testing Mosaic needs on a Debian machine, idempotently: a second run
# checks and changes nothing. Called by deploy/test.sh, deploy/playground.sh and .ci/run.
set -euo pipefail

# Debian packages: a C/C++ toolchain and libclang (RocksDB's bindings run bindgen), protoc
# (the test that checks the committed gRPC code against the .proto files), pkg-config; systemd
# for `systemd-analyze`, which checks the units in deploy/systemd.
packages=(build-essential clang libclang-dev pkg-config protobuf-compiler systemd)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Rust toolchain: rustup's if present, otherwise Debian's.
if ! command -v cargo >/dev/null 2>&1; then
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    echo "install-deps: cargo is in $HOME/.cargo/bin; add it to PATH" >&2
  else
    echo "install-deps: no cargo found; installing Debian's rustc and cargo" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq cargo rustc >/dev/null
  fi
fi

for component in rustfmt clippy; do
  if command -v rustup >/dev/null 2>&1 && ! rustup component list --installed 2>/dev/null \
    | grep -q "^$component"; then
    rustup component add "$component" >/dev/null 2>&1 || true
  fi
done
