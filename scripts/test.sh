#!/usr/bin/env bash
# `npm test`: typecheck, type-aware lint, formatting (prettier --check; `npm
# run format` fixes it), then every test (unit, integration, end to end).
# Integration tests use the Redis at REDIS_URL (default 127.0.0.1:6379) and
# start a HAPI FHIR server themselves (H2, port HAPI_TEST_PORT=8091) unless
# FHIR_TEST_URL points at one. The HAPI
# compose-settings test needs PostgreSQL at PGHOST:PGPORT (127.0.0.1:5432, user
# postgres, trust auth); the observability test starts Debian's Prometheus.
# Extra arguments go to vitest, e.g. `npm test -- --project unit`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

# Tools the integration tests call; .ci/run installs them with apt-get.
missing=()
for tool in java:openjdk-17-jdk-headless mvn:maven curl:curl mosquitto_pub:mosquitto-clients openssl:openssl \
  psql:postgresql-client prometheus:prometheus promtool:prometheus chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: missing tools; install them with: apt-get install -y ${missing[*]} (or run bash .ci/run)" >&2
  exit 1
fi

ensure_node_modules
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis_up "$REDIS_URL"; then
  echo "test: Redis does not answer at $REDIS_URL — start one (e.g. redis-server --port 6379 --save '') or set REDIS_URL" >&2
  exit 1
fi
if [ -z "${FHIR_TEST_URL:-}" ]; then
  bash scripts/hapi.sh build
fi
echo "== typecheck"
npx tsc -p tsconfig.json --noEmit
npx tsc -p console/tsconfig.json
echo "== lint"
npx eslint .
npx prettier --check --log-level warn .
echo "== tests"
mkdir -p .run
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.run/vitest-report.json "$@" || status=$?
# One plain closing line for CI logs: "N passed, N failed".
node -e '
  const r = JSON.parse(require("node:fs").readFileSync(".run/vitest-report.json", "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
' || true
exit "$status"
