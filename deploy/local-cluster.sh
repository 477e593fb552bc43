# Sourced by the scripts that run a local cluster (playground, benchmarks): starts three
# `mosaic server` processes on loopback and stops them by process id.
#
#   start_local_cluster BIN DATA_DIR FIRST_PORT [extra `mosaic server` flags...]
#     starts node N (1..3) on 127.0.0.1:FIRST_PORT+N-1 with its data in DATA_DIR/node-N and its
#     log in DATA_DIR/node-N.log, then waits until every node listens. Sets `pids` (node order)
#     and `nodes` (the --nodes value for mosaic kv/admin/bench).
#   stop_local_cluster
#     SIGTERM to every node started, then waits for them.

pids=()
nodes=""

start_local_cluster() {
  local bin="$1" data="$2" first_port="$3"
  shift 3
  local id other peers port
  nodes="1=127.0.0.1:$first_port,2=127.0.0.1:$((first_port + 1)),3=127.0.0.1:$((first_port + 2))"
  mkdir -p "$data"
  for id in 1 2 3; do
    peers=""
    for other in 1 2 3; do
      [[ $other == "$id" ]] && continue
      peers+="${peers:+,}$other=127.0.0.1:$((first_port + other - 1))"
    done
    "$bin" server --id "$id" --listen "127.0.0.1:$((first_port + id - 1))" \
      --data-dir "$data/node-$id" --peers "$peers" "$@" >>"$data/node-$id.log" 2>&1 &
    pids+=("$!")
  done
  for id in 1 2 3; do
    port=$((first_port + id - 1))
    for _ in $(seq 1 300); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue 2; fi
      if ! kill -0 "${pids[$((id - 1))]}" 2>/dev/null; then break; fi
      sleep 0.1
    done
    echo "node $id did not start; its log ($data/node-$id.log) ends with:" >&2
    tail -n 20 "$data/node-$id.log" >&2
    return 1
  done
}

stop_local_cluster() {
  if ((${#pids[@]} > 0)); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
  fi
}
