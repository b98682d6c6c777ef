# syntax=docker/dockerfile:1
#
# The IoMT pipeline image: one image, every role. The role is the command:
#   docker run iomt-pipeline broker|worker|admin|all     (default: all)
# docker-compose.yml runs broker, worker and admin as separate services.
#
# Two variants, from one build argument:
#   CLICKHOUSE_EMBEDDED=true  (default) with chdb, the embedded ClickHouse engine
#                             (~550 MB) used when CLICKHOUSE_URL is unset (`all` on one machine);
#   CLICKHOUSE_EMBEDDED=false without it, for server mode (CLICKHOUSE_URL set),
#                             as docker-compose.yml builds it:
#   docker build --build-arg CLICKHOUSE_EMBEDDED=false -t iomt-pipeline:server .
# chdb is an optionalDependency, so leaving it out is `npm ci --omit=optional`.
# GIT_COMMIT (e.g. $(git rev-parse HEAD)) is recorded for iomt_build_info.
#
# Not built where the tests run (no Docker engine there); .ci/run installs the
# server variant's dependencies the same way and runs the compiled CLI from them.

# Node 22 LTS (Node 20 reached end of life in April 2026); CI runs the unit
# tests and the end-to-end test on Node 22 and everything on Node 20.
ARG NODE_IMAGE=node:22-bookworm-slim

# ---- build: compile TypeScript to dist/ -------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Dependencies first, so source edits do not re-run `npm ci`. Everything,
# chdb included: the compiler reads its types.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# .dockerignore keeps node_modules, dist, data, .git, secrets out of the context.
COPY . .
RUN npm run build

# ---- runtime: production dependencies + compiled output ---------------------
FROM ${NODE_IMAGE} AS runtime
ARG CLICKHOUSE_EMBEDDED=true
ARG GIT_COMMIT=unknown
ENV NODE_ENV=production
# glibc malloc: blocks of 4 MiB and more get their own mapping, returned to the
# system when freed. By default glibc raises this threshold after the first
# such free and keeps later blocks in its arenas: the broker's secret checks
# (scrypt, 16 MiB each, one per libuv thread) then hold ~65 MB of RSS for good
# (docs/performance.md, memory of the production roles).
ENV MALLOC_MMAP_THRESHOLD_=4194304
WORKDIR /app
# chdb brings a prebuilt glibc library: this is why the base is Debian, not Alpine.
COPY package.json package-lock.json ./
RUN if [ "$CLICKHOUSE_EMBEDDED" = "true" ]; then omit=""; else omit="--omit=optional"; fi \
    && npm ci --omit=dev $omit --no-audit --no-fund \
    && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY mappings ./mappings
# What iomt_build_info reports as the commit (the image holds no .git).
RUN node -e 'const c=process.argv[1];require("node:fs").writeFileSync("build-info.json",JSON.stringify({commit:/^[0-9a-f]{40}$/.test(c)?c:"unknown"})+"\n")' "$GIT_COMMIT"
# data/ holds the embedded engine's files in `all` mode; owned by the runtime user.
RUN mkdir -p /app/data && chown node:node /app/data

# Container defaults: listen on every interface (ADMIN_HOST and METRICS_HOST
# default to 127.0.0.1 outside containers). Every key here is a setting of
# src/config.ts.
ENV MQTT_HOST=0.0.0.0 \
    MQTT_PORT=1883 \
    ADMIN_HOST=0.0.0.0 \
    ADMIN_PORT=8080 \
    METRICS_HOST=0.0.0.0 \
    MAPPINGS_DIR=/app/mappings \
    CHDB_PATH=/app/data/chdb

# The official node image ships an unprivileged `node` user (uid 1000).
USER node
# 1883: MQTT, 8883: MQTT over TLS (broker role); 8080: admin HTTP API (admin
# role); 9464: /metrics, /healthz, /readyz of any role when METRICS_PORT=9464.
EXPOSE 1883 8883 8080 9464
# No HEALTHCHECK here: docker-compose.yml probes each role's /healthz on METRICS_PORT.
ENTRYPOINT ["node", "bin/iomt.mjs"]
CMD ["all"]
