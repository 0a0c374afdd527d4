#!/usr/bin/env bash
# The deployment template and the API contract, linted: cfn-lint and `sam validate --lint` with
# both values of the Dispatch parameter, and openapi-spec-validator on openapi.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TASKER_CACHE:-$HOME/.cache/tasker}"

echo "cfn-lint template.yaml (both Dispatch values)"
for dispatch in poll sqs; do
  "$CACHE/venv/bin/cfn-lint" --parameters "Dispatch=$dispatch" -- template.yaml
done
echo "sam validate --lint (both Dispatch values)"
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 "$CACHE/venv/bin/sam" validate --lint --template template.yaml
# sam validate takes no parameter values: the same template with SQS mode as its default.
sqs_template=$(mktemp -t template-sqs.XXXXXX.yaml)
sed 's/^    Default: poll$/    Default: sqs/' template.yaml >"$sqs_template"
grep -q '^    Default: sqs$' "$sqs_template"
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 "$CACHE/venv/bin/sam" validate --lint --template "$sqs_template"
echo "openapi-spec-validator openapi.yaml"
"$CACHE/venv/bin/openapi-spec-validator" openapi.yaml
