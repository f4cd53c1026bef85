#!/usr/bin/env bash
# The whole test suite: starts NATS and Redis when they are not running, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/services.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
