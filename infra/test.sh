#!/usr/bin/env bash
# Runs the whole test suite (README: Tests; .ci/run calls this). On a fresh machine it first
# finds or starts PostgreSQL and Mosquitto, installs Chromium and ChromeDriver for the browser
# tests (and PostgreSQL's server programs for the restart test), builds the WebAssembly bundle,
# and installs cargo-nextest when missing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=services.sh
source infra/services.sh

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! fc-list 2>/dev/null | grep -qi wenquanyi; then
  if [ "$(id -u)" = 0 ]; then
    # A small CJK font so screenshots of the Chinese UI are readable.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei
  else
    echo "[test] the browser tests need chromium and chromium-driver (Debian packages)" >&2
    exit 1
  fi
fi

# The database-restart fault test starts a private cluster of its own: it needs the server
# programs even when the suite's PostgreSQL is another machine's.
if [ -z "$(_pt_pg_bin)" ]; then
  _pt_apt_install postgresql || { echo "[test] the fault tests need PostgreSQL's server programs (Debian package postgresql)" >&2; exit 1; }
fi

infra/build-wasm.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "[test] installing cargo-nextest" >&2
  cargo install cargo-nextest --locked || true
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --profile ci "$@"
else
  cargo test --workspace "$@"
fi
