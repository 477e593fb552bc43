# Sourced by the scripts that run a local cluster (the benchmarks): starts `mosaic`
# processes on loopback and stops them by process id.
#
#   start_local_controllers BIN DATA_DIR FIRST_PORT [extra `mosaic controller` flags...]
#     starts controller replica N (1..3) on 127.0.0.1:FIRST_PORT+N-1 with its data in
#     DATA_DIR/controller-N (with --bootstrap when that does not exist yet) and its log in
#     DATA_DIR/controller-N.log, then waits until each listens. Sets `controllers` (the --controllers value) and adds to `pids`.
#   start_local_cluster BIN DATA_DIR FIRST_PORT [extra `mosaic server` flags...]
#     the same for storage node N (1..3), in DATA_DIR/node-N, each told the others as --peers
#     (pass --controllers "$controllers" to make them follow the controller). Sets `nodes` (the
#     --nodes value for mosaic kv/admin/bench) and adds to `pids`.
#   start_cluster_of_groups BIN DATA_DIR FIRST_PORT TICK_MS GROUPS
#     start_local_cluster with a tick of TICK_MS and a 256 MiB block cache (the file
#     DATA_DIR/common.toml, which a restart passes again as --config; $MOSAIC_BENCH_RAFT_TOML,
#     if set, adds its lines under [raft], such as "quiesce-ticks = 0"), then creates groups 1
#     to GROUPS without a controller, each with a replica on every node, four at a time.
#   stop_local_cluster
#     SIGTERM to every process started, then waits for them.
#   mosaic_bin release|debug
#     sets `bin`: $MOSAIC_BIN if set, else the release build of `mosaic` or the debug build
#     the tests share, built first.
#   use_temp_cluster_dir
#     sets `data` to a new temporary directory; on exit, runs `before_cluster_stop` if the
#     script defines it, stops every process started and removes the directory.

pids=()
nodes=""
controllers=""

# start_three ROLE NAME BIN DATA FIRST_PORT [flags...]: processes NAME-1..3 of `mosaic ROLE`.
start_three() {
  local role="$1" name="$2" bin="$3" data="$4" first_port="$5"
  shift 5
  local id other peers port first_start first_pid=${#pids[@]} new_group=1
  mkdir -p "$data"
  # A controller replica's first start creates the group, a restart recovers it: only when no
  # replica's directory exists, so that a replica whose directory alone is gone waits outside
  # the group instead of coming back as a voter with an empty log.
  for id in 1 2 3; do
    [[ -e "$data/$name-$id" ]] && new_group=0
  done
  for id in 1 2 3; do
    peers=""
    for other in 1 2 3; do
      [[ $other == "$id" ]] && continue
      peers+="${peers:+,}$other=127.0.0.1:$((first_port + other - 1))"
    done
    first_start=()
    [[ $role == controller && $new_group == 1 ]] && first_start=(--bootstrap)
    "$bin" "$role" --id "$id" --listen "127.0.0.1:$((first_port + id - 1))" \
      --data-dir "$data/$name-$id" --peers "$peers" "${first_start[@]}" "$@" \
      >>"$data/$name-$id.log" 2>&1 &
    pids+=("$!")
  done
  for id in 1 2 3; do
    port=$((first_port + id - 1))
    for _ in $(seq 1 300); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue 2; fi
      if ! kill -0 "${pids[$((first_pid + id - 1))]}" 2>/dev/null; then break; fi
      sleep 0.1
    done
    echo "$name $id did not start; its log ($data/$name-$id.log) ends with:" >&2
    tail -n 20 "$data/$name-$id.log" >&2
    return 1
  done
}

start_local_controllers() {
  local first_port="$3"
  controllers="127.0.0.1:$first_port,127.0.0.1:$((first_port + 1)),127.0.0.1:$((first_port + 2))"
  start_three controller controller "$@"
}

start_local_cluster() {
  local first_port="$3"
  nodes="1=127.0.0.1:$first_port,2=127.0.0.1:$((first_port + 1)),3=127.0.0.1:$((first_port + 2))"
  start_three server node "$@"
}

start_cluster_of_groups() {
  local bin="$1" data="$2" first_port="$3" tick_ms="$4" groups="$5"
  mkdir -p "$data"
  printf 'tick-interval-ms = %s\n[storage]\nblock-cache-bytes = 268435456\n' "$tick_ms" \
    >"$data/common.toml"
  if [[ -n "${MOSAIC_BENCH_RAFT_TOML:-}" ]]; then
    printf '[raft]\n%s\n' "$MOSAIC_BENCH_RAFT_TOML" >>"$data/common.toml"
  fi
  start_local_cluster "$bin" "$data" "$first_port" --config "$data/common.toml"
  echo "creating $groups groups..." >&2
  seq 1 "$groups" | xargs -P 4 -I '{}' "$bin" admin --nodes "$nodes" group create '{}' >/dev/null
}

stop_local_cluster() {
  if ((${#pids[@]} > 0)); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
  fi
}

mosaic_bin() {
  bin="${MOSAIC_BIN:-}"
  [[ -n "$bin" ]] && return
  if [[ "$1" == release ]]; then
    cargo build --release --locked --quiet -p mosaic-cli --bin mosaic
    bin="$CARGO_TARGET_DIR/release/mosaic"
  else
    cargo build --workspace --all-targets --locked --quiet
    bin="$CARGO_TARGET_DIR/debug/mosaic"
  fi
}

cleanup_temp_cluster() {
  if declare -F before_cluster_stop >/dev/null; then before_cluster_stop; fi
  stop_local_cluster
  rm -rf "$data"
}

use_temp_cluster_dir() {
  data="$(mktemp -d)"
  trap cleanup_temp_cluster EXIT
}
