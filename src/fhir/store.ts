/**
 * What the FHIR writer needs of the FHIR server, over the one gateway
 * (gateway.ts). Contract:
 *  - ensurePatients(refs): every Patient exists before Observations reference
 *    it (servers enforce referential integrity). A missing Patient is created
 *    (our deterministic id) only when its reference says it may be
 *    (FHIR_CREATE_PATIENTS, or an association that marked it new); otherwise
 *    PatientNotFound: a mistyped id never becomes a phantom Patient. Found
 *    Patients are remembered per process, bounded and for a time
 *    (subject-cache.ts). Devices are written from their association history
 *    (associations.ts), never from an Observation.
 *  - writeObservations(obs): one transaction Bundle of `PUT Observation/{id}`
 *    (create or update, idempotent; all or nothing), in flight only when the
 *    adaptive limit (adaptive-limit.ts) has a slot; calls that wait for a slot
 *    share the next Bundle (src/group-commit.ts, a refused shared
 *    Bundle is re-sent per call so one call's bad entry fails only that call). HAPI ingests a transaction
 *    several times faster than a batch (docs/performance.md). An id twice in
 *    one call is sent once (the last; a transaction refuses duplicates) and its
 *    outcome given to both. A conflict with a concurrent transaction (409/412,
 *    or HAPI's constraint violation on a concurrent first PUT of one id) is
 *    tried again here, after a short jittered wait, `conflictAttempts` times.
 *    Returns one outcome per entry, in order.
 * Throws PipelineError: FhirUnavailable when the whole request failed
 * transiently (Retry-After kept); FhirRejected when the server refused the
 * transaction (fhir-batch.ts then isolates the refused entries).
 */
import type { BundleEntry, Observation, OperationOutcome, Patient } from 'fhir/r4.js';
import { SETTINGS } from '../config.js';
import { PipelineError } from '../errors.js';
import type { PatientRef } from '../queues.js';
import { createAdaptiveLimit, type AdaptiveLimit } from './adaptive-limit.js';
import { createGroupCommit } from '../group-commit.js';
import { statusError } from './errors.js';
import { versionFromEtag, type FhirGateway } from './gateway.js';
import { createSubjectCache, type SubjectCache } from './subject-cache.js';

export type EntryOutcome =
  | {
      readonly ok: true;
      readonly status: number;
      readonly created: boolean;
      readonly versionId?: string;
      /** The server saw no change (HAPI: SUCCESSFUL_UPDATE_NO_CHANGE); false when it does not say. */
      readonly unchanged?: boolean;
      /**
       * The server's representation (Prefer: return=representation): the stored
       * version with meta.versionId and meta.lastUpdated — except for a no-change
       * update, where HAPI echoes the request (re-read it: readObservations).
       */
      readonly resource?: Observation;
    }
  | { readonly ok: false; readonly error: PipelineError };

export interface FhirStore {
  /** Resolves when every Patient exists; PatientNotFound names the first that may not be created. */
  ensurePatients(patients: readonly PatientRef[]): Promise<void>;
  /** Whether Patient/{id} exists (not cached: an operator is asking). */
  patientExists(id: string): Promise<boolean>;
  /**
   * `alone`: never share the Bundle with other callers' Observations (the
   * halving of a refused Bundle, fhir-batch.ts); otherwise Observations of
   * concurrent calls may share one (src/group-commit.ts).
   */
  writeObservations(
    observations: readonly Observation[],
    options?: { readonly alone?: boolean },
  ): Promise<EntryOutcome[]>;
  /** The stored Observations with these ids (missing ones are left out). */
  readObservations(ids: readonly string[]): Promise<Observation[]>;
}

export interface FhirStoreOptions {
  /** Most Patients remembered as existing. */
  readonly knownPatients?: number;
  /**
   * Which Patients are known to exist, for how long (subject-cache.ts), shared
   * with the FHIR writer, which forgets one the server says is gone. Default: a
   * cache of its own, knownPatients entries for FHIR_SUBJECT_CACHE_TTL_S's default.
   */
  readonly subjects?: SubjectCache;
  /** Write Bundles in flight, adapted to latency; default: up to 8. */
  readonly limit?: AdaptiveLimit;
  /** Most Observations in one Bundle, when concurrent calls share it (default FHIR_BATCH_SIZE's). */
  readonly maxEntries?: number;
  /** For metrics and tests: called with the parts (calls) and entries of every Bundle sent. */
  readonly onBundle?: (parts: number, entries: number) => void;
  /** Tries of a transaction that conflicts with a concurrent one (default 5). */
  readonly conflictAttempts?: number;
  /** For tests: called on every conflict retried. */
  readonly onConflict?: () => void;
}

/**
 * A transaction that lost a race with a concurrent one: 409/412, or (HAPI, two
 * first PUTs of one id at once) a unique-constraint violation, which HAPI may
 * answer as 400 or 500 (HAPI-0550 / HAPI-0825 / "constraint").
 */
export function isConflict(err: unknown): boolean {
  if (!(err instanceof PipelineError)) return false;
  if (!err.code.startsWith('Fhir')) return false;
  const status = err.details.status;
  if (status === 409 || status === 412) return true;
  return /HAPI-0550|HAPI-0825|constraint \[|unique constraint|duplicate key/i.test(err.message);
}

/** 429, 503, 504, a timeout or a refused connection: the server asks for less. */
export function isOverload(err: unknown): boolean {
  if (!(err instanceof PipelineError) || err.code !== 'FhirUnavailable') return false;
  const status = err.details.status;
  if (status === 429 || status === 503 || status === 504) return true;
  return status === undefined && /timed out|ECONNREFUSED|ECONNRESET/.test(err.message);
}

/** "201 Created" → 201 (FHIR R4 Bundle.entry.response.status). */
function entryStatus(status: string | undefined): number {
  const n = Number.parseInt(status ?? '', 10);
  return Number.isFinite(n) ? n : 0;
}

/** Whether an entry's OperationOutcome carries `code` (HAPI storage response codes). */
function outcomeHasCode(outcome: unknown, code: string): boolean {
  const issues = (outcome as OperationOutcome | undefined)?.issue ?? [];
  return issues.some((i) => i.details?.coding?.some((c) => c.code === code) ?? false);
}

export function createFhirStore(gateway: FhirGateway, options: FhirStoreOptions = {}): FhirStore {
  const known =
    options.subjects ??
    createSubjectCache({
      ttlMs: SETTINGS.fhir.subjectCacheTtlS.default * 1000,
      max: options.knownPatients ?? 100_000,
    });
  const limit = options.limit ?? createAdaptiveLimit({ max: 8 });
  const conflictAttempts = options.conflictAttempts ?? 5;
  /** Ensures in progress, so concurrent jobs for one patient share one request. */
  const inFlight = new Map<string, Promise<void>>();

  function ensureOne(p: PatientRef): Promise<void> {
    if (known.has('Patient', p.id)) return Promise.resolve();
    let pending = inFlight.get(p.id);
    if (!pending) {
      pending = ensurePatient(p)
        .then(() => known.remember('Patient', p.id))
        .finally(() => inFlight.delete(p.id));
      inFlight.set(p.id, pending);
    }
    return pending;
  }

  async function ensurePatient(p: PatientRef, attempt = 1): Promise<void> {
    if ((await gateway.read<Patient>('Patient', p.id)) !== undefined) return;
    if (!p.create) {
      throw new PipelineError(
        'PatientNotFound',
        `Patient/${p.id} does not exist on the FHIR server and may not be created ` +
          '(FHIR_CREATE_PATIENTS is off and the association did not mark it new)',
        { details: { patientId: p.id }, stage: 'fhir' },
      );
    }
    const written = await gateway.update<Patient>(
      { resourceType: 'Patient', id: p.id, identifier: [{ ...p.identifier }] },
      { representation: false },
    );
    // 409/412: another writer (another worker process) created it at the same
    // moment (HAPI-0825). Read again: it is most likely there now.
    if (written.conflict) {
      if (attempt < 3) return ensurePatient(p, attempt + 1);
      throw new PipelineError('FhirUnavailable', 'write Patient: still conflicting', {
        details: { status: written.status },
      });
    }
  }

  async function transactionWithRetries(observations: readonly Observation[]) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await limit.run(observations.length, () => transaction(observations), isOverload);
      } catch (err) {
        if (!isConflict(err)) throw err;
        if (attempt >= conflictAttempts) {
          const e = err as PipelineError;
          throw new PipelineError('FhirUnavailable', `${e.message} (after ${attempt} tries)`, {
            details: e.details,
            cause: err,
          });
        }
        options.onConflict?.();
        // Jittered, growing: the concurrent transaction commits meanwhile.
        await new Promise((r) => setTimeout(r, (20 + Math.random() * 80) * attempt));
      }
    }
  }

  // Concurrent calls share Bundles while every slot is busy (group commit).
  const coalescer = createGroupCommit<Observation, EntryOutcome>({
    limit,
    maxEntries: options.maxEntries ?? SETTINGS.fhir.batchSize.default,
    send: transactionWithRetries,
    // A transaction refuses one id twice.
    key: (o) => o.id ?? '',
    ...(options.onBundle ? { onBundle: options.onBundle } : {}),
  });

  async function transaction(observations: readonly Observation[]): Promise<EntryOutcome[]> {
    const response = await gateway.transaction(
      observations.map((o): BundleEntry => ({
        resource: o,
        request: { method: 'PUT', url: `Observation/${o.id ?? ''}` },
      })),
      // The stored version per entry, for the ClickHouse mirror (it saves a re-read);
      // paced: the adaptive limit above bounds these Bundles, not the gateway's slots.
      { representation: true, paced: true },
    );
    const entries = response.entry ?? [];
    if (entries.length !== observations.length) {
      throw new PipelineError(
        'FhirUnavailable',
        `transaction response has ${entries.length} entries for ${observations.length} requests`,
      );
    }
    return entries.map((e, i): EntryOutcome => {
      const status = entryStatus(e.response?.status);
      if (status >= 200 && status < 300) {
        const versionId = versionFromEtag(e.response?.etag);
        const unchanged = outcomeHasCode(e.response?.outcome, 'SUCCESSFUL_UPDATE_NO_CHANGE');
        return {
          ok: true,
          status,
          created: status === 201,
          unchanged,
          ...(versionId ? { versionId } : {}),
          ...(e.resource?.resourceType === 'Observation'
            ? { resource: e.resource as Observation }
            : {}),
        };
      }
      return {
        ok: false,
        error: statusError(
          status,
          `Observation/${observations[i]?.id ?? '?'}`,
          e.response?.outcome,
        ),
      };
    });
  }

  return {
    async ensurePatients(patients) {
      for (const p of patients) await ensureOne(p);
    },

    async patientExists(id) {
      return (await gateway.read<Patient>('Patient', id)) !== undefined;
    },

    async writeObservations(observations, writeOptions) {
      if (observations.length === 0) return [];
      // A transaction refuses one id twice: send the last, answer both.
      const lastAt = new Map<string, number>();
      observations.forEach((o, i) => lastAt.set(o.id ?? '', i));
      const unique = [...lastAt.values()].sort((a, b) => a - b);
      const entries = await coalescer.write(
        unique.map((i) => observations[i]!),
        writeOptions?.alone ?? false,
      );
      const byId = new Map<string, EntryOutcome>();
      unique.forEach((at, j) => byId.set(observations[at]!.id ?? '', entries[j]!));
      return observations.map((o) => byId.get(o.id ?? '')!);
    },

    async readObservations(ids) {
      const found: Observation[] = [];
      // 50 ids per search keeps the URL short (ids are up to 64 characters).
      for (let i = 0; i < ids.length; i += 50) {
        const part = ids.slice(i, i + 50);
        found.push(
          ...(await gateway.search<Observation>('Observation', {
            _id: part.join(','),
            _count: String(part.length),
          })),
        );
      }
      return found;
    },
  };
}
