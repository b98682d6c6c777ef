/**
 * The worker role: BullMQ consumers for the stages this process runs. Every
 * stage is an independent consumer of its queue, so more copies scale it out.
 * A job that exhausts its retries is moved to the dead-letter queue whole.
 */
import { Worker, type Job, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import type { AnalyticsStore } from '../src/clickhouse/index.js';
import type { Config } from '../src/config.js';
import type { AssociationStore } from '../src/devices/association-store.js';
import type { DeviceRegistry } from '../src/devices/registry.js';
import { queueDecision, toPipelineError, type PipelineError } from '../src/errors.js';
import { createAssociationSync } from '../src/fhir/associations.js';
import { createIdentityService } from '../src/fhir/identity.js';
import type { FhirGateway } from '../src/fhir/gateway.js';
import type { FhirStore } from '../src/fhir/store.js';
import type { Logger } from '../src/logger.js';
import type { MappingSet } from '../src/mapping/index.js';
import type { Metrics } from '../src/metrics.js';
import { backoffDelay, type Queues } from '../src/queue-runtime.js';
import {
  QUEUE,
  type AnalyticsJobData,
  type FhirJobData,
  type IngestJobData,
} from '../src/queues.js';
import { createAnalyticsProcessor } from './analytics-mirror.js';
import { deadLetter } from './dead-letter.js';
import { createFhirWriterProcessor } from './fhir-writer.js';
import { createNormalizeProcessor } from './normalize.js';

export interface WorkerDeps {
  readonly config: Config;
  /** A dedicated connection with maxRetriesPerRequest: null. */
  readonly connection: Redis;
  readonly queues: Queues;
  readonly registry: DeviceRegistry;
  /** Device–patient associations over time (attribution, FHIR Device and DeviceUseStatements). */
  readonly associations: AssociationStore;
  readonly mappings: () => MappingSet;
  readonly fhirStore: FhirStore;
  /** The one FHIR gateway (reads, searches, merges, association syncs). */
  readonly fhir: FhirGateway;
  /** Required when this process runs the "analytics" stage. */
  readonly analyticsStore?: AnalyticsStore;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

/** Stalls before BullMQ gives a job up as failed: high, because a stall is a crash, not bad data. */
const MAX_STALLS = 1000;

const STAGE_OF_QUEUE: Readonly<Record<string, string>> = {
  [QUEUE.ingest]: 'normalize',
  [QUEUE.fhir]: 'fhir',
  [QUEUE.analytics]: 'analytics',
};

export interface RunningWorkers {
  readonly workers: readonly Worker[];
  close(): Promise<void>;
}

export function startWorkers(deps: WorkerDeps): RunningWorkers {
  const { config, queues, log } = deps;
  const stages = new Set(config.worker.stages);
  const workers: Worker[] = [];

  /** Everything a job held, as dead letters: nothing is dropped when a stage gives up. */
  function deadLettersOf(name: string, job: Job, error: PipelineError) {
    if (name === QUEUE.ingest) {
      const data = job.data as IngestJobData;
      return data.messages.map((message) => ({
        traceId: data.traceId,
        error,
        deviceId: message.deviceId,
        message,
        key: `${job.id}:${message.id}`,
      }));
    }
    const data = job.data as FhirJobData | AnalyticsJobData;
    const associations =
      name === QUEUE.fhir && (data as FhirJobData).associations?.length
        ? [
            {
              traceId: data.traceId,
              error,
              deviceId: (data as FhirJobData).associations![0]!,
              associations: (data as FhirJobData).associations!,
              key: `${name}:${job.id}:associations`,
            },
          ]
        : [];
    return [
      ...associations,
      ...data.observations.map((observation) => ({
        traceId: data.traceId,
        error,
        deviceId: observation.provenance.deviceId,
        observation,
        key: `${name}:${job.id}:${observation.observation.id ?? ''}`,
      })),
    ];
  }

  function run<T>(name: string, processor: Processor<T>): void {
    // A permanent failure of a whole job is not retried: its content goes to the
    // dead-letter queue at once and the job completes (queueDecision decides).
    const guarded: Processor<T> = async (job, token) => {
      const started = performance.now();
      try {
        return (await processor(job, token)) as unknown;
      } catch (err) {
        const decision = queueDecision(err);
        if (decision.action === 'retry') throw err;
        const e = toPipelineError(err);
        log.warn(
          {
            event: 'job-dead-lettered',
            queue: name,
            jobId: job.id,
            code: e.code,
            reason: e.message,
          },
          'job dead-lettered',
        );
        await deadLetter(queues.deadLetter, deadLettersOf(name, job as Job, e), deps.metrics);
        return undefined;
      } finally {
        deps.metrics?.stageSeconds.observe(
          { stage: STAGE_OF_QUEUE[name] ?? name },
          (performance.now() - started) / 1000,
        );
      }
    };
    const worker = new Worker<T>(name, guarded, {
      connection: deps.connection,
      prefix: config.redis.prefix,
      concurrency: config.worker.concurrency,
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
      deps.metrics?.jobsStalled.inc({ queue: name });
      log.warn({ event: 'job-stalled', queue: name, jobId }, 'job taken back from a dead worker');
    });
    worker.on('error', (err) =>
      log.error({ event: 'worker-error', queue: name, err }, 'worker error'),
    );
    worker.on('failed', (job: Job<T> | undefined, err: Error) => {
      if (!job) return;
      const e = toPipelineError(err);
      const final = job.attemptsMade >= (job.opts.attempts ?? 1);
      log.warn(
        {
          event: 'job-failed',
          queue: name,
          jobId: job.id,
          attempt: job.attemptsMade,
          final,
          code: e.code,
          reason: e.message,
        },
        'job failed',
      );
      deps.metrics?.errors.inc({ code: e.code, stage: e.stage });
      if (final) {
        // Out of retries: keep everything the job held, for replay.
        deadLetter(queues.deadLetter, deadLettersOf(name, job as Job, e)).catch((dlqErr: unknown) =>
          log.error({ event: 'dead-letter-failed', err: dlqErr }, 'could not dead-letter'),
        );
      }
    });
    workers.push(worker);
  }

  if (stages.has('normalize')) {
    run(
      QUEUE.ingest,
      createNormalizeProcessor({
        ...deps,
        // MedTech's identity modes (IDENTITY_RESOLUTION): associations + Create, or FHIR Lookup.
        identity: createIdentityService({
          mode: config.fhir.identityResolution,
          fhir: deps.fhir,
          deviceIdentifierSystem: config.fhir.deviceIdentifierSystem,
          createPatients: config.fhir.createPatients,
          associations: deps.associations,
          registry: deps.registry,
        }),
        fhirQueue: queues.fhir,
        deadLetterQueue: queues.deadLetter,
        analyticsQueue: queues.analytics,
      }),
    );
  }
  if (stages.has('fhir')) {
    run(
      QUEUE.fhir,
      createFhirWriterProcessor({
        ...deps,
        store: deps.fhirStore,
        associationSync: createAssociationSync({
          fhir: deps.fhir,
          patients: deps.fhirStore,
          reader: deps.associations,
          deviceIdentifierSystem: config.fhir.deviceIdentifierSystem,
          createPatients: config.fhir.createPatients,
        }),
        analyticsQueue: queues.analytics,
        deadLetterQueue: queues.deadLetter,
      }),
    );
  }
  if (stages.has('analytics')) {
    if (!deps.analyticsStore) throw new Error('the analytics stage needs an analytics store');
    run(QUEUE.analytics, createAnalyticsProcessor({ ...deps, store: deps.analyticsStore }));
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
