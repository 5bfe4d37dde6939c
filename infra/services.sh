#!/usr/bin/env bash
# Finds or starts the services PowerTab needs, and exports their addresses:
#   DATABASE_URL  PostgreSQL (user postgres). Kept when already set. Otherwise 127.0.0.1:5432 when
#                 it accepts user `postgres` without a password; otherwise a private cluster started
#                 from the installed PostgreSQL binaries (Debian's `postgresql` is installed first
#                 when missing and we are root), run as the `postgres` user on a free port.
#   MQTT_URL      Mosquitto. Kept when already set. Otherwise the project's own broker in
#                 .local/mosquitto on a free port from 18830, with the dynamic-security plugin
#                 (Debian's `mosquitto` installed when missing and we are root), and then also
#   MQTT_ADMIN_USERNAME, MQTT_ADMIN_PASSWORD  its admin login, with which PowerTab provisions MQTT
#                 gateways' logins, and
#   MQTT_USERNAME, MQTT_PASSWORD  the readings client's least-privilege login (provisioning
#                 creates it there). Only if that fails: an open broker at 127.0.0.1:1883.
# Use it with `source infra/services.sh`; both README commands do. Safe to run again: a private
# cluster or broker that is already running is reused. PT_SERVICES_PRIVATE=1 skips the shared
# 127.0.0.1:5432 / :1883 services and uses private ones (to test that path).

_pt_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_pt_log() { printf '[services] %s\n' "$*" >&2; }

_pt_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

_pt_free_port() {
  local port=$1
  while _pt_port_open "$port"; do port=$((port + 1)); done
  echo "$port"
}

_pt_apt_install() {
  if [ "$(id -u)" != 0 ]; then
    _pt_log "missing $*; install it (needs root): apt-get install $*"
    return 1
  fi
  _pt_log "installing $* from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

_pt_pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

_pt_as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_pt_ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    _pt_log "using DATABASE_URL from the environment"
    return 0
  fi
  if [ "${PT_SERVICES_PRIVATE:-}" != 1 ] && _pt_port_open 5432 && command -v psql >/dev/null &&
    PGCONNECT_TIMEOUT=5 psql -w -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    _pt_log "using PostgreSQL at 127.0.0.1:5432"
    return 0
  fi
  local bin
  bin=$(_pt_pg_bin) || { _pt_apt_install postgresql && bin=$(_pt_pg_bin); } || {
    _pt_log "no PostgreSQL available"
    return 1
  }
  # initdb refuses root: the cluster belongs to `postgres` (or to us when not root), in a folder
  # that user owns.
  local data
  if [ "$(id -u)" = 0 ]; then data=/var/tmp/powertab-pg; else data="$_pt_repo/.local/pg"; fi
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres: "$data" && chmod 700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    _pt_log "creating a private PostgreSQL cluster in $data"
    _pt_as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  local port
  if [ -f "$data/postmaster.pid" ] && [ -f "$data/powertab.port" ] && _pt_port_open "$(cat "$data/powertab.port")"; then
    port=$(cat "$data/powertab.port")
  else
    port=$(_pt_free_port 54329)
    _pt_as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    echo "$port" | _pt_as_postgres tee "$data/powertab.port" >/dev/null
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  _pt_log "using private PostgreSQL at 127.0.0.1:$port"
}

_pt_dynsec_plugin() {
  ls /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so 2>/dev/null | head -n 1
}

# Starts (or reuses) the project's own Mosquitto in .local/mosquitto with the dynamic-security
# plugin; PowerTab logs in as its admin and provisions every MQTT gateway's login there.
_pt_start_own_mosquitto() {
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || _pt_apt_install mosquitto || return 1
  local exe plugin dir port
  exe=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  plugin=$(_pt_dynsec_plugin)
  [ -n "$plugin" ] || { _pt_log "Mosquitto has no dynamic-security plugin"; return 1; }
  dir="$_pt_repo/.local/mosquitto"
  mkdir -p "$dir"
  if [ ! -f "$dir/dynamic-security.json" ]; then
    # A broker from before dynamic security (or a half-made folder) is replaced.
    [ -f "$dir/mosquitto.pid" ] && kill "$(cat "$dir/mosquitto.pid")" 2>/dev/null
    rm -f "$dir/port" "$dir/mosquitto.pid"
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/admin-password")
    mosquitto_ctrl dynsec init "$dir/dynamic-security.json" powertab-admin "$(cat "$dir/admin-password")" >/dev/null || return 1
  fi
  if [ -f "$dir/port" ] && _pt_port_open "$(cat "$dir/port")"; then
    port=$(cat "$dir/port")
  else
    port=$(_pt_free_port 18830)
    cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous false
# Readings wait here while ingest is away (its session is persistent), across a broker restart
# too; the default queue of 1,000 messages per client would drop them.
persistence true
persistence_location $dir/
max_queued_messages 100000
plugin $plugin
plugin_opt_config_file $dir/dynamic-security.json
pid_file $dir/mosquitto.pid
log_dest file $dir/mosquitto.log
user $(id -un)
CONF
    # Its warnings (running as root) go to its log with the rest.
    "$exe" -d -c "$dir/mosquitto.conf" 2>>"$dir/mosquitto.log" || return 1
    echo "$port" >"$dir/port"
    for _ in $(seq 50); do _pt_port_open "$port" && break; sleep 0.1; done
    _pt_port_open "$port" || return 1
  fi
  # The readings client gets a login of its own with the least it needs (provisioning creates
  # it at the broker with this password); the admin login is for provisioning alone.
  [ -s "$dir/ingest-password" ] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/ingest-password")
  export MQTT_URL="mqtt://127.0.0.1:$port"
  export MQTT_ADMIN_USERNAME=powertab-admin
  MQTT_ADMIN_PASSWORD=$(cat "$dir/admin-password")
  export MQTT_ADMIN_PASSWORD
  export MQTT_USERNAME=powertab-ingest
  MQTT_PASSWORD=$(cat "$dir/ingest-password")
  export MQTT_PASSWORD
  _pt_log "using PowerTab's own Mosquitto (dynamic security) at 127.0.0.1:$port"
}

_pt_ensure_mosquitto() {
  if [ -n "${MQTT_URL:-}" ]; then
    _pt_log "using MQTT_URL from the environment"
    return 0
  fi
  _pt_start_own_mosquitto && return 0
  # Without our own broker, readings still flow through a machine's open broker; gateway logins
  # are then not provisioned.
  if [ "${PT_SERVICES_PRIVATE:-}" != 1 ] && _pt_port_open 1883; then
    export MQTT_URL="mqtt://127.0.0.1:1883"
    _pt_log "using Mosquitto at 127.0.0.1:1883 (no dynamic security: gateway logins are not provisioned)"
    return 0
  fi
  _pt_log "no MQTT broker available"
  return 1
}

_pt_ensure_postgres || return 1 2>/dev/null || exit 1
_pt_ensure_mosquitto || return 1 2>/dev/null || exit 1
