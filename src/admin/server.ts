/**
 * The admin HTTP API (fastify): /healthz (alive), /readyz (Redis, FHIR and
 * ClickHouse reachable), /metrics (Prometheus). When ADMIN_TOKEN is set,
 * everything but /healthz needs `Authorization: Bearer <token>`.
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { AnalyticsStore, QueryFormat } from '../clickhouse/index.js';
import type { Config } from '../config.js';
import { httpAnswer, PipelineError } from '../errors.js';
import type { FhirStore } from '../fhir/store.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

export interface AdminDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly redis: Redis;
  readonly fhirStore: FhirStore;
  readonly analyticsStore: AnalyticsStore | undefined;
}

export interface RunningAdmin {
  readonly app: FastifyInstance;
  readonly port: number;
  close(): Promise<void>;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

async function check(name: string, probe: () => Promise<unknown>): Promise<[string, string]> {
  try {
    await probe();
    return [name, 'ok'];
  } catch (err) {
    return [name, (err as Error).message];
  }
}

const QUERY_FORMATS: readonly QueryFormat[] = [
  'JSONEachRow',
  'JSON',
  'CSV',
  'TSV',
  'PrettyCompact',
];

/** One statement, read-only by its first keyword; a trailing semicolon is allowed. */
export function isReadOnlyQuery(sql: string): boolean {
  const body = sql.trim().replace(/;\s*$/, '');
  if (body === '' || body.includes(';')) return false;
  return /^(select|with|show|describe|desc|explain)\b/i.test(body);
}

export function buildAdmin(deps: AdminDeps): FastifyInstance {
  const app = Fastify({ logger: false });
  const token = deps.config.admin.token;
  app.addHook('onRequest', async (req, reply) => {
    if (req.url === '/healthz' || token === undefined) return;
    if (!tokenMatches(req.headers.authorization, token)) {
      const { status, body } = httpAnswer(
        new PipelineError('NotAuthorized', 'a valid bearer token is required', { stage: 'admin' }),
      );
      await reply.code(status).send(body);
    }
  });
  app.setErrorHandler(async (err, _req, reply) => {
    const { status, body } = httpAnswer(err);
    await reply.code(status).send(body);
  });
  app.get('/healthz', () => Promise.resolve({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const checks = Object.fromEntries(
      await Promise.all([
        check('redis', () => deps.redis.ping()),
        check('fhir', () => deps.fhirStore.ping()),
        ...(deps.analyticsStore ? [check('clickhouse', () => deps.analyticsStore!.ping())] : []),
      ]),
    );
    const ready = Object.values(checks).every((v) => v === 'ok');
    await reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not-ready', checks });
  });
  // Analysts' read-only SQL over the embedded engine (the process owning it answers).
  app.post<{ Body: { sql?: unknown; format?: unknown } }>(
    '/api/analytics/query',
    async (req, reply) => {
      const store = deps.analyticsStore;
      if (!store)
        throw new PipelineError(
          'QueryRefused',
          'this process does not own the analytics store (run the worker role with the analytics stage)',
        );
      const sql = typeof req.body?.sql === 'string' ? req.body.sql : '';
      const format = req.body?.format ?? 'JSONEachRow';
      if (!isReadOnlyQuery(sql))
        throw new PipelineError(
          'QueryRefused',
          'only one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN) is allowed',
        );
      if (!QUERY_FORMATS.includes(format as QueryFormat))
        throw new PipelineError(
          'QueryRefused',
          `format must be one of ${QUERY_FORMATS.join(', ')}`,
        );
      const text = await store.query(sql, format as QueryFormat);
      await reply
        .type(format === 'JSON' || format === 'JSONEachRow' ? 'application/json' : 'text/plain')
        .send(text);
    },
  );
  app.get('/metrics', async (_req, reply) => {
    await reply
      .header('content-type', deps.metrics.registry.contentType)
      .send(await deps.metrics.registry.metrics());
  });
  return app;
}

export async function startAdmin(deps: AdminDeps): Promise<RunningAdmin> {
  const app = buildAdmin(deps);
  try {
    await app.listen({ port: deps.config.admin.port, host: deps.config.admin.host });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new PipelineError(
        'PortInUse',
        `port ${deps.config.admin.port} on ${deps.config.admin.host} is already in use: set ADMIN_PORT to a free port`,
        { cause: err },
      );
    }
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : deps.config.admin.port;
  deps.log.info({ event: 'admin-listening', port }, 'admin API listening');
  return { app, port, close: () => app.close() };
}
