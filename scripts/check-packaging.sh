#!/usr/bin/env bash
# Packaging checks without Docker (no Docker engine where CI runs), in a
# scratch copy of package.json + package-lock.json:
#
#   1. `npm ci` with npm 10 (what node:20/22 images bundle) installs the lock
#      unchanged, chdb's engine included, and the engine answers a query.
#      (npm 11, the machine's, already installed the checkout: scripts/lib.sh.)
#   2. The server image's runtime install, as the Dockerfile runs it with
#      CLICKHOUSE_EMBEDDED=false: `npm ci --omit=dev --omit=optional` leaves
#      chdb out; the compiled CLI then starts `iomt all` in server mode
#      (CLICKHOUSE_URL set) from that install, answers /healthz and
#      /readyz on METRICS_PORT, and never needs the engine.
#
#   scripts/check-packaging.sh            both
#   NPM10=10.9.9 scripts/check-packaging.sh
#
# Needs Redis at REDIS_URL (default redis://127.0.0.1:6379) and a FHIR server
# at FHIR_URL for step 2's readiness (default http://127.0.0.1:8091/fhir; it is
# reported, not required: the check is that the process runs without chdb).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

NPM10="${NPM10:-10.9.9}"
REPO="$PWD"
SCRATCH="$(mktemp -d /tmp/iomt-packaging.XXXXXX)"
PID=""
PREFIX="ci-packaging-$$"
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  # The queues and template versions step 2 created under its own prefix.
  if command -v redis-cli >/dev/null; then
    redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern "$PREFIX:*" 2>/dev/null \
      | xargs -r -n 500 redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" del >/dev/null 2>&1 || true
  fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

lock_sum() { sha256sum "$1/package-lock.json" | cut -d' ' -f1; }

# ---- 1. npm 10: the full install ----------------------------------------------
mkdir -p "$SCRATCH/full"
cp package.json package-lock.json "$SCRATCH/full/"
echo "== npm ci with npm $NPM10 (full install)"
(cd "$SCRATCH/full" && npx -y "npm@$NPM10" --version && npx -y "npm@$NPM10" ci --no-audit --no-fund --loglevel=error)
[ "$(lock_sum "$SCRATCH/full")" = "$(lock_sum "$REPO")" ] || { echo "packaging: npm $NPM10 ci changed package-lock.json" >&2; exit 1; }
(cd "$SCRATCH/full" && node --input-type=module -e "
  import { query } from 'chdb';
  const v = query('SELECT 40 + 2', 'CSV').trim();
  if (v !== '42') { console.error('chdb answered ' + v); process.exit(1); }
  console.log('packaging: npm $NPM10 ci installed chdb; the engine answers');
")

# ---- 2. the server image's runtime: no dev, no optional (no chdb) ---------------
mkdir -p "$SCRATCH/server"
cp package.json package-lock.json "$SCRATCH/server/"
echo "== npm ci --omit=dev --omit=optional with npm $NPM10 (the server image's install)"
(cd "$SCRATCH/server" && npx -y "npm@$NPM10" ci --omit=dev --omit=optional --no-audit --no-fund --loglevel=error)
# (npm may leave the empty @chdb scope folder behind: only its content counts.)
if [ -e "$SCRATCH/server/node_modules/chdb" ] || [ -n "$(ls -A "$SCRATCH/server/node_modules/@chdb" 2>/dev/null)" ]; then
  echo "packaging: chdb is installed although optional dependencies were omitted" >&2
  exit 1
fi
echo "packaging: server install $(du -sh "$SCRATCH/server/node_modules" | cut -f1) of node_modules, chdb absent"
echo "== compiling (tsc -p tsconfig.build.json) into the scratch install, as the image's build stage does"
npx tsc -p tsconfig.build.json --outDir "$SCRATCH/server/dist"
cp -r bin mappings "$SCRATCH/server/"

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
redis_up "$REDIS_URL" || { echo "packaging: Redis does not answer at $REDIS_URL" >&2; exit 1; }
METRICS_PORT="$(first_free_port 19464)"
TOKEN="$(node -e 'process.stdout.write(require("node:crypto").randomBytes(24).toString("hex"))')"
LOG="$SCRATCH/server.log"
echo "== iomt all in server mode from that install (METRICS_PORT=$METRICS_PORT)"
(cd "$SCRATCH/server" && exec env -i PATH="$PATH" HOME="$SCRATCH" NODE_ENV=production \
  REDIS_URL="$REDIS_URL" QUEUE_PREFIX="$PREFIX" \
  FHIR_URL="${FHIR_URL:-http://127.0.0.1:8091/fhir}" \
  CLICKHOUSE_URL=http://127.0.0.1:9/ MQTT_HOST=127.0.0.1 MQTT_PORT=0 ADMIN_PORT=0 \
  METRICS_PORT="$METRICS_PORT" ADMIN_TOKEN="$TOKEN" MAPPINGS_DIR="$SCRATCH/server/mappings" \
  node bin/iomt.mjs all) >"$LOG" 2>&1 &
PID=$!
ok=""
for _ in $(seq 120); do
  kill -0 "$PID" 2>/dev/null || break
  if curl -sf -o /dev/null "http://127.0.0.1:$METRICS_PORT/healthz"; then ok=1; break; fi
  sleep 0.5
done
if [ -z "$ok" ]; then
  echo "packaging: the server-mode process did not answer /healthz; its log:" >&2
  tail -30 "$LOG" >&2
  exit 1
fi
ready="$(curl -s -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$METRICS_PORT/readyz")"
echo "packaging: /readyz -> $ready"
echo "$ready" | grep -q '"clickhouse":' || { echo "packaging: no clickhouse check in /readyz" >&2; exit 1; }
(cd "$SCRATCH/server" && node bin/iomt.mjs --version)
if grep -qi 'chdb' "$LOG"; then
  echo "packaging: the server-mode process mentions chdb:" >&2
  grep -i chdb "$LOG" >&2
  exit 1
fi
echo "packaging: server mode runs without the embedded engine (ClickHouse at CLICKHOUSE_URL is down here: the mirror retries)"
