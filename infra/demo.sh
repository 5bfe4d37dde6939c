#!/usr/bin/env bash
# The Quick start: finds or starts PostgreSQL and Mosquitto, builds the web bundle and the
# server, prepares a demo company with a login for each role, and runs everything. Stop with
# Ctrl-C. Set POWERTAB_LISTEN to serve on another address (default 127.0.0.1:8080).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=services.sh
source infra/services.sh
infra/build-wasm.sh
# The demo's key for secrets at rest, kept so secrets stored in one run open in the next.
if [ -z "${POWERTAB_SECRET_KEYS:-}" ]; then
  mkdir -p .local
  if [ ! -s .local/secret-keys ]; then
    (umask 077; printf 'demo-1:%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" > .local/secret-keys)
  fi
  POWERTAB_SECRET_KEYS="$(cat .local/secret-keys)"
  export POWERTAB_SECRET_KEYS
fi
export POWERTAB_SITE_ROOT="$repo/target/site"
exec cargo run -p powertab-server --bin powertab -- demo
