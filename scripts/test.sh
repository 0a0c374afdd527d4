#!/usr/bin/env bash
# The whole test suite: installs the test tools, lints the template, checks formatting and
# clippy, starts DynamoDB Local and moto's server (SQS), and runs every test in the workspace
# against them and SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
scripts/setup-test-tools.sh

# Disk: a clean run compiles everything once, so incremental state only takes space, and full
# debug info makes each of the ~20 test binaries about 100 MB. Line tables keep backtraces'
# file:line. (CI's disk once filled up at the benchmark step without these.)
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only

echo "== cfn-lint template.yaml (both Dispatch values)"
for dispatch in poll sqs; do
  "$CACHE/venv/bin/cfn-lint" --parameters "Dispatch=$dispatch" -- template.yaml
done
echo "== sam validate --lint (both Dispatch values)"
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 "$CACHE/venv/bin/sam" validate --lint --template template.yaml
# sam validate takes no parameter values: the same template with SQS mode as its default.
sqs_template=$(mktemp -t template-sqs.XXXXXX.yaml)
sed 's/^    Default: poll$/    Default: sqs/' template.yaml >"$sqs_template"
grep -q '^    Default: sqs$' "$sqs_template"
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 "$CACHE/venv/bin/sam" validate --lint --template "$sqs_template"

echo "== openapi-spec-validator openapi.yaml"
"$CACHE/venv/bin/openapi-spec-validator" openapi.yaml

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== each Lambda links only what it runs (cargo tree)"
scripts/check-lambda-deps.sh

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== building"
cargo build --workspace --all-targets --locked

echo "== starting DynamoDB Local"
log=$(mktemp -t dynamodb-local.XXXXXX.log)
read -r ddb_pid endpoint < <(scripts/dynamodb-local.sh "$log")
trap 'kill "$ddb_pid" 2>/dev/null || true' EXIT
echo "DynamoDB Local at $endpoint (pid $ddb_pid, log $log)"
export TASKER_TEST_DYNAMODB_ENDPOINT="$endpoint"
echo "== starting moto's server (a local SQS)"
read -r moto_pid sqs_endpoint < <(scripts/moto-server.sh "$(mktemp -t moto.XXXXXX.log)")
trap 'kill "$ddb_pid" "$moto_pid" 2>/dev/null || true' EXIT
echo "moto at $sqs_endpoint (pid $moto_pid)"
export TASKER_TEST_SQS_ENDPOINT="$sqs_endpoint"
# Outage tests start and stop DynamoDB Local instances of their own from here.
TASKER_TEST_DYNAMODB_DIR=$(ls -d "$CACHE"/package/lib/dynamodb_local_*/ | tail -n 1)
export TASKER_TEST_DYNAMODB_DIR

echo "== cargo test"
results=$(mktemp -t tasker-test.XXXXXX.log)
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results"

echo "== schemathesis: openapi.yaml against a real tasker serve (every check, stateful too)"
scripts/schemathesis.sh

echo "== TypeScript client: generated types fresh, tsc --strict, node tests against tasker serve"
scripts/typescript-client.sh 2>&1 | tee -a "$results"

echo "== benchmark smoke run (every phase on tiny numbers; the real run is in docs/performance.md)"
# The binary `cargo build --workspace` made above: `cargo run -p tasker-bench` would resolve the
# bench's features alone and compile the AWS SDKs a second time.
"${CARGO_TARGET_DIR:-target}/debug/tasker-bench" --tasks 300 --http-tasks 30 --delay-tasks 20 \
  --mixed-tasks 100 --mixed-rate 50 --slow-ms 1000 \
  --crash-tasks 40 --crash-timeout 2 --crash-grace 1 \
  --sqs-tasks 100 --schedules 5 --schedule-seconds 3 \
  --scale-small 200 --scale-sqlite 1000 --scale-dynamodb 500 \
  --no-peer --no-lambda --json "$(mktemp -t tasker-bench.XXXXXX.json)" >/dev/null

echo "== local Lambda workflow (cargo lambda watch + invoke)"
PATH="$CACHE/venv/bin:$PATH" scripts/lambda-watch-e2e.sh

echo "== release Lambda build (sam build: cargo lambda build --release --arm64 per function; each binary at most 10 MB)"
PATH="$CACHE/venv/bin:$PATH" scripts/lambda-release-build.sh

# One closing line for the whole suite: every cargo test binary, the TypeScript client's
# tests, and the schemathesis and workflow runs above (one each).
awk '/^test result:/ { passed += $4; failed += $6 }
     /^ℹ pass / { passed += $3 } /^ℹ fail / { failed += $3 }
     END { printf "suite: %d passed, %d failed\n", passed + 2, failed }' "$results"
