/**
 * The FHIR adapter (fhir-kit-client). Contract:
 *  - ensurePatients(refs): every Patient exists before Observations reference
 *    it (servers enforce referential integrity). A missing Patient is created
 *    (our deterministic id) only when its reference says it may be
 *    (FHIR_CREATE_PATIENTS, or an association that marked it new); otherwise
 *    PatientNotFound: a mistyped id never becomes a phantom Patient. Found
 *    Patients are remembered per process. Devices are written from their
 *    association history (fhir/associations.ts), never from an Observation.
 *  - writeObservations(obs): one batch Bundle of `PUT Observation/{id}` (create
 *    or update, idempotent); returns one outcome per entry, in order — a rejected
 *    entry never fails its neighbours.
 * Throws PipelineError FhirUnavailable when the whole request failed transiently.
 */
import { Client, type FhirResource } from 'fhir-kit-client';
import type { Bundle, BundleEntry, Observation, OperationOutcome, Patient } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import type { PatientRef } from '../queues.js';

interface FhirResourceLike {
  readonly resourceType: string;
  readonly id?: string;
}
import { fhirError, statusError } from './errors.js';

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
  /** A resource by id, or undefined (404/410). */
  read<T extends FhirResourceLike>(resourceType: string, id: string): Promise<T | undefined>;
  /** One page of a search (at most `_count` entries): the resources. */
  search<T extends FhirResourceLike>(
    resourceType: string,
    params: Readonly<Record<string, string>>,
  ): Promise<T[]>;
  /** A transaction Bundle (all or nothing); the response Bundle. */
  transaction(entries: readonly BundleEntry[]): Promise<Bundle>;
  writeObservations(observations: readonly Observation[]): Promise<EntryOutcome[]>;
  /** The stored Observations with these ids (missing ones are left out). */
  readObservations(ids: readonly string[]): Promise<Observation[]>;
  /** Resolves when the server answers its CapabilityStatement. */
  ping(): Promise<void>;
}

export interface FhirStoreOptions {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  /** Most Patients remembered as existing (then the memory starts over). */
  readonly knownSubjectsLimit?: number;
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

/** W/"3" → "3" */
function versionFromEtag(etag: string | undefined): string | undefined {
  return etag?.match(/"([^"]+)"/)?.[1];
}

export function createFhirStore(options: FhirStoreOptions): FhirStore {
  const client = new Client({ baseUrl: options.baseUrl });
  const known = new Set<string>();
  /** Ensures in progress, so concurrent jobs for one device share one request. */
  const inFlight = new Map<string, Promise<void>>();
  const limit = options.knownSubjectsLimit ?? 100_000;
  const requestOptions = () => ({
    signal: AbortSignal.timeout(options.timeoutMs),
    headers: { 'Cache-Control': 'no-cache' },
  });

  function ensureOne(p: PatientRef): Promise<void> {
    if (known.has(p.id)) return Promise.resolve();
    let pending = inFlight.get(p.id);
    if (!pending) {
      pending = ensurePatient(p)
        .then(() => {
          if (known.size >= limit) known.clear();
          known.add(p.id);
        })
        .finally(() => inFlight.delete(p.id));
      inFlight.set(p.id, pending);
    }
    return pending;
  }

  async function read<T>(resourceType: string, id: string): Promise<T | undefined> {
    try {
      return (await client.read({ resourceType, id, options: requestOptions() })) as T;
    } catch (err) {
      const status = (err as { response?: { status?: number } }).response?.status;
      if (status === 404 || status === 410) return undefined;
      throw fhirError(err, `read ${resourceType}`);
    }
  }

  async function ensurePatient(p: PatientRef, attempt = 1): Promise<void> {
    if ((await read<Patient>('Patient', p.id)) !== undefined) return;
    if (!p.create) {
      throw new PipelineError(
        'PatientNotFound',
        `Patient/${p.id} does not exist on the FHIR server and may not be created ` +
          '(FHIR_CREATE_PATIENTS is off and the association did not mark it new)',
        { details: { patientId: p.id }, stage: 'fhir' },
      );
    }
    try {
      await client.update({
        resourceType: 'Patient',
        id: p.id,
        body: {
          resourceType: 'Patient',
          id: p.id,
          identifier: [{ ...p.identifier }],
        },
        options: requestOptions(),
      });
    } catch (err) {
      const status = (err as { response?: { status?: number } }).response?.status;
      // 409/412: another writer (another worker process) created it at the same
      // moment (HAPI-0825). Read again: it is most likely there now.
      if ((status === 409 || status === 412) && attempt < 3) return ensurePatient(p, attempt + 1);
      throw fhirError(err, 'write Patient');
    }
  }

  return {
    async ensurePatients(patients) {
      for (const p of patients) await ensureOne(p);
    },

    async patientExists(id) {
      return (await read<Patient>('Patient', id)) !== undefined;
    },

    read,

    async search(resourceType, params) {
      let bundle: Bundle;
      try {
        bundle = (await client.search({
          resourceType,
          searchParams: { ...params },
          options: requestOptions(),
        })) as unknown as Bundle;
      } catch (err) {
        throw fhirError(err, `search ${resourceType}`);
      }
      return (bundle.entry ?? []).flatMap((e) =>
        e.resource?.resourceType === resourceType ? [e.resource as never] : [],
      );
    },

    async transaction(entries) {
      try {
        return (await client.transaction({
          body: { resourceType: 'Bundle', type: 'transaction', entry: [...entries] },
          options: requestOptions(),
        })) as unknown as Bundle;
      } catch (err) {
        throw fhirError(err, 'transaction');
      }
    },

    async writeObservations(observations) {
      if (observations.length === 0) return [];
      const bundle: Bundle = {
        resourceType: 'Bundle',
        type: 'batch',
        entry: observations.map((o): BundleEntry => ({
          resource: o,
          request: { method: 'PUT', url: `Observation/${o.id ?? ''}` },
        })),
      };
      let response: Bundle;
      try {
        const base = requestOptions();
        response = (await client.batch({
          body: bundle as unknown as FhirResource,
          // FHIR R4 http.html#ops: the stored version per entry, for the ClickHouse mirror.
          options: { ...base, headers: { ...base.headers, Prefer: 'return=representation' } },
        })) as unknown as Bundle;
      } catch (err) {
        throw fhirError(err, 'batch write');
      }
      const entries = response.entry ?? [];
      if (entries.length !== observations.length) {
        throw new PipelineError(
          'FhirUnavailable',
          `batch response has ${entries.length} entries for ${observations.length} requests`,
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
    },

    async readObservations(ids) {
      const found: Observation[] = [];
      // 50 ids per search keeps the URL short (ids are up to 64 characters).
      for (let i = 0; i < ids.length; i += 50) {
        const part = ids.slice(i, i + 50);
        let bundle: Bundle;
        try {
          bundle = (await client.search({
            resourceType: 'Observation',
            searchParams: { _id: part.join(','), _count: String(part.length) },
            options: requestOptions(),
          })) as unknown as Bundle;
        } catch (err) {
          throw fhirError(err, 'read Observations');
        }
        for (const e of bundle.entry ?? [])
          if (e.resource?.resourceType === 'Observation') found.push(e.resource as Observation);
      }
      return found;
    },

    async ping() {
      try {
        await client.capabilityStatement({ signal: AbortSignal.timeout(options.timeoutMs) });
      } catch (err) {
        throw fhirError(err, 'metadata');
      }
    },
  };
}
