/**
 * The runner: the only code that writes a stage's decisions to the queues. For
 * each job it runs the stage, then applies the result, in an order that a crash
 * at any point only repeats (every job id and dead-letter key is deterministic,
 * every write idempotent):
 *   1. the next jobs, 2. the dead letters, 3. the settled message outcomes
 *   (an analytics job), 4. the retry remainder: the job's data is reduced to
 *   it and the job is rescheduled with backoff (DelayedError), which spends
 *   none of the job's BullMQ attempts — those are for whole-job failures.
 * When the stage throws, the one queue decision (src/errors.ts) says what
 * follows: retry the whole job (while it has attempts), or dead-letter
 * everything it held (stage.wholeJobFailure). A remainder that keeps failing
 * transiently is dead-lettered after WORKER_MAX_TRANSIENT_RETRIES rounds, with
 * the transient code, so it can be replayed.
 */
import { createHash } from 'node:crypto';
import { DelayedError, type Job, type Queue } from 'bullmq';
import { queueDecision, toPipelineError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import { backoffDelay } from '../src/queue-runtime.js';
import {
  JOB_ID,
  type AnalyticsJobData,
  type DeadLetterJobData,
  type FhirJobData,
  type MessageOutcome,
  type Retried,
} from '../src/queues.js';
import { deadLetter } from './dead-letter.js';
import type { Stage, StageJob, StageResult } from './stage.js';

export interface RunnerPorts {
  readonly fhir: Pick<Queue<FhirJobData>, 'add'>;
  readonly analytics: Pick<Queue<AnalyticsJobData>, 'add'>;
  readonly deadLetter: Queue<DeadLetterJobData>;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** Longest wait between two retries, ms (WORKER_RETRY_MAX_DELAY_MS). */
  readonly retryCapMs: number;
  /** Rounds of transient retries of a remainder before it is dead-lettered. */
  readonly maxTransientRetries: number;
  readonly now?: () => number;
  readonly random?: () => number;
}

function digest(ids: readonly string[]): string {
  const h = createHash('sha256');
  for (const id of ids) h.update(id).update('\n');
  return h.digest('hex').slice(0, 16);
}

export interface StageRunner<T extends Retried> {
  /** The BullMQ processor. */
  process(job: Job<T>, token?: string): Promise<void>;
}

export function createRunner<T extends Retried>(
  stage: Stage<T>,
  ports: RunnerPorts,
): StageRunner<T> {
  const now = ports.now ?? Date.now;
  const random = ports.random ?? Math.random;

  async function apply(job: Job<T>, r: StageResult<T>): Promise<void> {
    for (const n of r.next) {
      if (n.queue === 'fhir') await ports.fhir.add(n.name, n.data, { jobId: n.jobId });
      else await ports.analytics.add(n.name, n.data, { jobId: n.jobId });
    }
    await deadLetter(ports.deadLetter, r.deadLetters, ports.metrics);
    if (r.outcomes.length > 0) await addOutcomes(job, r.outcomes);
  }

  async function addOutcomes(job: Job<T>, outcomes: readonly MessageOutcome[]): Promise<void> {
    const data = job.data as { traceId?: string };
    await ports.analytics.add(
      'messages',
      { traceId: data.traceId ?? '', committedAt: now(), observations: [], messages: outcomes },
      {
        jobId: JOB_ID.outcomesOf(
          stage.name,
          job.id ?? '',
          digest(outcomes.map((o) => `${o.message.id}:${o.outcome}:${o.errorCode ?? ''}`)),
        ),
      },
    );
  }

  function stageJob(job: Job<T>, data: T = job.data): StageJob<T> {
    return { id: job.id ?? '', data };
  }

  return {
    async process(job, token) {
      const started = performance.now();
      try {
        let r: StageResult<T>;
        try {
          r = await stage.run(stageJob(job));
        } catch (err) {
          const e = toPipelineError(err);
          const attempts = job.opts.attempts ?? 1;
          if (queueDecision(e).action === 'retry' && job.attemptsMade + 1 < attempts) throw e;
          ports.log.warn(
            {
              event: 'job-dead-lettered',
              stage: stage.name,
              jobId: job.id,
              code: e.code,
              reason: e.message,
            },
            'job dead-lettered whole',
          );
          r = stage.wholeJobFailure(stageJob(job), e);
        }
        await apply(job, r);
        if (!r.retry) return;

        const rounds = (job.data.transientRetries ?? 0) + 1;
        if (rounds > ports.maxTransientRetries) {
          ports.log.warn(
            {
              event: 'retries-exhausted',
              stage: stage.name,
              jobId: job.id,
              code: r.retry.error.code,
              rounds,
            },
            'transient failures outlasted the retries: dead-lettered',
          );
          await apply(job, stage.wholeJobFailure(stageJob(job, r.retry.data), r.retry.error));
          return;
        }
        const delay = backoffDelay(rounds, r.retry.error, random, ports.retryCapMs);
        ports.log.warn(
          {
            event: 'retry-remainder',
            stage: stage.name,
            jobId: job.id,
            code: r.retry.error.code,
            reason: r.retry.error.message,
            rounds,
            delayMs: delay,
          },
          'some entries failed transiently; rescheduling those',
        );
        // The job keeps only what is left; done or dead-lettered items are not redone.
        await job.updateData({ ...r.retry.data, transientRetries: rounds });
        await job.moveToDelayed(now() + delay, token);
        throw new DelayedError();
      } finally {
        ports.metrics?.stageSeconds.observe(
          { stage: stage.name },
          (performance.now() - started) / 1000,
        );
      }
    },
  };
}
