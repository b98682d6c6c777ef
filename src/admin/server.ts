/**
 * The admin HTTP API (fastify): /healthz (alive), /readyz (Redis, FHIR and
 * ClickHouse reachable), /metrics (Prometheus), the analysts' endpoints
 * (analytics-routes.ts) and the template lifecycle (mapping-routes.ts).
 * Everything but /healthz needs `Authorization: Bearer <ADMIN_TOKEN>`; the
 * pipeline refuses to start the admin role without a token unless
 * ADMIN_AUTH=none (development only).
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { AnalyticsStore } from '../clickhouse/index.js';
import type { Config } from '../config.js';
import { httpAnswer, PipelineError } from '../errors.js';
import type { FhirGateway } from '../fhir/gateway.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { DeviceService } from '../devices/index.js';
import type { MappingLifecycle } from '../mapping/lifecycle/index.js';
import { registerAnalyticsRoutes } from './analytics-routes.js';
import { registerDeviceRoutes } from './device-routes.js';
import { registerMappingRoutes } from './mapping-routes.js';

export interface AdminDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly redis: Redis;
  readonly fhir: FhirGateway;
  readonly analyticsStore: AnalyticsStore | undefined;
  /** The active mapping templates' version, in a process that runs workers. */
  readonly templatesVersion?: () => string | undefined;
  /**
   * Hot-reload detail: the active version, and a rejected change on disk (the
   * process stays ready: the active version keeps processing).
   */
  readonly templatesStatus?: () => unknown;
  /** Device administration (associations, credentials): /api/devices, /api/gateways. */
  readonly devices?: DeviceService;
  /** Template versions, gates, activation, rollback and audit (mapping-routes.ts). */
  readonly mappingLifecycle?: MappingLifecycle;
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

export function buildAdmin(deps: AdminDeps): FastifyInstance {
  const app = Fastify({ logger: false });
  const token = deps.config.admin.token;
  const open = deps.config.admin.auth === 'none';
  app.addHook('onRequest', async (req, reply) => {
    // Only liveness is public: readiness detail and metrics describe the system.
    if (req.url.split('?')[0] === '/healthz' || open) return;
    if (token === undefined || !tokenMatches(req.headers.authorization, token)) {
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
        check('fhir', () => deps.fhir.capabilities()),
        ...(deps.analyticsStore ? [check('clickhouse', () => deps.analyticsStore!.ping())] : []),
        ...(deps.templatesVersion
          ? [
              check('templates', () => {
                const version = deps.templatesVersion?.();
                return version === undefined
                  ? Promise.reject(new Error('no valid mapping templates loaded'))
                  : Promise.resolve(version);
              }),
            ]
          : []),
      ]),
    );
    const ready = Object.values(checks).every((v) => v === 'ok');
    await reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not-ready',
      checks,
      ...(deps.templatesStatus ? { templates: deps.templatesStatus() } : {}),
    });
  });
  // Analysts' read-only SQL and the mirror backfill (the process owning the store answers).
  registerAnalyticsRoutes(app, deps);
  if (deps.devices) registerDeviceRoutes(app, { devices: deps.devices });
  // The template lifecycle: validate, test, shadow-run, diff, propose, activate, rollback, audit.
  registerMappingRoutes(app, deps);
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
