/**
 * FHIR writer (queue "fhir" → "analytics"). Writes the Devices the job names
 * from their association history (Device.patient, DeviceUseStatements:
 * fhir/associations.ts) and ensures the Patients exist (created only where
 * allowed), then writes Observations as batch Bundles of idempotent PUTs and
 * reads every entry's outcome: accepted → "analytics", rejected → dead letter,
 * transient → the job retries (re-PUTting an accepted Observation changes
 * nothing). An Observation whose Patient is missing and may not be created is
 * dead-lettered alone (PatientNotFound). Jobs that carry `associations` have
 * FHIR follow those devices' histories.
 */
import type { Job, Queue } from 'bullmq';
import { LRUCache } from 'lru-cache';
import type { Config } from '../src/config.js';
import { toPipelineError, type PipelineError } from '../src/errors.js';
import type { AssociationSync } from '../src/fhir/associations.js';
import type { FhirGateway } from '../src/fhir/gateway.js';
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
  /** The FHIR gateway (grouped Observations are merged with If-Match). */
  readonly fhir: FhirGateway;
  /** Writes a device's FHIR Device and DeviceUseStatements from its history. */
  readonly associationSync: AssociationSync;
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
  const merger = createObservationMerger(deps.fhir);
  // Devices whose FHIR Device this process has written from their history; a
  // change of association reaches FHIR through its own sync job, not through this.
  const devicesWritten = new LRUCache<string, true>({ max: 100_000 });

  /** Association syncs the job asks for: a permanent failure is kept as a dead letter. */
  async function syncAssociations(job: Job<FhirJobData>, deviceIds: readonly string[]) {
    const dead: DeadLetterInput[] = [];
    for (const deviceId of deviceIds) {
      try {
        await deps.associationSync.sync(deviceId);
        devicesWritten.set(deviceId, true);
      } catch (err) {
        const e = toPipelineError(err);
        if (e.retryable) throw e;
        dead.push({
          traceId: job.data.traceId,
          error: e,
          deviceId,
          associations: [deviceId],
          key: `${job.id ?? job.data.traceId}:associations:${deviceId}`,
        });
      }
    }
    await deadLetter(deps.deadLetterQueue, dead, deps.metrics);
  }

  /** Patients that may not be created and are missing: their Observations are dead-lettered. */
  async function ensurePatients(job: Job<FhirJobData>): Promise<Map<string, PipelineError>> {
    const refused = new Map<string, PipelineError>();
    for (const p of job.data.patients ?? []) {
      try {
        await deps.store.ensurePatients([p]);
      } catch (err) {
        const e = toPipelineError(err);
        if (e.retryable) throw e;
        refused.set(p.id, e);
      }
    }
    return refused;
  }

  return async function process(job) {
    const { traceId } = job.data;
    const log = deps.log.child({ traceId, jobId: job.id });
    if (job.data.associations?.length) await syncAssociations(job, job.data.associations);
    await syncAssociations(
      job,
      (job.data.devices ?? []).filter((d) => !devicesWritten.has(d)),
    );
    const refusedPatients = await ensurePatients(job);

    const committed: ObservationEnvelope[] = [];
    const reread = new Set<string>(); // ids whose stored version we do not have (see storedVersions)
    const dead: DeadLetterInput[] = [];
    const retry: ObservationEnvelope[] = [];
    let transient: PipelineError | undefined;
    const observations: ObservationEnvelope[] = [];
    for (const env of job.data.observations) {
      const patientId = env.observation.subject?.reference?.replace(/^Patient\//, '') ?? '';
      const refused = refusedPatients.get(patientId);
      if (refused) {
        dead.push({
          traceId,
          error: refused,
          deviceId: env.provenance.deviceId,
          observation: env,
          key: `${job.id ?? traceId}:${env.observation.id ?? patientId}`,
        });
      } else observations.push(env);
    }
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
