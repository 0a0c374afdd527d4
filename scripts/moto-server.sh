#!/usr/bin/env bash
# Starts moto's server (a local SQS) on a free 127.0.0.1 port and prints `<pid> <endpoint>`
# once it answers. Usage: scripts/moto-server.sh [LOG_FILE]
set -euo pipefail

CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
LOG="${1:-/dev/null}"
[ -x "$CACHE/moto/bin/moto_server" ] || { echo "moto is not installed: run scripts/setup-test-tools.sh" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"$CACHE/moto/bin/moto_server" -H 127.0.0.1 -p "$port" >"$LOG" 2>&1 &
pid=$!

for _ in $(seq 1 150); do
  if curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/"; then
    echo "$pid http://127.0.0.1:$port"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { echo "moto_server exited; see $LOG" >&2; exit 1; }
  sleep 0.2
done
kill "$pid" 2>/dev/null || true
echo "moto_server did not answer on port $port within 30 s" >&2
exit 1
