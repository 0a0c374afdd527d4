# Sourced by the suite's scripts: start_serve WORK PORT [VAR=value ...] starts `tasker serve`
# (the binary in $TASKER) on 127.0.0.1:PORT with a SQLite file in WORK, a clean environment
# plus the given variables and a 1 s interval; waits until /healthz answers; stops it on exit.
# Its log is WORK/serve.log, printed if it dies before answering.
start_serve() {
  local work=$1 port=$2
  shift 2
  env -i PATH="$PATH" RUST_LOG=warn TASKER_DB_PATH="$work/tasker.db" "$@" \
    "$TASKER" serve --listen "127.0.0.1:$port" --interval 1 >"$work/serve.log" 2>&1 &
  serve=$!
  trap 'kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$serve" 2>/dev/null || { cat "$work/serve.log" >&2; return 1; }
    sleep 0.1
  done
  echo "tasker serve did not answer /healthz within 10 s" >&2
  return 1
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
