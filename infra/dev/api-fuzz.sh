#!/usr/bin/env bash
# API fuzzing with schemathesis (PyPI) over /api/openapi.json, bounded in time: runs the demo
# in a database of its own on a free local port, logs in as the demo's company admin and sends
# generated requests to every operation, failing on any 5xx answer. Not part of the test suite
# (docs/security.md has the last result). Usage: infra/dev/api-fuzz.sh [seconds, default 300]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
max_time="${1:-300}"
# shellcheck source=../services.sh
source infra/services.sh
command -v schemathesis >/dev/null || pip install --quiet schemathesis
db_base="${DATABASE_URL%/*}"
psql "$DATABASE_URL" -qc "drop database if exists powertab_apifuzz" -c "create database powertab_apifuzz"
export DATABASE_URL="$db_base/powertab_apifuzz"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dtu_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export POWERTAB_LISTEN="127.0.0.1:$port" POWERTAB_INGEST__DTU_LISTEN="127.0.0.1:$dtu_port"
# Generous login thresholds: the fuzzer logs in with wrong passwords on purpose.
export POWERTAB_THROTTLE__ACCOUNT_FAILURES_MAX=100000 POWERTAB_THROTTLE__ADDRESS_FAILURES_MAX=100000
cargo build -q -p powertab-server --bin powertab
target/debug/powertab demo >"$repo/target/api-fuzz-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
token=$(curl -fs "http://127.0.0.1:$port/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"company":"demo","username":"admin","password":"demo-pass-2026"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
# Tokens last 15 minutes, longer than a default run. The auth operations would log the admin
# out (logout revokes) or lock the account, so they are fuzzed without the header by
# schemathesis's own unauthenticated examples only.
schemathesis run "http://127.0.0.1:$port/api/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error \
  --max-time "$max_time" \
  --max-examples 25 \
  --exclude-path /api/v1/auth/logout \
  --exclude-path /api/v1/me/password \
  --workers 2
