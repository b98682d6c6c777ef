/**
 * The stage contract. A stage is a function from a job to a result: it decides,
 * the runner (runner.ts) acts. A stage reads its ports (templates, the FHIR
 * gateway, ClickHouse) but never writes to a queue; everything that must happen
 * next is in its result:
 *  - `next`: the jobs of the following stages, each with its deterministic id;
 *  - `deadLetters`: the items (messages, Observations, association syncs) that
 *    failed for good, each on its own — one bad item never holds its neighbours;
 *  - `outcomes`: the message outcomes settled here (device_messages), when they
 *    do not travel in a next job;
 *  - `retry`: what is left to try again after transient failures (the job's data,
 *    reduced to those items), and why. The runner reschedules it without
 *    spending the job's attempts.
 * A stage throws only when the whole job cannot be decided (Redis down, say);
 * the runner then retries the whole job, or, for a permanent error, asks the
 * stage's `wholeJobFailure` what the job held.
 */
import type { PipelineError } from '../src/errors.js';
import type {
  AnalyticsJobData,
  FhirJobData,
  MessageOutcome,
  QueueName,
  Retried,
} from '../src/queues.js';
import type { DeadLetterInput } from './dead-letter.js';

export type NextJob =
  | {
      readonly queue: 'fhir';
      readonly name: string;
      readonly data: FhirJobData;
      readonly jobId: string;
    }
  | {
      readonly queue: 'analytics';
      readonly name: string;
      readonly data: AnalyticsJobData;
      readonly jobId: string;
    };

export interface StageResult<T extends Retried> {
  readonly next: readonly NextJob[];
  readonly deadLetters: readonly DeadLetterInput[];
  readonly outcomes: readonly MessageOutcome[];
  readonly retry?: { readonly data: T; readonly error: PipelineError };
}

/** What a stage sees of a BullMQ job. */
export interface StageJob<T> {
  readonly id: string;
  readonly data: T;
}

export interface Stage<T extends Retried> {
  readonly name: 'normalize' | 'fhir' | 'analytics';
  readonly queue: QueueName;
  run(job: StageJob<T>): Promise<StageResult<T>>;
  /**
   * Everything a job held, when it fails as a whole for good (or its transient
   * retries ran out): each item dead-lettered with `error`, each message's
   * outcome settled. Nothing a job held is ever dropped.
   */
  wholeJobFailure(job: StageJob<T>, error: PipelineError): StageResult<T>;
}

export function result<T extends Retried>(partial: Partial<StageResult<T>> = {}): StageResult<T> {
  return { next: [], deadLetters: [], outcomes: [], ...partial };
}
