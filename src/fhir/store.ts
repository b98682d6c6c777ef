/**
 * The FHIR adapter (fhir-kit-client). Contract:
 *  - ensureSubjects(refs): every Patient and Device exists before Observations
 *    reference them (servers enforce referential integrity); created with our
 *    deterministic ids when missing, remembered per process.
 *  - writeObservations(obs): one batch Bundle of `PUT Observation/{id}` (create
 *    or update, idempotent); returns one outcome per entry, in order — a rejected
 *    entry never fails its neighbours.
 * Throws PipelineError FhirUnavailable when the whole request failed transiently.
 */
import { Client, type FhirResource } from 'fhir-kit-client';
import type {
  Bundle,
  BundleEntry,
  Device,
  Observation,
  OperationOutcome,
  Patient,
} from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import type { SubjectRef } from '../queues.js';
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
  ensureSubjects(subjects: readonly SubjectRef[]): Promise<void>;
  writeObservations(observations: readonly Observation[]): Promise<EntryOutcome[]>;
  /** The stored Observations with these ids (missing ones are left out). */
  readObservations(ids: readonly string[]): Promise<Observation[]>;
  /** Resolves when the server answers its CapabilityStatement. */
  ping(): Promise<void>;
}

export interface FhirStoreOptions {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  /** Most subjects remembered as existing (then the memory starts over). */
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

  function ensureOne(s: SubjectRef): Promise<void> {
    const key = `${s.resourceType}/${s.id}/${s.patientId ?? ''}`;
    if (known.has(key)) return Promise.resolve();
    let pending = inFlight.get(key);
    if (!pending) {
      pending = createIfMissing(s)
        .then(() => {
          if (known.size >= limit) known.clear();
          known.add(key);
        })
        .finally(() => inFlight.delete(key));
      inFlight.set(key, pending);
    }
    return pending;
  }

  async function createIfMissing(s: SubjectRef, attempt = 1): Promise<void> {
    let existing: Patient | Device | undefined;
    try {
      existing = (await client.read({
        resourceType: s.resourceType,
        id: s.id,
        options: requestOptions(),
      })) as Patient | Device;
    } catch (err) {
      const status = (err as { response?: { status?: number } }).response?.status;
      if (status !== 404 && status !== 410) throw fhirError(err, `read ${s.resourceType}/${s.id}`);
    }
    const wantPatient = s.patientId ? `Patient/${s.patientId}` : undefined;
    const upToDate =
      existing !== undefined &&
      (s.resourceType === 'Patient' || (existing as Device).patient?.reference === wantPatient);
    if (!upToDate) {
      const body: Patient | Device =
        s.resourceType === 'Patient'
          ? { resourceType: 'Patient', id: s.id, identifier: [{ ...s.identifier }] }
          : {
              ...(existing as Device | undefined),
              resourceType: 'Device',
              id: s.id,
              identifier: [{ ...s.identifier }],
              status: 'active',
              ...(wantPatient ? { patient: { reference: wantPatient } } : {}),
            };
      try {
        await client.update({
          resourceType: s.resourceType,
          id: s.id,
          body: body as unknown as FhirResource,
          options: requestOptions(),
        });
      } catch (err) {
        const status = (err as { response?: { status?: number } }).response?.status;
        // 409/412: another writer (another worker process) created it at the same
        // moment (HAPI-0825). Read again: it is most likely there now.
        if ((status === 409 || status === 412) && attempt < 3)
          return createIfMissing(s, attempt + 1);
        throw fhirError(err, `write ${s.resourceType}/${s.id}`);
      }
    }
  }

  return {
    async ensureSubjects(subjects) {
      // Patients first: a Device references its Patient.
      const ordered = [...subjects].sort((a, b) =>
        a.resourceType === b.resourceType ? 0 : a.resourceType === 'Patient' ? -1 : 1,
      );
      for (const s of ordered) await ensureOne(s);
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
