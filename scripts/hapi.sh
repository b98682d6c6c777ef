#!/usr/bin/env bash
# Build, start, stop and inspect the local HAPI FHIR R4 JPA server
# (services/hapi-fhir). Base URL: http://127.0.0.1:<port>/fhir
#
#   scripts/hapi.sh build
#   scripts/hapi.sh start  [--db h2|postgres] [--port N] [--timeout S]
#   scripts/hapi.sh stop   [--port N]
#   scripts/hapi.sh status [--port N]
#
# Environment (flags win over env):
#   HAPI_PORT (8090)  HAPI_DB (h2|postgres, default h2)
#   HAPI_JDBC_URL / HAPI_JDBC_USER / HAPI_JDBC_PASSWORD
#       postgres defaults: jdbc:postgresql://127.0.0.1:5432/hapi, postgres, (none)
#   HAPI_START_TIMEOUT (240 s)  HAPI_STOP_TIMEOUT (30 s)
#   HAPI_JAVA_OPTS (replaces the default JVM flags)  HAPI_RUN_DIR (<repo>/.run)
#   Read by the server itself: HAPI_BIND (127.0.0.1), HAPI_DB_POOL (30),
#   HAPI_TOMCAT_THREADS (64), HAPI_PAGE_SIZE (20), HAPI_MAX_PAGE_SIZE (1000),
#   HAPI_MASS_INGESTION (false; see services/hapi-fhir/README.md)
#
# start exits 0 once GET /fhir/metadata answers 200 and prints the boot time;
# status exits 0 (up), 1 (not running) or 2 (running, /metadata not 200).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
SVC_DIR="$REPO_ROOT/services/hapi-fhir"
JAR="$SVC_DIR/target/hapi-fhir-launcher.jar"
RUN_DIR="${HAPI_RUN_DIR:-$REPO_ROOT/.run}"

PORT="${HAPI_PORT:-8090}"
DB="${HAPI_DB:-h2}"
START_TIMEOUT="${HAPI_START_TIMEOUT:-240}"
STOP_TIMEOUT="${HAPI_STOP_TIMEOUT:-30}"
# ParallelGC: best throughput on 2 cores, and the heap is small. Full JIT (no
# TieredStopAtLevel) because tests run real load after boot.
DEFAULT_JAVA_OPTS="-Xms256m -Xmx1g -XX:+UseParallelGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Dfile.encoding=UTF-8"
JAVA_OPTS="${HAPI_JAVA_OPTS:-$DEFAULT_JAVA_OPTS}"

log() { echo "hapi: $*"; }
die() { echo "hapi: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() {
  # the comment block at the top of this file
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

parse_flags() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --db) [ $# -ge 2 ] || die "--db needs a value"; DB="$2"; shift 2 ;;
      --db=*) DB="${1#*=}"; shift ;;
      --port) [ $# -ge 2 ] || die "--port needs a value"; PORT="$2"; shift 2 ;;
      --port=*) PORT="${1#*=}"; shift ;;
      --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; START_TIMEOUT="$2"; shift 2 ;;
      --timeout=*) START_TIMEOUT="${1#*=}"; shift ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown argument: $1 (see: $0 --help)" ;;
    esac
  done
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "port must be a number (HAPI_PORT / --port), got '$PORT'"
  case "$DB" in h2|postgres) ;; *) die "db must be h2 or postgres (HAPI_DB / --db), got '$DB'" ;; esac
  PID_FILE="$RUN_DIR/hapi-$PORT.pid"
  LOG_FILE="$RUN_DIR/hapi-$PORT.log"
  BASE_URL="http://127.0.0.1:$PORT/fhir"
}

# pid from the pid file if that process is alive and is our jar; else empty.
running_pid() {
  [ -f "$PID_FILE" ] || return 0
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
      && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'hapi-fhir-launcher.jar'; then
    echo "$pid"
  fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

metadata_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$BASE_URL/metadata" 2>/dev/null || true; }

needs_build() {
  [ -f "$JAR" ] || return 0
  [ -n "$(find "$SVC_DIR/pom.xml" "$SVC_DIR/src" -newer "$JAR" -print -quit)" ]
}

cmd_build() {
  command -v mvn >/dev/null || die "mvn not found (Maven 3.8+ and Java 17 are needed)"
  command -v java >/dev/null || die "java not found (Java 17 is needed)"
  if ! needs_build; then
    log "jar is up to date: $JAR"
    return 0
  fi
  mkdir -p "$RUN_DIR"
  local build_log="$RUN_DIR/hapi-build.log" t0 pid
  log "building $JAR (mvn package; a first build downloads ~300 MB from Maven Central)"
  t0="$(now)"
  (cd "$SVC_DIR" && exec mvn -q -B package -DskipTests) >"$build_log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    kill -0 "$pid" 2>/dev/null && log "  still building... $(elapsed "$t0")s"
  done
  if ! wait "$pid"; then
    echo "---- last lines of $build_log ----" >&2
    tail -n 40 "$build_log" >&2
    die "build failed after $(elapsed "$t0")s (full log: $build_log)"
  fi
  [ -f "$JAR" ] || die "build finished but $JAR is missing"
  touch "$JAR"  # newer than every source, so the next build is skipped
  log "built in $(elapsed "$t0")s: $JAR"
}

# Parses HAPI_JDBC_URL and creates the database if missing (trust auth expected).
ensure_postgres_db() {
  local url="${HAPI_JDBC_URL:-jdbc:postgresql://127.0.0.1:5432/hapi}"
  local user="${HAPI_JDBC_USER:-postgres}"
  local re='^jdbc:postgresql://([^:/?]+)(:([0-9]+))?/([^?]+)'
  [[ "$url" =~ $re ]] || die "cannot parse HAPI_JDBC_URL '$url'"
  local host="${BASH_REMATCH[1]}" pgport="${BASH_REMATCH[3]:-5432}" dbname="${BASH_REMATCH[4]}"
  command -v psql >/dev/null || die "psql not found; cannot check database '$dbname'"
  [[ "$dbname" =~ ^[A-Za-z0-9_]+$ ]] || die "unsupported database name '$dbname'"
  local exists
  exists="$(PGPASSWORD="${HAPI_JDBC_PASSWORD:-}" psql -h "$host" -p "$pgport" -U "$user" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$dbname'" 2>&1)" \
    || die "cannot reach PostgreSQL at $host:$pgport as $user: $exists"
  if [ "$exists" != "1" ]; then
    log "creating PostgreSQL database '$dbname' on $host:$pgport"
    PGPASSWORD="${HAPI_JDBC_PASSWORD:-}" psql -q -h "$host" -p "$pgport" -U "$user" -d postgres \
      -c "CREATE DATABASE \"$dbname\"" >/dev/null
  fi
}

fail_start() {  # $1 = message; kills a half-started server and shows the log tail
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  echo "---- last lines of $LOG_FILE ----" >&2
  tail -n 60 "$LOG_FILE" >&2 || true
  die "$1 (full log: $LOG_FILE)"
}

cmd_start() {
  local pid
  pid="$(running_pid)"
  if [ -n "$pid" ]; then
    log "already running on port $PORT (pid $pid); $BASE_URL"
    return 0
  fi
  rm -f "$PID_FILE"
  command -v curl >/dev/null || die "curl not found"
  if port_busy "$PORT"; then
    die "port $PORT is already in use by another process; choose a free one with HAPI_PORT=<port> or --port <port>"
  fi
  cmd_build
  if [ "$DB" = "postgres" ]; then ensure_postgres_db; fi
  mkdir -p "$RUN_DIR"

  local t0
  t0="$(now)"
  log "starting (db=$DB, port=$PORT, log=$LOG_FILE)"
  # setsid: own session, so a Ctrl-C aimed at the caller does not kill the server.
  # shellcheck disable=SC2086  # JAVA_OPTS is a list of flags
  HAPI_PORT="$PORT" HAPI_DB="$DB" setsid java $JAVA_OPTS -jar "$JAR" </dev/null >"$LOG_FILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"

  local deadline code
  deadline=$(( $(date +%s) + START_TIMEOUT ))
  while :; do
    kill -0 "$pid" 2>/dev/null || fail_start "server process $pid exited during startup"
    code="$(metadata_code)"
    [ "$code" = "200" ] && break
    [ "$(date +%s)" -ge "$deadline" ] && fail_start "no 200 from $BASE_URL/metadata within ${START_TIMEOUT}s (last status: ${code:-none})"
    sleep 1
  done
  log "up in $(elapsed "$t0")s: $BASE_URL (pid $pid, db=$DB)"
}

cmd_stop() {
  local pid
  pid="$(running_pid)"
  if [ -z "$pid" ]; then
    rm -f "$PID_FILE"
    log "not running on port $PORT"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$STOP_TIMEOUT" ]; do
    sleep 1; waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored TERM for ${STOP_TIMEOUT}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid, port $PORT)"
}

# exit 0: running and answering; 1: not running; 2: running but /metadata not 200
cmd_status() {
  local pid code rss
  pid="$(running_pid)"
  if [ -z "$pid" ]; then
    log "not running on port $PORT"
    return 1
  fi
  code="$(metadata_code)"
  rss="$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
  log "running on port $PORT (pid $pid, rss ${rss:-?} KiB); GET /fhir/metadata -> ${code:-none}"
  [ "$code" = "200" ] || return 2
}

main() {
  [ $# -ge 1 ] || { usage; exit 1; }
  local cmd="$1"; shift
  case "$cmd" in
    build)  parse_flags "$@"; cmd_build ;;
    start)  parse_flags "$@"; cmd_start ;;
    stop)   parse_flags "$@"; cmd_stop ;;
    status) parse_flags "$@"; cmd_status ;;
    -h|--help|help) usage ;;
    *) usage >&2; die "unknown command: $cmd" ;;
  esac
}

main "$@"
