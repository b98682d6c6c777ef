/**
 * The FHIR stage (queue "fhir" → "analytics"). Writes the Devices the job names
 * from their association history (Device.patient, DeviceUseStatements:
 * fhir/associations.ts) and ensures the Patients exist (created only where
 * allowed), then writes Observations as transaction Bundles of idempotent PUTs
 * (all chunks of a job at once, as many in flight as the adaptive limit allows) and
 * decides per entry (the runner, runner.ts, writes the decisions):
 *  - accepted → the stored version goes to the "analytics" job, with the
 *    outcomes of the messages now settled;
 *  - refused (FhirRejected, PatientNotFound…; a refused transaction is split to
 *    isolate its bad entries, fhir-batch.ts) → a dead letter with the
 *    Observation and its message's outcome, so a replay can settle it;
 *  - transient (network, 429/5xx, conflicts) → the retry remainder: only those
 *    entries are written again (re-PUTting an accepted one changes nothing).
 * Jobs that carry `associations` have FHIR follow those devices' histories.
 */
import { createHash } from 'node:crypto';
import type { Config } from '../src/config.js';
import { toPipelineError, type PipelineError } from '../src/errors.js';
import type { AssociationSync } from '../src/fhir/associations.js';
import type { FhirGateway } from '../src/fhir/gateway.js';
import { createObservationMerger } from '../src/fhir/merge.js';
import type { FhirStore } from '../src/fhir/store.js';
import { createSubjectCache, type SubjectCache } from '../src/fhir/subject-cache.js';
import type { Logger } from '../src/logger.js';
import type { Metrics } from '../src/metrics.js';
import {
  deadLetterKey,
  JOB_ID,
  QUEUE,
  type FhirJobData,
  type MessageOutcome,
  type ObservationEnvelope,
} from '../src/queues.js';
import { messagesDigest, settleMessages, storedVersions } from './analytics-handoff.js';
import { deadObservation, type DeadLetterInput } from './dead-letter.js';
import { writeIsolated } from './fhir-batch.js';
import { writeRestoringSubjects, type SubjectRestoreDeps } from './fhir-subjects.js';
import { result, type NextJob, type Stage, type StageJob } from './stage.js';
import { writeChunk } from './windowing.js';

export interface FhirWriterDeps {
  readonly config: Config;
  readonly store: FhirStore;
  /** The FHIR gateway (grouped Observations are merged with If-Match). */
  readonly fhir: FhirGateway;
  /** Writes a device's FHIR Device and DeviceUseStatements from its history. */
  readonly associationSync: AssociationSync;
  readonly log: Logger;
  readonly metrics?: Metrics;
  /**
   * Patients and Devices known to exist (src/fhir/subject-cache.ts), shared with
   * the store's Patient checks. Default: one of its own, FHIR_SUBJECT_CACHE_TTL_S.
   */
  readonly subjects?: SubjectCache;
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

function patientOf(env: ObservationEnvelope): string {
  return env.observation.subject?.reference?.replace(/^Patient\//, '') ?? '';
}

function deadSync(job: StageJob<FhirJobData>, deviceId: string, error: PipelineError) {
  return {
    traceId: job.data.traceId,
    error,
    deviceId,
    associations: [deviceId],
    key: deadLetterKey('fhir', job.id, 'associations', deviceId),
  };
}

export function createFhirWriterStage(deps: FhirWriterDeps): Stage<FhirJobData> {
  // Grouped Observations (windows, correlation ids) are merged into the stored one.
  const merger = createObservationMerger(deps.fhir);
  // Devices whose FHIR Device this process has written from their history, for
  // a time; a change of association reaches FHIR through its own sync job, not
  // through this. One the server lost is restored (fhir-subjects.ts).
  const subjects =
    deps.subjects ?? createSubjectCache({ ttlMs: deps.config.fhir.subjectCacheTtlS * 1000 });
  const restoreDeps: SubjectRestoreDeps = {
    subjects,
    store: deps.store,
    associationSync: deps.associationSync,
    writesDevices: deps.config.fhir.identityResolution === 'Create',
    log: deps.log,
  };

  // One sync per device at a time in this process. Jobs that only need a
  // device's FHIR Device to exist share the sync in flight (and its outcome):
  // after an outage every job the stage holds needs the same few Devices at
  // once, and as many concurrent syncs of one Device overloaded the returning
  // server. A sync asked for by an association change runs after the one in
  // flight, so that it writes the history as it is now.
  const syncing = new Map<string, Promise<void>>();
  function startSync(deviceId: string): Promise<void> {
    const running: Promise<void> = deps.associationSync
      .sync(deviceId)
      .then(() => subjects.remember('Device', deviceId))
      .finally(() => {
        if (syncing.get(deviceId) === running) syncing.delete(deviceId);
      });
    syncing.set(deviceId, running);
    return running;
  }
  async function syncDevice(deviceId: string, changed: boolean): Promise<void> {
    if (!changed) {
      if (subjects.has('Device', deviceId)) return;
      return syncing.get(deviceId) ?? startSync(deviceId);
    }
    for (let running = syncing.get(deviceId); running; running = syncing.get(deviceId))
      await running.catch(() => undefined);
    return startSync(deviceId);
  }

  /** Association syncs: written, or refused for good (dead letters); a transient failure throws. */
  async function syncAll(job: StageJob<FhirJobData>): Promise<DeadLetterInput[]> {
    const dead: DeadLetterInput[] = [];
    const changed = new Set(job.data.associations ?? []);
    const wanted = new Set([
      ...changed,
      ...(job.data.devices ?? []).filter((d) => !subjects.has('Device', d)),
    ]);
    for (const deviceId of wanted) {
      try {
        await syncDevice(deviceId, changed.has(deviceId));
      } catch (err) {
        const e = toPipelineError(err);
        if (e.retryable) throw e;
        dead.push(deadSync(job, deviceId, e));
      }
    }
    return dead;
  }

  /** Patients that are missing and may not be created (their Observations are refused). */
  async function refusedPatients(job: StageJob<FhirJobData>): Promise<Map<string, PipelineError>> {
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

  return {
    name: 'fhir',
    queue: QUEUE.fhir,

    wholeJobFailure(job, error) {
      const dead = [
        ...(job.data.associations ?? []).map((d) => deadSync(job, d, error)),
        ...job.data.observations.map((env) => deadObservation('fhir', job, env, error)),
      ];
      const { settled } = settleMessages(
        job.data.messages ?? [],
        { committed: [], dead, retry: [] },
        Date.now(),
      );
      return result({ deadLetters: dead, outcomes: settled });
    },

    async run(job) {
      const { traceId } = job.data;
      const log = deps.log.child({ traceId, jobId: job.id });
      const dead: DeadLetterInput[] = [];
      let refused: Map<string, PipelineError>;
      try {
        dead.push(...(await syncAll(job)));
        refused = await refusedPatients(job);
      } catch (err) {
        // The server cannot be reached for what must come first: all of it, later.
        const e = toPipelineError(err);
        if (!e.retryable) throw e;
        return result({ retry: { data: job.data, error: e } });
      }

      const committed: ObservationEnvelope[] = [];
      const reread = new Set<string>(); // ids whose stored version we do not have (see storedVersions)
      const retry: ObservationEnvelope[] = [];
      let transient: PipelineError | undefined;
      const writable: ObservationEnvelope[] = [];
      for (const env of job.data.observations) {
        const error = refused.get(patientOf(env));
        if (error) dead.push(deadObservation('fhir', job, env, error));
        else writable.push(env);
      }
      const size = deps.config.fhir.batchSize;
      const chunks: ObservationEnvelope[][] = [];
      for (let i = 0; i < writable.length; i += size) chunks.push(writable.slice(i, i + size));
      // All chunks at once: the store's adaptive limit decides how many Bundles
      // are really in flight (src/fhir/adaptive-limit.ts), across jobs.
      const written = await Promise.all(
        chunks.map((chunk) =>
          writeRestoringSubjects(
            chunk,
            job.data.patients ?? [],
            (c) => writeChunk(c, (o) => writeIsolated(deps.store, o), merger),
            restoreDeps,
          ).then(
            (outcomes) => ({ outcomes }),
            (err: unknown) => ({ error: toPipelineError(err) }),
          ),
        ),
      );
      written.forEach((w, c) => {
        const chunk = chunks[c]!;
        if ('error' in w) {
          // The whole request failed transiently: the chunk is tried again later.
          if (!w.error.retryable) throw w.error;
          transient ??= w.error;
          retry.push(...chunk);
          return;
        }
        w.outcomes.forEach((outcome, j) => {
          const env = chunk[j];
          if (!env) return;
          if (outcome.ok) {
            deps.metrics?.fhirResources.inc({ outcome: savedOutcome(outcome) });
            // A merge stores more than it brought; the representation is what the server stored.
            const stored = outcome.written ?? outcome.resource ?? env.observation;
            // A no-change answer echoes the request; a merge result lacks the server's meta.
            if (outcome.unchanged || stored.meta?.lastUpdated === undefined)
              reread.add(env.observation.id ?? '');
            const meta = {
              ...stored.meta,
              ...(outcome.versionId ? { versionId: outcome.versionId } : {}),
            };
            committed.push({ ...env, observation: { ...stored, meta } });
          } else if (outcome.error.retryable) {
            transient ??= outcome.error;
            retry.push(env);
          } else {
            dead.push(deadObservation('fhir', job, env, outcome.error));
          }
        });
      });
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
        committedAt,
      );
      const next: NextJob[] = [];
      if (committed.length > 0 || settled.length > 0) {
        const stored = await storedVersions(deps.store, committed, reread);
        // Committed entries go on now, even when neighbours are retried. The job id
        // names this exact set: a repeat of it is a no-op, another set a new job.
        next.push({
          queue: 'analytics',
          name: 'batch',
          jobId: JOB_ID.analyticsOf(job.id, `${idsDigest(committed)}${messagesDigest(settled)}`),
          data: { traceId, committedAt, observations: stored, messages: settled },
        });
      }
      log.debug(
        {
          event: 'fhir-written',
          committed: committed.length,
          rejected: dead.length,
          retrying: retry.length,
        },
        'batch written',
      );
      const remainder: MessageOutcome[] = pending;
      return result({
        next,
        deadLetters: dead,
        ...(transient
          ? {
              retry: {
                // Only the transient failures: what is committed or dead-lettered is done.
                data: {
                  ...job.data,
                  associations: [],
                  devices: [],
                  observations: retry,
                  messages: remainder,
                },
                error: transient,
              },
            }
          : {}),
      });
    },
  };
}
