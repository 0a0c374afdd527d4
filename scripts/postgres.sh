#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on a free 127.0.0.1 port (data and socket in a new
# temporary directory, trust authentication, fsync off: the tests measure behaviour, not
# durability) and prints `<pid> <url> <dir>` once it accepts connections. The URL names the
# `postgres` database as the `postgres` user; each test makes a database of its own. Stop it
# with `kill <pid>` and remove <dir>. Usage: scripts/postgres.sh [LOG_FILE]
set -euo pipefail

LOG="${1:-/dev/null}"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] \
  || { echo "PostgreSQL is not installed: run scripts/setup-test-tools.sh" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d -t tasker-postgres.XXXXXX)

# initdb and the server refuse to run as root: as root, they run as the postgres user.
owner=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$dir"
  owner=(runuser -u postgres --)
fi
"${owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$LOG" 2>&1 \
  || { echo "initdb failed; see $LOG" >&2; exit 1; }
"${owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400 -c fsync=off \
   -c synchronous_commit=off -c full_page_writes=off" >>"$LOG" 2>&1 \
  || { echo "PostgreSQL did not start; see $LOG and $dir/server.log" >&2; exit 1; }
pid=$(head -n 1 "$dir/data/postmaster.pid")
echo "$pid postgres://postgres@127.0.0.1:$port/postgres $dir"
