#!/usr/bin/env bash
# A local Redis Cluster of three masters (no replicas) on loopback.
#   deploy/redis-cluster.sh start [DIR]   start the servers (each only if its port does not answer) and create the
#                                         cluster unless it is up; logs, pids and nodes files in DIR (default
#                                         /tmp/switchyard-redis-cluster)
#   deploy/redis-cluster.sh stop [DIR]    stop the servers this script started (their pid files in DIR)
#   deploy/redis-cluster.sh urls          print the node URLs, comma-separated ([redis] cluster_urls, or
#                                         SWITCHYARD_REDIS_CLUSTER_URLS for the tests)
# Ports: SWITCHYARD_REDIS_CLUSTER_PORT (7101) .. +2; cluster bus ports +10000.
set -euo pipefail

base=${SWITCHYARD_REDIS_CLUSTER_PORT:-7101}
dir=${2:-${SWITCHYARD_REDIS_CLUSTER_DIR:-/tmp/switchyard-redis-cluster}}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

urls() {
  local out=()
  for i in 0 1 2; do out+=("redis://127.0.0.1:$((base + i))"); done
  (IFS=,; echo "${out[*]}")
}

# Every node sees a healthy cluster of all three.
whole_cluster() {
  for i in 0 1 2; do
    local info
    info=$(redis-cli -p "$((base + i))" cluster info 2>/dev/null) || return 1
    grep -q cluster_state:ok <<<"$info" && grep -q cluster_known_nodes:3 <<<"$info" || return 1
  done
}

start() {
  mkdir -p "$dir"
  for i in 0 1 2; do
    local port=$((base + i))
    if port_open "$port"; then
      echo "redis-cluster: 127.0.0.1:$port already answers" >&2
      continue
    fi
    # A nodes file left by a server that died makes the new one rejoin an old cluster half-way; start clean.
    rm -f "$dir/nodes-$port.conf"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000 \
      --dir "$dir" --logfile "$dir/redis-$port.log" --pidfile "$dir/redis-$port.pid"
  done
  for i in 0 1 2; do
    for _ in $(seq 1 100); do
      redis-cli -p "$((base + i))" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  if ! whole_cluster; then
    # Not a whole cluster (fresh servers, or some restarted beside survivors that still know the old one): these
    # ports are this script's, so forget any old membership and data, then create the cluster anew.
    local nodes=()
    for i in 0 1 2; do
      redis-cli -p "$((base + i))" flushall >/dev/null
      redis-cli -p "$((base + i))" cluster reset hard >/dev/null
      nodes+=("127.0.0.1:$((base + i))")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$dir/create.log" 2>&1 \
      || { echo "redis-cluster: create failed:" >&2; cat "$dir/create.log" >&2; exit 1; }
  fi
  # A new master accepts writes about two seconds after it starts.
  for i in 0 1 2; do
    local ok=""
    for _ in $(seq 1 100); do
      if redis-cli -p "$((base + i))" cluster info | grep -q cluster_state:ok; then ok=1; break; fi
      sleep 0.1
    done
    [ -n "$ok" ] || { echo "redis-cluster: node $((base + i)) not ok, see $dir" >&2; exit 1; }
  done
  echo "redis-cluster: up; [redis] cluster_urls / SWITCHYARD_REDIS_CLUSTER_URLS = $(urls)" >&2
}

stop() {
  for i in 0 1 2; do
    local pidfile="$dir/redis-$((base + i)).pid"
    [ -f "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile" "$dir/nodes-$((base + i)).conf"
  done
  for i in 0 1 2; do
    for _ in $(seq 1 100); do port_open "$((base + i))" || break; sleep 0.1; done
  done
  echo "redis-cluster: stopped" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  urls) urls ;;
  *) echo "usage: $0 start|stop [DIR] | urls" >&2; exit 64 ;;
esac
