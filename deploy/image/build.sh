#!/usr/bin/env bash
# Builds the image mosaic:<version> (also tagged mosaic:latest) with no registry at all:
#
#   1. a Debian base, mosaic-base:<codename>, made here with `debootstrap --variant=minbase`
#      (the build machine's Debian release, so the binary finds the C library it was linked
#      against) and `docker import`ed; built once, reused while the image exists;
#   2. the release build of `mosaic` (MOSAIC_BIN=path uses that binary instead), its debug
#      line tables stripped for the image (symbols stay, so a panic's backtrace names its
#      functions; the unstripped binary stays in the target directory for file:line);
#   3. deploy/image/Dockerfile on top: an unprivileged user, the /var/lib/mosaic volume, a
#      HEALTHCHECK on the HTTP probe, `mosaic` as the entry point, and the one-shot setup of
#      a new cluster (setup-cluster.sh).
#
# A second run rebuilds only what changed (Docker's layer cache reuses an identical binary),
# and removes the image the new one replaces once no tag and no container uses it.
# MOSAIC_DEBIAN_MIRROR picks the Debian mirror (default http://deb.debian.org/debian).
# Prints the image's name on stdout as the last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/env.sh

need_packages=()
command -v docker >/dev/null || { echo "image: docker is not installed" >&2; exit 1; }
command -v debootstrap >/dev/null || need_packages+=(debootstrap)
command -v objcopy >/dev/null || need_packages+=(binutils)
if ((${#need_packages[@]} > 0)); then
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
base="mosaic-base:$codename"
image="mosaic:$version"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if docker image inspect "$base" >/dev/null 2>&1; then
  echo "image: reusing the base $base" >&2
else
  echo "image: making the base $base with debootstrap (about a minute)" >&2
  rootfs="$scratch/rootfs"
  debootstrap --variant=minbase --include=curl "$codename" "$rootfs" \
    "${MOSAIC_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$scratch/debootstrap.log" 2>&1 || {
    tail -n 20 "$scratch/debootstrap.log" >&2
    exit 1
  }
  # What a running server never reads: package lists, caches, documentation.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
  tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'CMD ["/bin/bash"]' --message "debootstrap minbase $codename" - "$base" >/dev/null
fi

binary="${MOSAIC_BIN:-}"
if [[ -z "$binary" ]]; then
  deploy/install-deps.sh
  echo "image: building the release binary (the first build compiles RocksDB: about 15 minutes on 2 cores)" >&2
  cargo build --release --locked --quiet -p mosaic-cli --bin mosaic
  binary="$CARGO_TARGET_DIR/release/mosaic"
fi

context="$scratch/context"
mkdir -p "$context"
cp deploy/image/Dockerfile deploy/image/setup-cluster.sh "$context/"
cp "$binary" "$context/mosaic"
objcopy --strip-debug "$context/mosaic"
replaced=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
if ! docker build --build-arg "BASE=$base" --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" --tag "$image" --tag mosaic:latest "$context" \
  >"$scratch/build.log" 2>&1; then
  cat "$scratch/build.log" >&2
  exit 1
fi
# The binary starts in the image: every library it links is there.
docker run --rm "$image" --version >&2
if [[ -n $replaced && $replaced != "$(docker image inspect --format '{{.Id}}' "$image")" ]] &&
  [[ -z $(docker image inspect --format '{{join .RepoTags ","}}' "$replaced" 2>/dev/null) ]]; then
  # Untagged now; still used by a container (of a compose cluster, say), it stays.
  docker image rm "$replaced" >/dev/null 2>&1 &&
    echo "image: removed the image this one replaced (${replaced#sha256:})" >&2 || true
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image" >&2
echo "$image"
