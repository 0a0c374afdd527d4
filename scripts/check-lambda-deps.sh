#!/usr/bin/env bash
# Each Lambda links only what it runs: the processor, worker and cleanup functions neither the
# HTTP server (axum) nor SQLite (rusqlite), the enqueue function no SQLite, cleanup no SQS, and
# none of them PostgreSQL's driver (tokio-postgres). Checked on the
# dependency tree cargo resolves for each function alone, as `sam build` builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
check() {
  local function=$1; shift
  local tree
  tree=$(cargo tree --locked -p "$function" -e normal --prefix none --format '{p}')
  for forbidden in "$@"; do
    if grep -q "^$forbidden v" <<<"$tree"; then
      echo "error: $function links $forbidden" >&2
      status=1
    fi
  done
  echo "$function: $(sort -u <<<"$tree" | wc -l) crates, none of: $*"
}
check processor axum rusqlite tokio-postgres
check worker axum rusqlite tokio-postgres
check cleanup axum rusqlite reqwest aws-sdk-sqs tokio-postgres
check enqueue rusqlite tokio-postgres
exit $status
