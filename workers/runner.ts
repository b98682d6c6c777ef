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
 *
 * Tracing on: each run of a job is a span named after the stage, child of the
 * job's `traceparent`; every job it adds (next jobs, dead letters, outcomes)
 * carries this span as its own `traceparent`, and the stage sees the trace id
 * as the job's traceId (so a replayed or association job, which starts a new
 * trace, still logs the id its trace has).
 */
import { createHash } from 'node:crypto';
import { DelayedError, type Job, type Queue } from 'bullmq';
import { queueDecision, toPipelineError } from '../src/errors.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import { TRACING_OFF, type TraceSpan, type Tracing } from '../src/observability/tracing.js';
import { backoffDelay } from '../src/queue-runtime.js';
import {
  JOB_ID,
  type AnalyticsJobData,
  type DeadLetterJobData,
  type FhirJobData,
  type MessageOutcome,
  type Retried,
  type Traced,
} from '../src/queues.js';
import { deadLetter } from './dead-letter.js';
import type { Stage, StageJob, StageResult } from './stage.js';

export interface RunnerPorts {
  readonly fhir: Pick<Queue<FhirJobData>, 'add'>;
  readonly analytics: Pick<Queue<AnalyticsJobData>, 'add'>;
  readonly deadLetter: Queue<DeadLetterJobData>;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /** A span per job run (tracing on); absent: none. */
  readonly tracing?: Tracing;
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

export interface StageRunner<T extends Retried & Traced> {
  /** The BullMQ processor. */
  process(job: Job<T>, token?: string): Promise<void>;
}

export function createRunner<T extends Retried & Traced>(
  stage: Stage<T>,
  ports: RunnerPorts,
): StageRunner<T> {
  const now = ports.now ?? Date.now;
  const random = ports.random ?? Math.random;
  const tracing = ports.tracing ?? TRACING_OFF;

  // Every job a stage adds goes through here: each carries the stage's span.
  async function apply(job: Job<T>, r: StageResult<T>, span: TraceSpan): Promise<void> {
    const traced = <D extends Traced>(data: D): D =>
      span.traceparent === undefined ? data : { ...data, traceparent: span.traceparent };
    for (const n of r.next) {
      if (n.queue === 'fhir') await ports.fhir.add(n.name, traced(n.data), { jobId: n.jobId });
      else await ports.analytics.add(n.name, traced(n.data), { jobId: n.jobId });
    }
    for (const d of r.deadLetters)
      span.event('dead-letter', { 'iomt.error.code': d.error.code, 'iomt.stage': d.error.stage });
    await deadLetter(ports.deadLetter, r.deadLetters, ports.metrics, span.traceparent);
    if (r.outcomes.length > 0) await addOutcomes(job, r.outcomes, span);
    span.set({
      'iomt.next_jobs': r.next.length,
      'iomt.dead_letters': r.deadLetters.length,
      'iomt.retried': r.retry !== undefined,
    });
  }

  async function addOutcomes(
    job: Job<T>,
    outcomes: readonly MessageOutcome[],
    span: TraceSpan,
  ): Promise<void> {
    await ports.analytics.add(
      'messages',
      {
        traceId: span.traceId ?? job.data.traceId,
        ...(span.traceparent !== undefined ? { traceparent: span.traceparent } : {}),
        committedAt: now(),
        observations: [],
        messages: outcomes,
      },
      {
        jobId: JOB_ID.outcomesOf(
          stage.name,
          job.id ?? '',
          digest(outcomes.map((o) => `${o.message.id}:${o.outcome}:${o.errorCode ?? ''}`)),
        ),
      },
    );
  }

  // Tracing on: the stage sees the trace id as the job's traceId (logs join the trace).
  function stageJob(job: Job<T>, span: TraceSpan, data: T = job.data): StageJob<T> {
    const traceId = span.traceId ?? data.traceId;
    return { id: job.id ?? '', data: traceId === data.traceId ? data : { ...data, traceId } };
  }

  async function run(job: Job<T>, span: TraceSpan, token: string | undefined): Promise<void> {
    const started = performance.now();
    try {
      let r: StageResult<T>;
      try {
        r = await stage.run(stageJob(job, span));
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
        r = stage.wholeJobFailure(stageJob(job, span), e);
      }
      await apply(job, r, span);
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
        await apply(
          job,
          stage.wholeJobFailure(stageJob(job, span, r.retry.data), r.retry.error),
          span,
        );
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
  }

  return {
    async process(job, token) {
      const span = tracing.start(stage.name, {
        kind: 'consumer',
        parent: job.data.traceparent,
        attributes: {
          'iomt.stage': stage.name,
          'iomt.job.id': job.id ?? '',
          'messaging.system': 'bullmq',
          'messaging.operation.type': 'process',
          'messaging.destination.name': stage.queue,
        },
      });
      try {
        await tracing.within(span, () => run(job, span, token));
      } catch (err) {
        if (!(err instanceof DelayedError)) span.fail(toPipelineError(err).code);
        throw err;
      } finally {
        span.end();
      }
    },
  };
}
