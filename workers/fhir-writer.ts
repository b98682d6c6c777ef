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
import { createHash } from 'node:crypto';
import { deadLetter, type DeadLetterInput } from './dead-letter.js';
import { writeIsolated } from './fhir-batch.js';
import { createObservationMerger } from '../src/fhir/merge.js';
import { writeChunk } from './windowing.js';
import { messagesDigest, settleMessages, storedVersions } from './analytics-handoff.js';

export interface FhirWriterDeps {
  readonly config: Config;
  readonly store: FhirStore;
  readonly analyticsQueue: Queue<AnalyticsJobData> | undefined;
  readonly deadLetterQueue: Queue<DeadLetterJobData>;
  readonly log: Logger;
  readonly metrics?: Metrics;
}

/** HAPI marks a PUT that changed nothing; other servers answer 200 (counted as updated). */
function savedOutcome(outcome: { created: boolean; unchanged?: boolean }): string {
  return outcome.created ? 'created' : outcome.unchanged ? 'unchanged' : 'updated';
}

/** FHIR R4 Observation.effective[x]: the device's own time, epoch ms. */
function effectiveMs(env: ObservationEnvelope): number | undefined {
  const o = env.observation;
  const at = Date.parse(
    o.effectiveDateTime ?? o.effectivePeriod?.start ?? o.effectiveInstant ?? '',
  );
  return Number.isNaN(at) ? undefined : at;
}

function idsDigest(envs: readonly ObservationEnvelope[]): string {
  const h = createHash('sha256');
  for (const e of envs) h.update(e.observation.id ?? '').update('\n');
  return h.digest('hex').slice(0, 16);
}

export function createFhirWriterProcessor(
  deps: FhirWriterDeps,
): (job: Job<FhirJobData>) => Promise<void> {
  // Grouped Observations (windows, correlation ids) are merged into the stored one.
  const merger = createObservationMerger({
    baseUrl: deps.config.fhir.url,
    timeoutMs: deps.config.fhir.timeoutMs,
  });
  return async function process(job) {
    const { traceId, subjects, observations } = job.data;
    const log = deps.log.child({ traceId, jobId: job.id });
    await deps.store.ensureSubjects(subjects);

    const committed: ObservationEnvelope[] = [];
    const reread = new Set<string>(); // ids whose stored version we do not have (see storedVersions)
    const dead: DeadLetterInput[] = [];
    const retry: ObservationEnvelope[] = [];
    let transient: PipelineError | undefined;
    const size = deps.config.fhir.batchSize;
    for (let i = 0; i < observations.length; i += size) {
      const chunk = observations.slice(i, i + size);
      const outcomes = await writeChunk(chunk, (o) => writeIsolated(deps.store, o), merger);
      outcomes.forEach((outcome, j) => {
        const env = chunk[j];
        if (!env) return;
        if (outcome.ok) {
          deps.metrics?.fhirResources.inc({ outcome: savedOutcome(outcome) });
          // A merge stores more than it brought; the representation is what the server stored.
          const written = outcome.written ?? outcome.resource ?? env.observation;
          // A no-change answer echoes the request; a merge result lacks the server's meta.
          if (outcome.unchanged || written.meta?.lastUpdated === undefined)
            reread.add(env.observation.id ?? '');
          const meta = {
            ...written.meta,
            ...(outcome.versionId ? { versionId: outcome.versionId } : {}),
          };
          committed.push({ ...env, observation: { ...written, meta } });
        } else if (outcome.error.retryable) {
          transient ??= outcome.error;
          retry.push(env);
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
    const committedAt = Date.now();
    for (const env of committed) {
      deps.metrics?.endToEndSeconds.observe((committedAt - env.provenance.receivedAt) / 1000);
      const effective = effectiveMs(env);
      if (effective !== undefined)
        deps.metrics?.deviceToFhirSeconds.observe(Math.max(0, committedAt - effective) / 1000);
    }
    // The mirror gets the stored versions and the fates of the messages now settled.
    const { settled, pending } = settleMessages(
      job.data.messages ?? [],
      { committed, dead, retry },
      Date.now(),
    );
    if ((committed.length > 0 || settled.length > 0) && deps.analyticsQueue) {
      const stored = await storedVersions(deps.store, committed, reread);
      // Committed entries go on now, even when neighbours must be retried. The job
      // id names this exact set: a crash-and-retry re-adding the same set is a
      // no-op, a different set (after a partial retry) is a new job.
      await deps.analyticsQueue.add(
        'batch',
        { traceId, committedAt, observations: stored, messages: settled },
        { jobId: `f-${job.id ?? traceId}-${idsDigest(committed)}${messagesDigest(settled)}` },
      );
    }
    if (transient) {
      log.warn(
        {
          event: 'fhir-retry',
          code: transient.code,
          reason: transient.message,
          retrying: retry.length,
          committed: committed.length,
        },
        'some entries failed transiently; retrying those',
      );
      // The retry carries only the transient failures: what is committed or
      // dead-lettered is done (both idempotent if a crash repeats them).
      await job.updateData({ ...job.data, observations: retry, messages: pending });
      throw transient;
    }
    log.debug(
      { event: 'fhir-written', committed: committed.length, rejected: dead.length },
      'batch written',
    );
  };
}
