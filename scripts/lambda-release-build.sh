#!/usr/bin/env bash
# Release build of the three Lambda functions exactly as a deploy makes them: one
# `cargo lambda build --release --arm64` per function, as `sam build` runs it, so each links
# only its own cargo features. Then their sizes; fails when a binary is over 10 MB.
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
for function in enqueue processor cleanup; do
  cargo lambda build --release --arm64 --locked --bin "$function"
done
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
