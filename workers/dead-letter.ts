/**
 * Writing dead letters: a bad message never blocks good ones. Each keeps its
 * raw payload (or resource), stage, stable code and the cause's message.
 */
import type { Queue } from 'bullmq';
import type { PipelineError } from '../src/errors.js';
import type { Metrics } from '../src/metrics.js';
import {
  deadLetterKey,
  type DeadLetterJobData,
  type MessageOutcome,
  type ObservationEnvelope,
  type TelemetryMessage,
} from '../src/queues.js';

export interface DeadLetterInput {
  readonly traceId: string;
  readonly error: PipelineError;
  readonly deviceId: string;
  readonly message?: TelemetryMessage;
  readonly observation?: ObservationEnvelope;
  /** Or the devices whose association history could not be written to FHIR. */
  readonly associations?: readonly string[];
  /** With an Observation: its message's outcome before the failure (a replay settles it). */
  readonly outcome?: MessageOutcome;
  /** Stable per failure, so a retried job does not write the same dead letter twice. */
  readonly key: string;
}

/** `traceparent`: the span that dead-lettered them (tracing on), kept beside their traceId. */
export async function deadLetter(
  queue: Queue<DeadLetterJobData>,
  items: readonly DeadLetterInput[],
  metrics?: Metrics,
  traceparent?: string,
): Promise<void> {
  if (items.length === 0) return;
  await queue.addBulk(
    items.map((d) => ({
      name: d.error.code,
      data: {
        traceId: d.traceId,
        ...(traceparent !== undefined ? { traceparent } : {}),
        stage: d.error.stage,
        code: d.error.code,
        reason: d.error.message,
        deviceId: d.deviceId,
        failedAt: Date.now(),
        ...(d.message ? { message: d.message } : {}),
        ...(d.observation ? { observation: d.observation } : {}),
        ...(d.associations ? { associations: d.associations } : {}),
        ...(d.outcome ? { outcome: d.outcome } : {}),
      },
      // BullMQ refuses custom job ids containing ":" (its key separator).
      opts: { jobId: d.key.replaceAll(':', '_') },
    })),
  );
  for (const d of items) metrics?.errors.inc({ code: d.error.code, stage: d.error.stage });
}

/**
 * An Observation that failed for good at `stage`, kept with its message's
 * outcome as it stood (the job's `messages`), so that a replay can settle it.
 */
export function deadObservation(
  stage: 'fhir' | 'analytics',
  job: {
    readonly id: string;
    readonly data: { readonly traceId: string; readonly messages?: readonly MessageOutcome[] };
  },
  env: ObservationEnvelope,
  error: PipelineError,
): DeadLetterInput {
  const outcome = job.data.messages?.find((m) => m.message.id === env.provenance.messageId);
  return {
    traceId: job.data.traceId,
    error,
    deviceId: env.provenance.deviceId,
    observation: env,
    ...(outcome ? { outcome } : {}),
    key: deadLetterKey(stage, job.id, env.observation.id ?? env.provenance.messageId),
  };
}
