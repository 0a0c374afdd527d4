#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on a free 127.0.0.1 port (data and socket in a new
# temporary directory, trust authentication, fsync off: the tests measure behaviour, not
# durability; TASKER_POSTGRES_DURABLE=1 keeps PostgreSQL's durable defaults, for the
# benchmark) and prints `<pid> <url> <dir>` once it accepts connections. The URL names the
# `postgres` database as the `postgres` user; each test makes a database of its own. Stop it
# with `kill -INT <pid>` and remove <dir>.
# Usage: scripts/postgres.sh [LOG_FILE]
#        scripts/postgres.sh --start-again DIR   (a stopped cluster, same port and settings;
#                                                 prints its new pid)
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] \
  || { echo "PostgreSQL is not installed: run scripts/setup-test-tools.sh" >&2; exit 1; }
# initdb and the server refuse to run as root: as root, they run as the postgres user.
owner=()
[ "$(id -u)" -eq 0 ] && owner=(runuser -u postgres --)

start() {
  local dir=$1 log=$2
  "${owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >>"$log" 2>&1 \
    || { echo "PostgreSQL did not start; see $log and $dir/server.log" >&2; exit 1; }
  head -n 1 "$dir/data/postmaster.pid"
}

if [ "${1:-}" = "--start-again" ]; then
  start "$2" /dev/null
  exit 0
fi

LOG="${1:-/dev/null}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d -t tasker-postgres.XXXXXX)
[ ${#owner[@]} -gt 0 ] && chown postgres "$dir"
"${owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$LOG" 2>&1 \
  || { echo "initdb failed; see $LOG" >&2; exit 1; }
# In the cluster's own configuration, so a start after a stop has the same port and settings.
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 400
CONF
[ "${TASKER_POSTGRES_DURABLE:-0}" = 1 ] || cat >>"$dir/data/postgresql.conf" <<CONF
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
pid=$(start "$dir" "$LOG")
echo "$pid postgres://postgres@127.0.0.1:$port/postgres $dir"
