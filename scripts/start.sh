#!/usr/bin/env bash
# `npm start`: the whole pipeline on one machine, with its local services and
# the device simulator, printing what arrives in HAPI FHIR and ClickHouse.
#
#   npm start                         run until Ctrl-C
#   npm start -- --devices 10 --rate 2
#   npm start -- --smoke              exit 0 once Observations are in HAPI and ClickHouse
#
# Services: Redis at REDIS_URL (started here on 6379 if nothing answers), HAPI
# FHIR built and started on HAPI_PORT (8090) with the machine's PostgreSQL at
# 127.0.0.1:5432 when it answers (H2 in memory otherwise). The MQTT broker takes
# MQTT_PORT (1883, or the next free port when 1883 is taken, e.g. by Mosquitto).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

DEVICES=5
RATE=1
SMOKE=0
SMOKE_TIMEOUT=300
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) DEVICES="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p .run
STARTED_REDIS=""
STARTED_HAPI=""
PIPELINE_PID=""
SIM_PID=""
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  echo
  echo "== stopping"
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  [ -n "$PIPELINE_PID" ] && kill "$PIPELINE_PID" 2>/dev/null && wait "$PIPELINE_PID" 2>/dev/null || true
  [ -n "$STARTED_HAPI" ] && bash scripts/hapi.sh stop --port "$HAPI_PORT" || true
  [ -n "$STARTED_REDIS" ] && redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_node_modules

# 1. Redis
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis_up "$REDIS_URL"; then
  echo "== starting redis-server on 6379 (AOF on, data in .run/redis)"
  mkdir -p .run/redis
  redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --appendonly yes --dir "$PWD/.run/redis" --logfile "$PWD/.run/redis.log"
  STARTED_REDIS=1
  for _ in $(seq 50); do redis_up "$REDIS_URL" && break; sleep 0.1; done
fi

# 2. HAPI FHIR
export HAPI_PORT="${HAPI_PORT:-8090}"
export FHIR_URL="${FHIR_URL:-http://127.0.0.1:$HAPI_PORT/fhir}"
if curl -sf -o /dev/null "$FHIR_URL/metadata"; then
  echo "== using the FHIR server already answering at $FHIR_URL"
else
  DB=h2
  if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then DB=postgres; fi
  echo "== starting HAPI FHIR ($DB) on port $HAPI_PORT — the first build downloads from Maven Central"
  bash scripts/hapi.sh start --db "$DB" --port "$HAPI_PORT"
  STARTED_HAPI=1
fi

# 3. The pipeline: broker + workers + admin in one process.
if [ -z "${MQTT_PORT:-}" ]; then
  MQTT_PORT=$(first_free_port 1883)
  [ "$MQTT_PORT" != 1883 ] && echo "== port 1883 is taken (Mosquitto?): the broker uses MQTT_PORT=$MQTT_PORT"
fi
export MQTT_PORT
export ADMIN_PORT="${ADMIN_PORT:-$(first_free_port 8088)}"
export LOG_LEVEL="${LOG_LEVEL:-info}"
# The admin API (metrics, queries) always needs a bearer token: make one for
# this machine once, readable only by its owner.
if [ -z "${ADMIN_TOKEN:-}" ]; then
  if [ ! -s .run/admin-token ]; then
    (umask 077; node -e 'process.stdout.write(require("node:crypto").randomBytes(24).toString("hex"))' >.run/admin-token)
  fi
  ADMIN_TOKEN="$(cat .run/admin-token)"
fi
export ADMIN_TOKEN
# The operator console (/console) is built by `npm run build`; build it once here if missing.
if [ ! -f dist/console/index.html ]; then
  echo "== building the operator console (dist/console)"
  npx vite build console --logLevel warn
fi
echo "== starting the pipeline (iomt all): MQTT on $MQTT_PORT, admin on $ADMIN_PORT, logs in .run/pipeline.log"
node bin/iomt.mjs all >.run/pipeline.log 2>&1 &
PIPELINE_PID=$!
for _ in $(seq 120); do
  curl -sf -o /dev/null -H "authorization: Bearer ${ADMIN_TOKEN:-}" "http://127.0.0.1:$ADMIN_PORT/readyz" && break
  kill -0 "$PIPELINE_PID" 2>/dev/null || { echo "start: the pipeline exited:"; tail -20 .run/pipeline.log; exit 1; }
  sleep 0.5
done

count_fhir() {
  curl -sf -H 'cache-control: no-cache' "$FHIR_URL/Observation?_summary=count" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).total??0)}catch{console.log(0)}})'
}
count_clickhouse() {
  curl -sf -X POST -H 'content-type: application/json' -H "authorization: Bearer ${ADMIN_TOKEN:-}" \
    -d '{"sql":"SELECT count() AS n FROM observations FINAL","format":"JSONEachRow"}' \
    "http://127.0.0.1:$ADMIN_PORT/api/analytics/query" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(Number(JSON.parse(s).n))}catch{console.log(0)}})'
}

# What was there before this run (a dev database keeps earlier runs' data):
# --smoke asks for new Observations, not old ones.
base_fhir=$(count_fhir || echo 0)
base_ch=$(count_clickhouse || echo 0)

# 4. The simulator.
echo "== simulating $DEVICES bedside monitors at $RATE msg/s each (logs in .run/simulator.log)"
node bin/iomt.mjs simulate --devices "$DEVICES" --rate "$RATE" >.run/simulator.log 2>&1 &
SIM_PID=$!

cat <<INFO

Operator console: http://127.0.0.1:$ADMIN_PORT/console/  (sign in with the admin token in .run/admin-token)

Observations are arriving. See them:
  FHIR      curl '$FHIR_URL/Observation?_sort=-_lastUpdated&_count=5'
  patient   curl '$FHIR_URL/Observation?subject=Patient/sim-patient-001&_count=5'
  ClickHouse  ADMIN_PORT=$ADMIN_PORT ADMIN_TOKEN=\$(cat .run/admin-token) node bin/iomt.mjs query "SELECT patient_id, code, value_num, effective_start FROM observations ORDER BY effective_start DESC LIMIT 10"
  metrics   curl -H "authorization: Bearer \$(cat .run/admin-token)" http://127.0.0.1:$ADMIN_PORT/metrics
Ctrl-C stops everything this script started.

INFO

start_time=$(date +%s)
while true; do
  sleep 5
  kill -0 "$PIPELINE_PID" 2>/dev/null || { echo "start: the pipeline stopped:"; tail -20 .run/pipeline.log; exit 1; }
  fhir=$(count_fhir || echo 0)
  ch=$(count_clickhouse || echo 0)
  sim=$(tail -1 .run/simulator.log 2>/dev/null || true)
  echo "$(date +%T)  HAPI: ${fhir:-0} Observations   ClickHouse: ${ch:-0} rows   ${sim#simulator: }"
  if [ "$SMOKE" = 1 ]; then
    if [ "${fhir:-0}" -gt "${base_fhir:-0}" ] && [ "${ch:-0}" -gt "${base_ch:-0}" ]; then
      echo "smoke: $(( fhir - base_fhir )) new Observations in HAPI and $(( ch - base_ch )) new rows in ClickHouse after $(( $(date +%s) - start_time )) s"
      exit 0
    fi
    if [ $(( $(date +%s) - start_time )) -gt "$SMOKE_TIMEOUT" ]; then
      echo "smoke: nothing arrived within $SMOKE_TIMEOUT s" >&2
      tail -30 .run/pipeline.log >&2
      exit 1
    fi
  fi
done
