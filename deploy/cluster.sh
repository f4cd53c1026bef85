#!/usr/bin/env bash
# A local Switchyard cluster: one mock provider and N nodes on the local NATS.
#   deploy/cluster.sh start [N]   build (release), start the mock and N nodes; logs and pids in deploy/run/
#   deploy/cluster.sh stop        SIGTERM every node (they drain), then the mock
#   deploy/cluster.sh status      what is running
set -euo pipefail
cd "$(dirname "$0")/.."
run=deploy/run
mock_port=${SWITCHYARD_MOCK_PORT:-18081}

start() {
  local n=${1:-3}
  ./deploy/services.sh
  cargo build --release -q -p switchyard -p switchyard-mock
  mkdir -p "$run"
  if [ ! -f "$run/mock.pid" ] || ! kill -0 "$(cat "$run/mock.pid")" 2>/dev/null; then
    target/release/switchyard-mock --listen "127.0.0.1:$mock_port" >"$run/mock.log" 2>&1 &
    echo $! >"$run/mock.pid"
  fi
  for i in $(seq 1 "$n"); do
    local name="node-$i"
    sed -e "s/@NAME@/$name/" -e "s/@MOCK_PORT@/$mock_port/g" deploy/cluster.toml.in >"$run/$name.toml"
    if [ -f "$run/$name.pid" ] && kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
      echo "cluster: $name already running"
      continue
    fi
    target/release/switchyard serve --config "$run/$name.toml" >"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
    echo "cluster: started $name (pid $!)"
  done
  echo "cluster: mock provider on 127.0.0.1:$mock_port; try: target/release/switchyard query --trace \"hello\""
}

stop() {
  [ -d "$run" ] || { echo "cluster: nothing to stop"; return 0; }
  for pidfile in "$run"/node-*.pid "$run"/mock.pid; do
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      echo "cluster: stopped $(basename "$pidfile" .pid)"
    fi
    rm -f "$pidfile"
  done
}

status() {
  for pidfile in "$run"/*.pid; do
    [ -f "$pidfile" ] || continue
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then echo "$(basename "$pidfile" .pid): running (pid $pid)"; else echo "$(basename "$pidfile" .pid): dead"; fi
  done
}

case "${1:-}" in
  start) start "${2:-3}" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [N] | stop | status" >&2; exit 2 ;;
esac
