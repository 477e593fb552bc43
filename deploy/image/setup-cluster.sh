#!/bin/sh
# A new cluster's one-shot setup, in the image as /usr/local/lib/mosaic/setup-cluster.sh (the
# compose file's `setup` service and the Kubernetes job in deploy/k8s/setup.yaml run it):
# initialize the cluster, add the groups, wait until every shard is served. Safe to run
# again: each step changes nothing that is done already.
#
#   MOSAIC_CONTROLLERS    the controller replicas, HOST:PORT,... (required)
#   MOSAIC_SHARD_COUNT    the number of shards of a new cluster (default 64)
#   MOSAIC_SETUP_GROUPS   the groups, GROUP:NODE,NODE,... separated by spaces
#                         (default "1:1,2,3 2:1,2,3 3:1,2,3")
set -eu
: "${MOSAIC_CONTROLLERS:?set MOSAIC_CONTROLLERS to the controller replicas}"

mosaic admin --timeout 300 init --shard-count "${MOSAIC_SHARD_COUNT:-64}"

# The nodes register as they start: a group whose members are not registered yet is refused,
# so each is tried again, for up to five minutes.
for spec in ${MOSAIC_SETUP_GROUPS:-1:1,2,3 2:1,2,3 3:1,2,3}; do
  group=${spec%%:*}
  members=${spec#*:}
  tries=0
  until mosaic admin group add "$group" --members "$members"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 300 ]; then
      echo "setup: group $group could not be added" >&2
      exit 1
    fi
    sleep 1
  done
done

mosaic admin wait --max-wait 600
echo "setup: the cluster serves every shard"
