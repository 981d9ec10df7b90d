# Shared settings for infra/local/{up,down}. Sourced, not run.
# Everything lives under $ORDERFLOW_LOCAL_DIR (default: .local/ in the repository), so
# several checkouts on one machine do not share state unless told to.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state_dir=${ORDERFLOW_LOCAL_DIR:-$repo_root/.local}
broker_port=${ORDERFLOW_LOCAL_BROKER_PORT:-19092}
pg_port=${ORDERFLOW_LOCAL_PG_PORT:-15432}
pg_bin=${ORDERFLOW_PG_BIN:-/usr/lib/postgresql/15/bin}
tansu_version=0.6.0
# A stable place outside the work tree, so the 12-minute build happens once per machine.
tools_root=${ORDERFLOW_TOOLS_ROOT:-$HOME/.cargo}
tansu_bin=$tools_root/bin/tansu

log() { echo "[infra/local] $*" >&2; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# Commands that touch PostgreSQL's files run as the postgres user when we are root,
# because the server refuses to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
