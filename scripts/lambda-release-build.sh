#!/usr/bin/env bash
# Release build of the three Lambda functions exactly as a deploy makes them
# (`cargo lambda build --release --arm64`), then their sizes; fails when a binary is over 10 MB.
# Needs cargo-lambda (with zig) on PATH; honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=10000000
target="${CARGO_TARGET_DIR:-target}"
if command -v rustup >/dev/null 2>&1 \
  && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi
start=$(date +%s)
cargo lambda build --release --arm64 --locked \
  --bin enqueue --bin processor --bin cleanup
echo "release build took $(( $(date +%s) - start )) s"
status=0
for function in enqueue processor cleanup; do
  binary="$target/lambda/$function/bootstrap"
  bytes=$(stat -c %s "$binary")
  printf '%-10s %9d bytes (%s MiB)\n' "$function" "$bytes" \
    "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
  if [ "$bytes" -gt "$limit" ]; then
    echo "error: $binary is over $limit bytes" >&2
    status=1
  fi
done
exit $status
