#!/usr/bin/env bash
# Release build of the four Lambda functions exactly as a deploy makes them: `sam build`,
# which runs `cargo lambda build --release --arm64` once per function in the function's own
# package directory (the template's CodeUri), so cargo resolves that package's features alone
# and each links only what it runs. Then their sizes; fails when a binary is over 10 MB.
# Needs sam and cargo-lambda (with zig) on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=10000000
if command -v rustup >/dev/null 2>&1 \
  && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi
start=$(date +%s)
SAM_CLI_TELEMETRY=0 sam build --beta-features --template template.yaml
echo "release build took $(( $(date +%s) - start )) s"
status=0
for function in enqueue processor cleanup worker; do
  resource="${function^}Function"
  binary=".aws-sam/build/$resource/bootstrap"
  bytes=$(stat -c %s "$binary")
  printf '%-10s %9d bytes (%s MiB)\n' "$function" "$bytes" \
    "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
  if [ "$bytes" -gt "$limit" ]; then
    echo "error: $binary is over $limit bytes" >&2
    status=1
  fi
done
exit $status
