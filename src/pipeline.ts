/**
 * Assembles a process from its roles: broker, worker, admin (or all three).
 * Every dependency is built here and passed down; nothing is global. Shutdown
 * runs in reverse: stop intake, finish work, then close connections.
 */
import { createAnalyticsStore, type AnalyticsStore } from './clickhouse/index.js';
import type { Config } from './config.js';
import { DeviceRegistry } from './devices/registry.js';
import { PipelineError } from './errors.js';
import { createFhirStore, type FhirStore } from './fhir/store.js';
import type { Logger } from './logger.js';
import { formatProblem, loadMappings, type MappingSet } from './mapping/index.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createQueues, createRedis, type Queues } from './queue-runtime.js';
import { startBroker, type RunningBroker } from '../broker/index.js';
import { startWorkers, type RunningWorkers } from '../workers/index.js';
import { startAdmin, type RunningAdmin } from './admin/server.js';

export type Role = 'broker' | 'worker' | 'admin';
export const ROLES: readonly Role[] = ['broker', 'worker', 'admin'];

export interface Pipeline {
  readonly config: Config;
  readonly registry: DeviceRegistry;
  readonly queues: Queues;
  readonly metrics: Metrics;
  readonly fhirStore: FhirStore;
  readonly analyticsStore: AnalyticsStore | undefined;
  readonly broker: RunningBroker | undefined;
  readonly admin: RunningAdmin | undefined;
  readonly workers: RunningWorkers | undefined;
  close(): Promise<void>;
}

export async function loadMappingsOrThrow(dir: string): Promise<MappingSet> {
  const result = await loadMappings(dir);
  if (!result.ok) {
    throw new PipelineError(
      'TemplateInvalid',
      `mapping templates in ${dir} are invalid:\n  ${result.problems.map(formatProblem).join('\n  ')}`,
    );
  }
  return result.mappings;
}

export async function startPipeline(
  config: Config,
  roles: readonly Role[],
  log: Logger,
): Promise<Pipeline> {
  const metrics = createMetrics();
  const redis = createRedis(config.redis.url);
  const workerRedis = roles.includes('worker') ? createRedis(config.redis.url, true) : undefined;
  const queues = createQueues(redis, config.redis.prefix);
  const registry = new DeviceRegistry(redis, config.redis.prefix);
  const fhirStore = createFhirStore({ baseUrl: config.fhir.url, timeoutMs: config.fhir.timeoutMs });
  const runsAnalytics = roles.includes('worker') && config.worker.stages.includes('analytics');
  // The embedded engine belongs to the process running the mirror; a ClickHouse
  // server can also be queried by an admin-only process.
  const queriesAnalytics = roles.includes('admin') && config.clickhouse.url !== undefined;
  const analyticsStore =
    runsAnalytics || queriesAnalytics ? createAnalyticsStore(config.clickhouse, log) : undefined;

  let workers: RunningWorkers | undefined;
  let broker: RunningBroker | undefined;
  let admin: RunningAdmin | undefined;
  const close = async () => {
    // Intake first (no new messages), then workers (finish jobs), then stores and Redis.
    await broker?.close();
    await admin?.close();
    await workers?.close();
    await queues.close();
    await analyticsStore?.close();
    redis.disconnect();
    workerRedis?.disconnect();
  };

  try {
    if (analyticsStore) await analyticsStore.migrate();
    if (roles.includes('worker') && workerRedis) {
      const mappings = await loadMappingsOrThrow(config.mappings.dir);
      log.info(
        {
          event: 'mappings-loaded',
          version: mappings.version,
          deviceTemplates: mappings.deviceTemplates.length,
        },
        'mapping templates loaded',
      );
      workers = startWorkers({
        config,
        connection: workerRedis,
        queues,
        registry,
        mappings: () => mappings,
        fhirStore,
        ...(analyticsStore ? { analyticsStore } : {}),
        log,
        metrics,
      });
    }
    if (roles.includes('broker'))
      broker = await startBroker({ config, registry, ingest: queues.ingest, log, metrics });
    if (roles.includes('admin'))
      admin = await startAdmin({ config, log, metrics, redis, fhirStore, analyticsStore });
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }

  return {
    config,
    registry,
    queues,
    metrics,
    fhirStore,
    analyticsStore,
    broker,
    admin,
    workers,
    close,
  };
}
