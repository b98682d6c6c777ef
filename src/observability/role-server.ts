/**
 * The observability server of one process, whatever its roles (broker, worker,
 * admin): GET /metrics (Prometheus text format), /healthz (liveness, public)
 * and /readyz (the probes of the dependencies this process needs), on
 * METRICS_HOST:METRICS_PORT, with the admin API's token rule (bearer.ts). It
 * serves nothing else, so a broker or worker exposes no admin endpoint.
 *
 * Contract: started after the roles, closed before them (pipeline.ts).
 */
import Fastify from 'fastify';
import type { Config } from '../config.js';
import { httpAnswer, PipelineError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { requireAdminToken } from './bearer.js';
import { checkReadiness, type ReadinessProbes } from './readiness.js';

export interface RoleServerOptions {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly probes: ReadinessProbes;
  /** Extra readiness detail (the worker's template status), added to the /readyz body. */
  readonly detail?: () => Record<string, unknown>;
}

export interface RunningRoleServer {
  readonly port: number;
  close(): Promise<void>;
}

export function buildRoleServer(options: RoleServerOptions) {
  const app = Fastify({ logger: false });
  app.addHook('onRequest', requireAdminToken(options.config.admin));
  app.setErrorHandler(async (err, _req, reply) => {
    const { status, body } = httpAnswer(err);
    await reply.code(status).send(body);
  });
  app.get('/healthz', () => Promise.resolve({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const { ready, checks } = await checkReadiness(
      options.probes,
      options.config.admin.readyTimeoutMs,
    );
    await reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not-ready',
      checks,
      ...options.detail?.(),
    });
  });
  app.get('/metrics', async (_req, reply) => {
    await reply
      .header('content-type', options.metrics.registry.contentType)
      .send(await options.metrics.registry.metrics());
  });
  return app;
}

export async function startRoleServer(
  options: RoleServerOptions & { readonly port: number },
): Promise<RunningRoleServer> {
  const app = buildRoleServer(options);
  const host = options.config.metrics.host;
  try {
    await app.listen({ port: options.port, host });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new PipelineError(
        'PortInUse',
        `port ${options.port} on ${host} is already in use: set METRICS_PORT to a free port`,
        { cause: err },
      );
    }
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  options.log.info({ event: 'metrics-listening', port }, 'metrics and health endpoints listening');
  return { port, close: () => app.close() };
}
