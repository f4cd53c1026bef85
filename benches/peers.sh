#!/usr/bin/env bash
# Peer gateways for the gateway benchmark: LiteLLM proxy and the Portkey gateway in front of the same mock LLM
# server as Switchyard, so `cargo bench -p switchyard-benches --bench gateway` prints their figures beside ours.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benches/peers.sh --install             install the peers that are missing into target/peers/, then exit
#   benches/peers.sh [-- BENCH_ARGS...]    build the bench, start the installed peers, run the bench with them
#                                          (--mock-port and one --peer/--peer-header set per peer; BENCH_ARGS after
#                                          `--` are passed through), stop the peers
#   benches/peers.sh --serve-only [--with-mock]
#                                          start the installed peers and wait (Ctrl-C stops them), for manual runs;
#                                          --with-mock also runs switchyard-mock on the mock port
#   benches/peers.sh --help
#
# What --install puts where (target/ is git-ignored; nothing here is committed):
#   target/peers/venv/     a Python venv (python3 -m venv) with `litellm[proxy]` from PyPI (~750 MB, ~4 min)
#   target/peers/portkey/  `npm install --prefix` of `@portkey-ai/gateway` from npm (~25 MB, ~15 s); the server is
#                          node_modules/@portkey-ai/gateway/build/start-server.js (its `start:node` script)
# At run time: target/peers/litellm.yaml (generated config), target/peers/litellm.log, target/peers/portkey.log.
# A peer that is not installed is skipped with a message; the bench still runs with Switchyard's own figures.
#
# Ports (loopback only) and other environment overrides:
#   PEERS_MOCK_PORT=18081       the mock the bench starts (--mock-port); the peers' upstream is http://127.0.0.1:PORT/v1
#   PEERS_LITELLM_PORT=14000    LiteLLM proxy
#   PEERS_PORTKEY_PORT=18787    Portkey gateway
#   PEERS=litellm,portkey       which peers to start
#   PEERS_DIR=target/peers      where the peers are installed and their config and logs go
#   PEERS_LITELLM_WORKERS=$(nproc)  LiteLLM worker processes (see below)
#   PEERS_PORTKEY_PROCESSES=1   Portkey processes; >1 runs them under node:cluster sharing the port (not what its
#                               images do; for a sensitivity check only)
#   PEERS_LITELLM_SPEC='litellm[proxy]', PEERS_PORTKEY_SPEC='@portkey-ai/gateway'  what --install asks for (pin a
#                               version here, e.g. 'litellm[proxy]==1.2.3')
#   PEERS_START_TIMEOUT=180     seconds to wait for a peer to answer
#   SWITCHYARD_MOCK_BIN         --with-mock runs this binary instead of building switchyard-mock (release)
#
# The bench is given each peer's OpenAI base URL (http://127.0.0.1:PORT/v1); it posts to URL/chat/completions.
#
# How each peer is configured (each as its own documentation recommends for production on this machine, which has
# 2 cores, so that the comparison is fair and written down; checked with litellm 1.108.7 and @portkey-ai/gateway
# 1.15.2):
#  LiteLLM (docs: proxy/prod "Best Practices for Production", proxy/cli):
#   - `litellm --config` with one model: bench-model -> openai/bench-model at the mock, api_key dummy.
#   - Workers: on a VM / bare metal the docs say to match uvicorn workers to the CPU count (--num_workers $(nproc));
#     1 worker per pod is their advice for Kubernetes only. Here: --num_workers 2. Plain uvicorn (LiteLLM's
#     default server, uvloop event loop), not gunicorn, which the docs keep for worker recycling.
#     --timeout_worker_healthcheck 60: uvicorn's supervisor kills a worker that has not come up within 5 s, and
#     importing LiteLLM takes longer than that on a busy 2-core machine (the workers were killed and respawned
#     forever); it changes nothing once the workers run.
#   - A master key (general_settings.master_key, must start with sk-), sent by the bench as a Bearer token, as every
#     production deployment has one. No database: spend tracking and virtual keys need Postgres, which the bench
#     does not measure; disable_spend_logs / disable_error_logs are set as the docs advise when the UI's usage
#     pages are not used, so nothing is written per request.
#   - Per-request logging off: LITELLM_LOG=ERROR (the docs' "turn off FastAPI's default info logs", which also
#     silences uvicorn's access log), set_verbose false, no callbacks. LITELLM_MODE=PRODUCTION (no .env loading).
#   - Offline: LiteLLM fetches its model cost map (and a few other JSON files, an RSS feed) from GitHub unless told
#     to use the copies it ships: LITELLM_LOCAL_MODEL_COST_MAP, _ANTHROPIC_BETA_HEADERS, _BLOG_POSTS,
#     _AUTOROUTER_PRESETS, _POLICY_TEMPLATES=True; LITELLM_TELEMETRY_DISABLED=true vetoes its usage telemetry.
#     (Without them, importing LiteLLM tries GitHub three times, ~6 s, then falls back to the shipped copy.) With
#     them, strace saw no connection beyond loopback, at start or per request.
#   - A request without the key gets a 500, not a 401 (1.108.7: the error handler imports prisma, which comes only
#     with the database extras); the bench always sends the key.
#  Portkey gateway (docs: installation / Node.js deployment; its Dockerfile runs `npm run start:node`):
#   - `node build/start-server.js --port=PORT --headless` with NODE_ENV=production: headless and production both
#     drop the development console (/public UI and the /log/stream per-request log feed).
#   - One process: the gateway is a single Node event loop; its Docker image runs one (`npm run start:node`) and
#     Portkey scales by running more containers / pods, not by a cluster inside one. (PEERS_PORTKEY_PROCESSES>1
#     is there to see what a second process would add.)
#   - No config file: routing is per request, by the headers the docs give for an OpenAI-compatible custom host:
#     x-portkey-provider: openai, x-portkey-custom-host: http://127.0.0.1:MOCKPORT/v1, Authorization: Bearer dummy.
#     127.0.0.1 is in the gateway's default TRUSTED_CUSTOM_HOSTS, so no override is needed. No Redis (no cache).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${PEERS_DIR:-$root/target/peers}
mock_port=${PEERS_MOCK_PORT:-18081}
litellm_port=${PEERS_LITELLM_PORT:-14000}
portkey_port=${PEERS_PORTKEY_PORT:-18787}
peers=${PEERS:-litellm,portkey}
litellm_workers=${PEERS_LITELLM_WORKERS:-$(nproc)}
portkey_processes=${PEERS_PORTKEY_PROCESSES:-1}
litellm_spec=${PEERS_LITELLM_SPEC:-litellm[proxy]}
portkey_spec=${PEERS_PORTKEY_SPEC:-@portkey-ai/gateway}
start_timeout=${PEERS_START_TIMEOUT:-180}

mock_url="http://127.0.0.1:$mock_port/v1"
# Not a secret: the proxy listens on loopback for the length of a bench run.
litellm_key="sk-switchyard-bench"
litellm_python="$dir/venv/bin/python"
portkey_entry="$dir/portkey/node_modules/@portkey-ai/gateway/build/start-server.js"

say() { echo "peers: $*" >&2; }
die() { say "$*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

wanted() { [[ ",$peers," == *",$1,"* ]]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
litellm_installed() { [ -x "$dir/venv/bin/litellm" ]; }
portkey_installed() { [ -f "$portkey_entry" ] && command -v node >/dev/null; }

# ---------------------------------------------------------------------------------------------------- install

install_litellm() {
  if litellm_installed; then say "litellm: already installed ($dir/venv)"; return; fi
  say "litellm: installing $litellm_spec into $dir/venv"
  mkdir -p "$dir"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "$litellm_spec"
  say "litellm: installed $(litellm_version)"
}

install_portkey() {
  if portkey_installed; then say "portkey: already installed ($dir/portkey)"; return; fi
  command -v npm >/dev/null || die "portkey: npm not found"
  say "portkey: installing $portkey_spec into $dir/portkey"
  mkdir -p "$dir/portkey"
  npm install --prefix "$dir/portkey" --no-audit --no-fund --loglevel=error "$portkey_spec"
  [ -f "$portkey_entry" ] || die "portkey: $portkey_entry missing after install (entry point moved?)"
  say "portkey: installed $(portkey_version)"
}

litellm_version() { "$litellm_python" -c 'import importlib.metadata as m; print("litellm", m.version("litellm"))'; }
portkey_version() {
  node -p "'@portkey-ai/gateway ' + require('$dir/portkey/node_modules/@portkey-ai/gateway/package.json').version"
}

# ---------------------------------------------------------------------------------------------------- processes

# Process groups this script started; each peer runs in a session of its own (setsid), so one kill of the group
# takes its workers too (uvicorn's worker processes, node:cluster's workers).
groups=()

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ ${#groups[@]} -gt 0 ]; then
    local pg
    for pg in "${groups[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
      local alive=""
      for pg in "${groups[@]}"; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
      [ -n "$alive" ] || break
      sleep 0.2
    done
    for pg in "${groups[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
    say "stopped"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG CMD...: run CMD in $dir, in a new session, with its output in LOG; records its pid in pids[NAME]
# and its process group. A background job of a non-interactive shell is no group leader, so setsid does not fork:
# $! is the new session's leader.
declare -A pids=() started_at=()
start() {
  local name=$1 log=$2
  shift 2
  (cd "$dir" && exec setsid "$@") >"$log" 2>&1 </dev/null &
  groups+=("$!")
  pids[$name]=$!
  started_at[$name]=$SECONDS
}

# wait_ready NAME PID LOG URL [PATTERN]: until URL answers 200 (and its body matches PATTERN), or the peer died.
wait_ready() {
  local name=$1 pid=$2 log=$3 url=$4 pattern=${5:-} deadline=$((SECONDS + start_timeout)) body
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name: exited while starting; last lines of $log:"
      tail -n 20 "$log" >&2
      return 1
    fi
    if body=$(curl -fsS --max-time 2 "$url" 2>/dev/null) && { [ -z "$pattern" ] || [[ "$body" == *"$pattern"* ]]; }; then
      say "$name: ready at $url, $((SECONDS - ${started_at[$name]:-0}))s after its start"
      return 0
    fi
    sleep 0.5
  done
  say "$name: no answer from $url within ${start_timeout}s; last lines of $log:"
  tail -n 20 "$log" >&2
  return 1
}

write_litellm_config() {
  cat >"$dir/litellm.yaml" <<EOF
# Generated by benches/peers.sh on each run; see the comments there.
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: $mock_url
      api_key: dummy
general_settings:
  master_key: $litellm_key
  disable_spend_logs: true
  disable_error_logs: true
litellm_settings:
  set_verbose: false
  request_timeout: 600
EOF
}

start_litellm() {
  port_open "$litellm_port" && die "litellm: 127.0.0.1:$litellm_port already answers (PEERS_LITELLM_PORT)"
  write_litellm_config
  say "litellm: $(litellm_version), $litellm_workers workers, port $litellm_port, log $dir/litellm.log"
  start litellm "$dir/litellm.log" env \
    LITELLM_MODE=PRODUCTION LITELLM_LOG=ERROR \
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True LITELLM_LOCAL_BLOG_POSTS=True \
    LITELLM_LOCAL_AUTOROUTER_PRESETS=True LITELLM_LOCAL_POLICY_TEMPLATES=True LITELLM_TELEMETRY_DISABLED=true \
    "$dir/venv/bin/litellm" --config "$dir/litellm.yaml" --host 127.0.0.1 --port "$litellm_port" \
    --num_workers "$litellm_workers" --timeout_worker_healthcheck 60
}

start_portkey() {
  port_open "$portkey_port" && die "portkey: 127.0.0.1:$portkey_port already answers (PEERS_PORTKEY_PORT)"
  say "portkey: $(portkey_version), $portkey_processes process(es), port $portkey_port, log $dir/portkey.log"
  local args=("--port=$portkey_port" --headless)
  if [ "$portkey_processes" -gt 1 ]; then
    # node:cluster: the primary forks the workers (without this -e script) and hands them connections on the one port.
    start portkey "$dir/portkey.log" env NODE_ENV=production node --input-type=module -e "
      import cluster from 'node:cluster';
      cluster.setupPrimary({ exec: process.argv[1], args: process.argv.slice(2), execArgv: [] });
      for (let i = 0; i < $portkey_processes; i++) cluster.fork();
      cluster.on('exit', (w, code) => { console.error('portkey worker exited', code); process.exit(1); });
    " "$portkey_entry" "${args[@]}"
  else
    start portkey "$dir/portkey.log" env NODE_ENV=production node "$portkey_entry" "${args[@]}"
  fi
}

start_mock() {
  port_open "$mock_port" && die "mock: 127.0.0.1:$mock_port already answers (PEERS_MOCK_PORT)"
  local bin=${SWITCHYARD_MOCK_BIN:-}
  if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release -q -p switchyard-mock)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/switchyard-mock
  fi
  start mock "$dir/mock.log" "$bin" --listen "127.0.0.1:$mock_port"
  wait_ready mock "${pids[mock]}" "$dir/mock.log" "http://127.0.0.1:$mock_port/healthz"
}

# Starts the wanted, installed peers and fills peer_args with the bench's --peer / --peer-header arguments.
peer_args=()
start_peers() {
  mkdir -p "$dir"
  local started=()
  if wanted litellm; then
    if litellm_installed; then start_litellm; started+=(litellm)
    else say "litellm: not installed ($dir/venv), skipped; benches/peers.sh --install"; fi
  fi
  if wanted portkey; then
    if portkey_installed; then start_portkey; started+=(portkey)
    else say "portkey: not installed ($dir/portkey, or no node), skipped; benches/peers.sh --install"; fi
  fi
  # Portkey is up in a second, LiteLLM in half a minute: wait for Portkey first, so each wait reads true.
  if [[ " ${started[*]} " == *" portkey "* ]]; then
    wait_ready portkey "${pids[portkey]}" "$dir/portkey.log" "http://127.0.0.1:$portkey_port/" "AI Gateway says hey"
  fi
  if [[ " ${started[*]} " == *" litellm "* ]]; then
    wait_ready litellm "${pids[litellm]}" "$dir/litellm.log" "http://127.0.0.1:$litellm_port/health/readiness"
    # That was the first worker to finish importing; the others, started with it, are a few seconds behind, and
    # nothing outside tells them apart (the access log is off): give them time, so the bench meets them all.
    [ "$litellm_workers" -le 1 ] || sleep 5
    peer_args+=(--peer "litellm=http://127.0.0.1:$litellm_port/v1"
      --peer-header "litellm=Authorization: Bearer $litellm_key")
  fi
  if [[ " ${started[*]} " == *" portkey "* ]]; then
    peer_args+=(--peer "portkey=http://127.0.0.1:$portkey_port/v1"
      --peer-header "portkey=x-portkey-provider: openai"
      --peer-header "portkey=x-portkey-custom-host: $mock_url"
      --peer-header "portkey=Authorization: Bearer dummy")
  fi
}

# Prints a curl command per peer, from peer_args.
print_curls() {
  local i=0 name url hdrs
  local -A urls=() headers=()
  while [ $i -lt ${#peer_args[@]} ]; do
    local flag=${peer_args[$i]} value=${peer_args[$((i + 1))]}
    name=${value%%=*}
    case $flag in
      --peer) urls[$name]=${value#*=} ;;
      --peer-header) headers[$name]+=" -H '${value#*=}'" ;;
    esac
    i=$((i + 2))
  done
  for name in "${!urls[@]}"; do
    url=${urls[$name]}
    hdrs=${headers[$name]:-}
    echo "  $name: curl -sS $url/chat/completions -H 'Content-Type: application/json'$hdrs" \
      "-d '{\"model\":\"bench-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
  done
}

# ---------------------------------------------------------------------------------------------------- main

mode=bench
with_mock=""
bench_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --install) mode=install ;;
    --serve-only) mode=serve ;;
    --with-mock) with_mock=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; bench_args=("$@"); break ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

case $mode in
  install)
    wanted litellm && install_litellm
    wanted portkey && install_portkey
    say "installed under $dir"
    ;;
  serve)
    [ -n "$with_mock" ] && start_mock
    start_peers
    [ ${#peer_args[@]} -gt 0 ] || say "no peer is installed"
    say "serving; upstream $mock_url; Ctrl-C stops. Bench arguments:"
    echo "  --mock-port $mock_port ${peer_args[*]@Q}"
    print_curls
    while :; do
      for pg in "${groups[@]}"; do
        kill -0 "$pg" 2>/dev/null || die "process $pg exited; see the logs in $dir"
      done
      sleep 2
    done
    ;;
  bench)
    port_open "$mock_port" && die "mock: 127.0.0.1:$mock_port already answers; the bench starts its own (PEERS_MOCK_PORT)"
    # Build first, so that the peers start only once the bench is ready to run.
    (cd "$root" && cargo bench -p switchyard-benches --bench gateway --no-run)
    start_peers
    say "running the bench with: --mock-port $mock_port ${peer_args[*]@Q} ${bench_args[*]@Q}"
    (cd "$root" && cargo bench -p switchyard-benches --bench gateway -- \
      --mock-port "$mock_port" "${peer_args[@]}" "${bench_args[@]}")
    ;;
esac
