/**
 * BullMQ plumbing shared by every role: connections, the four queues, job
 * options and the one retry policy (exponential backoff with full jitter, capped,
 * Retry-After honoured).
 */
import { Queue, type JobsOptions } from 'bullmq';
import { toPipelineError } from './errors.js';
import {
  QUEUE,
  type AnalyticsJobData,
  type DeadLetterJobData,
  type FhirJobData,
  type IngestJobData,
} from './queues.js';
import { connect, waitDurable, type RedisConnection } from './redis.js';

export { queuePrefix } from './redis.js';

/** Retry policy: first retry after ~0.5 s, doubling, at most 60 s apart. */
export const RETRY = { baseMs: 500, capMs: 60_000, attempts: 200 } as const;

export function backoffDelay(
  attemptsMade: number,
  err: unknown,
  random = Math.random,
  capMs: number = RETRY.capMs,
): number {
  const retryAfter = toPipelineError(err).retryAfterMs;
  if (retryAfter !== undefined) return Math.min(retryAfter, capMs * 5);
  const ceiling = Math.min(capMs, RETRY.baseMs * 2 ** Math.max(0, attemptsMade - 1));
  // Full jitter (AWS architecture blog): spreads retries of many workers apart.
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export const JOB_OPTIONS: JobsOptions = {
  attempts: RETRY.attempts,
  backoff: { type: 'iomt' },
  removeOnComplete: { age: 3600, count: 5000 },
  removeOnFail: { age: 14 * 24 * 3600 },
};

/** Workers block on Redis: ioredis must retry forever for them (BullMQ's rule). */
export function createRedis(url: string, forWorker = false): RedisConnection {
  return connect(url, { maxRetriesPerRequest: forWorker ? null : 3 });
}

export interface Queues {
  readonly ingest: Queue<IngestJobData>;
  readonly fhir: Queue<FhirJobData>;
  readonly analytics: Queue<AnalyticsJobData>;
  readonly deadLetter: Queue<DeadLetterJobData>;
  close(): Promise<void>;
}

/**
 * The backlog brokers watch for backpressure: jobs not yet done in the two
 * queues that hold messages before FHIR (waiting, retrying or running). The
 * analytics queue is left out on purpose: its jobs are already in FHIR, and a
 * ClickHouse outage must not stop intake.
 */
export async function backlogJobs(queues: Pick<Queues, 'ingest' | 'fhir'>): Promise<number> {
  const states = ['waiting', 'active', 'delayed', 'prioritized'] as const;
  const [ingest, fhir] = await Promise.all([
    queues.ingest.getJobCountByTypes(...states),
    queues.fhir.getJobCountByTypes(...states),
  ]);
  return ingest + fhir;
}

/** Job counts per queue and state, for the iomt_queue_jobs gauge. */
export async function queueDepths(queues: Queues): Promise<Record<string, Record<string, number>>> {
  const all = [queues.ingest, queues.fhir, queues.analytics, queues.deadLetter];
  const counts = await Promise.all(
    all.map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed')),
  );
  return Object.fromEntries(all.map((q, i) => [q.name, counts[i] ?? {}]));
}

export function createQueues(connection: RedisConnection, prefix: string): Queues {
  const opts = { connection, prefix, defaultJobOptions: JOB_OPTIONS };
  const ingest = new Queue<IngestJobData>(QUEUE.ingest, opts);
  const fhir = new Queue<FhirJobData>(QUEUE.fhir, opts);
  const analytics = new Queue<AnalyticsJobData>(QUEUE.analytics, opts);
  // Dead letters wait for an operator: never removed automatically.
  const deadLetter = new Queue<DeadLetterJobData>(QUEUE.deadLetter, {
    connection,
    prefix,
    defaultJobOptions: { removeOnComplete: false, removeOnFail: false },
  });
  return {
    ingest,
    fhir,
    analytics,
    deadLetter,
    async close() {
      await Promise.all([ingest.close(), fhir.close(), analytics.close(), deadLetter.close()]);
    },
  };
}

/**
 * The "ingest" queue as the broker's job sink. With REDIS_WAIT_REPLICAS or
 * REDIS_WAIT_AOF a job counts as stored (and its messages get their PUBACK)
 * only once it is on that many replicas or fsynced, so a failover loses no
 * acknowledged message; otherwise once the master has it.
 */
export function ingestSink(
  ingest: Queue<IngestJobData>,
  redis: RedisConnection,
  o: { readonly waitReplicas: number; readonly waitAof: boolean; readonly waitTimeoutMs: number },
): { add(name: string, data: IngestJobData): Promise<unknown> } {
  if (o.waitReplicas === 0 && !o.waitAof) return { add: (name, data) => ingest.add(name, data) };
  const durable = { replicas: o.waitReplicas, aof: o.waitAof, timeoutMs: o.waitTimeoutMs };
  return {
    async add(name, data) {
      const job = await ingest.add(name, data);
      await waitDurable(redis, ingest.toKey(job.id ?? ''), durable);
      return job;
    },
  };
}
