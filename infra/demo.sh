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
export POWERTAB_SITE_ROOT="$repo/target/site"
exec cargo run -p powertab-server --bin powertab -- demo
