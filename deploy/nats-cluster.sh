#!/usr/bin/env bash
# A local NATS cluster of three servers on loopback, routes in a full mesh.
#   deploy/nats-cluster.sh start [DIR]   start the servers (each only if its port does not answer); logs, pids and
#                                        JetStream data in DIR (default /tmp/switchyard-nats-cluster)
#   deploy/nats-cluster.sh stop [DIR]    stop the servers this script started (their pid files in DIR)
#   deploy/nats-cluster.sh urls          print the client URLs, comma-separated (for --nats or [nats] urls)
# Ports: clients SWITCHYARD_NATS_CLUSTER_PORT (4231) .. +2, routes +2000 (6231..), monitoring +4000 (8231..).
# SWITCHYARD_NATS_JETSTREAM=1 enables JetStream (a store per server in DIR); SWITCHYARD_NATS_CONFIG=deploy/nats.conf
# adds a configuration file (users, permissions) to every server; the ports above override its `listen`.
set -euo pipefail

base=${SWITCHYARD_NATS_CLUSTER_PORT:-4231}
dir=${2:-${SWITCHYARD_NATS_CLUSTER_DIR:-/tmp/switchyard-nats-cluster}}
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

urls() {
  local out=()
  for i in 0 1 2; do out+=("nats://127.0.0.1:$((base + i))"); done
  (IFS=,; echo "${out[*]}")
}

start() {
  mkdir -p "$dir"
  local routes=()
  for i in 0 1 2; do routes+=("nats://127.0.0.1:$((base + 2000 + i))"); done
  local route_list
  route_list=$(IFS=,; echo "${routes[*]}")
  for i in 0 1 2; do
    local port=$((base + i))
    if port_open "$port"; then
      echo "nats-cluster: 127.0.0.1:$port already answers" >&2
      continue
    fi
    local args=(-a 127.0.0.1 -p "$port" -m "$((base + 4000 + i))" -n "switchyard-nats-$i"
      --cluster_name switchyard --cluster "nats://127.0.0.1:$((base + 2000 + i))" --routes "$route_list")
    [ -n "${SWITCHYARD_NATS_CONFIG:-}" ] && args=(-c "$SWITCHYARD_NATS_CONFIG" "${args[@]}")
    [ "${SWITCHYARD_NATS_JETSTREAM:-0}" = 1 ] && args+=(-js -sd "$dir/js-$i")
    nohup "$nats_bin" "${args[@]}" >"$dir/nats-$i.log" 2>&1 &
    echo $! >"$dir/nats-$i.pid"
  done
  # Ready when every server has routes to the two others.
  for i in 0 1 2; do
    local monitor=$((base + 4000 + i)) ok=""
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$monitor" && printf 'GET /routez HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null |
        grep -q '"num_routes": 2'; then
        ok=1
        break
      fi
      sleep 0.1
    done
    [ -n "$ok" ] || { echo "nats-cluster: server $i has no routes to the others, see $dir/nats-$i.log" >&2; exit 1; }
  done
  echo "nats-cluster: up; [nats] urls = $(urls)" >&2
}

stop() {
  for i in 0 1 2; do
    local pidfile="$dir/nats-$i.pid"
    [ -f "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  echo "nats-cluster: stopped" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  urls) urls ;;
  *) echo "usage: $0 start|stop [DIR] | urls" >&2; exit 64 ;;
esac
