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
import { fhirError, statusError } from './errors.js';

export type MergeOutcome = EntryOutcome & { readonly written?: Observation };

export interface ObservationMerger {
  write(observation: Observation): Promise<MergeOutcome>;
}

export interface MergerOptions {
  readonly baseUrl: string;
  readonly timeoutMs: number;
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

function version(etag: string | null, resource?: Observation): string | undefined {
  return etag?.match(/"([^"]+)"/)?.[1] ?? resource?.meta?.versionId;
}

export function createObservationMerger(options: MergerOptions): ObservationMerger {
  const base = options.baseUrl.replace(/\/+$/, '');
  const maxAttempts = options.maxAttempts ?? 8;

  async function request(
    method: 'GET' | 'PUT',
    path: string,
    body?: Observation,
    ifMatch?: string,
  ): Promise<Read> {
    let res: Response;
    try {
      res = await fetch(`${base}/${path}`, {
        method,
        signal: AbortSignal.timeout(options.timeoutMs),
        headers: {
          accept: 'application/fhir+json',
          'cache-control': 'no-cache',
          ...(body ? { 'content-type': 'application/fhir+json' } : {}),
          ...(ifMatch ? { 'if-match': `W/"${ifMatch}"` } : {}),
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw fhirError(err, `${method} ${path}`);
    }
    const text = await res.text();
    let resource: Observation | undefined;
    try {
      resource = text ? (JSON.parse(text) as Observation) : undefined;
    } catch {
      resource = undefined;
    }
    if (res.ok) {
      return {
        status: res.status,
        ...(resource?.resourceType === 'Observation' ? { resource } : {}),
        ...(version(res.headers.get('etag'), resource) !== undefined
          ? { version: version(res.headers.get('etag'), resource)! }
          : {}),
      };
    }
    if (method === 'GET' && (res.status === 404 || res.status === 410))
      return { status: res.status };
    if (method === 'PUT' && (res.status === 409 || res.status === 412))
      return { status: res.status };
    throw statusError(
      res.status,
      `${method} ${path}`,
      resource ?? text,
      res.headers.get('retry-after'),
    );
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
    const path = `Observation/${id}`;
    const stored = await request('GET', path);
    if (stored.resource) {
      const { observation, changed } = mergeObservations(stored.resource, incoming);
      if (!changed) return { done: ok(stored, false, stored.resource, true) };
      const put = await request('PUT', path, observation, stored.version);
      if (put.status === 409 || put.status === 412) return { retry: incoming };
      return { done: ok(put, false, observation) };
    }
    const put = await request('PUT', path, incoming);
    if (put.status === 409 || put.status === 412) return { retry: incoming };
    if (put.status === 201 || put.version === '1' || put.version === undefined) {
      return { done: ok(put, put.status === 201, incoming) };
    }
    // Another writer created it after our GET, and this PUT replaced its version:
    // from now on we carry that version's content too, until a conditional PUT
    // (which merges whatever it replaces) stores it.
    const previous = String(Number(put.version) - 1);
    const theirs = await request('GET', `${path}/_history/${previous}`);
    const carried = theirs.resource
      ? { ...mergeObservations(theirs.resource, incoming).observation, id }
      : incoming;
    const again = await request('PUT', path, carried, put.version);
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
