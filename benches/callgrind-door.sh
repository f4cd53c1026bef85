#!/usr/bin/env bash
# Instructions per query through the HTTP door, counted by valgrind's callgrind: for the same binary and load the
# figure stays within a fraction of a percent whatever else the machine is doing (only how events and timers batch
# up moves it), so a change of a few percent shows where wall-clock runs on a shared 2-core VM cannot see it.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benches/callgrind-door.sh [QUERIES [CONNECTIONS]]     default 2000 queries over 8 keep-alive connections
# Environment:
#   SWITCHYARD_NODE_BIN   the node to measure (default: target/gateway-bins/release/switchyard, built here)
#   CALLGRIND_OUT         where the profile goes (default: target/callgrind/door.<pid>); the measured queries are
#                         in CALLGRIND_OUT.1; read it with `callgrind_annotate --inclusive=yes FILE`
#   CALLGRIND_PORTS       mock and door ports (default: 18181 18182), loopback only
#
# What runs: switchyard-mock, and one node (roles router, providers and http, the bench's configuration: NATS and
# Redis at their default addresses, one worker thread) under `valgrind --tool=callgrind`. 200 queries warm it
# up, the counters are zeroed (`callgrind_control -z`), QUERIES chat completions are posted through the door by a
# Python client, and the counters are dumped. The figure printed is the dumped total over QUERIES: everything the
# node's threads executed meanwhile (the door, the router, the provider call, the runtime, the allocator),
# kernel time excluded. Needs valgrind, python3, curl, and NATS and Redis running (`deploy/services.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

queries=${1:-2000}
connections=${2:-8}
if ! [[ $queries =~ ^[0-9]+$ && $connections =~ ^[1-9][0-9]*$ ]] || (( queries < connections )); then
  echo "usage: $0 [QUERIES [CONNECTIONS]], with QUERIES >= CONNECTIONS >= 1" >&2
  exit 64
fi
read -r mock_port door_port <<<"${CALLGRIND_PORTS:-18181 18182}"
bins=target/gateway-bins/release
if [[ -z "${SWITCHYARD_NODE_BIN:-}" ]]; then
  cargo build --release -q -p switchyard -p switchyard-mock --bins --target-dir target/gateway-bins
fi
node_bin=${SWITCHYARD_NODE_BIN:-$bins/switchyard}
[[ -x $bins/switchyard-mock ]] || cargo build --release -q -p switchyard-mock --bins --target-dir target/gateway-bins
mkdir -p target/callgrind
out=${CALLGRIND_OUT:-target/callgrind/door.$$}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
fail() {
  echo "callgrind-door: $*" >&2
  [[ -s $work/node.log ]] && tail -n 20 "$work/node.log" >&2
  exit 1
}
trap cleanup EXIT

"$bins/switchyard-mock" --listen "127.0.0.1:$mock_port" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$mock_port") 2>/dev/null && break
  sleep 0.1
done
# The node of the gateway bench (`node_config` in benches/benches/gateway.rs), with this script's ports and key:
# keep the two alike, so that this count and the bench's figures describe the same node.
cat >"$work/node.toml" <<EOF
[node]
name = "callgrind-node"
namespace = "callgrind$$"
roles = ["router", "providers", "http"]
worker_threads = 1
[nats]
url = "${SWITCHYARD_NATS_URL:-nats://127.0.0.1:4222}"
[redis]
url = "${SWITCHYARD_REDIS_URL:-redis://127.0.0.1:6379}"
key_prefix = "switchyard:callgrind:$$:"
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
model = "bench-model"
max_in_flight = 4096
[[routes]]
name = "bench-model"
providers = ["mock"]
[http]
listen = "127.0.0.1:$door_port"
[[http.keys]]
name = "callgrind"
key_env = "CALLGRIND_DOOR_KEY"
routes = ["*"]
EOF
CALLGRIND_DOOR_KEY=sk-callgrind RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
  "$node_bin" serve --config "$work/node.toml" 2>"$work/node.log" &
node=$!
pids+=("$node")
for _ in $(seq 1 240); do
  curl -sf "127.0.0.1:$door_port/readyz" >/dev/null && break
  kill -0 "$node" 2>/dev/null || fail "the node exited"
  sleep 0.5
done
curl -sf "127.0.0.1:$door_port/readyz" >/dev/null || fail "the door is not ready after 120 s"

load() {
  python3 - "$door_port" "$1" "$connections" <<'PY'
import http.client, json, sys, threading
port, total, connections = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "hello bench"}]})
headers = {"content-type": "application/json", "authorization": "Bearer sk-callgrind"}
failed = []
def client(count):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(count):
            connection.request("POST", "/v1/chat/completions", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failed.append(f"HTTP {response.status}")
    except Exception as error:  # a dead connection must fail the run, not shrink it
        failed.append(repr(error))
threads = [threading.Thread(target=client, args=(total // connections,)) for _ in range(connections)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if failed:
    sys.exit(f"{len(failed)} queries or connections failed, e.g. {failed[0]}")
PY
}

load 200 || fail "the warm-up failed"
callgrind_control -z "$node" >/dev/null 2>&1 || fail "callgrind_control cannot zero the counters"
load "$queries" || fail "the measured load failed"
callgrind_control -d "$node" >/dev/null 2>&1 || fail "callgrind_control cannot dump the counters"
sent=$(( queries / connections * connections ))
[[ -s $out.1 ]] || fail "no profile at $out.1"
total=$(sed -n 's/^summary: //p' "$out.1")
[[ $total =~ ^[0-9]+$ ]] || fail "no instruction total in $out.1"
echo "door queries: $sent over $connections connections; node instructions: $total; per query: $(( total / sent ))"
echo "profile: $out.1"
