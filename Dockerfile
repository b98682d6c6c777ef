# syntax=docker/dockerfile:1
#
# The IoMT pipeline image: one image, every role. The role is the command:
#   docker run iomt-pipeline broker|worker|admin|all     (default: all)
# docker-compose.yml runs broker, worker and admin as separate services.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile TypeScript to dist/ -------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Dependencies first, so source edits do not re-run `npm ci`.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# .dockerignore keeps node_modules, dist, data, .git, secrets out of the context.
COPY . .
RUN npm run build

# ---- runtime: production dependencies + compiled output ---------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# chdb (the embedded ClickHouse engine, used when CLICKHOUSE_URL is unset) brings
# a prebuilt ~550 MB glibc library: this is why the base is Debian, not Alpine.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY mappings ./mappings
# data/ holds the embedded engine's files in `all` mode; owned by the runtime user.
RUN mkdir -p /app/data && chown node:node /app/data

# Container defaults: listen on every interface (ADMIN_HOST defaults to
# 127.0.0.1 outside containers). Every key here is a setting of src/config.ts.
ENV MQTT_HOST=0.0.0.0 \
    MQTT_PORT=1883 \
    ADMIN_HOST=0.0.0.0 \
    ADMIN_PORT=8080 \
    MAPPINGS_DIR=/app/mappings \
    CHDB_PATH=/app/data/chdb

# The official node image ships an unprivileged `node` user (uid 1000).
USER node
# 1883: MQTT (broker role); 8080: admin HTTP API, /metrics, /healthz (admin role).
EXPOSE 1883 8080
# No HEALTHCHECK here: what "healthy" means depends on the role; the compose
# file defines one for the admin service.
ENTRYPOINT ["node", "bin/iomt.mjs"]
CMD ["all"]
