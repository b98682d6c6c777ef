/**
 * The worker role: one BullMQ consumer per stage this process runs (WORKER_STAGES).
 * Each stage decides (stage.ts); one runner per stage applies the decisions
 * (runner.ts). Every stage is an independent consumer of its queue, so more
 * copies scale it out.
 *
 *   queue      stage                       next
 *   ingest     normalize (normalize.ts)    fhir, dead letters, outcomes
 *   fhir       fhir (fhir-writer.ts)       analytics, dead letters
 *   analytics  analytics (analytics-mirror.ts)  dead letters
 */
import { Worker, type Job } from 'bullmq';
import type { RedisConnection } from '../src/redis.js';
import type { AnalyticsStore } from '../src/clickhouse/index.js';
import type { Config } from '../src/config.js';
import type { AssociationStore } from '../src/devices/association-store.js';
import type { DeviceRegistry } from '../src/devices/registry.js';
import { toPipelineError } from '../src/errors.js';
import { createAssociationSync } from '../src/fhir/associations.js';
import type { FhirGateway } from '../src/fhir/gateway.js';
import { createIdentityService } from '../src/fhir/identity.js';
import type { FhirStore } from '../src/fhir/store.js';
import type { SubjectCache } from '../src/fhir/subject-cache.js';
import type { Logger } from '../src/logger.js';
import type { MappingSet } from '../src/mapping/index.js';
import type { Metrics } from '../src/metrics.js';
import { backoffDelay, queuePrefix, type Queues } from '../src/queue-runtime.js';
import type { Tracing } from '../src/observability/tracing.js';
import type { Retried, Traced } from '../src/queues.js';
import { createAnalyticsStage } from './analytics-mirror.js';
import { createFhirWriterStage } from './fhir-writer.js';
import { createNormalizeStage } from './normalize.js';
import { createRunner } from './runner.js';
import type { Stage } from './stage.js';

export interface WorkerDeps {
  readonly config: Config;
  /** A dedicated connection with maxRetriesPerRequest: null. */
  readonly connection: RedisConnection;
  readonly queues: Queues;
  readonly registry: DeviceRegistry;
  /** Device–patient associations over time (attribution, FHIR Device and DeviceUseStatements). */
  readonly associations: AssociationStore;
  readonly mappings: () => MappingSet;
  readonly fhirStore: FhirStore;
  /** Patients and Devices known to exist, shared with fhirStore (src/fhir/subject-cache.ts). */
  readonly subjects?: SubjectCache;
  /** The one FHIR gateway (reads, searches, merges, association syncs). */
  readonly fhir: FhirGateway;
  /** Required when this process runs the "analytics" stage. */
  readonly analyticsStore?: AnalyticsStore;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** A span per job run, child of the job's traceparent (tracing on). */
  readonly tracing?: Tracing;
}

/** Stalls before BullMQ gives a job up as failed: high, because a stall is a crash, not bad data. */
const MAX_STALLS = 1000;

export interface RunningWorkers {
  readonly workers: readonly Worker[];
  close(): Promise<void>;
}

export function startWorkers(deps: WorkerDeps): RunningWorkers {
  const { config, queues, log } = deps;
  const stages = new Set(config.worker.stages);
  const workers: Worker[] = [];

  function run<T extends Retried & Traced>(
    stage: Stage<T>,
    concurrency = config.worker.concurrency,
  ): void {
    const runner = createRunner(stage, {
      fhir: queues.fhir,
      analytics: queues.analytics,
      deadLetter: queues.deadLetter,
      log,
      ...(deps.metrics ? { metrics: deps.metrics } : {}),
      ...(deps.tracing ? { tracing: deps.tracing } : {}),
      retryCapMs: config.worker.retryCapMs,
      maxTransientRetries: config.worker.maxTransientRetries,
    });
    const worker = new Worker<T>(stage.queue, (job: Job<T>, token) => runner.process(job, token), {
      connection: deps.connection,
      prefix: queuePrefix(config.redis.url, config.redis.prefix),
      concurrency,
      // A worker that dies (kill -9, OOM) stops renewing its job locks; after
      // WORKER_LOCK_MS another worker takes the job back. Jobs are idempotent, so a
      // stalled job is always retried: BullMQ's default (1 stall, then "failed")
      // would strand the messages of a job whose worker died twice.
      lockDuration: config.worker.lockMs,
      stalledInterval: config.worker.lockMs,
      maxStalledCount: MAX_STALLS,
      settings: {
        backoffStrategy: (attemptsMade: number, _type?: string, err?: Error) =>
          backoffDelay(attemptsMade, err, Math.random, config.worker.retryCapMs),
      },
    });
    worker.on('stalled', (jobId: string) => {
      deps.metrics?.jobsStalled.inc({ queue: stage.queue });
      log.warn(
        { event: 'job-stalled', queue: stage.queue, jobId },
        'job taken back from a dead worker',
      );
    });
    worker.on('error', (err) =>
      log.error({ event: 'worker-error', queue: stage.queue, err }, 'worker error'),
    );
    worker.on('failed', (job: Job<T> | undefined, err: Error) => {
      if (!job) return;
      const e = toPipelineError(err);
      // The runner dead-letters a job's content on its last attempt itself; a job
      // that fails here for good could not even do that (Redis gone): it stays in
      // the failed set (WORKER_... removeOnFail: 14 days) for an operator.
      const final = job.attemptsMade >= (job.opts.attempts ?? 1);
      log.warn(
        {
          event: 'job-failed',
          queue: stage.queue,
          jobId: job.id,
          attempt: job.attemptsMade,
          final,
          code: e.code,
          reason: e.message,
        },
        'job failed',
      );
      deps.metrics?.errors.inc({ code: e.code, stage: stage.name });
    });
    workers.push(worker);
  }

  if (stages.has('normalize')) {
    run(
      createNormalizeStage({
        config,
        mappings: deps.mappings,
        log,
        ...(deps.metrics ? { metrics: deps.metrics } : {}),
        // MedTech's identity modes (IDENTITY_RESOLUTION): associations + Create, or FHIR Lookup.
        identity: createIdentityService({
          mode: config.fhir.identityResolution,
          fhir: deps.fhir,
          deviceIdentifierSystem: config.fhir.deviceIdentifierSystem,
          createPatients: config.fhir.createPatients,
          associations: deps.associations,
          registry: deps.registry,
        }),
      }),
    );
  }
  if (stages.has('fhir')) {
    run(
      createFhirWriterStage({
        config,
        store: deps.fhirStore,
        fhir: deps.fhir,
        ...(deps.subjects ? { subjects: deps.subjects } : {}),
        log,
        ...(deps.metrics ? { metrics: deps.metrics } : {}),
        associationSync: createAssociationSync({
          fhir: deps.fhir,
          patients: deps.fhirStore,
          reader: deps.associations,
          deviceIdentifierSystem: config.fhir.deviceIdentifierSystem,
          createPatients: config.fhir.createPatients,
        }),
      }),
      // Many jobs at once, so that small ones share Bundles (src/group-commit.ts).
      config.worker.fhirConcurrency,
    );
  }
  if (stages.has('analytics')) {
    if (!deps.analyticsStore) throw new Error('the analytics stage needs an analytics store');
    run(
      createAnalyticsStage({
        store: deps.analyticsStore,
        log,
        ...(deps.metrics ? { metrics: deps.metrics } : {}),
        insert: {
          lingerMs: config.clickhouse.insertWaitMs,
          lingerJobs: config.worker.analyticsConcurrency,
          lingerRows: config.clickhouse.insertRows,
        },
      }),
      // Many jobs at once, so that they share inserts (workers/analytics-mirror.ts).
      config.worker.analyticsConcurrency,
    );
  }
  log.info({ event: 'workers-started', stages: [...stages] }, 'workers started');

  return {
    workers,
    async close() {
      // Let running jobs finish (they are idempotent if cut short anyway).
      await Promise.all(workers.map((w) => w.close()));
    },
  };
}
