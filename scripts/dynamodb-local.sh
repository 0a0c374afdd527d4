#!/usr/bin/env bash
# Starts DynamoDB Local (in memory, shared DB) on a free 127.0.0.1 port and prints
# `<pid> <endpoint>` once it answers. Usage: scripts/dynamodb-local.sh [LOG_FILE]
set -euo pipefail

CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
LOG="${1:-/dev/null}"
dir=$(ls -d "$CACHE"/package/lib/dynamodb_local_*/ 2>/dev/null | tail -n 1)
[ -n "$dir" ] || { echo "DynamoDB Local is not installed: run scripts/setup-test-tools.sh" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cd "$dir"
java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
  -inMemory -sharedDb -disableTelemetry -port "$port" >"$LOG" 2>&1 &
pid=$!

# An open port means it is ready (it binds only after loading).
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$pid http://127.0.0.1:$port"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { echo "DynamoDB Local exited; see $LOG" >&2; exit 1; }
  sleep 0.2
done
kill "$pid" 2>/dev/null || true
echo "DynamoDB Local did not answer on port $port within 20 s" >&2
exit 1
