#!/usr/bin/env bash
# End-to-end test of the local Lambda workflow of docs/operations.md: `cargo lambda watch` serves
# the Lambda runtime API and the function URLs, the four functions run against DynamoDB Local, a
# task is enqueued through the function URL path, the processor is invoked with the sample
# scheduled event, and the task must have succeeded; a second task is run by the worker from
# the sample SQS event. Then an application's own task type (examples/custom-type,
# docs/tasks.md): its `custom-tasker serve` runs one on SQLite, and its processor function,
# invoked the same way, one on DynamoDB Local.
#
# The functions are the binaries the workspace build made (`--only-lambda-apis`, each started
# here against the emulator): `cargo lambda watch` building each itself would compile Tasker
# once more per function, with that function's features alone.
# Needs: TASKER_TEST_DYNAMODB_ENDPOINT (scripts/test.sh sets it), cargo-lambda on PATH, and the
# workspace built (`cargo build --workspace`).
set -euo pipefail
cd "$(dirname "$0")/.."

endpoint="${TASKER_TEST_DYNAMODB_ENDPOINT:?start DynamoDB Local first (scripts/test.sh does)}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
watch_port=$(free_port)
hook_port=$(free_port)
table="tasker-watch-$RANDOM$RANDOM"
work=$(mktemp -d)
pids=()
bin="${CARGO_TARGET_DIR:-target}/debug"
cleanup() {
  # Each background job leads its own process group (setsid).
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

export AWS_ENDPOINT_URL_DYNAMODB="$endpoint" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_EC2_METADATA_DISABLED=true
"$bin/tasker" create-table --table "$table"

# A webhook receiver on 127.0.0.1 that records what it gets.
setsid python3 - "$hook_port" "$work/hooks.log" <<'PY' &
import http.server, sys
port, log = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(log, "a") as f:
            f.write(self.path + " " + self.headers.get("x-tasker-task-id", "-") + " " + body.decode() + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
pids+=($!)

setsid cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
  --timeout 60 >"$work/watch.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$watch_port") 2>/dev/null && break
  sleep 0.2
done
# Each function as Lambda runs it: the runtime API (the emulator's, by function name) and the
# variables Lambda sets, then the function's own.
for function in enqueue processor worker cleanup custom-processor; do
  setsid env AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$watch_port/.rt/$function" \
    AWS_LAMBDA_FUNCTION_NAME="$function" AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 \
    AWS_LAMBDA_FUNCTION_VERSION='$LATEST' AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/$function" \
    AWS_LAMBDA_LOG_STREAM_NAME=local TASKER_STORE=dynamodb TASKER_TABLE="$table" \
    TASKER_API_TOKEN=dev TASKER_WEBHOOK_ALLOW_PRIVATE=true \
    CHAT_WEBHOOK_URL="http://127.0.0.1:$hook_port/chat" RUST_LOG=info \
    "$bin/$function" >>"$work/watch.log" 2>&1 &
  pids+=($!)
done

fail() { echo "lambda-watch-e2e: $*" >&2; tail -n 40 "$work/watch.log" >&2; exit 1; }
passed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }

# Enqueue through the function URL path.
created=$(curl -sS --max-time 600 -X POST "http://127.0.0.1:$watch_port/lambda-url/enqueue/tasks" \
  -H 'authorization: Bearer dev' -H 'content-type: application/json' \
  -d "{\"type\":\"sendWebhook\",\"payload\":{\"url\":\"http://127.0.0.1:$hook_port/watch\",\"body\":{\"via\":\"cargo lambda watch\"}}}") \
  || fail "enqueue request failed"
id=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
  || fail "enqueue answered $created"
echo "enqueued $id"

summary=$(cargo lambda invoke processor --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
  --data-file events/scheduled-processor.json --output-format json) || fail "processor invoke failed"
echo "processor: $summary"
printf '%s' "$summary" | python3 -c 'import json,sys; s=json.load(sys.stdin); assert s["succeeded"] == 1, s' \
  || fail "processor summary $summary"

task=$(curl -sS --max-time 60 "http://127.0.0.1:$watch_port/lambda-url/enqueue/tasks/$id" -H 'authorization: Bearer dev')
printf '%s' "$task" | python3 -c 'import json,sys; t=json.load(sys.stdin); assert t["status"] == "succeeded", t' \
  || fail "task is $task"
grep -q "/watch $id {\"via\":\"cargo lambda watch\"}" "$work/hooks.log" || fail "the webhook did not arrive"
pass "a task enqueued through the enqueue function ran in the processor function"

# SQS mode's worker, invoked with the sample SQS event naming a second task.
created=$(curl -sS --max-time 60 -X POST "http://127.0.0.1:$watch_port/lambda-url/enqueue/tasks" \
  -H 'authorization: Bearer dev' -H 'content-type: application/json' \
  -d "{\"type\":\"sendWebhook\",\"payload\":{\"url\":\"http://127.0.0.1:$hook_port/worker\",\"body\":{\"via\":\"worker\"}}}") \
  || fail "second enqueue request failed"
id=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
  || fail "enqueue answered $created"
sed "s/01JD0000000000000000000000/$id/" events/sqs-worker.json >"$work/sqs-worker.json"
answer=$(cargo lambda invoke worker --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
  --data-file "$work/sqs-worker.json" --output-format json) || fail "worker invoke failed"
echo "worker: $answer"
printf '%s' "$answer" | python3 -c 'import json,sys; a=json.load(sys.stdin); assert a["batchItemFailures"] == [], a' \
  || fail "worker answered $answer"
task=$(curl -sS --max-time 60 "http://127.0.0.1:$watch_port/lambda-url/enqueue/tasks/$id" -H 'authorization: Bearer dev')
printf '%s' "$task" | python3 -c 'import json,sys; t=json.load(sys.stdin); assert t["status"] == "succeeded", t' \
  || fail "the worker's task is $task"
grep -q "/worker $id {\"via\":\"worker\"}" "$work/hooks.log" || fail "the worker's webhook did not arrive"
pass "the worker function ran the task its SQS event named"

# An application's own task type, through the example's binaries.
export CHAT_WEBHOOK_URL="http://127.0.0.1:$hook_port/chat"
custom_tasker() { "$bin/custom-tasker" "$@"; }
status_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
wait_for_chat() {
  for _ in $(seq 1 300); do
    grep -q "^/chat .*\"taskId\": *\"$1\"" "$work/hooks.log" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "the chat message of task $1 did not arrive"
}
# On SQLite: `custom-tasker serve` runs it as `tasker serve` runs a built-in one.
serve_port=$(free_port)
setsid env TASKER_DB_PATH="$work/custom.db" TASKER_STORE=sqlite RUST_LOG=warn \
  "$bin/custom-tasker" serve --listen "127.0.0.1:$serve_port" --interval 1 \
  >"$work/custom-serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$serve_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
created=$(curl -sS --max-time 30 -X POST "http://127.0.0.1:$serve_port/tasks" -H 'content-type: application/json' \
  -d '{"type":"notifyChat","payload":{"channel":"#ops","text":"from serve"}}') || fail "custom create failed"
id=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
  || fail "custom-tasker serve answered $created"
wait_for_chat "$id"
for _ in $(seq 1 100); do
  state=$(curl -sS "http://127.0.0.1:$serve_port/tasks/$id" | status_of)
  [ "$state" = succeeded ] && break
  sleep 0.1
done
[ "$state" = succeeded ] || fail "the custom task on SQLite is $state"
pass "custom-tasker serve ran an application's own task type on SQLite"
# Without its setting the application's binary does not start, and says which variable.
if refused=$(CHAT_WEBHOOK_URL= custom_tasker stats --db "$work/never.db" 2>&1); then fail "custom-tasker started without CHAT_WEBHOOK_URL"; fi
grep -q CHAT_WEBHOOK_URL <<<"$refused" || fail "the refusal does not name CHAT_WEBHOOK_URL: $refused"
pass "custom-tasker refuses to start without CHAT_WEBHOOK_URL, naming it"
# On DynamoDB Local: created with the example's CLI, run by its processor function.
id=$(custom_tasker create --store dynamodb --table "$table" --type notifyChat --json \
  --payload '{"channel":"#ops","text":"from the processor function"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
  || fail "custom-tasker create failed"
summary=$(cargo lambda invoke custom-processor --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
  --data-file events/scheduled-processor.json --output-format json) || fail "custom processor invoke failed"
echo "custom processor: $summary"
wait_for_chat "$id"
state=$(custom_tasker show "$id" --store dynamodb --table "$table" --json | status_of)
[ "$state" = succeeded ] || fail "the custom task on DynamoDB is $state"
pass "the application's processor function ran its own task type on DynamoDB Local"

cleaned=$(cargo lambda invoke cleanup --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
  --data-file events/scheduled-cleanup.json --output-format json) || fail "cleanup invoke failed"
echo "cleanup: $cleaned"
printf '%s' "$cleaned" | python3 -c 'import json,sys; c=json.load(sys.stdin); assert c["sweepComplete"] is True, c' \
  || fail "cleanup answered $cleaned"
pass "the cleanup function ran"
echo "lambda-watch-e2e: $passed passed, 0 failed"
