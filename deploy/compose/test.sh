#!/usr/bin/env bash
# Brings the compose cluster up from nothing and checks, against the running containers:
#
#   1. the README story: put, get and append routed by the controller; a fourth node and a
#      new group on it, shards moving, `admin wait`; the value still there;
#   2. while one client appends numbered tokens to one key without pause:
#      - a storage node cut off the network (`docker network disconnect`), then reconnected;
#      - the controller leader's container killed (SIGKILL), then started again;
#      - a rolling restart: every container, one at a time, removed and created again on its
#        volume;
#   3. every acknowledged append is in the value exactly once and in the order acknowledged,
#      and no token is there twice.
#
# It builds the image first (deploy/image/build.sh; MOSAIC_BIN=path uses that binary), tears
# everything down at the end, also on failure (containers, network, volumes; the images stay
# for the next run), and prints where the logs are. Takes about five minutes once the image
# is built. Run by `MOSAIC_TEST_COMPOSE=1 cargo test --workspace --all-targets -- --ignored
# compose_cluster` too (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")"

project=mosaic-compose-test
logs=$(mktemp -d /tmp/mosaic-compose-test.XXXXXX)
status_port=${MOSAIC_STATUS_PORT:-18080}
compose=(docker-compose --project-name "$project" -f docker-compose.yml -f add-node-4.yml)
export MOSAIC_STATUS_PORT=$status_port
net="${project}_mosaic"
cli="$project-cli"
appender="$project-appender"
started=$(date +%s)

say() { echo "compose-test [$(($(date +%s) - started))s]: $*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

teardown() {
  local code=$?
  set +e
  "${compose[@]}" logs --no-color --timestamps >"$logs/compose.log" 2>&1
  docker logs "$appender" >"$logs/appender.log" 2>&1
  # -v: the image's volume makes each one-off container an anonymous volume.
  docker rm -f -v "$cli" "$appender" >/dev/null 2>&1
  "${compose[@]}" down --volumes --remove-orphans --timeout 10 >>"$logs/teardown.log" 2>&1
  local label="label=com.docker.compose.project=$project" left
  left=$(docker ps -aq --filter "$label"; docker volume ls -q --filter "$label"
    docker network ls -q --filter "$label"; docker ps -aq --filter "name=^$project-")
  if [[ -n $left ]]; then
    say "teardown left behind: $(echo "$left" | tr '\n' ' ')"
    code=1
  fi
  if [[ $code -eq 0 ]]; then say "passed; logs in $logs"; else say "failed; logs in $logs"; fi
  exit "$code"
}

# A leftover of an interrupted run goes first.
docker rm -f -v "$cli" "$appender" >/dev/null 2>&1 || true
"${compose[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
trap teardown EXIT

say "building the image"
image=$(../image/build.sh | tail -n 1)
export MOSAIC_IMAGE=$image

say "starting 3 controller replicas, 3 storage nodes and the setup service ($image)"
"${compose[@]}" up -d controller-1 controller-2 controller-3 node-1 node-2 node-3 setup \
  >"$logs/up.log" 2>&1 || { cat "$logs/up.log" >&2; fail "docker-compose up"; }
setup_id=$("${compose[@]}" ps -q setup)
setup_code=$(timeout 300 docker wait "$setup_id") || fail "setup did not end within 300 s"
[[ $setup_code == 0 ]] || { docker logs "$setup_id" >&2; fail "setup exited $setup_code"; }
say "setup done: the cluster serves every shard"

# A container on the cluster's network for the commands below (any container of the cluster
# may be the one restarted).
"${compose[@]}" run -d --no-deps --name "$cli" --entrypoint sleep setup infinity \
  >>"$logs/up.log" 2>&1
mosaic() { docker exec -i "$cli" mosaic "$@"; }
health_of() {
  docker inspect --format '{{.State.Health.Status}}' "$("${compose[@]}" ps -q "$1")"
}
wait_healthy() {
  local service=$1 deadline=$(($(date +%s) + 90))
  until [[ $(health_of "$service") == healthy ]]; do
    (($(date +%s) < deadline)) || fail "$service never became healthy"
    sleep 1
  done
}
# The node id of the controller leader, as `node list` reports it (nothing when none answers).
controller_leader() {
  mosaic admin --timeout 5 --output json node list 2>/dev/null |
    sed -n 's/.*"controller_leader":{[^}]*"id":\([0-9]*\).*/\1/p'
}
# Waits until every group of the latest configuration has a leader and no shard moves.
wait_settled() {
  local deadline=$(($(date +%s) + 120)) status
  while true; do
    if status=$(mosaic admin --output json status 2>/dev/null) &&
      [[ $status == *'"settled":true'* && $status != *'"leader":null'* ]]; then
      return
    fi
    (($(date +%s) < deadline)) || fail "the cluster did not settle: $status"
    sleep 1
  done
}

# The status page and metrics of controller-1, published on the host as the README says.
http_get() {
  local reply
  exec 3<>"/dev/tcp/127.0.0.1/$status_port"
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$1" >&3
  reply=$(cat <&3)
  exec 3<&-
  printf '%s' "$reply"
}
[[ $(http_get /status.json) == *'"groups"'* ]] || fail "no status on 127.0.0.1:$status_port"
[[ $(http_get /metrics) == *controller_config_num* ]] || fail "no metrics on 127.0.0.1:$status_port"
say "status page and metrics on 127.0.0.1:$status_port"

say "1. the README story"
mosaic kv put greeting hello >/dev/null
[[ $(mosaic kv get greeting) == hello ]] || fail "get after put"
printf ', world' | mosaic kv append greeting >/dev/null
[[ $(mosaic kv get greeting) == "hello, world" ]] || fail "get after append"
"${compose[@]}" up -d --no-deps node-4 >>"$logs/up.log" 2>&1
deadline=$(($(date +%s) + 60))
until [[ $(mosaic admin --output json node list) == *'"id":4'* ]]; do
  (($(date +%s) < deadline)) || fail "node 4 never registered"
  sleep 1
done
mosaic admin group add 4 --members 2,3,4 >"$logs/group-add.log"
mosaic admin wait --max-wait 120 >>"$logs/group-add.log" 2>&1
moved=$(mosaic admin --output json config show | grep -o '"shards":\[[^]]*\]' | grep -o '\b4\b' | wc -l)
((moved > 0)) || fail "no shard moved to group 4"
[[ $(mosaic kv get greeting) == "hello, world" ]] || fail "get after the shards moved"
say "group 4 serves $moved shards; the greeting followed its shard"

say "2. appending without pause while the faults run"
"${compose[@]}" run -d --no-deps --name "$appender" --entrypoint /bin/sh setup -c '
  i=0
  while [ ! -e /tmp/stop ]; do
    i=$((i + 1))
    if mosaic kv --timeout 10s append log "<$i>" >/dev/null 2>>/tmp/errors; then
      echo "ok $i"
    else
      echo "failed $i $?"
    fi
  done' >>"$logs/up.log" 2>&1
acked() { docker logs "$appender" 2>/dev/null | grep -c '^ok' || true; }
# Waits until at least `more` appends more than now are acknowledged.
appends_go_on() {
  local more=$1 from deadline=$(($(date +%s) + 60))
  from=$(acked)
  until (($(acked) >= from + more)); do
    (($(date +%s) < deadline)) || fail "appends stalled at $(acked) acknowledged"
    sleep 0.5
  done
}
appends_go_on 20

say "2a. node-2 cut off the network"
node2=$("${compose[@]}" ps -q node-2)
docker network disconnect "$net" "$node2"
appends_go_on 30
docker network connect --alias node-2 "$net" "$node2"
say "node-2 reconnected"
appends_go_on 20
wait_settled

say "2b. the controller leader's container killed"
leader=$(controller_leader)
[[ -n $leader ]] || fail "no controller leader"
docker kill "$("${compose[@]}" ps -q "controller-$leader")" >/dev/null
deadline=$(($(date +%s) + 60))
until new=$(controller_leader) && [[ -n $new && $new != "$leader" ]]; do
  (($(date +%s) < deadline)) || fail "no new controller leader after controller-$leader was killed"
  sleep 1
done
say "controller-$new leads now; starting controller-$leader again"
appends_go_on 20
docker start "$("${compose[@]}" ps -q "controller-$leader")" >/dev/null
wait_healthy "controller-$leader"

say "2c. a rolling restart of every container"
for service in controller-1 controller-2 controller-3 node-1 node-2 node-3 node-4; do
  "${compose[@]}" rm --stop --force "$service" >>"$logs/restart.log" 2>&1
  "${compose[@]}" up -d --no-deps "$service" >>"$logs/restart.log" 2>&1
  wait_healthy "$service"
  wait_settled
  appends_go_on 10
  say "$service restarted on its volume"
done

say "3. every acknowledged append exactly once"
docker exec "$appender" touch /tmp/stop
timeout 60 docker wait "$appender" >/dev/null || fail "the appender did not stop"
docker logs "$appender" 2>/dev/null >"$logs/appends.txt"
value=$(mosaic kv get log)
printf '%s' "$value" | grep -o '<[0-9]*>' | tr -d '<>' >"$logs/applied.txt"
ok=$(grep -c '^ok' "$logs/appends.txt" || true)
failed=$(grep -c '^failed' "$logs/appends.txt" || true)
unknown=$(grep -c '^failed [0-9]* 3$' "$logs/appends.txt" || true)
applied=$(wc -l <"$logs/applied.txt")
twice=$(sort "$logs/applied.txt" | uniq -d | head -n 5 | tr '\n' ' ')
[[ -z $twice ]] || fail "tokens applied twice: $twice"
# The acknowledged tokens, in the order acknowledged, must be in the value in that order.
grep '^ok' "$logs/appends.txt" | cut -d' ' -f2 >"$logs/acked.txt"
grep -Fxf "$logs/acked.txt" "$logs/applied.txt" >"$logs/acked-applied.txt" || true
if ! cmp -s "$logs/acked.txt" "$logs/acked-applied.txt"; then
  missing=$(sort "$logs/acked.txt" | comm -23 - <(sort "$logs/applied.txt") | head -n 5 | tr '\n' ' ')
  fail "acknowledged appends lost or out of order (missing: ${missing:-none})"
fi
say "$ok appends acknowledged, all applied once in order; $failed failed ($unknown with an unknown outcome); $applied tokens in the value"
say "total $(($(date +%s) - started)) s"
