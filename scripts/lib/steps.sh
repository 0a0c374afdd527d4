# Sourced by scripts/test.sh: runs the suite's steps, in the foreground or beside each other,
# each with its output in a log of its own (printed whole when it ends), and counts what ran.
#
#   step NAME COMMAND...        runs it now
#   background NAME COMMAND...  starts it; `finish` waits for it
#   await_step NAME             waits for the background step NAME to end
#   passed NAME                 true when the step ended successfully
#   skip NAME...                counts steps that could not run (their prerequisite failed)
#   finish                      waits for every step, prints their times and the closing line
#                               `suite: N passed, M failed`, and exits non-zero on any failure
#
# A step that reports its own tests is counted by them (cargo-nextest's summary, node's test
# runner, the Lambda workflow's line); any other step counts as one check. A step that failed
# without reporting a failed test counts one failure more, so a crash is never counted green.

STEPS_DIR=$(mktemp -d -t tasker-steps.XXXXXX)
STEPS_STARTED=$(date +%s)
STEPS_PIDS=()

run_step() {
  local name=$1
  shift
  local log="$STEPS_DIR/$name.log" started status
  started=$(date +%s)
  # In a subshell of its own, whose `times` then hold the CPU the step's processes used.
  (
    "$@" </dev/null
    step_status=$?
    times >"$STEPS_DIR/$name.times"
    exit "$step_status"
  ) >"$log" 2>&1
  status=$?
  local took=$(($(date +%s) - started))
  local ended=$(($(date +%s) - STEPS_STARTED))
  echo "$status $took $ended $(cpu_seconds "$STEPS_DIR/$name.times")" >"$STEPS_DIR/$name.status"
  local verdict=passed
  [ "$status" -eq 0 ] || verdict="FAILED (exit $status)"
  # One log at a time, whole, so steps that end together do not interleave.
  {
    flock 9
    echo "== $name: $verdict in ${took}s (at ${ended}s)"
    cat "$log"
  } 9>"$STEPS_DIR/print.lock"
  return "$status"
}

# User plus system seconds of a step's processes, from `times`' second line ("0m12.3s 0m1.2s").
cpu_seconds() {
  [ -f "$1" ] || { echo 0; return; }
  sed -n 2p "$1" | awk '{
    total = 0
    for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] }
    printf "%d", total }'
}

# CPU seconds a long-lived process (a service no step counts) and its reaped children have
# used so far, from /proc/PID/stat; "?" once it is gone.
process_cpu() {
  awk -v tick="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15 + $16 + $17) / tick }' \
    "/proc/$1/stat" 2>/dev/null || echo "?"
}

# Busy and total jiffies of every CPU since boot, from /proc/stat.
cpu_jiffies() {
  awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; total = busy + $5 + $6; print busy, total }' /proc/stat
}
STEPS_CPU_START=$(cpu_jiffies)

step() {
  run_step "$@"
}

background() {
  run_step "$@" &
  STEPS_PIDS+=($!)
  eval "STEP_PID_${1//-/_}=$!"
}

# Waits for the background step NAME to end (its log is printed as it ends).
await_step() {
  local var="STEP_PID_${1//-/_}"
  [ -n "${!var:-}" ] && wait "${!var}"
  return 0
}

passed() {
  [ -f "$STEPS_DIR/$1.status" ] && [ "$(cut -d' ' -f1 "$STEPS_DIR/$1.status")" = 0 ]
}

skip() {
  for name in "$@"; do
    echo "== $name: not run (a step it needs failed)"
    echo "skipped 0 0 0" >"$STEPS_DIR/$name.status"
  done
}

# The tests `name` reports as "passed failed", from its log; nothing when it reports none.
reported_tests() {
  local log="$STEPS_DIR/$1.log"
  case $1 in
    tests)
      # "Summary [ 300.1s] 372 tests run: 369 passed (2 slow), 2 failed, 1 timed out, 0 skipped"
      grep -E '^ *Summary \[' "$log" | tail -n 1 | awk '{
        passed = 0; failed = 0
        for (i = 1; i <= NF; i++) {
          if ($(i + 1) ~ /^passed/) passed = $i
          if ($(i + 1) ~ /^failed/ || ($(i + 1) == "timed" && $(i + 2) ~ /^out/)) failed += $i
        }
        print passed, failed }' ;;
    typescript-client)
      awk '/^ℹ pass / { p = $3 } /^ℹ fail / { f = $3 } END { if (p != "") print p, f + 0 }' "$log" ;;
    lambda-workflow)
      sed -nE 's/^lambda-watch-e2e: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$log" | tail -n 1 ;;
  esac
}

finish() {
  for pid in "${STEPS_PIDS[@]}"; do
    wait "$pid"
  done
  local total_passed=0 total_failed=0 skipped=0
  echo "== steps (seconds taken, when each ended, and its processes' CPU seconds)"
  for file in "$STEPS_DIR"/*.status; do
    local name status took ended cpu
    name=$(basename "$file" .status)
    read -r status took ended cpu <"$file"
    if [ "$status" = skipped ]; then
      skipped=$((skipped + 1))
      printf '%-20s %s\n' "$name" "not run"
      continue
    fi
    local counts p f
    counts=$(reported_tests "$name")
    if [ -n "$counts" ]; then
      read -r p f <<<"$counts"
    elif [ "$status" -eq 0 ]; then
      p=1 f=0
    else
      p=0 f=0
    fi
    # A failure that no reported test accounts for (a crash, a build error) is one more.
    [ "$status" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    printf '%-20s %5ss %6ss %6ss cpu  %s passed, %s failed\n' "$name" "$took" "$ended" "$cpu" "$p" "$f"
  done
  local busy_start total_start busy_end total_end
  read -r busy_start total_start <<<"$STEPS_CPU_START"
  read -r busy_end total_end < <(cpu_jiffies)
  echo "whole run: $(($(date +%s) - STEPS_STARTED)) s, the machine's CPUs busy" \
    "$((100 * (busy_end - busy_start) / (total_end - total_start + 1))) % of it"
  echo "suite: $total_passed passed, $((total_failed + skipped)) failed"
  [ "$total_failed" -eq 0 ] && [ "$skipped" -eq 0 ]
  exit $?
}

# The workspace's own crates compile again on every run (a fresh clone has other paths, so
# other artifact names); their old artifacts are removed from the kept target directories so
# that these hold the dependencies only and do not grow run after run.
prune_workspace_artifacts() {
  local crates="tasker tasker_cli tasker_tests tasker_bench enqueue processor cleanup worker
    custom_type custom_tasker custom_processor custom_enqueue suite write_units"
  for dir in "$@"; do
    [ -d "$dir" ] || continue
    for crate in $crates; do
      find "$dir" -mindepth 3 -maxdepth 4 \( -path '*/deps/*' -o -path '*/.fingerprint/*' \) \
        \( -name "$crate-*" -o -name "lib$crate-*" \) -prune -exec rm -rf {} + 2>/dev/null
    done
  done
  return 0
}
