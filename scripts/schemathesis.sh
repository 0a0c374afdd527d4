#!/usr/bin/env bash
# The HTTP contract checked from outside: schemathesis generates requests from openapi.yaml
# (examples, coverage, fuzzing and stateful phases, every check) against a real `tasker serve`
# with a token, and fails on any answer outside the spec. Usage: scripts/schemathesis.sh
# [sqlite|postgres]: SQLite (the default) or a new database on the PostgreSQL server at
# TASKER_TEST_POSTGRES_URL. Run by scripts/test.sh after the workspace is built;
# SCHEMATHESIS_EXAMPLES bounds the cases per operation.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
TASKER="${TASKER_BIN:-${CARGO_TARGET_DIR:-target}/debug/tasker}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-300}"
work=$(mktemp -d -t tasker-schemathesis.XXXXXX)
source scripts/lib/serve.sh
export TASKER_SCHEMATHESIS_TOKEN="schemathesis-$RANDOM$RANDOM"
port=$(free_port)
store=()
case "${1:-sqlite}" in
  sqlite) ;;
  postgres)
    url="${TASKER_TEST_POSTGRES_URL:?the PostgreSQL server: run scripts/postgres.sh and export its URL}"
    psql=$(ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
    db="tasker_schemathesis_$RANDOM$RANDOM"
    "$psql" -qX "$url" -c "CREATE DATABASE $db" >/dev/null
    store=(TASKER_STORE=postgres "TASKER_DATABASE_URL=${url%/*}/$db")
    ;;
  *) echo "usage: scripts/schemathesis.sh [sqlite|postgres]" >&2; exit 2 ;;
esac

# The processor runs too, so tasks move (run, fail, retry) under the generated requests. No
# webhook leaves the machine: private targets are refused (TASKER_WEBHOOK_ALLOW_PRIVATE unset)
# and the spec's examples point at localhost.
start_serve "$work" "$port" TASKER_API_TOKEN="$TASKER_SCHEMATHESIS_TOKEN" "${store[@]}"

# Checks and their exceptions are in scripts/schemathesis.toml.
# -w 1: two workers trip a race inside Hypothesis's cache in schemathesis 4.32.5.
# --seed: the same cases on every run, so a red run reproduces.
status=0
(cd "$work" && HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis" \
  "$CACHE/schemathesis/bin/schemathesis" --config-file "$OLDPWD/scripts/schemathesis.toml" \
  run "$OLDPWD/openapi.yaml" --url "http://127.0.0.1:$port" \
  --phases examples,coverage,fuzzing,stateful --max-examples "$EXAMPLES" \
  --request-timeout 10 -w 1 --seed 20261129 --no-color) || status=$?
if ! kill -0 "$serve" 2>/dev/null; then
  echo "schemathesis: tasker serve died during the run" >&2
  cat "$work/serve.log" >&2
  exit 1
fi
if grep -q "panicked" "$work/serve.log"; then
  echo "schemathesis: tasker serve panicked" >&2
  grep -A5 "panicked" "$work/serve.log" >&2
  exit 1
fi
exit "$status"
