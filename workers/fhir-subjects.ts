/**
 * Subjects the FHIR server lost, restored for the FHIR writer. The writer
 * remembers which Patients and Devices exist (src/fhir/subject-cache.ts); when
 * one was deleted on the server meanwhile, the server refuses the Observations
 * that reference it (HAPI: 400, "HAPI-1094: Resource Device/x not found",
 * "HAPI-1096: … is deleted"). Then, for each such entry:
 *
 *  1. the subject is forgotten and ensured again, as the pipeline is allowed to:
 *     - a Device only in Create mode, where the pipeline writes Devices from the
 *       association history (re-synced: Device and DeviceUseStatements); in the
 *       Lookup modes the Device is the FHIR server's, and stays missing;
 *     - a Patient only through the job's PatientRef, so it is created only when
 *       FHIR_CREATE_PATIENTS is on or the association marked it new
 *       (docs/associations.md); otherwise the entry is refused as
 *       PatientNotFound, never written to an invented patient;
 *  2. the entry is written again. A server reports one missing reference at a
 *     time (subject before device), so this repeats, a few rounds at most.
 *
 * Contract: in — a chunk, the job's PatientRefs and the chunk's writer; out —
 * one outcome per entry, in order: the rewrite's where a subject was restored,
 * PatientNotFound (or the sync's refusal) where it may not be, the first answer
 * otherwise. A transient failure while restoring throws, so the chunk is retried.
 */
import type { Observation } from 'fhir/r4.js';
import { toPipelineError, type PipelineError } from '../src/errors.js';
import type { AssociationSync } from '../src/fhir/associations.js';
import type { FhirStore } from '../src/fhir/store.js';
import {
  missingSubjects,
  type MissingSubject,
  type SubjectCache,
} from '../src/fhir/subject-cache.js';
import type { Logger } from '../src/logger.js';
import { deviceResourceId } from '../src/mapping/identity.js';
import type { ObservationEnvelope, PatientRef } from '../src/queues.js';

export interface SubjectRestoreDeps {
  readonly subjects: SubjectCache;
  readonly store: Pick<FhirStore, 'ensurePatients'>;
  readonly associationSync: AssociationSync;
  /** IDENTITY_RESOLUTION is Create: the pipeline writes the Devices. */
  readonly writesDevices: boolean;
  readonly log?: Logger;
}

type Failure = { readonly ok: false; readonly error: PipelineError };
type Outcome = { readonly ok: true } | Failure;

/** Rounds of restore-and-rewrite per chunk: a Patient, then a Device, then spare. */
const MAX_ROUNDS = 3;

/** restored: written again; refused: it may not be (the entry takes this error); kept: not ours. */
type Restore = { kind: 'restored' } | { kind: 'refused'; error: PipelineError } | { kind: 'kept' };

function references(o: Observation, s: MissingSubject): boolean {
  const ref = s.type === 'Patient' ? o.subject?.reference : o.device?.reference;
  return ref === `${s.type}/${s.id}`;
}

/** The MQTT device whose FHIR Device id is `id`, among those the reading names. */
function mqttDeviceOf(env: ObservationEnvelope, id: string): string | undefined {
  const p = env.provenance;
  return [p.readingDeviceId, p.deviceId, p.gatewayId].find(
    (d) => d !== undefined && deviceResourceId(d) === id,
  );
}

export async function writeRestoringSubjects<O extends Outcome>(
  chunk: readonly ObservationEnvelope[],
  patients: readonly PatientRef[],
  write: (chunk: readonly ObservationEnvelope[]) => Promise<O[]>,
  deps: SubjectRestoreDeps,
): Promise<(O | Failure)[]> {
  const out: (O | Failure)[] = await write(chunk);
  const done = new Map<string, Restore>(); // per subject, once per chunk

  async function restore(env: ObservationEnvelope, s: MissingSubject): Promise<Restore> {
    const key = `${s.type}/${s.id}`;
    const known = done.get(key);
    if (known) return known;
    let result: Restore = { kind: 'kept' };
    try {
      if (s.type === 'Patient') {
        const ref = patients.find((p) => p.id === s.id);
        if (ref) {
          deps.subjects.forget('Patient', s.id);
          await deps.store.ensurePatients([ref]); // creates it only when ref.create
          result = { kind: 'restored' };
        }
      } else {
        const device = deps.writesDevices ? mqttDeviceOf(env, s.id) : undefined;
        if (device !== undefined) {
          deps.subjects.forget('Device', device);
          // The sync ensures the Patients of the device's history first; the server
          // names one missing reference at a time, in no promised order, so the
          // reading's Patient may be gone too: check it again rather than trust the cache.
          const patient = /^Patient\/(.+)$/.exec(env.observation.subject?.reference ?? '')?.[1];
          if (patient !== undefined) deps.subjects.forget('Patient', patient);
          await deps.associationSync.sync(device);
          deps.subjects.remember('Device', device);
          result = { kind: 'restored' };
        }
      }
    } catch (err) {
      const e = toPipelineError(err);
      if (e.retryable) throw e;
      result = { kind: 'refused', error: e };
    }
    done.set(key, result);
    return result;
  }

  for (let round = 0; round < MAX_ROUNDS; round++) {
    const again: number[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const o = out[i];
      const env = chunk[i]!;
      if (o === undefined || o.ok) continue;
      const missing = missingSubjects(o.error).filter((s) => references(env.observation, s));
      if (missing.length === 0) continue;
      const results = [];
      for (const s of missing) results.push(await restore(env, s));
      const refused = results.find((r) => r.kind === 'refused');
      if (refused?.kind === 'refused') out[i] = { ok: false, error: refused.error };
      else if (results.every((r) => r.kind === 'restored')) again.push(i);
    }
    if (again.length === 0) break;
    deps.log?.info(
      { event: 'fhir-subjects-restored', entries: again.length },
      'subjects missing on the FHIR server were ensured again; writing their Observations again',
    );
    const rewritten = await write(again.map((i) => chunk[i]!));
    again.forEach((at, j) => {
      out[at] = rewritten[j]!;
    });
  }
  return out;
}
