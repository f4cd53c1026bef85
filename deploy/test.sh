#!/usr/bin/env bash
# The whole test suite: starts NATS and Redis when they are not running, and a local 3-master Redis Cluster
# (deploy/redis-cluster.sh, left running like the others) whose URLs the cluster variants of the state conformance
# suite and the availability tests use (SWITCHYARD_REDIS_CLUSTER_URLS); then runs every test of the workspace.
# The NATS failover test starts its own 3-server NATS cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/services.sh
./deploy/redis-cluster.sh start
SWITCHYARD_REDIS_CLUSTER_URLS=$(./deploy/redis-cluster.sh urls)
export SWITCHYARD_REDIS_CLUSTER_URLS
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
