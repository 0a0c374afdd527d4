#!/usr/bin/env bash
# The whole test suite: installs the test tools, then runs every check and counts what ran:
# the template and contract lints, formatting, each Lambda's dependencies, clippy, the
# workspace build, every Rust test (cargo-nextest, one suite binary), schemathesis against a
# real `tasker serve` on SQLite and on PostgreSQL, the TypeScript client, the benchmark on tiny
# numbers, the local Lambda workflow, and the release build of the functions. What does not need the CPU-bound debug
# build runs beside it; the closing line counts every step and test from their own output.
set -uo pipefail
cd "$(dirname "$0")/.."

CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
scripts/setup-test-tools.sh || exit 1

# Disk: a clean run compiles everything once, so incremental state only takes space, and full
# debug info makes each test binary about 100 MB. Line tables keep backtraces' file:line.
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only
# Compiled dependencies are kept between runs under the cache (a fresh clone then compiles
# only the workspace's own crates); the functions' release build has a directory of its own,
# so it runs beside the debug build instead of waiting for its lock.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
LAMBDA_TARGET_DIR="${TASKER_LAMBDA_TARGET_DIR:-$CACHE/target-lambda}"
source scripts/lib/steps.sh
prune_workspace_artifacts "$CARGO_TARGET_DIR" "$LAMBDA_TARGET_DIR"

echo "== test tools and services"
log=$(mktemp -t dynamodb-local.XXXXXX.log)
read -r ddb_pid endpoint < <(scripts/dynamodb-local.sh "$log") || exit 1
trap 'kill "$ddb_pid" 2>/dev/null || true' EXIT
echo "DynamoDB Local at $endpoint (pid $ddb_pid, log $log)"
export TASKER_TEST_DYNAMODB_ENDPOINT="$endpoint"
read -r moto_pid sqs_endpoint < <(scripts/moto-server.sh "$(mktemp -t moto.XXXXXX.log)") || exit 1
trap 'kill "$ddb_pid" "$moto_pid" 2>/dev/null || true' EXIT
echo "moto at $sqs_endpoint (pid $moto_pid)"
export TASKER_TEST_SQS_ENDPOINT="$sqs_endpoint"
read -r pg_pid pg_url pg_dir < <(scripts/postgres.sh "$(mktemp -t postgres.XXXXXX.log)") || exit 1
stop_services() {
  kill "$ddb_pid" "$moto_pid" 2>/dev/null || true
  # A fast shutdown, then the cluster's directory.
  kill -INT "$pg_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$pg_dir"
}
trap stop_services EXIT
echo "PostgreSQL at $pg_url (pid $pg_pid)"
export TASKER_TEST_POSTGRES_URL="$pg_url"
# Outage tests start and stop DynamoDB Local instances of their own from here.
TASKER_TEST_DYNAMODB_DIR=$(ls -d "$CACHE"/package/lib/dynamodb_local_*/ | tail -n 1)
export TASKER_TEST_DYNAMODB_DIR

# Beside everything: the release build, one core for several minutes (LTO, one codegen unit).
PATH="$CACHE/venv/bin:$PATH" CARGO_TARGET_DIR="$LAMBDA_TARGET_DIR" \
  background release-build scripts/lambda-release-build.sh
# Beside clippy and the debug build: the lints, which need neither.
background template-lint scripts/lint-contracts.sh
background fmt cargo fmt --all -- --check
background lambda-deps scripts/check-lambda-deps.sh
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
step build cargo build --workspace --all-targets --locked

if passed build; then
  background tests cargo nextest run --workspace --locked --no-fail-fast
  # Schemathesis has no tight bound on time: it yields the CPU (nice) to the tests, whose
  # waits have bounds, and to the release build, the run's longest step. (Niced, the
  # benchmark's smoke started its DynamoDB Local too slowly for the script's 20 s.)
  # 150 cases per operation on each store: together the 300 one run had before.
  SCHEMATHESIS_EXAMPLES=150 background schemathesis nice -n 10 scripts/schemathesis.sh sqlite
  SCHEMATHESIS_EXAMPLES=150 background schemathesis-postgres \
    nice -n 10 scripts/schemathesis.sh postgres
  background typescript-client scripts/typescript-client.sh
  PATH="$CACHE/venv/bin:$PATH" background lambda-workflow scripts/lambda-watch-e2e.sh
  # Every phase of the benchmark on tiny numbers (the real run is in docs/performance.md),
  # beside the tests: it mostly waits (leases, schedules, polls), about a third of a core.
  background bench-smoke "$CARGO_TARGET_DIR/debug/tasker-bench" --tasks 300 --http-tasks 30 \
    --delay-tasks 20 --mixed-tasks 100 --mixed-rate 50 --slow-ms 1000 \
    --crash-tasks 40 --crash-timeout 2 --crash-grace 1 \
    --sqs-tasks 100 --schedules 5 --schedule-seconds 3 --wake-tasks 10 \
    --scale-small 200 --scale-sqlite 1000 --scale-dynamodb 500 --scale-postgres 1000 \
    --blocked-tasks 200 --blocked-paused 400 --blocked-capped 30 --blocked-paused-sqlite 2000 \
    --no-apalis --no-peers --no-lambda --json "$(mktemp -t tasker-bench.XXXXXX.json)"
  # The peers (node programs on a Redis and a PostgreSQL of their own) on tiny numbers, once
  # the tests are done: beside them, their load pushed SQS mode's timing-bound tests over
  # their bounds. The release build still runs longer.
  await_step tests
  background bench-peers "$CARGO_TARGET_DIR/debug/tasker-bench" --only-peers --tasks 300 \
    --delay-tasks 20 --depth-workers 4,16 --depth-seconds 0.5 --crash-peers-jobs 40 \
    --crash-peers-watch 3 --json "$(mktemp -t tasker-peers.XXXXXX.json)"
else
  skip tests schemathesis schemathesis-postgres typescript-client lambda-workflow bench-smoke \
    bench-peers
fi
# The shared services' own CPU, which no step's count includes.
for step_pid in "${STEPS_PIDS[@]}"; do wait "$step_pid"; done
echo "services' CPU seconds: DynamoDB Local $(process_cpu "$ddb_pid")," \
  "moto $(process_cpu "$moto_pid"), PostgreSQL $(process_cpu "$pg_pid")"
finish
