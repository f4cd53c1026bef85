#!/usr/bin/env bash
# Ensures nats-server (with JetStream) and redis-server are installed and running on loopback.
# Installs them with apt-get where missing; starts each one only when its port does not answer.
# Never stops anything. Ports: SWITCHYARD_NATS_PORT (4222), SWITCHYARD_REDIS_PORT (6379).
set -euo pipefail

nats_port=${SWITCHYARD_NATS_PORT:-4222}
redis_port=${SWITCHYARD_REDIS_PORT:-6379}
state_dir=${SWITCHYARD_STATE_DIR:-/tmp/switchyard-services}
mkdir -p "$state_dir"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do
    port_open "$1" && return 0
    sleep 0.1
  done
  echo "services: nothing answers on 127.0.0.1:$1 after 10 s" >&2
  return 1
}

install_missing() {
  local missing=()
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "services: installing ${missing[*]} with apt-get" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

install_missing
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

if ! port_open "$nats_port"; then
  echo "services: starting nats-server on 127.0.0.1:$nats_port" >&2
  mkdir -p "$state_dir/nats"
  nohup "$nats_bin" -a 127.0.0.1 -p "$nats_port" -js -sd "$state_dir/nats" >"$state_dir/nats.log" 2>&1 &
  wait_port "$nats_port"
fi

if ! port_open "$redis_port"; then
  echo "services: starting redis-server on 127.0.0.1:$redis_port" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$state_dir" --logfile "$state_dir/redis.log"
  wait_port "$redis_port"
fi
echo "services: nats 127.0.0.1:$nats_port and redis 127.0.0.1:$redis_port are up" >&2
