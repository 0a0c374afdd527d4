#!/usr/bin/env bash
# The TypeScript client (clients/typescript): installs its npm packages from the lock file,
# checks src/schema.ts is what openapi-typescript makes of openapi.yaml today, type-checks it
# with tsc --strict, and runs its tests with node's test runner against a real `tasker serve`
# (SQLite, a token, a webhook secret; webhooks go to a receiver on 127.0.0.1 only).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
TASKER="${TASKER_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/tasker}"
work=$(mktemp -d -t tasker-ts.XXXXXX)
source scripts/lib/serve.sh
cd clients/typescript

npm ci --cache "$CACHE/npm" --prefer-offline --no-audit --no-fund --loglevel=error
npx --no-install openapi-typescript "$root/openapi.yaml" --output "$work/schema.ts" >/dev/null
if ! diff -u src/schema.ts "$work/schema.ts"; then
  echo "clients/typescript/src/schema.ts is stale: run \`npm run generate\` in clients/typescript" >&2
  exit 1
fi
rm -rf dist
npx --no-install tsc -p tsconfig.json

port=$(free_port)
export TASKER_URL="http://127.0.0.1:$port" TASKER_TOKEN="ts-$RANDOM$RANDOM" TASKER_WEBHOOK_SECRET="ts-secret-$RANDOM"
start_serve "$work" "$port" TASKER_API_TOKEN="$TASKER_TOKEN" \
  TASKER_WEBHOOK_SECRET="$TASKER_WEBHOOK_SECRET" TASKER_WEBHOOK_ALLOW_PRIVATE=true \
  TASKER_KEY_LIMITS='[{"keyPrefix": "ts-rate-", "rate": "1/1h"}]'
node --test --test-reporter=spec dist/test/
