/**
 * The admin HTTP API (fastify): /healthz (alive), /readyz (Redis, FHIR and
 * ClickHouse reachable), /metrics (Prometheus), the analysts' endpoints
 * (analytics-routes.ts), devices (device-routes.ts) and the template lifecycle
 * (mapping-routes.ts). Everything but /healthz needs
 * `Authorization: Bearer <ADMIN_TOKEN>`; the pipeline refuses to start the admin
 * role without a token unless ADMIN_AUTH=none (development only). ANALYST_TOKEN,
 * when set, opens POST /api/analytics/query and nothing else.
 *
 * Answers: every error in the one shape of errors.ts (httpAnswer); a body over
 * ADMIN_MAX_BODY_BYTES is 413 PayloadTooLarge, other malformed requests 400
 * InvalidArgument. /readyz waits at most ADMIN_READY_TIMEOUT_MS per check, and
 * shows no URL credentials.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { RedisConnection } from '../redis.js';
import type { AnalyticsStore } from '../clickhouse/index.js';
import type { Config } from '../config.js';
import { httpAnswer, isPipelineError, PipelineError } from '../errors.js';
import type { FhirGateway } from '../fhir/gateway.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { DeviceService } from '../devices/index.js';
import type { MappingLifecycle } from '../mapping/lifecycle/index.js';
import { checkReadiness, readinessProbes } from '../observability/index.js';
import type { DeadLetterStore } from '../dlq/index.js';
import { registerAnalyticsRoutes } from './analytics-routes.js';
import {
  admitBySession,
  ConsoleSessions,
  isPublicConsolePath,
  registerConsole,
} from './console.js';
import { registerDlqRoutes } from './dlq-routes.js';
import { registerDeviceRoutes } from './device-routes.js';
import { registerMappingRoutes } from './mapping-routes.js';
import { ANALYST_ROUTES, principalOf } from './principal.js';

export interface AdminDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly redis: RedisConnection;
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
  /** The dead-letter queue: /api/dlq (list, show, replay, purge). */
  readonly deadLetters?: DeadLetterStore;
  /** The operator console's built page (default: dist/console of this package). */
  readonly consoleDir?: string;
}

export interface RunningAdmin {
  readonly app: FastifyInstance;
  readonly port: number;
  close(): Promise<void>;
}

/** Fastify's own refusals (body too large, not JSON, …) in our taxonomy. */
function requestError(err: unknown, maxBodyBytes: number): PipelineError | undefined {
  const e = err as { statusCode?: unknown; code?: unknown; message?: unknown };
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || e.statusCode === 413)
    return new PipelineError(
      'PayloadTooLarge',
      `the request body exceeds ADMIN_MAX_BODY_BYTES (${maxBodyBytes} bytes)`,
      { stage: 'admin', cause: err },
    );
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)
    return new PipelineError('InvalidArgument', String(e.message), { stage: 'admin', cause: err });
  return undefined;
}

export function buildAdmin(deps: AdminDeps): FastifyInstance {
  const maxBodyBytes = deps.config.admin.maxBodyBytes;
  const app = Fastify({ logger: false, bodyLimit: maxBodyBytes });
  const sessions = new ConsoleSessions(
    deps.redis,
    deps.config.redis.prefix,
    deps.config.admin.consoleIdleMs,
  );
  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0] ?? '';
    // Only liveness and the console's page (no data in it) are public: readiness
    // detail and metrics describe the system.
    if (path === '/healthz' || isPublicConsolePath(path, req.method)) return;
    // A browser: its console session (a change also needs the session's CSRF token).
    if (req.headers.authorization === undefined && (await admitBySession(sessions, req))) return;
    const principal = principalOf(deps.config, req.headers.authorization);
    if (principal === 'admin' || (principal === 'analyst' && ANALYST_ROUTES.has(path))) return;
    const { status, body } = httpAnswer(
      new PipelineError(
        'NotAuthorized',
        principal === 'analyst'
          ? 'the analyst token opens POST /api/analytics/query only'
          : 'a valid bearer token is required',
        { stage: 'admin' },
      ),
    );
    await reply.code(status).send(body);
  });
  app.setErrorHandler(async (err, _req, reply) => {
    const { status, body } = httpAnswer(requestError(err, maxBodyBytes) ?? err);
    // RFC 9110 §10.2.3: how long a refused client (429, 503) should wait.
    if (isPipelineError(err) && err.retryAfterMs !== undefined)
      void reply.header('retry-after', String(Math.ceil(err.retryAfterMs / 1000)));
    await reply.code(status).send(body);
  });
  app.get('/healthz', () => Promise.resolve({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    // Each probe is bounded (ADMIN_READY_TIMEOUT_MS): a slow dependency reports a
    // timeout, never holds the answer. (Analysts' queries run on a connection of
    // their own: ClickHouse's ping never waits for one.)
    const { ready, checks } = await checkReadiness(
      readinessProbes(deps),
      deps.config.admin.readyTimeoutMs,
    );
    await reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not-ready',
      checks,
      ...(deps.templatesStatus ? { templates: deps.templatesStatus() } : {}),
    });
  });
  // Analysts' read-only SQL and the mirror backfill (the process owning the store answers).
  registerAnalyticsRoutes(app, deps);
  if (deps.devices)
    registerDeviceRoutes(app, {
      devices: deps.devices,
      analyticsStore: deps.analyticsStore,
      database: deps.config.clickhouse.database,
      auditReveal: (req, detail) =>
        sessions.audit({
          at: new Date().toISOString(),
          actor: req.consoleSession?.actor ?? 'admin-api',
          action: 'reveal',
          status: 200,
          detail,
        }),
    });
  // The template lifecycle: validate, test, shadow-run, diff, propose, activate, rollback, audit.
  registerMappingRoutes(app, deps);
  if (deps.deadLetters) registerDlqRoutes(app, { deadLetters: deps.deadLetters });
  // The operator console (/console): the page, sessions, CSRF, CSP, audit.
  registerConsole(app, deps, sessions);
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
  deps.log.info(
    {
      event: 'admin-listening',
      port,
      console: `http://${deps.config.admin.host}:${port}/console/`,
    },
    'admin API listening',
  );
  return { app, port, close: () => app.close() };
}
