#!/usr/bin/env bash
# npm run bench [-- --short] [-- other bench/end-to-end.ts flags]
#
# One command, one run: starts a HAPI FHIR server on the machine's PostgreSQL
# on a free port (its own database, bench_<port>; dropped afterwards) unless
# FHIR_URL names a running one, runs bench/end-to-end.ts against it (the FHIR
# ceiling, acknowledgements against Mosquitto, the pipeline, latency, CPU,
# RSS; exits 1 if a message is lost or doubled), the ceiling and the pipeline
# again with the FHIR server and the pipeline on CPUs of their own (--partition,
# when the server runs on this machine), then the analytics mirror's
# own ceiling (bench/analytics-mirror.ts, the embedded ClickHouse engine), and
# stops what it started. Figures: docs/performance.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

short=""
for a in "$@"; do [ "$a" = "--short" ] && short=1; done

started_port=""
cleanup() {
  local code=$?
  if [ -n "$started_port" ]; then
    bash scripts/hapi.sh stop --port "$started_port" >/dev/null 2>&1 || true
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS bench_$started_port" >/dev/null 2>&1 || true
  fi
  exit "$code"
}
trap cleanup EXIT

if [ -z "${FHIR_URL:-}" ]; then
  port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
  started_port="$port"
  echo "== bench: HAPI on PostgreSQL (database bench_$port) on port $port"
  HAPI_JDBC_URL="jdbc:postgresql://127.0.0.1:5432/bench_$port" \
    bash scripts/hapi.sh start --db postgres --port "$port" --timeout "${HAPI_START_TIMEOUT:-900}"
  export FHIR_URL="http://127.0.0.1:$port/fhir"
fi

echo "== bench: end to end ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
npx tsx bench/end-to-end.ts "$@"

# On one machine the pipeline's CPU is taken from the FHIR server's, while the
# loader takes almost none: the ratio above measures the sharing as much as the
# pipeline. Again with the server (java, PostgreSQL) on half the CPUs and the
# pipeline on the other half, as where the FHIR server has hosts of its own.
fhir_port="$(node -e 'console.log(new URL(process.argv[1]).port || 80)' "$FHIR_URL")"
if [ -z "$short" ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null &&
  ss -ltnpH "sport = :$fhir_port" | grep -q 'pid='; then
  echo "== bench: the FHIR server and the pipeline on CPUs of their own (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  npx tsx bench/end-to-end.ts --only ceiling,pipeline --partition "$@"
fi

if [ -z "$short" ]; then
  echo "== bench: the analytics mirror's own ceiling (embedded ClickHouse, rollups included)"
  npx tsx bench/analytics-mirror.ts --hours 4
fi
