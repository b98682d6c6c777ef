/**
 * Assembles a process from its roles: broker, worker, admin (or all three).
 * Every dependency is built here and passed down; nothing is global. Shutdown
 * runs in reverse: stop intake, finish work, then close connections.
 */
import type { AnalyticsStore } from './clickhouse/index.js';
import type { Config } from './config.js';
import {
  AssociationStore,
  createDeviceService,
  DeviceRegistry,
  type DeviceService,
} from './devices/index.js';
import { PipelineError, toPipelineError } from './errors.js';
import { createAdaptiveLimit } from './fhir/adaptive-limit.js';
import { createConfiguredFhirGateway, type FhirGateway } from './fhir/gateway.js';
import { createFhirStore, type FhirStore } from './fhir/store.js';
import { createSubjectCache } from './fhir/subject-cache.js';
import type { Logger } from './logger.js';
import type { MappingSet, TemplateActivation } from './mapping/index.js';
import type { MappingLifecycle } from './mapping/lifecycle/index.js';
import { createMetrics, type Metrics } from './metrics.js';
import { readinessProbes } from './observability/readiness.js';
import type { RunningRoleServer } from './observability/role-server.js';
import { createTracing, serviceName, type Tracing } from './observability/tracing.js';
import {
  backlogJobs,
  createQueues,
  createRedis,
  ingestSink,
  queueDepths,
  queuePrefix,
  type Queues,
} from './queue-runtime.js';
import { checkWaitAof } from './redis.js';
import type { RunningBroker } from '../broker/index.js';
import type { RunningWorkers } from '../workers/index.js';
import type { RunningAdmin } from './admin/server.js';

/**
 * The code of each role and optional part, imported only by a process that
 * runs it: a broker holds no mapping, FHIR-writing, ClickHouse or admin code, a
 * worker no MQTT or admin code (docs/performance.md, memory of the roles).
 */
const load = {
  broker: () => import('../broker/index.js'),
  workers: () => import('../workers/index.js'),
  admin: () => import('./admin/server.js'),
  deadLetters: () => import('./dlq/index.js'),
  mapping: () => import('./mapping/index.js'),
  lifecycle: () => import('./mapping/lifecycle/index.js'),
  clickhouse: () => import('./clickhouse/index.js'),
  roleServer: () => import('./observability/role-server.js'),
};

export type Role = 'broker' | 'worker' | 'admin';
export const ROLES: readonly Role[] = ['broker', 'worker', 'admin'];

export interface Pipeline {
  readonly config: Config;
  readonly registry: DeviceRegistry;
  /** Device–patient associations over time (attribution reads them). */
  readonly associations: AssociationStore;
  /** Device administration: register, re-key, assign, link (the CLI and admin API use the same). */
  readonly devices: DeviceService;
  readonly queues: Queues;
  readonly metrics: Metrics;
  readonly fhirStore: FhirStore;
  readonly fhir: FhirGateway;
  readonly analyticsStore: AnalyticsStore | undefined;
  readonly broker: RunningBroker | undefined;
  readonly admin: RunningAdmin | undefined;
  readonly workers: RunningWorkers | undefined;
  /** Template activation (following the fleet's active version) in a process running workers. */
  readonly templates: TemplateActivation | undefined;
  /** /metrics, /healthz and /readyz on METRICS_PORT (whatever the roles), when it is set. */
  readonly observability: RunningRoleServer | undefined;
  /** OpenTelemetry traces (OTEL_TRACES_EXPORTER; off by default: no-ops). */
  readonly tracing: Tracing;
  close(): Promise<void>;
}

export async function loadMappingsOrThrow(dir: string): Promise<MappingSet> {
  const { formatProblem, loadMappings } = await load.mapping();
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
  if (
    (roles.includes('admin') || config.metrics.port !== undefined) &&
    config.admin.auth === 'token' &&
    config.admin.token === undefined
  ) {
    throw new PipelineError(
      'ConfigInvalid',
      'ADMIN_TOKEN is not set: the admin API and the metrics endpoints (METRICS_PORT) need a bearer token. ' +
        'Set ADMIN_TOKEN (e.g. openssl rand -hex 32), or ADMIN_AUTH=none on a development machine.',
    );
  }
  // Off by default: then a shared no-op, and the OpenTelemetry SDK is not even loaded.
  const tracing = await createTracing({
    settings: config.tracing,
    serviceName: serviceName(config.tracing.serviceName, roles),
  });
  // One FHIR gateway for the whole process: every request to the server goes through it.
  // Built first: unreadable FHIR_AUTH files or keys stop the start before any connection.
  let fhir: FhirGateway;
  try {
    fhir = createConfiguredFhirGateway(config, tracing);
  } catch (err) {
    await tracing.close();
    throw err;
  }
  const metrics = createMetrics();
  const redis = createRedis(config.redis.url);
  const workerRedis = roles.includes('worker') ? createRedis(config.redis.url, true) : undefined;
  const queues = createQueues(redis, queuePrefix(config.redis.url, config.redis.prefix));
  if (config.redis.waitAof && roles.includes('broker'))
    await checkWaitAof(redis).catch(async (err: unknown) => {
      redis.disconnect();
      workerRedis?.disconnect();
      await tracing.close();
      throw err;
    });
  const registry = new DeviceRegistry(redis, config.redis.prefix);
  const associations = new AssociationStore(redis, config.redis.prefix);
  metrics.setQueueDepthSource(() => queueDepths(queues));
  let templatesVersion: string | undefined;
  // Which Patients and Devices exist, for FHIR_SUBJECT_CACHE_TTL_S: the store's
  // Patient checks and the FHIR writer's Device syncs, which forgets what the server lost.
  const subjects = createSubjectCache({ ttlMs: config.fhir.subjectCacheTtlS * 1000 });
  const bundleLimit = createAdaptiveLimit({ max: config.fhir.concurrencyMax });
  if (roles.includes('worker')) metrics.setBundleSlotSource(() => bundleLimit);
  const fhirStore = createFhirStore(fhir, {
    subjects,
    limit: bundleLimit,
    maxEntries: config.fhir.batchSize,
    onBundle: (parts, entries) => {
      metrics.fhirBundleEntries.observe(entries);
      metrics.fhirBundleParts.observe(parts);
    },
  });
  const devices = createDeviceService(config, redis, queues, fhirStore);
  // SUBSCRIBE holds a connection of its own (sessions of re-keyed devices end at once).
  const revocationRedis = roles.includes('broker') ? createRedis(config.redis.url) : undefined;
  const runsAnalytics = roles.includes('worker') && config.worker.stages.includes('analytics');
  // The embedded engine belongs to the process running the mirror; a ClickHouse
  // server can also be queried by an admin-only process.
  const queriesAnalytics = roles.includes('admin') && config.clickhouse.url !== undefined;
  const analyticsStore =
    runsAnalytics || queriesAnalytics
      ? (await load.clickhouse()).createAnalyticsStore(config.clickhouse, log)
      : undefined;

  let workers: RunningWorkers | undefined;
  let broker: RunningBroker | undefined;
  let admin: RunningAdmin | undefined;
  let templates: TemplateActivation | undefined;
  let observability: RunningRoleServer | undefined;
  // SUBSCRIBE holds a connection of its own (the template version channel).
  const templatesRedis =
    roles.includes('worker') && config.mappings.reload !== 'off'
      ? createRedis(config.redis.url)
      : undefined;
  // Template versions, gates and audit: workers follow it, the admin API drives it.
  // One per process, made when a role asks for it.
  let lifecycle: Promise<MappingLifecycle> | undefined;
  const mappingLifecycle = () =>
    (lifecycle ??= load.lifecycle().then(
      ({ createShadowSource, lifecycleSettings, MappingLifecycle }) =>
        new MappingLifecycle({
          redis,
          prefix: config.redis.prefix,
          settings: lifecycleSettings(config),
          source: createShadowSource({
            store: analyticsStore,
            database: config.clickhouse.database,
            deadLetters: queues.deadLetter,
          }),
          log,
        }),
    ));
  const close = async () => {
    // Intake first (no new messages), then workers (finish jobs), then stores and Redis.
    // The observability server goes first: a process shutting down is not ready.
    await observability?.close();
    await broker?.close();
    await admin?.close();
    await workers?.close();
    await templates?.close();
    templatesRedis?.disconnect();
    revocationRedis?.disconnect();
    await queues.close();
    await analyticsStore?.close();
    redis.disconnect();
    workerRedis?.disconnect();
    // Last: the spans of everything above are exported before the process ends.
    await tracing.close();
  };

  try {
    // FHIR_AUTH: credentials the authorization server refuses stop the start
    // (ConfigInvalid naming the settings); a server that does not answer does not.
    if (config.fhirAuth.mode !== 'none' && roles.some((r) => r !== 'broker'))
      await fhir.checkAuth().catch((err: unknown) => {
        if (!toPipelineError(err).retryable) throw err;
        log.warn(
          { event: 'fhir-auth-unavailable', reason: (err as Error).message },
          'FHIR authorization server unavailable at start; requests retry',
        );
      });
    // ClickHouse down at start is not fatal: the mirror applies the schema when it
    // answers, and FHIR writes go on meanwhile. A refused migration still is.
    if (analyticsStore)
      await analyticsStore.migrate().catch((err: unknown) => {
        if (!toPipelineError(err).retryable) throw err;
        log.warn(
          { event: 'clickhouse-unavailable', reason: (err as Error).message },
          'ClickHouse unavailable at start; the mirror retries',
        );
      });
    if (roles.includes('worker') && workerRedis) {
      // Registries from before associations: each one-patient binding becomes an
      // association from the device's registration on (idempotent).
      const migrated = await devices.migrateLegacyBindings();
      if (migrated > 0)
        log.warn(
          { event: 'associations-migrated', devices: migrated },
          'device bindings recorded as associations',
        );
      if (templatesRedis) {
        const { startTemplateActivation } = await load.mapping();
        templates = await startTemplateActivation({
          dir: config.mappings.dir,
          lifecycle: await mappingLifecycle(),
          mode: config.mappings.reload === 'watch' ? 'watch' : 'explicit',
          subscriber: templatesRedis,
          pollMs: config.mappings.reloadPollMs,
          log,
          metrics,
        });
      }
      const mappings = templates?.current() ?? (await loadMappingsOrThrow(config.mappings.dir));
      templatesVersion = mappings.version;
      log.info(
        {
          event: 'mappings-loaded',
          version: mappings.version,
          deviceTemplates: mappings.deviceTemplates.length,
        },
        'mapping templates loaded',
      );
      const { startWorkers } = await load.workers();
      workers = startWorkers({
        config,
        connection: workerRedis,
        queues,
        registry,
        associations,
        // Each job takes the active set once: a swap never splits a job.
        mappings: templates ? () => templates!.current() : () => mappings,
        fhirStore,
        fhir,
        subjects,
        ...(analyticsStore ? { analyticsStore } : {}),
        log,
        metrics,
        tracing,
      });
    }
    if (roles.includes('broker')) {
      const { startBroker } = await load.broker();
      broker = await startBroker({
        config,
        registry,
        ingest: ingestSink(queues.ingest, redis, config.redis),
        backlog: () => backlogJobs(queues),
        redis,
        log,
        metrics,
        tracing,
        ...(revocationRedis ? { revocationSubscriber: revocationRedis } : {}),
      });
    }
    if (roles.includes('admin')) {
      const [{ startAdmin }, { DeadLetterStore }] = await Promise.all([
        load.admin(),
        load.deadLetters(),
      ]);
      admin = await startAdmin({
        config,
        log,
        metrics,
        redis,
        fhir,
        analyticsStore,
        devices,
        mappingLifecycle: await mappingLifecycle(),
        deadLetters: new DeadLetterStore(queues, {
          // Create mode: replays are checked against the association history.
          ...(config.fhir.identityResolution === 'Create'
            ? { associations: { reader: associations, createPatients: config.fhir.createPatients } }
            : {}),
        }),
        ...(roles.includes('worker')
          ? { templatesVersion: () => templates?.current().version ?? templatesVersion }
          : {}),
        ...(templates ? { templatesStatus: () => templates!.status() } : {}),
      });
    }
    if (config.metrics.port !== undefined) {
      const { startRoleServer } = await load.roleServer();
      observability = await startRoleServer({
        config,
        log,
        metrics,
        port: config.metrics.port,
        // What this process needs: a broker only Redis (devices are accepted while
        // FHIR is down); workers and the admin API also FHIR, the analytics store
        // they own, and a worker its active templates.
        probes: readinessProbes({
          redis,
          fhir: roles.some((r) => r !== 'broker') ? fhir : undefined,
          analyticsStore,
          templatesVersion: roles.includes('worker')
            ? () => templates?.current().version ?? templatesVersion
            : undefined,
        }),
        ...(templates ? { detail: () => ({ templates: templates!.status() }) } : {}),
      });
    }
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }

  return {
    config,
    registry,
    associations,
    devices,
    queues,
    metrics,
    fhirStore,
    fhir,
    analyticsStore,
    broker,
    admin,
    workers,
    templates,
    observability,
    tracing,
    close,
  };
}
