/**
 * FHIR writer (queue "fhir" → "analytics"). Ensures Patient and Device exist,
 * writes Observations as batch Bundles of idempotent PUTs, reads every entry's
 * outcome: accepted → "analytics", rejected → dead letter, transient → the job
 * retries (re-PUTting an accepted Observation changes nothing).
 */
import type { Job, Queue } from 'bullmq';
import type { Config } from '../src/config.js';
import type { PipelineError } from '../src/errors.js';
import type { FhirStore } from '../src/fhir/store.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import type {
  AnalyticsJobData,
  DeadLetterJobData,
  FhirJobData,
  ObservationEnvelope,
} from '../src/queues.js';
import { deadLetter, type DeadLetterInput } from './dead-letter.js';

export interface FhirWriterDeps {
  readonly config: Config;
  readonly store: FhirStore;
  readonly analyticsQueue: Queue<AnalyticsJobData> | undefined;
  readonly deadLetterQueue: Queue<DeadLetterJobData>;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

export function createFhirWriterProcessor(
  deps: FhirWriterDeps,
): (job: Job<FhirJobData>) => Promise<void> {
  return async function process(job) {
    const { traceId, subjects, observations } = job.data;
    const log = deps.log.child({ traceId, jobId: job.id });
    await deps.store.ensureSubjects(subjects);

    const committed: ObservationEnvelope[] = [];
    const dead: DeadLetterInput[] = [];
    let transient: PipelineError | undefined;
    const size = deps.config.fhir.batchSize;
    for (let i = 0; i < observations.length; i += size) {
      const chunk = observations.slice(i, i + size);
      const outcomes = await deps.store.writeObservations(chunk.map((e) => e.observation));
      outcomes.forEach((outcome, j) => {
        const env = chunk[j];
        if (!env) return;
        if (outcome.ok) {
          deps.metrics?.fhirResources.inc({ outcome: outcome.created ? 'created' : 'updated' });
          const meta = {
            ...env.observation.meta,
            ...(outcome.versionId ? { versionId: outcome.versionId } : {}),
          };
          committed.push({ ...env, observation: { ...env.observation, meta } });
        } else if (outcome.error.retryable) {
          transient ??= outcome.error;
        } else {
          dead.push({
            traceId,
            error: outcome.error,
            deviceId: env.provenance.deviceId,
            observation: env,
            key: `${job.id ?? traceId}:${env.observation.id ?? j}`,
          });
        }
      });
    }
    await deadLetter(deps.deadLetterQueue, dead, deps.metrics);
    if (transient) {
      log.warn(
        { event: 'fhir-retry', code: transient.code, reason: transient.message },
        'some entries failed transiently; retrying the batch',
      );
      throw transient;
    }
    const committedAt = Date.now();
    for (const env of committed)
      deps.metrics?.endToEndSeconds.observe((committedAt - env.provenance.receivedAt) / 1000);
    if (committed.length > 0 && deps.analyticsQueue) {
      await deps.analyticsQueue.add(
        'batch',
        { traceId, committedAt, observations: committed },
        { jobId: `f-${job.id ?? traceId}` },
      );
    }
    log.debug(
      { event: 'fhir-written', committed: committed.length, rejected: dead.length },
      'batch written',
    );
  };
}
