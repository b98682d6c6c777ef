/**
 * Grouped Observations (hourly / daily windows, correlation groups) are
 * written by read–merge–write, so late and out-of-order readings land in the
 * Observation already stored and concurrent writers never lose each other's
 * samples. Contract:
 *
 *   write(obs) → one EntryOutcome (as a batch entry's), plus `written`, the
 *   Observation as stored after the merge.
 *
 *   1. GET Observation/{id}.
 *   2. Stored: merge (src/mapping/windowing.ts); nothing new → done, no write.
 *      PUT with If-Match: W/"{versionId}" (FHIR R4 http.html#concurrency); a
 *      409/412 means another writer won: go to 1.
 *   3. Not stored: PUT (create). A 200 instead of 201 means another writer
 *      created it between 1 and 3 and this PUT replaced its version: read that
 *      version from _history, merge it back in, PUT with If-Match. Go to 1 on
 *      conflict.
 *   After `maxAttempts` conflicts the entry fails transiently (FhirUnavailable)
 *   and the job retries it later.
 */
import type { Observation } from 'fhir/r4.js';
import { PipelineError } from '../errors.js';
import { mergeObservations } from '../mapping/index.js';
import type { EntryOutcome } from './store.js';
import { fhirError } from './errors.js';
import type { FhirGateway } from './gateway.js';

export type MergeOutcome = EntryOutcome & { readonly written?: Observation };

export interface ObservationMerger {
  write(observation: Observation): Promise<MergeOutcome>;
}

export interface MergerOptions {
  /** Conflicts tolerated for one Observation before the job retries it. */
  readonly maxAttempts?: number;
  /** For tests and instrumentation: called on every If-Match conflict. */
  readonly onConflict?: (id: string) => void;
}

interface Read {
  readonly status: number;
  readonly resource?: Observation;
  readonly version?: string;
}

export function createObservationMerger(
  gateway: Pick<FhirGateway, 'readVersioned' | 'vread' | 'update'>,
  options: MergerOptions = {},
): ObservationMerger {
  const maxAttempts = options.maxAttempts ?? 8;

  async function read(id: string): Promise<Read> {
    const stored = await gateway.readVersioned<Observation>('Observation', id);
    return stored
      ? {
          status: 200,
          resource: stored.resource,
          ...(stored.versionId !== undefined ? { version: stored.versionId } : {}),
        }
      : { status: 404 };
  }

  /** PUT, If-Match when a version is given; a conflict answers status 409/412. */
  async function put(observation: Observation, ifMatch?: string): Promise<Read> {
    const r = await gateway.update(observation, {
      ...(ifMatch !== undefined ? { ifMatch } : {}),
      representation: false,
    });
    if (r.conflict) return { status: r.status };
    return { status: r.status, ...(r.versionId !== undefined ? { version: r.versionId } : {}) };
  }

  function ok(r: Read, created: boolean, written: Observation, unchanged = false): MergeOutcome {
    return {
      ok: true,
      status: r.status,
      created,
      unchanged,
      ...(r.version !== undefined ? { versionId: r.version } : {}),
      written: {
        ...written,
        meta: { ...written.meta, ...(r.version ? { versionId: r.version } : {}) },
      },
    };
  }

  type Step = { readonly done: MergeOutcome } | { readonly retry: Observation };

  /** One read–merge–write; on a conflict, what to bring to the next attempt. */
  async function attempt(incoming: Observation): Promise<Step> {
    const id = incoming.id ?? '';
    const stored = await read(id);
    if (stored.resource) {
      const { observation, changed } = mergeObservations(stored.resource, incoming);
      if (!changed) return { done: ok(stored, false, stored.resource, true) };
      const written = await put(observation, stored.version);
      if (written.status === 409 || written.status === 412) return { retry: incoming };
      return { done: ok(written, false, observation) };
    }
    const first = await put(incoming);
    if (first.status === 409 || first.status === 412) return { retry: incoming };
    if (first.status === 201 || first.version === '1' || first.version === undefined) {
      return { done: ok(first, first.status === 201, incoming) };
    }
    // Another writer created it after our GET, and this PUT replaced its version:
    // from now on we carry that version's content too, until a conditional PUT
    // (which merges whatever it replaces) stores it.
    const previous = String(Number(first.version) - 1);
    const theirs = await gateway.vread<Observation>('Observation', id, previous);
    const carried = theirs ? { ...mergeObservations(theirs, incoming).observation, id } : incoming;
    const again = await put(carried, first.version);
    if (again.status === 409 || again.status === 412) return { retry: carried };
    return { done: ok(again, false, carried) };
  }

  return {
    async write(observation) {
      let pending = observation;
      for (let i = 0; i < maxAttempts; i++) {
        try {
          const step = await attempt(pending);
          if ('done' in step) return step.done;
          pending = step.retry;
          options.onConflict?.(observation.id ?? '');
        } catch (err) {
          const e = err instanceof PipelineError ? err : fhirError(err, 'merge');
          return { ok: false, error: e };
        }
      }
      return {
        ok: false,
        error: new PipelineError(
          'FhirUnavailable',
          `Observation/${observation.id ?? ''}: still conflicting after ${maxAttempts} attempts`,
          { details: { status: 412 } },
        ),
      };
    },
  };
}
